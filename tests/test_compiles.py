"""A sweep compiles a small, bounded set of programs: the cold exploratory phase-diagram sweep (18 omegas x
25 alphas x 2 inits = 900 runs, d = 100, 5 steps) needs at most 20 XLA compilations (it needed 100 when
every chunk had its own n_max and hyper-parameters were built by eager device programs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_compile import PROBE  # noqa: E402


def test_cold_exploratory_sweep_compiles_at_most_20_programs(tmp_path):
    env = dict(os.environ, ATTNSIM_COMPILATION_CACHE="0", JAX_PLATFORMS="cpu")
    args = ["run", "--config", "configs/phase_diagram.py", "--workdir", str(tmp_path / "w"), "--config.d=100",
            "--config.steps=5", "--config.seeds=1", "--config.n_test=100"]
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    result = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert result["code"] == 0, out.stderr
    assert 1 <= result["compiles"] <= 20, result
