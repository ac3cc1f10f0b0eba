"""Our theory next to our own d = 1000 simulations at omega = 0.3 (a cross-check, no reference involved).

Semantic-init runs are compared with the semantic branch, positional-init (and random-init) runs with
the positional branch, at alpha in {0.5, 1.5, 2} (the nearest points of the authors' grid); the linear
baseline with its population optimum. Prints mean +- standard error over seeds, the theory, and the
relative difference.

    python scripts/compare_theory_sim.py --seeds 8                      # runs the simulations (~15 min)
    python scripts/compare_theory_sim.py --results runs/x/results.csv   # or reuses a results table
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from attnsim import config as config_lib, sweep, theory
from attnsim.report import BRANCH_OF as BRANCH

ALPHAS = (0.5075, 1.5025, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--results", help="a results.csv with omega = 0.3, sigma = 0.5, lam = 0.01 runs at ALPHAS")
    ap.add_argument("--quad-order", type=int, default=theory.DEFAULT_QUAD_ORDER)
    args = ap.parse_args()

    if args.results:
        res = pd.read_csv(args.results)
    else:
        cfg = config_lib.default_config()
        cfg.update(dict(d=args.d, alphas=ALPHAS, seeds=args.seeds, inits=("random", "semantic", "positional")))
        config_lib.validate(cfg)
        res = pd.concat(list(sweep.iterate(cfg, sweep.expand_grid(cfg))))
    res = res[np.isclose(res.omega, 0.3) & res.alpha.apply(lambda a: np.isclose(ALPHAS, a).any()) & ~res.diverged]
    th = theory.solve([0.3], sorted(set(res.alpha)), quad_order=args.quad_order)
    lin = float(theory.linear_baseline_error(0.3))
    rows = []
    for (alpha, init), g in res.groupby(["alpha", "init"]):
        t = th[np.isclose(th.alpha, alpha) & (th.branch == BRANCH[init])].iloc[0]
        for name, sim, ref in (("test_error", g.test_error, t.test_error), ("lin_test_error", g.lin_test_error, lin)):
            mean = sim.mean()
            rows.append(dict(alpha=alpha, init=init, branch=BRANCH[init] if name == "test_error" else "linear",
                             quantity=name, sim=mean, sim_sem=sim.std(ddof=1) / np.sqrt(len(sim)), seeds=len(sim),
                             theory=ref, rel_diff=mean / ref - 1))
    pd.set_option("display.width", 160)
    print(f"d = {int(res.d.iloc[0])}, quad_order = {args.quad_order}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.5g}"))


if __name__ == "__main__":
    main()
