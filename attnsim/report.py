"""Tidy summaries of a workdir: results.csv (and theory.csv, phase.csv when present) -> tables.

``summary(results, theory)`` has one row per (omega, sigma, lam, alpha, who), where ``who`` is an init or
``global`` (the empirical global minimum: per seed, the init with the lowest train_loss), with the mean,
standard deviation and count over seeds of the test error, and, with a theory table, the test error of the
matching branch (semantic init -> semantic, random/positional init -> positional, global -> the theory's
global minimum) and the relative difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import sweep

POINT = ["omega", "sigma", "lam", "alpha"]
BRANCH_OF = {"semantic": "semantic", "random": "positional", "positional": "positional"}


def summary(results: pd.DataFrame, theory: pd.DataFrame | None = None) -> pd.DataFrame:
    ok = results[~results.diverged.astype(bool)]
    parts = [ok.assign(who=ok.init), sweep.global_minimum(ok).assign(who="global")]
    stats = (pd.concat(parts).groupby(POINT + ["who"])["test_error"].agg(["mean", "std", "count"])
             .reset_index().rename(columns={"mean": "test_error", "std": "test_error_std", "count": "seeds"}))
    lin = ok.groupby(POINT)["lin_test_error"].mean().rename("lin_test_error").reset_index()
    stats = stats.merge(lin, on=POINT)
    if theory is None or theory.empty:
        return stats
    th = theory[theory.converged.astype(bool)]
    glob = th[th.global_min.astype(bool)] if "global_min" in th else th.loc[th.groupby(POINT)["train_loss"].idxmin()]
    rows = [th.assign(who=init)[th.branch == branch] for init, branch in BRANCH_OF.items()]
    rows.append(glob.assign(who="global"))
    theory_te = pd.concat(rows)[POINT + ["who", "branch", "test_error"]].rename(
        columns={"test_error": "theory_test_error", "branch": "theory_branch"})
    for col in POINT:  # match float keys written by different programs
        stats[col], theory_te[col] = stats[col].round(10), theory_te[col].round(10)
    out = stats.merge(theory_te, on=POINT + ["who"], how="left")
    out["rel_diff"] = out.test_error / out.theory_test_error - 1
    return out


def write_summary(table: pd.DataFrame, path: Path, phase: pd.DataFrame | None = None) -> Path:
    """summary.md: one table per (omega, sigma, lam), plus the critical lines of phase.csv if given."""
    lines = ["# attnsim summary", "", "Test error: mean ± std over seeds (count); `global` = per seed the init "
             "with the lowest train_loss.", ""]
    for (omega, sigma, lam), df in table.groupby(["omega", "sigma", "lam"]):
        lines += [f"## ω = {omega:g}, σ = {sigma:g}, λ = {lam:g}", ""]
        if phase is not None and not phase.empty:
            p = phase[np.isclose(phase.omega, omega) & np.isclose(phase.sigma, sigma) & np.isclose(phase.lam, lam)]
            if len(p):
                lines += [f"Theory: α_c = {p.alpha_c.iloc[0]:.4g}, α_l = {p.alpha_l.iloc[0]:.4g}", ""]
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
