"""Per-run step cost at d = 1000, 64 runs of one seed (n = 2000), of this checkout against an earlier one:
XLA's view of the compiled training program (temporary bytes, bytes accessed per call) and the measured
seconds per run and step (scripts/bench_sweep.py's engine_step_cost), alternating the two checkouts in
fresh processes on one core, so that machine noise hits both alike.

    git worktree add /tmp/before 1f8c1c7 && python scripts/bench_step_invariants.py --before /tmp/before
"""

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {scripts!r})
import attnsim, bench_sweep
from attnsim import config as config_lib, sweep
cfg = config_lib.default_config()
cfg.update(dict(d=1000, alphas=(2.0,), inits=("random",), steps=10, n_test=1, test_chunk=1, checkpoint_every=10,
                omegas=tuple(np.linspace(0.1, 0.5, 64))))
runs = sweep.expand_grid(cfg); engine = sweep.Engine(cfg); (chunk,) = sweep.plan_chunks(runs, 64)
prog = engine.programs(chunk.n_max); args = engine.inputs(runs, chunk); sd, state = prog.setup(*args)
c = prog.train.lower(sd, args[-1], state, 3).compile()
ca = c.cost_analysis(); ca = ca[0] if isinstance(ca, list) else ca
cost = bench_sweep.engine_step_cost(1000, 2000, 64)
print(f"temp {{c.memory_analysis().temp_size_in_bytes / 1e6:.1f}} MB, bytes accessed {{ca['bytes accessed'] / 1e6:.1f}} MB, "
      f"step {{cost * 1e6:.1f}} us per run")
"""


def measure(checkout: Path) -> str:
    code = CHILD.format(scripts=str(ROOT / "scripts"))
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], cwd=checkout, capture_output=True,
                         text=True, env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}, check=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="a checkout (git worktree) of the earlier commit")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"python scripts/bench_step_invariants.py --before {args.before} --rounds {args.rounds}")
    for k in range(args.rounds):
        for name, where in (("before", args.before), ("after", ROOT)):
            print(f"round {k + 1} {name:6}: {measure(where)}", flush=True)


if __name__ == "__main__":
    main()
