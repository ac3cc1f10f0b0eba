"""Fixed points over grids of (omega, sigma, lambda) x alpha x branch, and the theory at simulated points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from attnsim.theory import branches, continuation, saddle
from attnsim.theory.baseline import linear_baseline_error
from attnsim.theory.check import quad_check_branches
from attnsim.theory.continuation import overlaps_of
from attnsim.theory.domain import STANDARD_A, as_A, check_supported
from attnsim.theory.quadrature import DEFAULT_QUAD_ORDER, GaussHermite, Quad, Rule, resolve
from attnsim.theory.saddle import Problem


def problem_grid(omegas, sigma, lam, branch_names) -> pd.DataFrame:
    """Product grid of problems: DataFrame with omega, sigma, lam, branch (P rows)."""
    om = np.atleast_1d(np.asarray(omegas, np.float64))
    sg = np.atleast_1d(np.asarray(sigma, np.float64))
    lm = np.atleast_1d(np.asarray(lam, np.float64))
    for b in branch_names:
        branches.get(b)
    idx = pd.MultiIndex.from_product([om, sg, lm, list(branch_names)], names=["omega", "sigma", "lam", "branch"])
    return idx.to_frame(index=False)


def mark_global(df: pd.DataFrame) -> pd.DataFrame:
    """global_min: per (omega, sigma, lam, alpha), the converged branch with the lowest train_loss (the
    first of ties, e.g. branches that merged)."""
    keys = ["omega", "sigma", "lam", "alpha"]
    tl = df.train_loss.where(df.converged, np.inf)
    best = tl.groupby([df[k] for k in keys]).transform("min")
    df["global_min"] = df.converged & (tl == best) & np.isfinite(tl)
    df["global_min"] &= ~df[df.global_min].duplicated(keys).reindex(df.index, fill_value=False)
    return df


def solve(omegas, alphas, sigma=0.5, lam=0.01, A=STANDARD_A, quad_order=DEFAULT_QUAD_ORDER,
          branches=("semantic", "positional"), check=True) -> pd.DataFrame:
    """Fixed points for every (omega, sigma, lam) x alpha x branch (sigma, lam may be sequences).

    ``quad_order``: Gauss-Hermite nodes per Gaussian dimension; "authors" for the cubature of the
    authors' published solutions (``quadrature.Authors``: reproduces tests/data/reference/
    theory_omega0.3_*.csv, not the converged theory); or any ``quadrature.Rule`` (e.g. ``Fixed`` with
    quasi-Monte-Carlo points).

    Alphas are followed by continuation from the largest down (cold start at the largest from the
    branch's start point, ``branches.BRANCHES``). Returns one row per (omega, sigma, lam, alpha, branch)
    with columns omega, sigma, lam, alpha, branch, q, m, V, theta, test_error, train_loss, converged,
    iterations, residual, lin_test_error, global_min, quad_spread. Non-converged rows keep their last
    iterate's numbers but must not be used (converged=False: the branch does not exist there, did not
    converge, or is an artefact of the rule's nodes).

    ``check``: confirm each branch on the same rule turned by 45 degrees (``check.quad_check_branches``;
    Gauss-Hermite rules only: the others are used as they are). quad_spread is the relative change of the
    branch's signature overlap (theta, |m|) at the checked rows; rows above ``check.CHECK_TOL``, or
    without a fixed point on the turned rule, are not converged.
    """
    A_2x2 = as_A(A)
    al = np.atleast_1d(np.asarray(alphas, np.float64))
    check_supported(2, 1, 1, sigma, A_2x2, al)
    rule = resolve(quad_order)
    al_desc = np.unique(al)[::-1].copy()
    grid = problem_grid(omegas, sigma, lam, branches)
    out = _run_grid(grid, al_desc, A_2x2, rule)
    nA, P = len(al_desc), len(grid)
    df = pd.concat([grid] * nA, ignore_index=True)
    df.insert(3, "alpha", np.repeat(al_desc, P))
    x = out["x"].reshape(nA * P, 4).copy()
    # Q -> -Q maps (m, theta) -> (-m, -theta): report the representative with theta > 0 (or m >= 0).
    flip = (x[:, 3] < 0) | ((x[:, 3] == 0) & (x[:, 1] < 0))
    x[flip, 1] *= -1
    x[flip, 3] *= -1
    df["q"], df["m"], df["V"], df["theta"] = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    df["test_error"] = out["test_error"].ravel()
    df["train_loss"] = out["train_loss"].ravel()
    df["converged"] = out["converged"].ravel().astype(bool)
    df["iterations"] = out["iterations"].ravel().astype(int)
    df["residual"] = out["res"].ravel()
    df["lin_test_error"] = linear_baseline_error(df.omega.to_numpy(), df.sigma.to_numpy(), A_2x2)
    if rule.observables_order is not None:
        df = accurate_observables(df, out["EM"].ravel(), A_2x2, rule.observables_order)
    df["quad_spread"] = np.nan
    if check and rule.checked:
        df = quad_check_branches(df, rule, A_2x2)
    df = mark_global(df)
    df = df.sort_values(["omega", "sigma", "lam", "alpha", "branch"], kind="stable").reset_index(drop=True)
    return df


def _run_grid(grid: pd.DataFrame, alphas_desc, A_2x2, rule: Rule):
    """Solve every grid row along alphas_desc (cold start at the first). Returns dict of (A, P, ...) arrays."""
    P = len(grid)
    alphas_AxP = np.repeat(np.asarray(alphas_desc, np.float64)[:, None], P, axis=1)
    return continuation.run_problems(rule, A_2x2, grid.omega.to_numpy(np.float64), grid.sigma.to_numpy(np.float64),
                                     grid.lam.to_numpy(np.float64), alphas_AxP, branches.starts(grid.branch),
                                     branches.free_masks(grid.branch), True)


@jax.jit
def _observables_batch(x_Px4, h_Px2xN, pb_P: Problem, quad: Quad):
    """obs of saddle.overlap_map (full inner search) at P points."""
    return jax.vmap(lambda x, h, pb: saddle.overlap_map(x, h, pb, quad, True)[2])(x_Px4, h_Px2xN, pb_P)


def accurate_observables(df: pd.DataFrame, EM_rule, A_2x2, order: int) -> pd.DataFrame:
    """test_error and train_loss of fixed points found on a coarse rule, integrated at Gauss-Hermite order
    ``order``.

    The authors integrated their observables with finer rules than their hat updates (docs/theory.md). Here
    test_error and E[M] (the only integral in train_loss = -Phi besides the hats) are re-integrated; the
    hats stay those of the fixed point's own rule: train_loss += (alpha / 2) (E[M]_accurate - E[M]_rule).
    Returns df with the two columns replaced.
    """
    df = df.copy()
    fine = GaussHermite(order)
    with jax.enable_x64(True):
        for branch in df.branch.unique():
            rows = (df.branch == branch).to_numpy()
            quad = Quad(*(jnp.asarray(a, jnp.float64) for a in
                          fine.problem_quad(A_2x2, np.array(branches.BRANCHES[branch].free))))
            pb = Problem(*(jnp.asarray(v, jnp.float64) for v in (
                df.omega[rows], df.sigma[rows], df.lam[rows], df.alpha[rows],
                np.full(rows.sum(), A_2x2[0, 0]), np.full(rows.sum(), A_2x2[1, 1]))))
            x = jnp.asarray(overlaps_of(df[rows]), jnp.float64)
            h0 = jnp.zeros((rows.sum(), 2, len(quad.wt_N)))
            obs = _observables_batch(x, h0, pb, quad)
            df.loc[rows, "test_error"] = np.asarray(obs["test_error"])
            df.loc[rows, "train_loss"] += 0.5 * df.alpha[rows] * (np.asarray(obs["EM"]) - EM_rule[rows])
    return df


def theory_at(results: pd.DataFrame, A=STANDARD_A, quad_order=DEFAULT_QUAD_ORDER,
              branches=("semantic", "positional")) -> pd.DataFrame:
    """Join simulation results with the theory at their (omega, sigma, lam, alpha) points.

    The theory is solved once per unique point (per (sigma, lam): the product of the unique omegas and
    alphas, by continuation). Added columns: th_<branch>_<col> for col in test_error, train_loss, q, m,
    theta, converged; th_global_<col> (the converged branch with the lowest train_loss, th_global_branch)
    and th_lin_test_error.
    """
    keys = ["omega", "sigma", "lam", "alpha"]
    missing = [k for k in keys if k not in results.columns]
    if missing:
        raise ValueError(f"results lacks columns {missing}: theory_at needs {keys}")
    cols = ["test_error", "train_loss", "q", "m", "theta", "converged"]
    pieces = []
    for (sig, lm), grp in results[keys].drop_duplicates().groupby(["sigma", "lam"]):
        df = solve(np.unique(grp.omega), np.unique(grp.alpha), sig, lm, A, quad_order, branches)
        wide = df.pivot(index=keys, columns="branch", values=cols)
        wide.columns = [f"th_{b}_{c}" for c, b in wide.columns]
        g = df[df.global_min].set_index(keys)
        glob = g[cols[:-1]].add_prefix("th_global_")
        glob["th_global_branch"] = g.branch
        lin = df.drop_duplicates(keys).set_index(keys)[["lin_test_error"]].rename(
            columns={"lin_test_error": "th_lin_test_error"})
        pieces.append(wide.join(glob).join(lin).reset_index())
    theory = pd.concat(pieces, ignore_index=True)
    return results.merge(theory, on=keys, how="left")
