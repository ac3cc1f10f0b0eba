"""Benchmark of the replica-theory solver against the authors' algorithm (both on this CPU).

(a) The full phase diagram: omega = 0, 0.01, ..., 0.45 x 100 alphas in (0, 2], both non-trivial
    branches (continuation; theory.solve's quadrature check), then alpha_c, alpha_l and the spinodals for
    every omega, the omegas split over --workers processes. Wall time includes compilation.
(b) The reference algorithm (docs/theory.md): per-node scipy.optimize.minimize of M(h) started at w, inside a
    plain damped (0.8) fixed-point loop in numpy. Timed for a fixed number of outer iterations at one point
    and extrapolated to the ~100 iterations x n_alpha points the same phase diagram would need.

Usage: python scripts/bench_theory.py [--quad-order K] [--n-omega 46] [--n-alpha 100] [--ref-iters 2]
       [--skip-reference] [--compare-refinement] [--workers N] [--no-check]

Measured numbers: docs/bench_theory.txt and the README's Theory section. Accuracy of K = 10: docs/theory.md
("Numerics") and docs/theory_convergence.txt.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from attnsim import theory


# ---------------------------------------------------------------------------------------------------
# The authors' algorithm, simplified but faithful in cost: a Python loop over nodes, scipy per node.
# ---------------------------------------------------------------------------------------------------

def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_map(x, omega, alpha, K, sigma=0.5, lam=0.01, A=theory.STANDARD_A):
    """One overlaps -> hats -> overlaps update with per-node scipy minimisation (numpy, float64)."""
    q, m, V, th = x
    rho = sigma**2
    quad = theory.quad_rule(K)
    sq = np.sqrt(q)
    vstar = np.sqrt(max(rho - th**2 / q, 0.0))
    acc = np.zeros(4)
    for (xi1, xi2), (y1, y2), wt in zip(quad.xi_Nx2, quad.y_Nx2, quad.wt_N):
        w = np.array([m + sq * xi1, -m + sq * xi2])
        t1, t2 = vstar * y1 + th / sq * xi1, vstar * y2 + th / sq * xi2
        T11 = (1 - omega) * _sig(t1 * (t1 - t2)) + omega * A[0][0]
        T22 = (1 - omega) * _sig(t2 * (t2 - t1)) + omega * A[1][1]

        def M(h):
            d = h[0] - h[1]
            return (np.sum((h - w) ** 2) / V
                    + 2 * sigma**2 * ((_sig(h[0] * d) - T11) ** 2 + (_sig(-h[1] * d) - T22) ** 2))

        h = minimize(M, w, method="BFGS").x
        f = (h - w) / V
        acc += wt * np.array([f @ f, f[0] - f[1], f[0] * y1 + f[1] * y2, f[0] * xi1 + f[1] * xi2])
    qh, mh = alpha * acc[0], alpha * acc[1]
    thh = alpha * acc[2] / vstar
    Vh = -alpha * acc[3] / sq + th * thh / q
    D = lam + sigma**2 * Vh
    return np.array([sigma**2 * (sigma**2 * qh + mh**2 + sigma**2 * rho * thh**2) / D**2, mh / D,
                     sigma**2 / D, sigma**2 * rho * thh / D])


def time_reference(K, n_iter):
    x = np.array([0.097, 0.0, 15.49, 0.138])
    t0 = time.perf_counter()
    for _ in range(n_iter):
        x = 0.2 * reference_map(x, 0.3, 1.5714, K) + 0.8 * x
    return (time.perf_counter() - t0) / n_iter


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quad-order", type=int, default=theory.DEFAULT_QUAD_ORDER)
    ap.add_argument("--n-omega", type=int, default=46, help="omegas 0, 0.01, ... (default 46: up to 0.45)")
    ap.add_argument("--n-alpha", type=int, default=100, help="alphas alpha_max * (1..n)/n")
    ap.add_argument("--alpha-max", type=float, default=2.0)
    ap.add_argument("--ref-iters", type=int, default=2, help="outer iterations of the timed reference run")
    ap.add_argument("--ref-iters-needed", type=int, default=100, help="iterations the reference needs per alpha")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                    help="processes for the phase diagram (default: the cores this process may use)")
    ap.add_argument("--no-check", action="store_true", help="skip the solver's quadrature check (theory.solve)")
    ap.add_argument("--compare-refinement", action="store_true",
                    help="also compare critical_lines' interpolated and solved refinements at 5 omegas")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    K = args.quad_order
    omegas = np.round(np.arange(args.n_omega) * 0.01, 10)

    t0 = time.perf_counter()
    lines = theory.critical_lines(omegas, quad_order=K, alpha_max=args.alpha_max, n_grid=args.n_alpha,
                                  check=not args.no_check, workers=args.workers)
    wall = time.perf_counter() - t0
    n_points = len(omegas) * args.n_alpha * 2
    print(f"== phase diagram: {len(omegas)} omegas x {args.n_alpha} alphas x 2 branches = {n_points} fixed "
          f"points + alpha_c, alpha_l, quad_order={K} ({K**4} nodes, folded to {theory.GaussHermite(K).n_nodes(True)}): "
          f"{wall:.1f} s wall (incl. compilation), {args.workers} process(es), quadrature check "
          f"{'off' if args.no_check else 'on'}")
    print(lines.to_string(float_format=lambda v: f"{v:.4f}"))

    if args.compare_refinement:
        om = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
        by = {i: theory.critical_lines(om, quad_order=K, n_grid=40, interpolate=i) for i in (True, False)}
        tab = pd.DataFrame(dict(omega=om, alpha_c_interp=by[True].alpha_c, alpha_c_solve=by[False].alpha_c,
                                alpha_l_interp=by[True].alpha_l, alpha_l_solve=by[False].alpha_l))
        print(f"\n== crossings refined on the cubic interpolant vs by solves (n_grid=40, quad_order={K})")
        print(tab.to_string(float_format=lambda v: f"{v:.5f}"))

    if not args.skip_reference:
        per_iter = time_reference(K, args.ref_iters)
        per_point = per_iter * args.ref_iters_needed
        ref_total = per_point * n_points
        print(f"\n== reference algorithm (scipy BFGS per node, numpy loop), quad_order={K}")
        table = pd.DataFrame([
            dict(what="one outer iteration", reference_s=per_iter),
            dict(what=f"one fixed point ({args.ref_iters_needed} iterations)", reference_s=per_point),
            dict(what=f"phase diagram ({n_points} fixed points)", reference_s=ref_total, attnsim_s=wall,
                 speedup=ref_total / wall),
        ])
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
