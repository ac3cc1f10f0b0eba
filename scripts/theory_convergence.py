"""Quadrature convergence of the replica theory and comparison with the authors' published solutions.

Prints (1) the fixed point at omega = 0.3, alpha = 1.5714 on both branches for increasing quad_order
(Gauss-Hermite nodes per Gaussian dimension), with relative changes against the highest order;
(2) for the default (or --quad-order) the largest relative deviations per column from
shared/reference/theory_omega0.3_{semantic,positional}.csv (rows with alpha >= 0.1) and on which side of
the reference the converged solution sits; (3) alpha_c(0.3), alpha_l(0.3) and the spinodals.

Usage: python scripts/theory_convergence.py [--orders 6 8 10 12 16 20] [--quad-order K]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import theory

REF = Path(__file__).resolve().parents[2] / "shared" / "reference"
POINT = dict(omega=0.3, alpha=1.5714)
# THEORY.md's converged point (Gauss-Hermite 10 nodes per dimension, ~1e-3)
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


def reference_comparison(K: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per branch and column: max relative deviation from the reference over rows with alpha >= 0.1."""
    rows, detail = [], []
    for branch in ("semantic", "positional"):
        ref = load_reference(branch)
        ref = ref[ref.alpha >= 0.1]
        ours = theory.solve([0.3], ref.alpha.to_numpy(), quad_order=K, branches=(branch,))
        ours = ours.sort_values("alpha").reset_index(drop=True)
        for col in ("q", "m", "V", "theta", "test_error", "train_loss"):
            a, b = ours[col].abs().to_numpy(), ref[col].to_numpy()
            absolute = (branch == "semantic" and col == "m") or (branch == "positional" and col == "theta")
            dev = np.abs(a - b) if absolute else np.abs(a / b - 1)
            i = int(np.argmax(dev))
            rows.append(dict(branch=branch, column=col, kind="abs" if absolute else "rel", max_dev=dev[i],
                             at_alpha=ref.alpha.iloc[i], median_dev=np.median(dev),
                             ours_above=f"{int(np.sum(a > b))}/{len(a)}"))
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
    ap.add_argument("--skip", nargs="*", default=[], choices=["convergence", "reference", "lines"])
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    if "convergence" not in args.skip:
        print(f"== quadrature convergence at omega=0.3, alpha=1.5714 (d_X: relative change vs the highest order)")
        print(convergence_table(args.orders).to_string(float_format=lambda v: f"{v:.6g}"))
        print("THEORY.md's converged point (K=10, ~1e-3):", SPEC_POINT)
    if "reference" not in args.skip:
        t0 = time.perf_counter()
        summary, detail = reference_comparison(args.quad_order)
        print(f"\n== deviation from the authors' files, quad_order={args.quad_order} "
              f"({time.perf_counter() - t0:.1f} s); ours_above = rows where |ours| > reference")
        print(summary.to_string(float_format=lambda v: f"{v:.4g}"))
        print(detail.to_string(float_format=lambda v: f"{v:.6g}"))
    if "lines" not in args.skip:
        t0 = time.perf_counter()
        lines = theory.critical_lines([0.3], quad_order=args.quad_order)
        print(f"\n== critical lines at omega=0.3, quad_order={args.quad_order} ({time.perf_counter() - t0:.1f} s)")
        print(lines.to_string(float_format=lambda v: f"{v:.5f}"))


if __name__ == "__main__":
    main()
