"""The command line: bad input exits 2 with one line and writes nothing; a tiny sweep end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attnsim import cli, sweep

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")
TINY = ["--config.d=16", "--config.alphas=(1.0,2.0)", "--config.seeds=2", "--config.steps=40", "--config.n_test=200"]

BAD = [
    (["--config.nonsense=1"], "nonsense"),
    (["--config.d=abc"], "config.d"),
    (["--config.d=0"], "config.d"),
    (["--config.L=1"], "config.L"),
    (["--config.r=0"], "config.r"),
    (["--config.alphas=(0.5,-1.0)"], "config.alphas"),
    (["--config.alphas=(0.0,)"], "config.alphas"),
    (["--config.omega=1.5"], "config.omega"),
    (["--config.omegas=(0.2,-0.1)"], "config.omegas"),
    (["--config.sigma=0"], "config.sigma"),
    (["--config.lam=-0.1"], "config.lam"),
    (["--config.A=((0.5,0.5,0.0),(0.5,0.5,0.0))"], "config.A"),
    (["--config.A=((0.9,0.4),(0.4,0.6))"], "config.A"),
    (["--config.A=third"], "config.A"),
    (["--config.inits=('random','clever')"], "config.inits"),
    (["--config.inits=('random','mixed')"], "config.inits"),  # mixed needs r >= 2
    (["--config.optimizer=sgd"], "config.optimizer"),
    (["--config.steps=0"], "config.steps"),
    (["--config.seeds=2.5"], "config.seeds"),
    (["--bogus"], "--bogus"),
    (["--config.memory_budget=0.001", "--config.d=4000"], "config.memory_budget"),
    (["--config.n_test=0"], "config.n_test"),
    (["--config.lin_input=y"], "config.lin_input"),
    (["--config.checkpoint_every=0"], "config.checkpoint_every"),
    (["--config.checkpoint_seconds=-1"], "config.checkpoint_seconds"),
]


@pytest.mark.parametrize("extra,needle", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, extra, needle):
    workdir = tmp_path / "out"
    code = cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and needle in err, err
    assert not workdir.exists()  # nothing written


def test_bad_config_argument(tmp_path, capsys):
    omega03 = str(ROOT / "configs" / "omega03.py")
    assert cli.main(["run", "--config", omega03 + ":tiny", "--workdir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown argument 'tiny'" in err and not (tmp_path / "o").exists()


def test_missing_config_file_and_unwritable_workdir(tmp_path, capsys):
    assert cli.main(["run", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path / "o")]) == 2
    assert "no such config file" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["run", "--config", DEMO, "--workdir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err


def test_bad_input_in_a_subprocess_prints_no_traceback(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "attnsim.cli", "run", "--config", DEMO, "--workdir",
                          str(tmp_path / "o"), "--config.sigma=-1"], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == "attnsim: error: config.sigma=-1.0: must be > 0"
    assert "Traceback" not in out.stderr and not (tmp_path / "o").exists()


def test_help_on_every_command():
    for cmd in ([], ["run"], ["theory"], ["phase"], ["report"]):
        out = subprocess.run([sys.executable, "-m", "attnsim.cli", *cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage:" in out.stdout, cmd


def test_tiny_sweep_end_to_end_and_rerun_skips(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY]) == 0
    res = pd.read_csv(workdir / "results.csv")
    assert list(res.columns[: len(sweep.RUN_COLUMNS)]) == sweep.RUN_COLUMNS
    assert set(sweep.METRIC_COLUMNS) <= set(res.columns)
    assert len(res) == 2 * 2 * 2 and not res.diverged.any()
    assert (workdir / "test_error.png").stat().st_size > 10_000
    capsys.readouterr()
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY]) == 0
    assert "nothing to do" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(workdir / "results.csv"), res)
    # more seeds: only the new runs are computed, the old rows stay as they were
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, "--config.seeds=3"]) == 0
    res3 = pd.read_csv(workdir / "results.csv")
    assert len(res3) == 12
    pd.testing.assert_frame_equal(res3.iloc[:8].reset_index(drop=True), res)
    # a different d in the same workdir is refused
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, "--config.d=20"]) == 2
    assert "different config" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--config.r=2"], ["--config.L=3", "--config.A=((0.5,0.5,0),(0,0.5,0.5),(0.5,0,0.5))"]])
def test_theory_and_phase_beyond_the_papers_case_use_the_generic_solver(tmp_path, extra):
    """r = 2 or L = 3: `attnsim theory` and `phase` solve the generic theory (coarse: 256 QMC points)."""
    args = ["--config", DEMO, "--workdir", str(tmp_path / "o"), "--config.alphas=(2.0,)", "--config.qmc_samples=256",
            *extra]
    assert cli.main(["theory", *args]) == 0
    th = pd.read_csv(tmp_path / "o" / "theory.csv")
    expected = {"semantic", "positional"} | ({"mixed"} if "--config.r=2" in extra else set())
    assert set(th.branch) == expected and {"q_1", "theta_1", "m_1", "global_min", "lin_test_error"} <= set(th.columns)
    assert cli.main(["phase", *args]) == 0
    ph = pd.read_csv(tmp_path / "o" / "phase.csv")
    assert {"alpha_c", "alpha_l", "alpha_sp_semantic", "global_branch_at_max"} <= set(ph.columns) and len(ph) == 1


def test_theory_refuses_a_bad_qmc_sample_count(tmp_path, capsys):
    assert cli.main(["theory", "--config", DEMO, "--workdir", str(tmp_path / "o"), "--config.r=2",
                     "--config.qmc_samples=1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.qmc_samples" in err and not (tmp_path / "o").exists()


def test_theory_command_writes_theory_csv(tmp_path):
    workdir = tmp_path / "th"
    args = ["--config", DEMO, "--workdir", str(workdir), "--config.alphas=(1.5,2.0)", "--config.quad_order=6"]
    assert cli.main(["theory", *args]) == 0
    th = pd.read_csv(workdir / "theory.csv")
    expected = ["omega", "sigma", "lam", "alpha", "branch", "q", "m", "V", "theta", "test_error", "train_loss", "converged"]
    assert set(expected) <= set(th.columns) and len(th) == 4 and th.converged.all()
    at2 = th[th.alpha == 2.0].set_index("branch")
    assert at2.train_loss["semantic"] < at2.train_loss["positional"]  # alpha = 2 > alpha_c(0.3): semantic wins


def test_all_runs_diverged_run_warns_and_report_exits_2(tmp_path, capsys):
    workdir = tmp_path / "div"
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, "--config.lr=1e6"]) == 0
    assert pd.read_csv(workdir / "results.csv").diverged.all()
    assert "8 of 8 runs diverged" in capsys.readouterr().err
    assert cli.main(["report", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "all 8 runs diverged" in err, err


def test_version():
    out = subprocess.run([sys.executable, "-m", "attnsim.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().startswith("attnsim 0.")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "dry"
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 runs, 0 done, 8 to do in 1 chunks" in out and "1 compiled shapes" in out and "estimated time" in out
    assert not workdir.exists()
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, "--config.seeds=1"]) == 0
    capsys.readouterr()
    before = sorted((p, p.stat().st_mtime_ns) for p in workdir.rglob("*"))
    assert cli.main(["run", "--config", DEMO, "--workdir", str(workdir), *TINY, "--dry-run"]) == 0
    assert "8 runs, 4 done, 4 to do" in capsys.readouterr().out
    assert sorted((p, p.stat().st_mtime_ns) for p in workdir.rglob("*")) == before


def test_ctrl_c_in_phase_says_nothing_was_written(tmp_path, capsys, monkeypatch):
    from attnsim import report

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "phase_table", interrupted)
    assert cli.main(["phase", "--config", DEMO, "--workdir", str(tmp_path / "ph")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "attnsim: interrupted; nothing was written" and not (tmp_path / "ph" / "phase.csv").exists()


def test_phase_on_the_authors_cubature(tmp_path):
    """--config.quad_order=authors reaches critical_lines (it was refused by the config and failed there):
    alpha_c on the authors' 144-node rule lies where their files put it (between 1.25 and 1.357)."""
    omega03 = str(ROOT / "configs" / "omega03.py")
    assert cli.main(["phase", "--config", omega03, "--workdir", str(tmp_path), "--config.quad_order=authors"]) == 0
    ph = pd.read_csv(tmp_path / "phase.csv")
    assert 1.25 <= ph.alpha_c.iloc[0] <= 1.357 and 1.3 < ph.alpha_l.iloc[0] < 1.6
    assert cli.main(["phase", "--config", omega03, "--workdir", str(tmp_path), "--config.quad_order=author"]) == 2
