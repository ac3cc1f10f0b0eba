"""Critical lines: alpha_c (the branches' train losses cross), alpha_l (the global minimum beats the linear
baseline) and the spinodals (where a branch stops existing), per omega.

``critical_lines`` solves both branches on a grid of alphas (``BranchGrid``), brackets each line there and
refines it: crossings by Illinois steps on a branch difference evaluated at any alpha by an ``Evaluator``
(``Interpolated``: the cubic interpolant of the grid values; ``Resolved``: fresh solves warm-started from
the grid), spinodals by bisection on existence.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from attnsim.theory import branches, continuation, pool
from attnsim.theory.baseline import linear_baseline_error
from attnsim.theory.check import quad_check
from attnsim.theory.continuation import overlaps_of
from attnsim.theory.domain import STANDARD_A, as_A, check_supported
from attnsim.theory.fixed_points import solve
from attnsim.theory.quadrature import DEFAULT_QUAD_ORDER, Rule, resolve

SPINODAL_RESOLUTION = 2e-3  # spinodals are bisected to this width (or n_refine steps)
ILLINOIS_STEPS_INTERPOLATED = 30  # Illinois steps on the interpolant (no solves: cheap)
BOTH = ("semantic", "positional")


def illinois(f_lo, f_hi, lo, hi, evaluate, n_iter: int):
    """Vectorised Illinois (regula falsi) root refinement of brackets [lo, hi] with f(lo) f(hi) < 0.

    evaluate(alpha_R) -> f_R (NaN where undefined: the bracket is then bisected). Returns alpha_R.
    """
    lo, hi, f_lo, f_hi = (np.array(a, np.float64) for a in (lo, hi, f_lo, f_hi))
    side = np.zeros(len(lo))
    for _ in range(n_iter):
        a = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        a = np.where(np.isfinite(a) & (a > lo) & (a < hi), a, 0.5 * (lo + hi))
        fa = evaluate(a)
        bad = ~np.isfinite(fa)
        a = np.where(bad, 0.5 * (lo + hi), a)
        if bad.any():
            fa = np.where(bad, evaluate(a), fa)
        same_lo = np.sign(fa) == np.sign(f_lo)
        # Illinois: halve the retained endpoint's value when the same side is kept twice
        f_hi = np.where(same_lo & (side == 1), f_hi / 2, f_hi)
        f_lo = np.where(~same_lo & (side == -1), f_lo / 2, f_lo)
        lo, f_lo = np.where(same_lo, a, lo), np.where(same_lo, fa, f_lo)
        hi, f_hi = np.where(same_lo, hi, a), np.where(same_lo, f_hi, fa)
        side = np.where(same_lo, 1, -1)
        f_lo = np.where(np.isfinite(f_lo), f_lo, -f_hi)
    return hi - f_hi * (hi - lo) / (f_hi - f_lo)


def cubic_at(alpha_A, f_OxA, i_R, alpha_R):
    """f_OxA[i_R] at alpha_R (R,) by cubic Lagrange interpolation through the 4 grid points around each
    alpha (linear between the two neighbours where the stencil has a NaN; NaN where those do)."""
    alpha_R = np.asarray(alpha_R, np.float64)
    j = np.clip(np.searchsorted(alpha_A, alpha_R) - 2, 0, len(alpha_A) - 4)
    idx = j[:, None] + np.arange(4)
    x_R4, y_R4 = alpha_A[idx], f_OxA[np.asarray(i_R)[:, None], idx]
    L_R4 = np.stack([np.prod([(alpha_R - x_R4[:, m]) / (x_R4[:, k] - x_R4[:, m]) for m in range(4) if m != k], axis=0)
                     for k in range(4)], axis=1)
    cubic = np.sum(L_R4 * y_R4, axis=1)
    k = np.clip(np.searchsorted(alpha_A, alpha_R) - 1, 0, len(alpha_A) - 2)
    t = (alpha_R - alpha_A[k]) / (alpha_A[k + 1] - alpha_A[k])
    linear = (1 - t) * f_OxA[i_R, k] + t * f_OxA[i_R, k + 1]
    return np.where(np.all(np.isfinite(y_R4), axis=1), cubic, linear)


def last_crossing(alpha_A, g_A):
    """Index i of the last sign change + -> - of g between alpha_A[i] and alpha_A[i+1] (finite), or -1:
    beyond it g stays <= 0 on the grid. (The first crossing can be a spurious one at tiny alpha, where the
    semantic branch is barely distinct from the positional one.)"""
    ok = np.isfinite(g_A[:-1]) & np.isfinite(g_A[1:]) & (g_A[:-1] > 0) & (g_A[1:] <= 0)
    return int(np.flatnonzero(ok)[-1]) if ok.any() else -1


def persistent_edge(exists_A) -> int:
    """Index j of the first change exists[j] != exists[j+1] after isolated points (both neighbours agree
    with each other, not with the point) are overruled by their neighbours, or -1."""
    e = np.asarray(exists_A, bool).copy()
    isolated = np.flatnonzero((e[:-2] == e[2:]) & (e[1:-1] != e[:-2])) + 1
    e[isolated] = e[isolated - 1]
    change = e[1:] != e[:-1]
    return int(np.argmax(change)) if change.any() else -1


class BranchGrid:
    """Both branches solved at every omega on the grid alpha_A (a ``solve`` frame), as tables."""

    def __init__(self, solutions: pd.DataFrame, omegas, alpha_A):
        self.solutions, self.omegas, self.alpha_A = solutions, omegas, alpha_A
        self.wide = {b: solutions[solutions.branch == b].pivot(index="omega", columns="alpha") for b in BOTH}

    @functools.cache
    def table(self, branch: str, col: str) -> np.ndarray:
        """(n_omega, n_grid) values of ``col``, NaN where the branch does not exist."""
        w = self.wide[branch]
        t = w[col].reindex(index=self.omegas, columns=self.alpha_A).to_numpy(np.float64)
        return np.where(w["converged"].reindex(index=self.omegas, columns=self.alpha_A).to_numpy(bool), t, np.nan)

    def overlaps(self, branch: str, i_om, i_al) -> np.ndarray:
        """(R, 4) grid solutions at (omegas[i_om], alpha_A[i_al]): warm starts (NaN rows where missing)."""
        g = self.solutions[self.solutions.branch == branch].set_index(["omega", "alpha"])
        return overlaps_of(g.loc[list(zip(self.omegas[i_om], self.alpha_A[i_al]))])


class Interpolated:
    """A branch's test_error and train_loss at any alpha from the cubic interpolant of the grid."""

    steps = ILLINOIS_STEPS_INTERPOLATED

    def __init__(self, grid: BranchGrid):
        self.grid = grid

    def at(self, branch: str, i_om, alpha_R, i_warm) -> pd.DataFrame:
        te, tl = (cubic_at(self.grid.alpha_A, self.grid.table(branch, c), i_om, alpha_R)
                  for c in ("test_error", "train_loss"))
        return pd.DataFrame(dict(converged=np.isfinite(te) & np.isfinite(tl), test_error=te, train_loss=tl))


class Resolved:
    """A branch solved at (omegas[i_om], alpha_R), warm from the grid column i_warm (and checked on the
    turned rule where ``check``)."""

    def __init__(self, grid: BranchGrid, rule: Rule, sigma, lam, A_2x2, check: bool, steps: int):
        self.grid, self.rule, self.sigma, self.lam, self.A_2x2 = grid, rule, sigma, lam, A_2x2
        self.check, self.steps = check, steps

    def at(self, branch: str, i_om, alpha_R, i_warm) -> pd.DataFrame:
        x0 = self.grid.overlaps(branch, i_om, i_warm)
        x0 = np.where(np.isfinite(x0), x0, np.array(branches.BRANCHES[branch].start))
        return solve_at(self.rule, self.grid.omegas[i_om], alpha_R, branch, x0, self.sigma, self.lam, self.A_2x2,
                        self.check)


def solve_at(rule: Rule, omega_R, alpha_R, branch: str, x0_Rx4, sigma, lam, A_2x2, check: bool) -> pd.DataFrame:
    """``continuation.solve_points`` for one branch, then ``check.quad_check`` where ``check``."""
    df = continuation.solve_points(rule, omega_R, alpha_R, [branch] * len(omega_R), x0_Rx4, sigma, lam, A_2x2)
    return quad_check(df, rule, A_2x2) if check else df


def _valid(frame: pd.DataFrame, col: str) -> np.ndarray:
    return np.where(frame.converged, frame[col], np.nan)


def alpha_c(grid: BranchGrid, ev) -> np.ndarray:
    """(n_omega,) alpha_c: the last + -> - crossing of train_loss_semantic - train_loss_positional on the
    grid, refined by Illinois steps on ``ev``; NaN where there is none."""
    diff = grid.table("semantic", "train_loss") - grid.table("positional", "train_loss")
    idx = np.array([last_crossing(grid.alpha_A, d) for d in diff])
    has = np.flatnonzero(idx >= 0)
    out = np.full(len(grid.omegas), np.nan)
    if len(has):
        i = idx[has]
        gap = lambda a: _valid(ev.at("semantic", has, a, i + 1), "train_loss") - _valid(
            ev.at("positional", has, a, i + 1), "train_loss")
        out[has] = illinois(diff[has, i], diff[has, i + 1], grid.alpha_A[i], grid.alpha_A[i + 1], gap, ev.steps)
    return out


def alpha_l(grid: BranchGrid, ev, lin_O, alpha_c_O) -> np.ndarray:
    """(n_omega,) alpha_l: the last + -> - crossing of the global minimum's test_error minus the linear
    baseline's. Where the same branch is the global minimum at both ends of the bracket the root is
    refined on that branch; where the global minimum switches branch inside it (at alpha_c), the drop
    happens before, at or after alpha_c and is refined on the branch it happens on. NaN where none."""
    alpha_A, om = grid.alpha_A, grid.omegas
    tl_s, tl_p = grid.table("semantic", "train_loss"), grid.table("positional", "train_loss")
    glob_s = np.where(np.isnan(tl_p), np.isfinite(tl_s), tl_s < tl_p)
    te_s, te_p = grid.table("semantic", "test_error"), grid.table("positional", "test_error")
    te_g = np.where(glob_s, te_s, te_p) - lin_O[:, None]
    out = np.full(len(om), np.nan)
    smooth = {b: [] for b in BOTH}  # refinements on one branch: (i_o, j, lo, hi, f_lo, f_hi)
    at_c = []  # (i_o, j): the global minimum switches branch inside the bracket, at the refined alpha_c
    for i_o in range(len(om)):
        j = last_crossing(alpha_A, te_g[i_o])
        if j < 0:
            continue
        if glob_s[i_o, j] == glob_s[i_o, j + 1]:  # same branch at both ends: smooth root
            b = "semantic" if glob_s[i_o, j] else "positional"
            smooth[b].append((i_o, j, alpha_A[j], alpha_A[j + 1], te_g[i_o, j], te_g[i_o, j + 1]))
        elif np.isfinite(alpha_c_O[i_o]) and alpha_A[j] < alpha_c_O[i_o] < alpha_A[j + 1]:
            at_c.append((i_o, j))
        else:
            out[i_o] = 0.5 * (alpha_A[j] + alpha_A[j + 1])  # switch without a refined alpha_c
    if at_c:
        i_c = np.array([e[0] for e in at_c])
        j_c = np.array([e[1] for e in at_c])
        gap_c = {b: _valid(ev.at(b, i_c, alpha_c_O[i_c], j_c + 1), "test_error") - lin_O[i_c] for b in BOTH}
        for k, (i_o, j) in enumerate(at_c):
            old = "semantic" if glob_s[i_o, j] else "positional"
            new = "positional" if old == "semantic" else "semantic"
            g_old, g_new = gap_c[old][k], gap_c[new][k]
            if g_old <= 0:  # the old branch already crossed before alpha_c
                smooth[old].append((i_o, j, alpha_A[j], alpha_c_O[i_o], te_g[i_o, j], g_old))
            elif g_new <= 0:  # the drop happens at the jump
                out[i_o] = alpha_c_O[i_o]
            else:
                smooth[new].append((i_o, j, alpha_c_O[i_o], alpha_A[j + 1], g_new, te_g[i_o, j + 1]))
    for b, items in smooth.items():
        if items:
            i_om, j, lo, hi, f_lo, f_hi = (np.array(c) for c in zip(*items))
            i_om, j = i_om.astype(int), j.astype(int)
            gap = lambda a, b=b, i_om=i_om, j=j: _valid(ev.at(b, i_om, a, j + 1), "test_error") - lin_O[i_om]
            out[i_om] = illinois(f_lo, f_hi, lo, hi, gap, ev.steps)
    return out


def spinodal(grid: BranchGrid, branch: str, exists_at, n_refine: int) -> np.ndarray:
    """(n_omega,) the edge of the grid region where ``branch`` exists (``persistent_edge``), bisected on
    existence (``exists_at(i_om, alpha_R, i_warm) -> bool (R,)``) to SPINODAL_RESOLUTION, at most
    n_refine steps; NaN where there is no edge in range."""
    alpha_A = grid.alpha_A  # alpha_A[0] is the grid step
    exists = np.isfinite(grid.table(branch, "train_loss"))
    out = np.full(len(grid.omegas), np.nan)
    edges = [(i, j) for i in range(len(grid.omegas)) if (j := persistent_edge(exists[i])) >= 0]
    if not edges:
        return out
    i_om = np.array([e[0] for e in edges])
    j = np.array([e[1] for e in edges])
    lo, hi = alpha_A[j].copy(), alpha_A[j + 1].copy()
    lo_exists = exists[i_om, j]
    i_warm = np.where(lo_exists, j, j + 1)
    n_steps = int(np.clip(np.ceil(np.log2(alpha_A[0] / SPINODAL_RESOLUTION)), 1, n_refine))
    for _ in range(n_steps):
        mid = 0.5 * (lo + hi)
        move_lo = exists_at(i_om, mid, i_warm) == lo_exists
        lo, hi = np.where(move_lo, mid, lo), np.where(move_lo, hi, mid)
    out[i_om] = 0.5 * (lo + hi)
    return out


def critical_lines(omegas, sigma=0.5, lam=0.01, A=STANDARD_A, quad_order=DEFAULT_QUAD_ORDER,
                   alpha_max=2.0, n_grid=40, n_refine=5, interpolate=True, check=True, workers=1) -> pd.DataFrame:
    """alpha_c(omega), alpha_l(omega) and the spinodals of the two non-trivial branches.

    Both branches are solved on the grid alpha = alpha_max * (1..n_grid)/n_grid (continuation);
    crossings are bracketed there and refined by Illinois steps on the branch differences, evaluated
    either on the cubic interpolant of the grid values (``interpolate``, no further solves) or by
    solving the needed (omega, alpha) points, warm-started from the bracket's grid solution
    (``n_refine`` batched steps); docs/theory.md compares the two.

    - alpha_c: train_loss_semantic - train_loss_positional changes sign (+ -> -, last crossing).
    - alpha_l: the global minimum's test_error falls below the linear baseline's (last crossing; equal
      to alpha_c when the drop happens at the jump of the global minimum).
    - alpha_sp_semantic / alpha_sp_positional: the edge of the grid region where the branch exists
      (first change of `converged` along alpha that persists over the next grid point too, so a single
      point that failed to converge is not an edge), refined by bisection on existence to
      SPINODAL_RESOLUTION (at most n_refine steps).
    NaN where there is no crossing / edge in (0, alpha_max].

    ``quad_order``: as for ``solve``; rules other than Gauss-Hermite are not checked. ``workers`` > 1:
    the omegas are split over that many spawned processes (``pool.in_processes``); the result does not
    depend on it. A calling script needs the usual ``if __name__ == "__main__":`` guard (spawned processes
    import it); on an accelerator keep 1 (every process would claim the device).

    Returns: DataFrame with omega, sigma, lam, alpha_c, alpha_l, alpha_sp_semantic, alpha_sp_positional,
    lin_test_error.
    """
    A_2x2 = as_A(A)
    check_supported(2, 1, 1, sigma, A_2x2, [alpha_max])
    om = np.atleast_1d(np.asarray(omegas, np.float64))
    workers = min(int(workers), len(om))
    if workers > 1:
        kw = dict(sigma=sigma, lam=lam, A=A_2x2, quad_order=quad_order, alpha_max=alpha_max, n_grid=n_grid,
                  n_refine=n_refine, interpolate=interpolate, check=check)
        pos = [np.arange(i, len(om), workers) for i in range(workers)]  # interleaved: balanced loads
        parts = pd.concat(pool.in_processes(critical_lines, [om[p] for p in pos], kw), ignore_index=True)
        return parts.iloc[np.argsort(np.concatenate(pos), kind="stable")].reset_index(drop=True)
    rule = resolve(quad_order)
    check = check and rule.checked
    alpha_A = alpha_max * np.arange(1, n_grid + 1) / n_grid
    grid = BranchGrid(solve(om, alpha_A, sigma, lam, A_2x2, rule, branches=BOTH, check=check), om, alpha_A)
    lin = np.atleast_1d(linear_baseline_error(om, sigma, A_2x2))
    ev = Interpolated(grid) if interpolate else Resolved(grid, rule, sigma, lam, A_2x2, check, n_refine)
    out = pd.DataFrame(dict(omega=om, sigma=float(sigma), lam=float(lam)))
    out["alpha_c"] = alpha_c(grid, ev)
    out["alpha_l"] = alpha_l(grid, ev, lin, out.alpha_c.to_numpy())
    for b in BOTH:
        exists_at = lambda i_om, alpha_R, i_warm, b=b: solve_at(
            rule, om[i_om], alpha_R, b, grid.overlaps(b, i_om, i_warm), sigma, lam, A_2x2, check).converged.to_numpy()
        out[f"alpha_sp_{b}"] = spinodal(grid, b, exists_at, n_refine)
    out["lin_test_error"] = lin
    return out
