"""`attnsim run --shard I/N`: disjoint parts of a grid fixed by the grid, run in any order into one workdir,
add up to the unsharded sweep; bad shard arguments exit 2 with one line and write nothing."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnsim import cli, sweep
from attnsim.config import load_config
from attnsim.workdir import Shard

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")
# 2 omegas x 2 alphas x 2 seeds x 2 inits = 16 runs.
TINY = ["--config.d=16", "--config.alphas=(1.0,2.0)", "--config.seeds=2", "--config.steps=40", "--config.n_test=200",
        "--config.omegas=(0.2,0.6)"]


def _run(workdir, *extra):
    return cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, *extra])


def test_shards_partition_the_grid():
    runs = sweep.expand_grid(load_config(DEMO, [t[len("--config."):] for t in TINY]))
    parts = [Shard(i, 3).select(runs) for i in range(3)]
    assert sorted(i for p in parts for i in p.index) == list(runs.index)  # disjoint, and together the grid
    assert [len(p) for p in parts] == [6, 5, 5]


def test_three_shards_in_any_order_give_the_unsharded_summary(tmp_path, capsys):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert _run(whole) == 0
    for i in (2, 0, 1):
        assert _run(sharded, "--shard", f"{i}/3") == 0
    capsys.readouterr()
    assert _run(sharded, "--shard", "0/3") == 0  # finished: one line, nothing done
    out = capsys.readouterr()
    assert out.out.strip() == f"attnsim: shard 0/3 (6 of 16 runs) already in {sharded}; nothing to do", out
    assert not (sharded / "results.csv").exists()  # each shard writes only its own files
    assert sorted(p.name for p in sharded.glob("results*.csv")) == [f"results.shard{i}-of-3.csv" for i in range(3)]
    assert len(sweep.read_results(sharded / "results.csv")) == 16
    assert cli.main(["report", "--workdir", str(whole)]) == 0
    for name in ("theory.csv", "phase.csv"):  # the same theory: solved once
        shutil.copy(whole / name, sharded / name)
    assert cli.main(["report", "--workdir", str(sharded)]) == 0
    got, want = (pd.read_csv(p / "summary.csv") for p in (sharded, whole))
    numbers = [c for c in want.columns if want[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(got.drop(columns=numbers), want.drop(columns=numbers))
    for c in numbers:  # other chunk compositions: float32 reduction order
        np.testing.assert_allclose(got[c], want[c], rtol=1e-5, atol=1e-7, err_msg=c)


@pytest.mark.parametrize("arg, needle", [
    ("3/3", "must lie in [0, N)"), ("0/0", "must be >= 1"), ("1", "expected I/N"), ("a/b", "expected I/N"),
    ("-1/3", "argument --shard")])
def test_bad_shard_argument_exits_2_and_writes_nothing(tmp_path, capsys, arg, needle):
    assert _run(tmp_path / "o", "--shard", arg) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_another_shard_count_is_refused(tmp_path, capsys):
    workdir = tmp_path / "w"
    assert _run(workdir, "--shard", "1/3") == 0
    files = sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*"))
    capsys.readouterr()
    for extra, needle in ((["--shard", "1/2"], "was started with --shard I/3 (now --shard 1/2)"),
                          ([], "was started with --shard I/3 (now no --shard)"),
                          (["--shard", "0/3", "--overwrite"], "cannot be combined with --overwrite")):
        assert _run(workdir, *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*")) == files
