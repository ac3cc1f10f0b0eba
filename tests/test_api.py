"""`attnsim.run(cfg, workdir)`: the notebook API returns the rows `attnsim run` writes and resumes like it."""

from pathlib import Path

import pandas as pd

import attnsim
from attnsim import cli, sweep
from attnsim.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")
OVERRIDES = ["d=16", "alphas=(1.0,2.0)", "seeds=2", "steps=40", "n_test=200"]


def test_run_returns_the_commands_rows_and_resumes(tmp_path, capsys):
    command = tmp_path / "command"
    assert cli.main(["run", "--config", DEMO, "--workdir", str(command), *("--config." + o for o in OVERRIDES)]) == 0
    written = pd.read_csv(command / "results.csv").sort_values(sweep.KEY_COLUMNS, ignore_index=True)
    cfg = load_config(DEMO, OVERRIDES)

    got = attnsim.run(cfg)  # no workdir: a temporary one
    assert list(got.columns) == list(written.columns) and len(got) == 8
    pd.testing.assert_frame_equal(got.sort_values(sweep.KEY_COLUMNS, ignore_index=True), written)

    workdir = tmp_path / "api"
    first = attnsim.run(cfg, workdir)
    pd.testing.assert_frame_equal(first, got)
    before = (workdir / "results.csv").read_bytes()
    capsys.readouterr()
    again = attnsim.run(cfg, workdir)  # resumes: nothing is recomputed
    assert "nothing to do" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, first)
    assert (workdir / "results.csv").read_bytes() == before
