"""Cold-start cost of a sweep: XLA compilations, their seconds, and wall time, for one or two source trees.

Runs, each in a fresh process with the persistent compilation cache off:
  exploratory  attnsim run --config configs/phase_diagram.py --config.d=100 --config.steps=20 --config.seeds=1
               (900 runs: compile-bound)
  demo         attnsim run --config configs/demo.py (what `make demo` runs)
and counts backend compilations with a jax.monitoring listener. ``--before PATH`` (e.g. a `git worktree` of
an earlier commit) runs the same commands on that tree too, in the same script run, for a before/after ratio.

    git worktree add /tmp/attnsim-before 3c769d6
    python scripts/bench_compile.py --before /tmp/attnsim-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "exploratory": ["--config", "configs/phase_diagram.py", "--config.d=100", "--config.steps=20", "--config.seeds=1"],
    "demo": ["--config", "configs/demo.py"],
}
PROBE = """
import json, sys, time
from jax import monitoring
from jax._src import dispatch
seconds = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: seconds.append(duration) if event == dispatch.BACKEND_COMPILE_EVENT else None)
from attnsim import cli
start = time.perf_counter()
code = cli.main(sys.argv[1:])
print("RESULT " + json.dumps(dict(code=code, compiles=len(seconds), compile_s=sum(seconds),
                                  wall_s=time.perf_counter() - start)))
"""


def measure(tree: Path, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ATTNSIM_COMPILATION_CACHE="0", PYTHONPATH=str(tree))
        out = subprocess.run([sys.executable, "-c", PROBE, "run", *args, "--workdir", f"{tmp}/w"], cwd=tree, env=env,
                             capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{out.stderr[-2000:]}")
        return json.loads(line[0][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="an earlier source tree to measure too")
    ap.add_argument("--only", choices=list(COMMANDS), nargs="*", default=list(COMMANDS))
    args = ap.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
    rows = {}
    for name in args.only:
        for label, tree in trees:
            r = measure(tree, COMMANDS[name])
            rows[name, label] = r
            print(f"{name:>12} {label:>6}: {r['compiles']:4d} compilations, {r['compile_s']:6.1f} s compiling, "
                  f"{r['wall_s']:6.1f} s wall", flush=True)
        if args.before:
            b, a = rows[name, "before"], rows[name, "after"]
            print(f"{name:>12}  ratio: compilations x{a['compiles'] / b['compiles']:.2f}, "
                  f"wall x{a['wall_s'] / b['wall_s']:.2f}", flush=True)


if __name__ == "__main__":
    main()
