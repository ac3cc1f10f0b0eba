"""The generic theory against attnsim's own simulations: r = 2 (configs/rank2_validation.py) and L = 3, r = 1
(configs/L3.py), d = 1000, 4 seeds, every init.

    attnsim run --config configs/rank2_validation.py --workdir runs/rank2_validation
    attnsim run --config configs/L3.py --workdir runs/L3
    python scripts/validate_generic.py --rank2 runs/rank2_validation --L3 runs/L3 [--samples 16384] [--out docs/validation_generic.md]

Solves every branch (r = 2: semantic, positional, mixed, trivial; L = 3: semantic, positional, trivial) at the
simulated points on N scrambled-Sobol points (one point set per model, shared by all branches), caches the
theory next to each workdir (theory_generic_N.csv), and writes markdown tables: per (omega, alpha) the
theory's global minimum (branch, test_error) next to the simulations' empirical global minimum (per seed the
init with the lowest train_loss: mean +- s.e.m. over seeds, and which inits won), their relative
difference, and per init the simulation next to the branch it starts on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import config as config_lib, sweep, theory

BRANCH_OF_INIT = {"semantic": "semantic", "positional": "positional", "mixed": "mixed", "random": None}


def theory_for(workdir: Path, branches, n_samples: int) -> tuple[pd.DataFrame, float]:
    """The generic theory at the (omega, alpha) of the workdir's config (cached in the workdir); (table, seconds)."""
    cache = workdir / f"theory_generic_{n_samples}.csv"
    if cache.is_file():
        return pd.read_csv(cache), float("nan")
    import json

    conf = json.loads((workdir / "config.json").read_text())["config"]
    omegas = conf["omegas"] or [conf["omega"]]
    A = np.asarray(config_lib.NAMED_A[conf["A"]] if isinstance(conf["A"], str) else conf["A"], np.float64)
    t0 = time.perf_counter()
    th = theory.solve_general(omegas, conf["alphas"], int(conf["L"]), int(conf["r"]),
                              int(conf["r_t"]), float(conf["sigma"]), float(conf["lam"]), A, branches=branches,
                              n_samples=n_samples)
    seconds = time.perf_counter() - t0
    th.to_csv(cache, index=False)
    return th, seconds


def tables(workdir: Path, th: pd.DataFrame) -> str:
    res = sweep.read_results(workdir / "results.csv")
    res = res[~res.diverged.astype(bool)]
    keys = ["omega", "alpha"]
    gmin = sweep.global_minimum(res)
    lines = [f"| ω | α | theory: global min (test_error) | other converged branches (train_loss ordered) | "
             f"simulation: global min, mean ± s.e.m. (seeds) | inits that won | rel. diff |",
             "|---|---|---|---|---|---|---|"]
    worst = 0.0
    for (om, al), g in gmin.groupby(keys):
        t = th[np.isclose(th.omega, om) & np.isclose(th.alpha, al) & th.converged.astype(bool)].sort_values("train_loss")
        best = t.iloc[0] if len(t) else None
        sim, sem = g.test_error.mean(), g.test_error.std(ddof=1) / np.sqrt(len(g))
        won = ", ".join(f"{k} ×{v}" for k, v in g.init.value_counts().items())
        others = ", ".join(f"{r.branch} {r.train_loss:.5g}" for r in t.iloc[1:].itertuples())
        rel = sim / best.test_error - 1 if best is not None else np.nan
        worst = max(worst, abs(rel)) if np.isfinite(rel) else worst
        lines.append(f"| {om:g} | {al:g} | {best.branch if best is not None else '–'} "
                     f"({best.test_error:.5g}) | {others} | {sim:.5g} ± {sem:.2g} ({len(g)}) | {won} | {rel:+.1%} |"
                     if best is not None else f"| {om:g} | {al:g} | none converged | | {sim:.5g} ± {sem:.2g} | {won} | – |")
    lines += ["", f"Largest |relative difference| of the global minimum: {worst:.1%}.", "",
              "Per init (simulation mean ± s.e.m. of test_error; train_loss) next to the branch it starts on:", "",
              "| ω | α | init | simulation test_error | simulation train_loss | theory branch | theory test_error | "
              "theory train_loss | rel. diff |", "|---|---|---|---|---|---|---|---|---|"]
    for (om, al, init), g in res.groupby(keys + ["init"]):
        br = BRANCH_OF_INIT.get(init)
        t = th[np.isclose(th.omega, om) & np.isclose(th.alpha, al) & (th.branch == br) & th.converged.astype(bool)]
        te, sem = g.test_error.mean(), g.test_error.std(ddof=1) / np.sqrt(len(g))
        row = f"| {om:g} | {al:g} | {init} | {te:.5g} ± {sem:.2g} | {g.train_loss.mean():.5g} |"
        if len(t):
            r = t.iloc[0]
            row += f" {br} | {r.test_error:.5g} | {r.train_loss:.5g} | {te / r.test_error - 1:+.1%} |"
        else:
            row += f" {br or '–'} | – | – | – |"
        lines.append(row)
    return "\n".join(lines)


def finite_size(wd_small: Path, wd_large: Path, th: pd.DataFrame) -> str:
    """The empirical global minimum at two d (the same points, every init of the larger run) and its linear
    extrapolation in 1/d, next to the theory's global minimum."""
    def gmin(wd):
        res = sweep.read_results(wd / "results.csv")
        res = res[~res.diverged.astype(bool)]
        g = sweep.global_minimum(res).groupby(["omega", "alpha"]).test_error
        return g.mean(), g.sem(), int(res.d.iloc[0])
    (m1, s1, d1), (m2, s2, d2) = gmin(wd_small), gmin(wd_large)
    lines = [f"| ω | α | simulation d = {d1} | simulation d = {d2} | extrapolated to 1/d → 0 | theory | "
             f"rel. diff d = {d1} / {d2} / extrapolated |", "|---|---|---|---|---|---|---|"]
    for (om, al), v2 in m2.items():
        v1 = m1.loc[(om, al)]
        ext = (d2 * v2 - d1 * v1) / (d2 - d1)  # a + b / d through both points
        t = th[np.isclose(th.omega, om) & np.isclose(th.alpha, al) & th.global_min.astype(bool)]
        te = t.test_error.iloc[0] if len(t) else np.nan
        lines.append(f"| {om:g} | {al:g} | {v1:.5g} ± {s1.loc[(om, al)]:.2g} | {v2:.5g} ± {s2.loc[(om, al)]:.2g} | "
                     f"{ext:.5g} | {te:.5g} ({t.branch.iloc[0] if len(t) else '–'}) | "
                     f"{v1 / te - 1:+.1%} / {v2 / te - 1:+.1%} / {ext / te - 1:+.1%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank2", type=Path, help="workdir of configs/rank2_validation.py")
    ap.add_argument("--L3", type=Path, help="workdir of configs/L3.py")
    ap.add_argument("--rank2-large-d", type=Path, help="workdir of the same r = 2 points at a larger d (finite size)")
    ap.add_argument("--samples", type=int, default=2**14)
    ap.add_argument("--theory-only", action="store_true", help="solve and cache the theory; no tables")
    ap.add_argument("--out", type=Path, help="write the markdown here (default: print)")
    args = ap.parse_args()
    parts = []
    for name, wd, branches in (("r = 2, r_t = 1, L = 2", args.rank2, ("semantic", "positional", "mixed", "trivial")),
                               ("L = 3, r = r_t = 1", args.L3, ("semantic", "positional", "trivial"))):
        if wd is None:
            continue
        th, seconds = theory_for(wd, branches, args.samples)
        print(f"{name}: theory at {len(th)} points in {seconds:.0f} s", flush=True)
        if not args.theory_only:
            parts.append(f"## {name}\n\nTheory: {args.samples} QMC points, {len(th)} (ω, α, branch) points"
                         + (f" in {seconds:.0f} s" if np.isfinite(seconds) else " (cached)") + ".\n\n" + tables(wd, th))
            if wd is args.rank2 and args.rank2_large_d is not None:
                parts.append("### Finite size: the global minimum at two d\n\n" + finite_size(wd, args.rank2_large_d, th))
    if parts:
        text = "\n\n".join(parts) + "\n"
        if args.out:
            args.out.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
