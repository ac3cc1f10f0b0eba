"""Quadrature convergence of the replica theory and comparison with the authors' published solutions.

Prints (1) the fixed point at omega = 0.3, alpha = 1.5714 on both branches for increasing quad_order
(Gauss-Hermite nodes per Gaussian dimension), with relative changes against the highest order;
(2) for the default (or --quad-order) the largest relative deviations per column from
tests/data/reference/theory_omega0.3_{semantic,positional}.csv (rows with alpha >= 0.1) and on which side of
the reference the converged solution sits; (3) the reference re-computed on the authors' own 144-node
cubature (quad_order="authors") and on the same rule rotated by 45 degrees; (4) alpha_c(0.3), alpha_l(0.3)
and the spinodals; (5) the same points on independent quasi-Monte-Carlo rules (the Gauss-Hermite
positional point oscillates with K; the small-alpha semantic theta is not converged on any rule here).

Usage: python scripts/theory_convergence.py [--orders 6 8 10 12 16 20] [--quad-order K] [--qmc-log2 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import theory

REF = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"
POINT = dict(omega=0.3, alpha=1.5714)
# docs/theory.md's converged point (Gauss-Hermite 10 nodes per dimension, ~1e-3)
SPEC_POINT = dict(q=0.09706, V=15.49, theta=0.13843, test_error=0.003737 / 2, train_loss=0.0031404)


def load_reference(branch: str) -> pd.DataFrame:
    """The authors' fixed points in attnsim's conventions (test_error = mse/2, train_loss = -Phi)."""
    ref = pd.read_csv(REF / f"theory_omega0.3_{branch}.csv", index_col=0)
    ref = ref.rename(columns={"lambda": "lam"})
    ref["test_error"] = ref.mse / 2
    ref["train_loss"] = -ref.Phi
    ref["m"] = ref.m.abs()
    ref["theta"] = ref.theta.abs()
    return ref.sort_values("alpha").reset_index(drop=True)


def convergence_table(orders) -> pd.DataFrame:
    rows = []
    for K in orders:
        t0 = time.perf_counter()
        df = theory.solve([POINT["omega"]], [POINT["alpha"]], quad_order=K)
        dt = time.perf_counter() - t0
        for _, r in df.iterrows():
            rows.append(dict(branch=r.branch, K=K, nodes=K**4, q=r.q, m=abs(r.m), V=r.V, theta=r.theta,
                             test_error=r.test_error, train_loss=r.train_loss, converged=r.converged,
                             residual=r.residual, seconds=round(dt, 1)))
    tab = pd.DataFrame(rows).sort_values(["branch", "K"]).reset_index(drop=True)
    for col in ("q", "V", "theta", "test_error", "train_loss"):
        top = tab.groupby("branch")[col].transform("last")
        tab[f"d_{col}"] = (tab[col] / top - 1).abs()
    return tab


def solve_on_rule(branch: str, alphas, rule: theory.Quad, cold_each: bool = False, omega: float = 0.3
                  ) -> pd.DataFrame:
    """Fixed points of one branch at omega (0.3) along alphas on any rule (``theory.Fixed``, unchecked):
    continuation from the largest alpha down (the solver's own path) or, with ``cold_each``, a cold start
    at every alpha from the branch's start point (as the authors computed theirs). One row per alpha, in
    the order given."""
    fixed = theory.Fixed(rule)
    solve = lambda al: theory.solve([omega], al, quad_order=fixed, branches=(branch,), check=False)
    df = pd.concat([solve([a]) for a in alphas]) if cold_each else solve(alphas)
    df = df.set_index("alpha").loc[list(alphas)].reset_index()
    return df.assign(m=df.m.abs(), theta=df.theta.abs())[
        ["branch", "alpha", "q", "m", "V", "theta", "test_error", "train_loss", "converged"]]


def qmc_rows(branch: str, alphas, m: int, seed: int, omega: float = 0.3) -> pd.DataFrame:
    """Fixed points along alphas (continuation) on an independent rule: 2 x 2^m scrambled-Sobol points
    mapped to Gaussians, with their antithetic mirrors (keeps the branch's pinned overlap exactly
    invariant). Not a tensor grid, so it does not share Gauss-Hermite's errors where h* jumps (nor its
    diagonal nodes); its own error is estimated by the spread over scrambles."""
    from scipy.stats import norm, qmc

    z = norm.ppf(qmc.Sobol(4, scramble=True, seed=seed).random_base2(m))
    z = np.concatenate([z, -z])
    rule = theory.Quad(z[:, :2].copy(), z[:, 2:].copy(), np.full(len(z), 1.0 / len(z)))  # pinned hats: masked by Fixed
    return solve_on_rule(branch, alphas, rule, omega=omega).assign(omega=omega, rule=f"QMC 2x2^{m}", seed=seed)


def qmc_point(branch: str, alphas, m: int, seed: int, omega: float = 0.3) -> dict:
    """The last row of qmc_rows."""
    return qmc_rows(branch, alphas, m, seed, omega).iloc[-1].to_dict()


def _rotated(rule: theory.Quad) -> theory.Quad:
    """The rule rotated by 45 degrees in the (xi_1, xi_2) and in the (y_1, y_2) plane: as exact on
    polynomials (the Gaussian weight is rotation invariant), different nodes."""
    c = np.sqrt(0.5)
    R = np.array([[c, -c], [c, c]])
    return rule._replace(xi_Nx2=rule.xi_Nx2 @ R, y_Nx2=rule.y_Nx2 @ R)


def authors_rule_comparison() -> pd.DataFrame:
    """Max relative deviation from the reference (rows alpha >= 0.1) on the authors' 144-node cubature
    (``quad_order="authors"``, a cold start per alpha as they did) and on the same rule rotated by 45
    degrees (an equally exact rule of degree 7): which digits of the reference are the rule's."""
    rows = []
    for branch in ("semantic", "positional"):
        ref = load_reference(branch)
        ref = ref[ref.alpha >= 0.1].reset_index(drop=True)
        ours = pd.concat([theory.solve([0.3], [a], quad_order=theory.AUTHORS, branches=(branch,)) for a in ref.alpha])
        rotated = solve_on_rule(branch, ref.alpha.to_numpy(), _rotated(theory.quad_rule_authors()), cold_each=True)
        for name, df in (("authors' rule", ours), ("same rule rotated 45 deg", rotated)):
            df = df.sort_values("alpha").reset_index(drop=True)
            row = dict(branch=branch, rule=name, converged=f"{int(df.converged.sum())}/{len(df)}")
            for col in ("q", "m", "theta", "V", "test_error", "train_loss"):
                if (branch == "semantic" and col == "m") or (branch == "positional" and col == "theta"):
                    continue
                dev = np.abs(df[col].abs().to_numpy() / ref[col].to_numpy() - 1)
                i = int(np.argmax(dev))
                row[col] = f"{dev[i]:.4f} @ {ref.alpha[i]:.3f}"
            rows.append(row)
    return pd.DataFrame(rows)


def reference_comparison(K: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per branch and column: max relative deviation from the reference over rows with alpha >= 0.1."""
    rows, detail = [], []
    for branch in ("semantic", "positional"):
        ref = load_reference(branch)
        ref = ref[ref.alpha >= 0.1]
        ours = theory.solve([0.3], ref.alpha.to_numpy(), quad_order=K, branches=(branch,))
        ours = ours.sort_values("alpha").reset_index(drop=True)
        ok = ours.converged.to_numpy()  # rows where the branch has a fixed point (solve's check included)
        for col in ("q", "m", "V", "theta", "test_error", "train_loss"):
            a, b = ours[col].abs().to_numpy()[ok], ref[col].to_numpy()[ok]
            absolute = (branch == "semantic" and col == "m") or (branch == "positional" and col == "theta")
            dev = np.abs(a - b) if absolute else np.abs(a / b - 1)
            i = int(np.argmax(dev))
            rows.append(dict(branch=branch, column=col, kind="abs" if absolute else "rel", max_dev=dev[i],
                             at_alpha=ref.alpha[ok].iloc[i], median_dev=np.median(dev),
                             ours_above=f"{int(np.sum(a > b))}/{len(a)}",
                             no_fixed_point=f"{int((~ok).sum())} rows, alpha <= {ref.alpha[~ok].max():.3f}"
                             if (~ok).any() else "-"))
        d = ours[["alpha", "q", "m", "V", "theta", "test_error", "train_loss", "converged", "residual"]].copy()
        d.insert(0, "branch", branch)
        d["ref_test_error"] = ref.test_error.to_numpy()
        d["ref_train_loss"] = ref.train_loss.to_numpy()
        detail.append(d)
    return pd.DataFrame(rows), pd.concat(detail, ignore_index=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, nargs="*", default=[6, 8, 10, 12, 14, 16, 20],
                    help="quad orders of the convergence table")
    ap.add_argument("--quad-order", type=int, default=theory.DEFAULT_QUAD_ORDER,
                    help="quad order of the reference comparison and alpha_c")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["convergence", "reference", "authors", "lines", "qmc"])
    ap.add_argument("--qmc-log2", type=int, default=16, help="QMC cross-check: 2 x 2^this points")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    if "convergence" not in args.skip:
        print(f"== quadrature convergence at omega=0.3, alpha=1.5714 (d_X: relative change vs the highest order)")
        print(convergence_table(args.orders).to_string(float_format=lambda v: f"{v:.6g}"))
        print("docs/theory.md's converged point (K=10, ~1e-3):", SPEC_POINT)
    if "qmc" not in args.skip:
        t0 = time.perf_counter()
        chain = [2.0, 1.7857142857142856, 1.5714285714285714]
        small = chain + [1.3571428571428572, 1.1281818181818182, 0.9045454545454545, 0.7927272727272727,
                         0.6809090909090909, 0.5690909090909091]
        rows = [qmc_point(b, chain, args.qmc_log2, seed) for b in ("semantic", "positional") for seed in (0, 1, 2)]
        print(f"\n== cross-check on scrambled-Sobol rules ({time.perf_counter() - t0:.1f} s): the Gauss-Hermite "
              "positional point oscillates around these values (K = 10 low, K = 16 high)")
        print(pd.DataFrame(rows).to_string(float_format=lambda v: f"{v:.6g}"))
        t0 = time.perf_counter()
        rows = pd.concat([qmc_rows("semantic", small, args.qmc_log2 - 1, seed) for seed in (0, 1)]
                         + [qmc_rows("positional", [2.0, 1.5, 1.0], args.qmc_log2 - 1, seed, omega=0.0)
                            for seed in (0, 1)])
        rows = rows[(rows.alpha < 1.0) | (rows.omega == 0.0)]
        plain = pd.concat([theory.solve([0.3], small, quad_order=args.quad_order, branches=("semantic",), check=c)
                           .assign(check=c) for c in (False, True)] +
                          [theory.solve([0.0], [2.0, 1.5, 1.0], quad_order=args.quad_order, branches=("positional",),
                                        check=c).assign(check=c) for c in (False, True)])
        plain = plain[(plain.alpha < 1.0) | (plain.omega == 0.0)]
        print(f"\n== where a branch ends ({time.perf_counter() - t0:.1f} s): semantic at omega = 0.3, alpha < 1, and "
              "positional at omega = 0, on QMC rules (converged False or theta, |m| -> 0: collapsed) and on the "
              f"plain K = {args.quad_order} rule without and with solve's check")
        cols = ["omega", "alpha", "branch", "q", "m", "theta", "test_error", "train_loss", "converged"]
        print(rows[["rule", "seed"] + cols].to_string(index=False, float_format=lambda v: f"{v:.5g}"))
        print(plain[["check"] + cols + ["quad_spread"]].to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    if "reference" not in args.skip:
        t0 = time.perf_counter()
        summary, detail = reference_comparison(args.quad_order)
        print(f"\n== deviation from the authors' files, quad_order={args.quad_order} "
              f"({time.perf_counter() - t0:.1f} s), on the rows where our branch has a fixed point; ours_above = "
              "rows where |ours| > reference; no_fixed_point: reference rows where ours has none")
        print(summary.to_string(float_format=lambda v: f"{v:.4g}"))
        print(detail.to_string(float_format=lambda v: f"{v:.6g}"))
    if "authors" not in args.skip:
        t0 = time.perf_counter()
        tab = authors_rule_comparison()
        print(f"\n== the authors' files re-computed on their own cubature ({time.perf_counter() - t0:.1f} s): "
              "max relative deviation @ alpha, rows alpha >= 0.1 (test_error, train_loss: their observables' "
              "finer rules are replaced by Gauss-Hermite 16 on the first line; the rotated rule's are its own)")
        print(tab.fillna("(pinned)").to_string(index=False))
    if "lines" not in args.skip:
        t0 = time.perf_counter()
        lines = theory.critical_lines([0.3], quad_order=args.quad_order)
        print(f"\n== critical lines at omega=0.3, quad_order={args.quad_order} ({time.perf_counter() - t0:.1f} s)")
        print(lines.to_string(float_format=lambda v: f"{v:.5f}"))


if __name__ == "__main__":
    main()
