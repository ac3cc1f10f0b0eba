"""Tidy summaries of a workdir: results.csv (and theory.csv, phase.csv when present) -> tables.

Synopsis::

    results, cfg = report.read_workdir(Path("runs/omega03"))   # results.csv, or every */results.csv (one per d)
    theory, note = report.complete_theory(results, None, cfg)  # solve the theory at the simulated points
    table = report.summary(results, theory)                     # mean +- std per point and init, theory, rel. diff
    lines = report.empirical_lines(results)                     # alpha_c, alpha_l estimated from the simulations

``summary(results, theory)`` has one row per (omega, sigma, lam, d, alpha, who), where ``who`` is an init or
``global`` (the empirical global minimum: per seed, the init with the lowest train_loss), with the mean,
standard deviation and count over seeds of the test error, and, with a theory table, the test error of the
matching branch (semantic init -> semantic, random/positional init -> positional, mixed init -> mixed,
global -> the theory's global minimum) and the relative difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import sweep, tasks

POINT = ["omega", "sigma", "lam", "alpha"]
GROUP = ["omega", "sigma", "lam", "d"]  # one curve in alpha (a workdir may hold several d, see read_workdir)
BRANCH_OF = {"semantic": "semantic", "random": "positional", "positional": "positional", "mixed": "mixed"}


def read_workdir(workdir: Path) -> tuple[pd.DataFrame | None, dict]:
    """(results, config dict) of WORKDIR: its results.csv, or else the concatenated results.csv of its
    sub-folders (e.g. one per d). The config is that of WORKDIR/config.json or the first sub-folder's ({}
    when there is none)."""
    workdir = Path(workdir)
    has = lambda d: any(d.glob("results*.csv"))  # noqa: E731  results.csv, or those of processes / shards
    dirs = [workdir] if has(workdir) else sorted(d for d in workdir.iterdir() if d.is_dir() and has(d)) \
        if workdir.is_dir() else []
    cfg_file = next((d / "config.json" for d in [workdir, *dirs] if (d / "config.json").is_file()), None)
    cfg = json.loads(cfg_file.read_text()).get("config", {}) if cfg_file else {}
    keys = tasks.of(cfg).KEY_COLUMNS
    tables = [t for t in (sweep.read_results(d / "results.csv", keys) for d in dirs) if t is not None]
    if not tables:
        return None, {}
    return pd.concat(tables, ignore_index=True), cfg


def ok_runs(results: pd.DataFrame) -> pd.DataFrame:
    return results[~results.diverged.astype(bool)]


def _round_keys(df: pd.DataFrame, keys=POINT) -> pd.DataFrame:
    """Float keys rounded so that tables written by different programs match."""
    return df.assign(**{k: df[k].round(10) for k in keys})


def summary(results: pd.DataFrame, theory: pd.DataFrame | None = None) -> pd.DataFrame:
    ok = ok_runs(results)
    parts = [ok.assign(who=ok.init), sweep.global_minimum(ok).assign(who="global")]
    keys = GROUP + ["alpha"]
    stats = (pd.concat(parts).groupby(keys + ["who"])["test_error"].agg(["mean", "std", "count"])
             .reset_index().rename(columns={"mean": "test_error", "std": "test_error_std", "count": "seeds"}))
    lin = ok.groupby(keys)["lin_test_error"].mean().rename("lin_test_error").reset_index()
    stats = stats.merge(lin, on=keys)
    if theory is None or theory.empty:
        return stats
    th = theory[theory.converged.astype(bool)]
    glob = th[th.global_min.astype(bool)] if "global_min" in th else th.loc[th.groupby(POINT)["train_loss"].idxmin()]
    rows = [th.assign(who=init)[th.branch == branch] for init, branch in BRANCH_OF.items()]
    rows.append(glob.assign(who="global"))
    theory_te = pd.concat(rows)[POINT + ["who", "branch", "test_error"]].rename(
        columns={"test_error": "theory_test_error", "branch": "theory_branch"})
    out = _round_keys(stats).merge(_round_keys(theory_te), on=POINT + ["who"], how="left")
    out["rel_diff"] = out.test_error / out.theory_test_error - 1
    return out


def last_crossing(x, y) -> float:
    """The x where y, sampled at increasing x, last changes sign from >= 0 to < 0 (linear interpolation);
    NaN if it never does."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.flatnonzero((y[:-1] >= 0) & (y[1:] < 0))
    if not len(idx):
        return float("nan")
    i = idx[-1]
    return float(x[i] + y[i] * (x[i + 1] - x[i]) / (y[i] - y[i + 1]))


def empirical_lines(results: pd.DataFrame) -> pd.DataFrame:
    """alpha_c and alpha_l estimated from the simulations, per (omega, sigma, lam, d):

    - alpha_c: where the mean over seeds of train_loss(semantic init) - min over the other inits of
      train_loss last changes sign from + to - (the global minimum switches to the semantic init);
      NaN without a semantic and another init;
    - alpha_l: where the mean global-minimum test error minus the mean linear baseline's last does.
    Linear interpolation between simulated alphas; NaN when there is no crossing in the simulated range.
    """
    ok = ok_runs(results)
    at = GROUP + ["alpha"]
    gaps = sweep.global_minimum(ok).groupby(at).test_error.mean() - ok.groupby(at).lin_test_error.mean()
    rows = []
    for key, df in ok.groupby(GROUP):
        gap = gaps.loc[key].sort_index()
        alpha_c = float("nan")
        per_init = df.pivot_table(index=["alpha", "seed"], columns="init", values="train_loss")
        if "semantic" in per_init and per_init.shape[1] > 1:
            other = per_init.drop(columns="semantic").min(axis=1)
            diff = (per_init["semantic"] - other).groupby("alpha").mean().sort_index()
            alpha_c = last_crossing(diff.index, diff.to_numpy())
        rows.append(dict(zip(GROUP, key), alpha_c=alpha_c, alpha_l=last_crossing(gap.index, gap.to_numpy())))
    return pd.DataFrame(rows, columns=GROUP + ["alpha_c", "alpha_l"])


def theory_options(results: pd.DataFrame, cfg: dict) -> dict:
    """Arguments of attnsim.theory for a workdir's config (the defaults where config.json is missing)."""
    from attnsim import config as config_lib

    default = config_lib.default_config()
    A = cfg.get("A", default.A)
    return dict(A=np.asarray(config_lib.NAMED_A[A] if isinstance(A, str) else A, np.float64),
                quad_order=_quad_order(cfg.get("quad_order", default.quad_order)),
                L=int(results.L.iloc[0]), r=int(results.r.iloc[0]), r_t=int(cfg.get("r_t", default.r_t)),
                qmc_samples=int(cfg.get("qmc_samples", default.qmc_samples)))


def generic(L: int, r: int, r_t: int) -> bool:
    """Whether a model needs the generic theory (attnsim.theory.general): anything but L = 2, r = r_t = 1."""
    return (int(L), int(r), int(r_t)) != (2, 1, 1)


def _check_supported(L, r, r_t, sigma, A, alphas) -> None:
    """The specialised or the generic solver's check_supported (ValueError, one line)."""
    from attnsim import theory
    from attnsim.theory import general

    (general.check_supported if generic(L, r, r_t) else theory.check_supported)(L, r, r_t, sigma, A, alphas)


def solve_theory(omegas, alphas, sigma, lam, opts: dict) -> pd.DataFrame:
    """theory.solve, or theory.solve_general for a generic (L, r, r_t) (``opts``: theory_options)."""
    from attnsim import theory

    if generic(opts["L"], opts["r"], opts["r_t"]):
        return theory.solve_general(omegas, alphas, opts["L"], opts["r"], opts["r_t"], sigma, lam, opts["A"],
                                    n_samples=opts["qmc_samples"])
    return theory.solve(omegas, alphas, sigma, lam, opts["A"], opts["quad_order"])


def critical_lines_theory(omegas, sigma, lam, alpha_max, opts: dict) -> pd.DataFrame:
    """theory.critical_lines, or theory.critical_lines_general for a generic (L, r, r_t)."""
    from attnsim import theory

    if generic(opts["L"], opts["r"], opts["r_t"]):
        return theory.critical_lines_general(omegas, opts["L"], opts["r"], opts["r_t"], sigma, lam, opts["A"],
                                             alpha_max=alpha_max, n_samples=opts["qmc_samples"])
    return theory.critical_lines(omegas, sigma, lam, opts["A"], opts["quad_order"], alpha_max=alpha_max,
                                 workers=theory.auto_workers(omegas))


def _quad_order(value):
    """A config's quad_order as the theory takes it: an int, or "authors"."""
    return value if value == "authors" else int(value)


def unsupported(results: pd.DataFrame, cfg: dict) -> str | None:
    """Why the theory does not cover this workdir (one line), or None."""
    opts = theory_options(results, cfg)
    try:
        _check_supported(opts["L"], opts["r"], opts["r_t"], results.sigma.unique(), opts["A"], results.alpha.unique())
    except ValueError as e:
        return str(e)
    return None


def missing_points(results: pd.DataFrame, theory: pd.DataFrame | None) -> pd.DataFrame:
    """The simulated (omega, sigma, lam, alpha) that ``theory`` lacks."""
    pts = _round_keys(results[POINT].drop_duplicates())
    if theory is None or theory.empty:
        return pts
    have = _round_keys(theory[POINT].drop_duplicates())
    merged = pts.merge(have, on=POINT, how="left", indicator=True)
    return pts[(merged["_merge"] == "left_only").to_numpy()]


def complete_theory(results: pd.DataFrame, theory: pd.DataFrame | None, cfg: dict,
                    n_extra: int = 16) -> tuple[pd.DataFrame | None, str]:
    """``theory`` plus the fixed points of the simulated points it lacks (per (sigma, lam): every omega on
    the simulated alphas and ``n_extra`` more up to the largest, for smooth curves); a one-line note."""
    todo = missing_points(results, theory)
    if todo.empty:
        return theory, "theory.csv covers every simulated point"
    why = unsupported(results, cfg)
    if why:
        return theory, f"no theory: {why}"
    opts = theory_options(results, cfg)
    new = []
    for (sigma, lam), grp in todo.groupby(["sigma", "lam"]):
        top = grp.alpha.max()
        alphas = np.unique(np.round(np.r_[grp.alpha, np.linspace(top / n_extra, top, n_extra)], 6))
        new.append(solve_theory(np.unique(grp.omega), alphas, sigma, lam, opts))
    out = pd.concat(([] if theory is None else [theory]) + new, ignore_index=True)
    out = out.drop_duplicates(POINT + ["branch"], keep="first").reset_index(drop=True)
    return out, f"theory solved at {len(todo)} simulated points ({_rule(opts)})"


def _rule(opts: dict) -> str:
    if generic(opts["L"], opts["r"], opts["r_t"]):
        return f"generic theory, {opts['qmc_samples']} quasi-Monte-Carlo points"
    return f"quad_order {opts['quad_order']}"


def compute_phase(results: pd.DataFrame, cfg: dict) -> tuple[pd.DataFrame | None, str]:
    """The theory's critical lines alpha_c(omega), alpha_l(omega) for every simulated (omega, sigma, lam), up
    to the largest simulated alpha; a one-line note."""
    why = unsupported(results, cfg)
    if why:
        return None, f"no critical lines: {why}"
    opts = theory_options(results, cfg)
    top = float(results.alpha.max())
    parts = [critical_lines_theory(np.unique(g.omega), sigma, lam, top, opts)
             for (sigma, lam), g in results.groupby(["sigma", "lam"])]
    return pd.concat(parts, ignore_index=True), f"critical lines up to alpha = {top:g} ({_rule(opts)})"


def select(df: pd.DataFrame | None, **values) -> pd.DataFrame:
    """Rows of ``df`` whose columns are close to ``values`` (empty for None)."""
    if df is None or df.empty:
        return pd.DataFrame()
    mask = np.ones(len(df), bool)
    for k, v in values.items():
        mask &= np.isclose(df[k].to_numpy(float), v)
    return df[mask]


def _fmt_alpha(v: float, digits: int = 3) -> str:
    return "none in the simulated range" if not np.isfinite(v) else f"{v:.{digits}g}"


def write_summary(table: pd.DataFrame, path: Path, phase: pd.DataFrame | None = None,
                  empirical: pd.DataFrame | None = None, notes: tuple[str, ...] = ()) -> Path:
    """summary.md: one table per (omega, sigma, lam, d), with alpha_c and alpha_l of the theory (phase.csv)
    and of the simulations (``empirical``, see empirical_lines) when given."""
    lines = ["# attnsim summary", "", "Test error: mean ± std over seeds (count); `global` = per seed the init "
             "with the lowest train_loss.", *(f"Note: {n}." for n in notes), ""]
    for (omega, sigma, lam, d), df in table.groupby(GROUP):
        lines += [f"## ω = {omega:g}, σ = {sigma:g}, λ = {lam:g}, d = {d}", ""]
        p = select(phase, omega=omega, sigma=sigma, lam=lam)
        if len(p):
            r = p.iloc[0]
            spinodals = [f"{b} branch ends at α = {r[f'alpha_sp_{b}']:.3g}"  # exists on one side only
                         for b in ("semantic", "positional") if np.isfinite(r.get(f"alpha_sp_{b}", np.nan))]
            lines += [f"Theory: α_c = {_fmt_alpha(r.alpha_c, 4)}, α_l = {_fmt_alpha(r.alpha_l, 4)}"
                      + (f" ({'; '.join(spinodals)})" if spinodals else ""), ""]
        e = select(empirical, omega=omega, sigma=sigma, lam=lam, d=d)
        if len(e):
            lines += [f"Simulations: α_c ≈ {_fmt_alpha(e.alpha_c.iloc[0])} (global minimum switches to the semantic "
                      f"init), α_l ≈ {_fmt_alpha(e.alpha_l.iloc[0])} (global minimum beats the linear baseline)", ""]
        has_theory = "theory_test_error" in df
        head = "| α | who | test error | seeds | linear baseline |" + (" theory (branch) | rel. diff |" if has_theory else "")
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in df.sort_values(["alpha", "who"]).itertuples():
            std = 0.0 if np.isnan(r.test_error_std) else r.test_error_std
            row = f"| {r.alpha:g} | {r.who} | {r.test_error:.5g} ± {std:.2g} | {r.seeds} | {r.lin_test_error:.5g} |"
            if has_theory:
                row += (f" {r.theory_test_error:.5g} ({r.theory_branch}) | {r.rel_diff:+.1%} |"
                        if np.isfinite(r.theory_test_error) else " – | – |")
            lines.append(row)
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def check_theory_covers(cfg) -> None:
    """ConfigError (one line) unless the theory covers every (sigma, A, alpha) of the config."""
    from attnsim import config as config_lib

    A = config_lib.teacher_A(cfg)
    for sigma in config_lib.sweep_values(cfg, "sigma"):
        try:
            _check_supported(cfg.L, cfg.r, cfg.r_t, sigma, A, cfg.alphas)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from None


def _per_sigma_lam(cfg, fn) -> pd.DataFrame:
    """fn(omegas, sigma, lam, A) concatenated over the config's sigma x lam grid."""
    import itertools

    from attnsim import config as config_lib

    omegas, A = config_lib.sweep_values(cfg, "omega"), config_lib.teacher_A(cfg)
    return pd.concat([fn(omegas, s, l, A) for s, l in itertools.product(config_lib.sweep_values(cfg, "sigma"),
                                                                        config_lib.sweep_values(cfg, "lam"))],
                     ignore_index=True)


def _config_options(cfg, A) -> dict:
    return dict(A=A, quad_order=cfg.quad_order, L=cfg.L, r=cfg.r, r_t=cfg.r_t, qmc_samples=cfg.qmc_samples)


def theory_table(cfg) -> pd.DataFrame:
    """theory.csv of a config: every branch at every (omega, sigma, lam, alpha) (`attnsim theory`)."""
    return _per_sigma_lam(cfg, lambda om, s, l, A: solve_theory(om, cfg.alphas, s, l, _config_options(cfg, A)))


def phase_table(cfg) -> pd.DataFrame:
    """phase.csv of a config: alpha_c, alpha_l and the spinodals per (omega, sigma, lam) (`attnsim phase`)."""
    return _per_sigma_lam(cfg, lambda om, s, l, A: critical_lines_theory(om, s, l, max(cfg.alphas),
                                                                          _config_options(cfg, A)))


def write_all(workdir: Path) -> list[Path]:
    """`attnsim report`: figures and summary of WORKDIR. The theory (theory.csv, phase.csv) is computed where
    missing (the generic solver for L != 2 or r, r_t != 1) and written next to the results. Returns the files written;
    raises ConfigError (one line) for a workdir without results or whose runs all diverged."""
    import sys

    from attnsim import plots
    from attnsim.config import ConfigError

    workdir = Path(workdir)
    results, cfg = read_workdir(workdir)
    if results is None:
        raise ConfigError(f"--workdir {workdir}: no results.csv (run `attnsim run` first)")
    if ok_runs(results).empty:
        raise ConfigError(f"--workdir {workdir}: all {len(results)} runs diverged (diverged=True in results.csv): "
                          "nothing to report; try a smaller lr")
    if cfg.get("task") == "histogram":
        return write_histogram(workdir, results, cfg)
    read = lambda name: pd.read_csv(workdir / name) if (workdir / name).is_file() else None  # noqa: E731
    theory, phase = read("theory.csv"), read("phase.csv")
    completed, note = complete_theory(results, theory, cfg)
    notes = [note]
    if completed is not theory:
        theory = completed
        theory.to_csv(workdir / "theory.csv", index=False)
    if phase is None:
        phase, note = compute_phase(results, cfg)
        notes.append(note)
        if phase is not None:
            phase.to_csv(workdir / "phase.csv", index=False)
    print("attnsim report: " + "; ".join(notes), file=sys.stderr)
    empirical = empirical_lines(results)
    table = summary(results, theory)
    files = plots.plot_test_error(results, workdir / "test_error.png", theory=theory, phase=phase)
    files += plots.plot_overlaps(results, workdir / "overlaps.png", theory=theory)
    if results.omega.nunique() > 1:
        files += plots.plot_phase_diagram(results, workdir / "phase_diagram.png", phase, empirical)
    if results.d.nunique() > 1 and "theory_test_error" in table:
        files += plots.plot_scaling(table, workdir / "scaling.png")
    curves = sweep.read_curves(workdir)
    if curves is not None:
        files += plots.plot_curves(curves, workdir / "learning_curves.png")
    table.to_csv(workdir / "summary.csv", index=False)
    return files + [workdir / "summary.csv", write_summary(table, workdir / "summary.md", phase, empirical, notes)]


HISTOGRAM_METRICS = ["val_accuracy", "val_loss", "train_loss", "same_token_attention", "self_attention",
                     "token_dependence", "drift", "init_distance"]


def histogram_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, n_train): the number of seeds, and mean and std over seeds of every metric (diverged runs
    left out, and counted)."""
    ok = ok_runs(results)
    g = ok.groupby(["variant", "n_train"])
    table = g.size().rename("seeds").reset_index()
    for m in HISTOGRAM_METRICS:
        stats = g[m].agg(["mean", "std"]).reset_index(drop=True)
        table[f"{m}_mean"], table[f"{m}_std"] = stats["mean"].to_numpy(), stats["std"].to_numpy()
    diverged = results.groupby(["variant", "n_train"]).diverged.sum().rename("diverged").reset_index()
    return table.merge(diverged, on=["variant", "n_train"], how="right").fillna({"seeds": 0})


def write_histogram(workdir: Path, results: pd.DataFrame, cfg: dict) -> list[Path]:
    """`attnsim report` for the histogram task: accuracy and same-token attention against n_train, attention
    maps of one run per variant, summary.csv and summary.md (mean +- std over seeds per variant and n_train)."""
    from attnsim import plots, workdir as workdir_lib

    files = plots.plot_histogram_accuracy(results, workdir / "histogram_accuracy.png", int(cfg.get("length", 10)),
                                          int(cfg.get("alphabet", 15)))
    attention = sweep.read_results(workdir / workdir_lib.ATTENTION, tasks.of(cfg).KEY_COLUMNS + ["example", "query", "key"])
    if attention is not None:
        seed = int(attention.seed.min())
        files += plots.plot_attention_maps(attention, workdir / "attention_maps.png", seed=seed)
    table = histogram_summary(results)
    table.to_csv(workdir / "summary.csv", index=False)
    lines = ["# Histogram task: mean ± std over seeds", "",
             "| variant | n_train | seeds | val accuracy | val loss | same-token attention | self-attention | "
             "token dependence | drift | init distance |", "|---|---|---|---|---|---|---|---|---|---|"]
    pm = lambda row, m, f: f"{row[m + '_mean']:{f}} ± {row[m + '_std']:{f}}" if row["seeds"] else "–"  # noqa: E731
    for _, row in table.iterrows():
        lines.append(f"| {row.variant} | {int(row.n_train)} | {int(row.seeds)} | {pm(row, 'val_accuracy', '.5f')} | "
                     f"{pm(row, 'val_loss', '.4f')} | {pm(row, 'same_token_attention', '.3f')} | "
                     f"{pm(row, 'self_attention', '.3f')} | {pm(row, 'token_dependence', '.3f')} | "
                     f"{pm(row, 'drift', '.3g')} | {pm(row, 'init_distance', '.3g')} |")
    (workdir / "summary.md").write_text("\n".join(lines) + "\n")
    return files + [workdir / "summary.csv", workdir / "summary.md"]
