"""Continuation in alpha: problems (omega, sigma, lambda, branch) followed along a list of alphas.

One compiled step (``step``: one alpha, one problem) serves everything: problems run one at a time,
because in a vmapped batch every problem pays for the union of all problems' outer iterations and full
searches (the batch-wide while_loop and cond; docs/theory.md, "Numerics"). Each alpha after the first
starts from a quadratic extrapolation of the last three converged solutions (``predict``), with the
previous h* and Anderson history.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from attnsim.theory import branches, saddle
from attnsim.theory.domain import swap_symmetric
from attnsim.theory.quadrature import Quad, Rule
from attnsim.theory.saddle import Problem

N_PLAIN_COLD = 40  # damped (saddle.PLAIN_MIX) iterations at the start of a cold start
MAX_ITER_COLD = 400
MAX_ITER_WARM = 80  # converged points need far fewer (docs/bench_theory.txt); limit cycles would spend all


def init(x0_Px4, rho_P, n_nodes: int):
    """Carry of the continuation before its first alpha: (x, h, z_H, alpha_H, n_ok, anderson), with the
    last three converged solutions (Anderson coordinates z) and their alphas, newest first."""
    P = x0_Px4.shape[0]
    z = jax.vmap(saddle.to_z)(x0_Px4, rho_P)
    return (x0_Px4, jnp.zeros((P, 2, n_nodes)), jnp.repeat(z[:, None], 3, axis=1), jnp.zeros((P, 3)),
            jnp.zeros(P, jnp.int32), jax.vmap(saddle.anderson_init)(z))


_init_jit = jax.jit(init, static_argnums=2)


def predict(z_H, al_H, n_ok, alpha):
    """Polynomial extrapolation of the last min(n_ok, 3) solutions z_H (3, 4) at al_H (3,) to alpha: the
    start is O(d alpha^3) off with three. At most two steps ahead (else constant)."""
    a0, a1, a2 = al_H[0], al_H[1], al_H[2]
    safe = lambda d: jnp.where(d == 0, 1.0, d)
    r = (alpha - a0) / safe(a0 - a1)
    linear = z_H[0] + r * (z_H[0] - z_H[1])
    L = jnp.stack([(alpha - a1) * (alpha - a2) / safe((a0 - a1) * (a0 - a2)),
                   (alpha - a0) * (alpha - a2) / safe((a1 - a0) * (a1 - a2)),
                   (alpha - a0) * (alpha - a1) / safe((a2 - a0) * (a2 - a1))])
    quadratic = L @ z_H
    z = jnp.where(n_ok >= 3, quadratic, jnp.where(n_ok >= 2, linear, z_H[0]))
    return jnp.where((jnp.abs(r) <= 2.0) & jnp.all(jnp.isfinite(z)), z, z_H[0])


def continuation_step(carry, a, alpha_P, pb_P: Problem, free_Px4, quad: Quad, cold_first, tol=saddle.TOL):
    """One alpha of the continuation of P problems. Step a = 0 starts from the carried x (a cold start
    with N_PLAIN_COLD damped iterations when ``cold_first``); each later step starts from the last
    converged solution of its problem (h* and the Anderson history too), moved by a polynomial
    predictor through the last converged ones (``predict``).
    Returns (carry, out) with out a dict of (P, ...) arrays (``saddle.solve_batch`` less h, anderson)."""
    rho_P = pb_P.sigma**2
    x_c, h_c, z_H, al_H, n_ok, and_c = carry
    first = (a == 0) & cold_first
    # (in the Anderson coordinates z, which keep q, V > 0 and theta^2 < q rho)
    z_pred = jax.vmap(predict)(z_H, al_H, n_ok, alpha_P)
    x_start = jnp.where(free_Px4 > 0, jax.vmap(saddle.from_z)(z_pred, rho_P), x_c)
    out = saddle.solve_batch(pb_P._replace(alpha=alpha_P), x_start, h_c, free_Px4, quad,
                             jnp.where(first, MAX_ITER_COLD, MAX_ITER_WARM), jnp.where(first, N_PLAIN_COLD, 0),
                             warm_h=a > 0, and0=jax.vmap(saddle.anderson_new_map)(and_c), tol=tol)
    ok = out["converged"]
    keep_ok = lambda new, old: jnp.where(ok.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    z_new = jnp.concatenate([jax.vmap(saddle.to_z)(out["x"], rho_P)[:, None], z_H[:, :2]], axis=1)
    al_new = jnp.concatenate([alpha_P[:, None], al_H[:, :2]], axis=1)
    carry = (keep_ok(out["x"], x_c), keep_ok(out["h"], h_c), keep_ok(z_new, z_H), keep_ok(al_new, al_H),
             jnp.where(ok, n_ok + 1, 0), jax.tree.map(keep_ok, out["anderson"], and_c))
    return carry, {k: v for k, v in out.items() if k not in ("h", "anderson")}


step = jax.jit(continuation_step)  # the only compiled solver: one shape per rule size, P = 1


def run_problems(rule: Rule, A_2x2, omega_P, sigma_P, lam_P, alphas_AxP, x0_Px4, free_Px4, cold: bool,
                 turned: bool = False, tol=saddle.TOL):
    """Run the compiled continuation once per problem (batch of one) along its column of alphas_AxP,
    on ``rule`` (its check rule when ``turned``). Returns dict of numpy arrays (A, P, ...)."""
    n_nodes = rule.n_nodes(swap_symmetric(A_2x2))
    outs = []
    with jax.enable_x64(True):
        for i in range(len(omega_P)):
            pb = Problem(*(jnp.asarray([v], jnp.float64) for v in (omega_P[i], sigma_P[i], lam_P[i], 0.0,
                                                                    A_2x2[0, 0], A_2x2[1, 1])))
            free = jnp.asarray(free_Px4[i:i + 1], jnp.float64)
            quad = Quad(*(jnp.asarray(a, jnp.float64) for a in rule.problem_quad(A_2x2, free_Px4[i], turned)))
            cold_ = jnp.asarray(cold)
            carry = _init_jit(jnp.asarray(x0_Px4[i:i + 1], jnp.float64), pb.sigma**2, n_nodes)
            per_alpha = []
            for a in range(alphas_AxP.shape[0]):
                # numpy arguments: jit's fast path (an eager jnp.asarray costs ~0.5 ms a call)
                carry, out = step(carry, np.int32(a), np.asarray(alphas_AxP[a, i:i + 1], np.float64), pb, free,
                                  quad, cold_, np.float64(tol))
                per_alpha.append(out)
            outs.append(jax.device_get(per_alpha))
    cast = lambda a: np.asarray(a, dtype=np.float64 if np.asarray(a).dtype.kind == "f" else np.asarray(a).dtype)
    return {k: np.stack([np.concatenate([cast(o[a][k]) for o in outs], axis=0) for a in range(alphas_AxP.shape[0])])
            for k in outs[0][0]}


def solve_points(rule: Rule, omega_P, alpha_P, branch_P, x0_Px4, sigma, lam, A_2x2, turned: bool = False,
                 tol=saddle.TOL) -> pd.DataFrame:
    """One fixed point per row (its own omega, alpha, branch), warm-started from x0_Px4 (Anderson, no
    cold phase), on ``rule`` (its check rule when ``turned``). Returns one row per point: omega, sigma,
    lam, alpha, branch, q, m, V, theta, test_error, train_loss, converged."""
    n = len(omega_P)
    omega_P = np.asarray(omega_P, np.float64).reshape(n)
    alpha_P = np.asarray(alpha_P, np.float64).reshape(n)
    branch_P = np.asarray(branch_P).reshape(n)
    out = run_problems(rule, A_2x2, omega_P, np.full(n, float(sigma)), np.full(n, float(lam)), alpha_P[None, :],
                       np.asarray(x0_Px4, np.float64).reshape(n, 4), branches.free_masks(branch_P), False, turned, tol)
    out = {k: v[0] for k, v in out.items()}
    return pd.DataFrame(dict(omega=omega_P, sigma=float(sigma), lam=float(lam), alpha=alpha_P, branch=branch_P,
                             q=out["x"][:, 0], m=out["x"][:, 1], V=out["x"][:, 2], theta=out["x"][:, 3],
                             test_error=out["test_error"], train_loss=out["train_loss"],
                             converged=out["converged"].astype(bool)))


def overlaps_of(rows: pd.DataFrame) -> np.ndarray:
    """(P, 4) overlaps (q, m, V, theta) of solution rows."""
    return rows[["q", "m", "V", "theta"]].to_numpy(np.float64)
