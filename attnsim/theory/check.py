"""The quadrature check: a fixed point counts only if the same rule turned by 45 degrees has it too.

A fixed point that only one of two equally exact rules has is an artefact of that rule's nodes (h* jumps
between basins, which tensor rules resolve poorly; docs/theory.md, "Numerics"). ``quad_check`` re-solves
given rows on the check rule; ``quad_check_branches`` does it along whole branches at a fraction of the
cost. Both take solutions and return them with ``quad_spread`` filled and ``converged`` narrowed; they are
called explicitly by ``fixed_points.solve`` and ``critical.critical_lines``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnsim.theory import branches, continuation
from attnsim.theory.continuation import overlaps_of
from attnsim.theory.quadrature import Rule

CHECK_TOL = 0.25  # a fixed point counts only if its signature overlap moves less than this on the check rule
CHECK_STRIDE = 8  # quad_check_branches: every this many alphas of a branch by continuation, the rest in between
CHECK_SOLVE_TOL = 1e-6  # stopping tolerance of the check's solves (it compares overlaps to CHECK_TOL)


def spread(s0, s_check, check_converged):
    """quad_spread: relative change of the signature overlap s0 on the check rule (inf where the check
    rule has no fixed point)."""
    return np.where(check_converged, np.abs(s_check - s0) / np.maximum(np.abs(s0), 1e-300), np.inf)


def quad_check(df: pd.DataFrame, rule: Rule, A_2x2) -> pd.DataFrame:
    """Every converged row re-solved on the check rule, warm from its solution: quad_spread = relative
    change of the branch's signature overlap (inf where the branch does not converge or collapses there),
    and converged &= quad_spread <= CHECK_TOL."""
    df = df.copy()
    spread_ = np.full(len(df), np.nan)
    ok = df.converged.to_numpy(bool)
    for (sig, lm), pos in df[ok].groupby(["sigma", "lam"]).indices.items():
        i = np.flatnonzero(ok)[pos]
        rows = df.iloc[i]
        turned = continuation.solve_points(rule, rows.omega, rows.alpha, rows.branch, overlaps_of(rows), sig, lm,
                                           A_2x2, turned=True, tol=CHECK_SOLVE_TOL)
        spread_[i] = spread(branches.signature(rows), branches.signature(turned), turned.converged)
    df["quad_spread"] = spread_
    df["converged"] = ok & (spread_ <= CHECK_TOL)
    return df


def quad_check_branches(df: pd.DataFrame, rule: Rule, A_2x2) -> pd.DataFrame:
    """``quad_check`` along each branch (rows of one omega, sigma, lam, branch) at a fraction of its cost.

    Every CHECK_STRIDE-th alpha of each branch (and its two ends) is solved again on the check rule by
    continuation (all branches as one batch of problems, the largest alpha started from the plain rule's
    solution): a row passes when both rules converge there and its signature overlap moves less than
    CHECK_TOL. The outermost rows where the plain rule has the branch are checked on their own if no
    coarse row is there. Rows between two checked rows inherit their verdict when the two agree; between
    two that disagree the switch is found by bisection, checking single rows (warm from their solution).
    quad_spread is filled at the checked rows.
    """
    df = df.copy()
    verdict = {}  # row label -> (passes, spread)
    for (sig, lm), grp in df.groupby(["sigma", "lam"]):
        problems = list(grp.groupby(["omega", "branch"]))
        alphas = np.unique(grp.alpha)[::-1]  # descending, as the continuation runs
        coarse = alphas[np.unique(np.r_[np.arange(0, len(alphas), CHECK_STRIDE), len(alphas) - 1])]
        at = {a: k for k, a in enumerate(coarse)}
        x0 = np.empty((len(problems), 4))
        for p, ((om, br), rows) in enumerate(problems):
            top = rows.loc[[rows.alpha.idxmax()]]
            x0[p] = overlaps_of(top)[0] if top.converged.iloc[0] else branches.BRANCHES[br].start
        omega_P = np.array([om for (om, _), _ in problems])
        free = branches.free_masks([br for (_, br), _ in problems])
        out = continuation.run_problems(rule, A_2x2, omega_P, np.full(len(problems), sig),
                                        np.full(len(problems), lm), np.repeat(coarse[:, None], len(problems), axis=1),
                                        x0, free, True, turned=True, tol=CHECK_SOLVE_TOL)
        for p, ((om, br), rows) in enumerate(problems):
            rows = rows.sort_values("alpha", ascending=False)
            x_rot = out["x"][:, p]
            sig_rot = branches.signature(pd.DataFrame(dict(branch=br, q=x_rot[:, 0], m=x_rot[:, 1], theta=x_rot[:, 3])))
            labels, ok = rows.index.to_numpy(), rows.converged.to_numpy(bool)
            known = np.full(len(rows), -1)  # -1 unknown, 0 fails, 1 passes
            for j, (lab, a) in enumerate(zip(labels, rows.alpha)):
                if a in at and ok[j]:
                    k = at[a]
                    sp = float(spread(branches.signature(rows.iloc[[j]])[0], sig_rot[k], out["converged"][k, p]))
                    verdict[lab] = (sp <= CHECK_TOL, sp)
                    known[j] = int(sp <= CHECK_TOL)

            def check_row(j):
                chk = quad_check(rows.iloc[[j]], rule, A_2x2).iloc[0]
                verdict[labels[j]] = (bool(chk.converged), chk.quad_spread)
                known[j] = int(chk.converged)

            # the outermost rows the plain rule has are marks too (a coarse row there may lack the branch)
            for j in np.flatnonzero(ok)[[0, -1]] if ok.any() else []:
                if known[j] < 0:
                    check_row(j)
            # rows between marks: inherit the verdict, or bisect for the switch between disagreeing ones
            marks = np.flatnonzero(known >= 0)
            for a_, b_ in zip(marks[:-1], marks[1:]):
                inner = np.array([j for j in range(a_ + 1, b_) if ok[j]], int)
                if known[a_] == known[b_]:
                    known[inner] = known[a_]
                    continue
                lo, hi = -1, len(inner)  # inner[:lo + 1] share a_'s verdict, inner[hi:] b_'s
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    check_row(inner[mid])
                    lo, hi = (mid, hi) if known[inner[mid]] == known[a_] else (lo, mid)
                known[inner[:lo + 1]] = known[a_]
                known[inner[hi:]] = known[b_]
            df.loc[labels[ok & (known == 0)], "converged"] = False
    for lab, (_, sp) in verdict.items():
        df.loc[lab, "quad_spread"] = sp
    return df
