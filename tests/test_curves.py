"""Learning curves (config.record_every): recorded during training, the final results unchanged bit for bit,
the same curves after a kill and a resume, drawn by `attnsim report`."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import cli, sweep

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")
# 12 runs in 3 chunks, 60 steps, records every 15 steps (segments of 10 are cut at 15, 30, 45 too).
TINY = ["--config.d=16", "--config.alphas=(1.5,2.0)", "--config.seeds=3", "--config.steps=60",
        "--config.n_test=200", "--config.max_batch=4", "--config.checkpoint_every=10",
        "--config.checkpoint_seconds=0"]
CURVES = ["--config.record_every=15"]


def _cli(workdir, *extra):
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, *extra]) == 0


def _sorted(path: Path) -> list[str]:
    head, *rows = path.read_text().splitlines()
    return [head] + sorted(rows)


def test_curves_leave_the_results_unchanged_and_end_at_them(tmp_path):
    plain, recorded = tmp_path / "plain", tmp_path / "recorded"
    _cli(plain)
    _cli(recorded, *CURVES)
    assert _sorted(recorded / "results.csv") == _sorted(plain / "results.csv")  # bit for bit
    assert not (plain / "curves.csv").exists()
    curves = pd.read_csv(recorded / "curves.csv")
    assert list(curves.columns) == sweep.KEY_COLUMNS + sweep.CURVE_COLUMNS
    assert sorted(curves.step.unique()) == [0, 15, 30, 45, 60] and len(curves) == 12 * 5
    last = curves[curves.step == 60].merge(pd.read_csv(recorded / "results.csv"), on=sweep.KEY_COLUMNS)
    for col in ("train_loss", "m", "theta", "q"):  # another compiled program: float32 rounding apart
        np.testing.assert_allclose(last[col + "_x"], last[col + "_y"], rtol=1e-5, err_msg=col)
    random = curves[curves.init == "random"].groupby("step").train_loss.mean()
    assert random.is_monotonic_decreasing and random[60] < random[0], random  # GD from a random init
    assert cli.main(["report", "--workdir", str(recorded)]) == 0
    assert (recorded / "learning_curves.png").stat().st_size > 10_000


def test_curves_are_the_same_after_a_kill_and_a_resume(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _cli(reference, *CURVES)
    env = dict(os.environ, ATTNSIM_FAULT="segment:9", ATTNSIM_COMPILATION_CACHE="0")  # mid-chunk, after a save
    out = subprocess.run([sys.executable, "-m", "attnsim.cli", "run", "--config", DEMO, "--workdir", str(killed),
                          *TINY, *CURVES], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == -signal.SIGKILL, out.stderr
    _cli(killed, *CURVES)
    assert _sorted(killed / "curves.csv") == _sorted(reference / "curves.csv")
    assert _sorted(killed / "results.csv") == _sorted(reference / "results.csv")
