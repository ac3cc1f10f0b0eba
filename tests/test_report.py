"""Experiment configs and `attnsim report`: every config loads, every reduced config runs end to end (made tiny
by overrides) through `attnsim run` + `attnsim report`, the report writes every file it promises, and its
tables equal the results they summarise."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnsim import cli, config as config_lib, report, sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py"))
EXPERIMENTS = ["L3.py", "adam.py", "omega03.py", "phase_diagram.py", "rank2.py", "rank2_validation.py", "second_A.py",
               "sigma_lambda.py"]
# d = 20, 30 steps, 2 alphas in one chunk (n = 30, 40), theory at 4 nodes per dimension (256 QMC points for the
# generic theory of L = 3 and r = 2).
TINY = ["--config.d=20", "--config.steps=30", "--config.n_test=200", "--config.alphas=(1.5,2.0)",
        "--config.seeds=2", "--config.quad_order=4", "--config.qmc_samples=256"]
# Fewer points than the reduced configs, where they sweep omega, sigma or lam.
FEWER = {"phase_diagram.py": ["--config.omegas=(0.1,0.3,0.5)"], "rank2_validation.py": ["--config.omegas=(0.3,)"],
         "L3.py": ["--config.omegas=(0.3,)"],
         "sigma_lambda.py": ["--config.sigmas=(0.5,1.0)", "--config.lams=(0.01,0.1)"]}
FIGURES = ("test_error", "overlaps")


@pytest.mark.parametrize("arg", ["", ":small"])
@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_with_a_one_line_doc(name, arg):
    path = ROOT / "configs" / name
    cfg = config_lib.load_config(str(path) + arg)
    assert cfg.d >= 1 if cfg.task == "attention" else cfg.epochs >= 1
    assert path.read_text().startswith('"""') and path.read_text()[3:].split("\n")[0].strip(), name


def test_experiment_list_is_complete():
    assert set(EXPERIMENTS) | {"demo.py", "scaling_d.py", "histogram.py"} == set(CONFIGS)  # (tests/test_histogram.py)


def _run_and_report(workdir: Path, config: str, extra=()) -> pd.DataFrame:
    args = ["--config", config, "--workdir", str(workdir), *TINY, *extra]
    assert cli.main(["run", *args]) == 0
    assert cli.main(["report", "--workdir", str(workdir)]) == 0
    return pd.read_csv(workdir / "results.csv")


def _files_exist(workdir: Path, stems) -> None:
    for stem in stems:
        for ext in (".png", ".pdf"):
            assert (workdir / (stem + ext)).stat().st_size > 5_000, stem + ext
    assert (workdir / "summary.csv").stat().st_size > 100 and (workdir / "summary.md").stat().st_size > 100


def _check_summary(workdir: Path, results: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's means, stds and counts are those of results.csv (per init and for the global minimum)
    and summary.md prints them."""
    summary = pd.read_csv(workdir / "summary.csv")
    gmin = sweep.global_minimum(results)
    keys = report.GROUP + ["alpha"]
    for who, runs in [("global", gmin)] + [(i, results[results.init == i]) for i in results.init.unique()]:
        expect = runs.groupby(keys).test_error.agg(["mean", "std", "count"]).reset_index()
        ours = summary[summary.who == who].merge(expect, on=keys)
        assert len(ours) == len(expect) > 0, who
        np.testing.assert_allclose(ours.test_error, ours["mean"], rtol=1e-12)
        np.testing.assert_allclose(ours.test_error_std, ours["std"], rtol=1e-12)
        assert (ours.seeds == ours["count"]).all()
    lin = results.groupby(keys).lin_test_error.mean().reset_index()
    np.testing.assert_allclose(summary.merge(lin, on=keys, suffixes=("", "_r")).eval("lin_test_error - lin_test_error_r"),
                               0, atol=1e-15)
    md = (workdir / "summary.md").read_text()
    for r in summary.itertuples():
        assert f"| {r.alpha:g} | {r.who} | {r.test_error:.5g} ± " in md
    return summary


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_reduced_config_runs_and_reports(tmp_path, name):
    workdir = tmp_path / name.removesuffix(".py")
    results = _run_and_report(workdir, str(ROOT / "configs" / name) + ":small", FEWER.get(name, []))
    assert not results.diverged.any() and results.d.unique().tolist() == [20]
    stems = FIGURES + (("phase_diagram",) if results.omega.nunique() > 1 else ())
    _files_exist(workdir, stems)
    summary = _check_summary(workdir, results)
    md = (workdir / "summary.md").read_text()
    theory = pd.read_csv(workdir / "theory.csv")
    if name in ("rank2.py", "rank2_validation.py"):  # the generic theory, with the mixed branch of r = 2
        assert "generic theory, 256 quasi-Monte-Carlo points" in (workdir / "summary.md").read_text()
        assert {"semantic", "positional", "mixed"} == set(theory.branch)
    phase = pd.read_csv(workdir / "phase.csv")
    assert {"alpha_c", "alpha_l"} <= set(phase.columns) and len(phase) == len(results.groupby(["omega", "sigma", "lam"]))
    assert "Theory: α_c = " in md and "Simulations: α_c ≈ " in md
    if np.isfinite(phase.alpha_sp_semantic).any():  # the theory's spinodals are in the summary
        assert "semantic branch ends at α = " in md
    # the theory column is theory.csv's branch at that point (NaN where the branch did not converge)
    th = theory[theory.branch == "semantic"].round({"alpha": 10})
    th = th.assign(test_error=th.test_error.where(th.converged))
    sem = summary[summary.who == "semantic"].merge(th, on=report.POINT, suffixes=("", "_th"))
    assert len(sem) == len(summary[summary.who == "semantic"])
    np.testing.assert_allclose(sem.theory_test_error, sem.test_error_th, rtol=1e-12)


def test_scaling_d_runs_every_d_and_reports_scaling(tmp_path, capsys):
    workdir = tmp_path / "scaling"
    overrides = [t for t in TINY if not t.startswith(("--config.d=", "--config.alphas="))]
    assert cli.main(["run", "--config", str(ROOT / "configs" / "scaling_d.py") + ":small", "--workdir", str(workdir),
                     "--config.ds=(12,20)", *overrides]) == 0
    assert cli.main(["report", "--workdir", str(workdir)]) == 0
    results, _ = report.read_workdir(workdir)
    assert sorted(results.d.unique()) == [12, 20] and (workdir / "d12" / "results.csv").exists()
    _files_exist(workdir, FIGURES + ("scaling",))
    summary = _check_summary(workdir, results)
    assert np.isfinite(summary.rel_diff).all()
    assert "d = 12" in (workdir / "summary.md").read_text()
    capsys.readouterr()
    before = (workdir / "theory.csv").stat().st_mtime_ns
    assert cli.main(["report", "--workdir", str(workdir)]) == 0  # a second report reuses the theory
    assert "covers every simulated point" in capsys.readouterr().err
    assert (workdir / "theory.csv").stat().st_mtime_ns == before


def test_report_refuses_a_workdir_without_results(tmp_path, capsys):
    assert cli.main(["report", "--workdir", str(tmp_path / "none")]) == 2
    assert "no results.csv" in capsys.readouterr().err


def test_last_crossing():
    assert report.last_crossing([1, 2, 3], [1.0, -1.0, -2.0]) == pytest.approx(1.5)
    assert report.last_crossing([1, 2, 3, 4], [1.0, -1.0, 1.0, -3.0]) == pytest.approx(3.25)  # the last one
    assert np.isnan(report.last_crossing([1, 2], [-1.0, -2.0])) and np.isnan(report.last_crossing([1, 2], [1.0, 2.0]))


def test_empirical_lines_from_a_synthetic_table():
    """Semantic init's train loss falls below the random init's between alpha = 1 and 2 (at 1.25); the global
    minimum's test error falls below the baseline's between 2 and 3 (at 2.5)."""
    rows = []
    for alpha, gap_c, te_sem in ((1.0, 0.3, 2.0), (2.0, -0.9, 1.5), (3.0, -1.0, 0.5)):
        for seed in range(2):
            base = dict(omega=0.3, sigma=0.5, lam=0.01, alpha=alpha, d=100, seed=seed, lin_test_error=1.0,
                        diverged=False)
            rows.append(dict(base, init="random", train_loss=1.0, test_error=3.0))
            rows.append(dict(base, init="semantic", train_loss=1.0 + gap_c, test_error=te_sem))
    lines = report.empirical_lines(pd.DataFrame(rows))
    assert len(lines) == 1
    assert lines.alpha_c.iloc[0] == pytest.approx(1.25)
    assert lines.alpha_l.iloc[0] == pytest.approx(2.5)
    assert sweep.global_minimum(pd.DataFrame(rows)).init.tolist()[-2:] == ["semantic", "semantic"]
