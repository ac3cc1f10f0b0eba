"""The saddle-point iteration of the L = 2, rank-1 theory: overlaps -> hats -> overlaps, Anderson-accelerated.

``overlap_map`` is one application of the fixed-point map at every quadrature node of a rule (the inner
problem from ``inner``); ``solve_batch`` iterates it for P problems at once under ``lax.while_loop``, with
full inner searches periodically and before a fixed point is accepted. Overlaps x = (q, m, V, theta),
hats (qh, mh, Vh, thh); docs/theory.md, "Fixed-point equations". Traceable; call under jit and x64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from attnsim.theory import inner
from attnsim.theory.inner import Node
from attnsim.theory.quadrature import Quad

TOL = 1e-8  # stopping tolerance on the relative fixed-point residual
ACCEPT_TOL = 1e-7  # converged when the residual is below this (stops at TOL; basin-switch limit cycles)
COLLAPSE = 1e-4  # a branch whose normalised signature overlap falls below this has collapsed
FULL_EVERY = 20  # full inner search every this many outer iterations
FULL_EVERY_WARM = 50  # the same along a continuation (h* warm from the previous alpha; accepted points
# always end with a full search)
ANDERSON_M = 5  # Anderson history
ANDERSON_BETA = 0.6  # Anderson mixing
PLAIN_MIX = 0.2  # the authors' damping, used for the first n_plain iterations of a cold start


class Problem(NamedTuple):
    """Scalars of one problem (a batch of them under vmap): omega, sigma, lam, alpha, A_11, A_22."""

    omega: jnp.ndarray
    sigma: jnp.ndarray
    lam: jnp.ndarray
    alpha: jnp.ndarray
    A11: jnp.ndarray
    A22: jnp.ndarray


def nodes(x_4, pb: Problem, quad: Quad):
    """Fields at every node for overlaps x_4 = (q, m, V, theta): (Node, sqrt q, V*)."""
    q, m, _, th = x_4[0], x_4[1], x_4[2], x_4[3]
    rho = pb.sigma**2
    sq = jnp.sqrt(jnp.maximum(q, 1e-300))
    vstar = jnp.sqrt(jnp.maximum(rho - th**2 / jnp.maximum(q, 1e-300), 0.0))
    xi, y = quad.xi_Nx2, quad.y_Nx2
    w1, w2 = m + sq * xi[:, 0], -m + sq * xi[:, 1]
    t1 = vstar * y[:, 0] + (th / sq) * xi[:, 0]
    t2 = vstar * y[:, 1] + (th / sq) * xi[:, 1]
    a1 = t1 * (t1 - t2)
    T11 = (1 - pb.omega) * jax.nn.sigmoid(a1) + pb.omega * pb.A11
    T22 = (1 - pb.omega) * jax.nn.sigmoid(-t2 * (t1 - t2)) + pb.omega * pb.A22
    return Node(w1, w2, T11, T22), sq, vstar


def overlap_map(x_4, h_2xN, pb: Problem, quad: Quad, full: bool):
    """One application of the fixed-point map.

    Args:
      x_4: (q, m, V, theta), float64. h_2xN: warm start of h* (one of the starts when ``full``).
      full: bool (traced or not): the global search (``inner.inner_full``) instead of Newton from h_2xN.
    Returns:
      (x_new_4, h_2xN, obs) with obs = dict(hats_4, test_error, train_loss, EM = E[M(h*)]) evaluated at x_4.
    """
    q, m, V, th = x_4[0], x_4[1], x_4[2], x_4[3]
    sigma2 = pb.sigma**2
    rho = sigma2
    nd, sq, vstar = nodes(x_4, pb, quad)
    # full: inner_full; else Newton from the warm start (one float64 Newton loop in the compiled code)
    start = lax.cond(full, lambda: inner.best_start(nd, V, sigma2, h_2xN), lambda: (h_2xN[0], h_2xN[1]))
    n_newton = jnp.where(full, inner.NEWTON_FULL - inner.NEWTON_SCREEN, inner.NEWTON_WARM)
    h1, h2 = inner.newton(*start, nd, V, sigma2, n_newton)
    wt = quad.wt_N
    xi, y = quad.xi_Nx2, quad.y_Nx2
    f1, f2 = (h1 - nd.w1) / V, (h2 - nd.w2) / V
    # A node with w_1 = w_2 and T_11 = T_22 is symmetric under h -> (h_2, h_1): if h* is not, both are
    # global minimisers. Average the integrands over the pair (the tie has measure zero in the continuum
    # but not on a tensor grid, where an arbitrary pick would break the symmetries of the rule).
    tie = (jnp.abs(nd.w1 - nd.w2) < 1e-12) & (jnp.abs(nd.T11 - nd.T22) < 1e-12)
    f_bar = 0.5 * (f1 + f2)
    f_dot = lambda u: jnp.where(tie, f_bar * (u[:, 0] + u[:, 1]), f1 * u[:, 0] + f2 * u[:, 1])
    al = pb.alpha
    qh = al * jnp.sum(wt * (f1 * f1 + f2 * f2))
    mh = al * jnp.sum(wt * jnp.where(tie, 0.0, f1 - f2))
    thh = al * jnp.sum(wt * f_dot(y)) / jnp.maximum(vstar, 1e-300)
    mh, thh = mh * quad.hat_mask_4[1], thh * quad.hat_mask_4[3]  # zero by a symmetry of a folded rule
    Vh = -al * jnp.sum(wt * f_dot(xi)) / sq + th * thh / jnp.maximum(q, 1e-300)
    D = jnp.maximum(pb.lam + sigma2 * Vh, 1e-12)
    quad_term = sigma2 * qh + mh**2 + sigma2 * rho * thh**2
    x_new = jnp.stack([sigma2 * quad_term / D**2, mh / D, sigma2 / D, sigma2 * rho * thh / D])
    EM = jnp.sum(wt * inner.M(h1, h2, nd, V, sigma2))
    phi = 0.5 * (Vh * q - qh * V) - m * mh - th * thh + 0.5 * quad_term / D - 0.5 * al * EM
    test_error = 0.5 * jnp.sum(wt * inner.loss(nd.w1, nd.w2, nd.T11, nd.T22, sigma2))
    obs = dict(hats=jnp.stack([qh, mh, Vh, thh]), test_error=test_error, train_loss=-phi, EM=EM)
    return x_new, jnp.stack([h1, h2], axis=0), obs


def residual(x_4, xn_4, rho):
    """Relative fixed-point residual: |dq|/q, |dV|/V, |dm|/sqrt(q + m^2), |dtheta|/sqrt(q rho)."""
    q, m, V = x_4[0], x_4[1], x_4[2]
    scale = jnp.stack([q, jnp.sqrt(q + m * m), V, jnp.sqrt(q * rho)])
    r = jnp.max(jnp.abs(xn_4 - x_4) / jnp.maximum(scale, 1e-300))
    return jnp.where(jnp.isfinite(r), r, jnp.inf)


# Anderson acceleration in z = (log q, m, log V, atanh(theta / sqrt(q rho))): q, V > 0 and
# theta^2 < q rho (V* real) are built in.
def to_z(x, rho):
    c = jnp.clip(x[3] / jnp.sqrt(jnp.maximum(x[0] * rho, 1e-300)), -1 + 1e-12, 1 - 1e-12)
    return jnp.stack([jnp.log(jnp.maximum(x[0], 1e-300)), x[1], jnp.log(jnp.maximum(x[2], 1e-300)), jnp.arctanh(c)])


def from_z(z, rho):
    q = jnp.exp(z[0])
    return jnp.stack([q, z[1], jnp.exp(z[2]), jnp.sqrt(q * rho) * jnp.tanh(z[3])])


class Anderson(NamedTuple):
    """Anderson history: the last ANDERSON_M secant pairs (rows beyond n are zero, which is harmless in
    the least-squares problem) and the previous iterate, if any (``has_prev``)."""

    dz_Mx4: jnp.ndarray
    dg_Mx4: jnp.ndarray
    z_prev: jnp.ndarray
    g_prev: jnp.ndarray
    n: jnp.ndarray  # secant pairs pushed so far (int)
    has_prev: jnp.ndarray  # bool: z_prev, g_prev belong to the current map


def anderson_init(z):
    M = ANDERSON_M
    return Anderson(jnp.zeros((M, 4)), jnp.zeros((M, 4)), z, jnp.zeros(4), jnp.zeros((), jnp.int32),
                     jnp.zeros((), bool))


def anderson_step(st: Anderson, z, g):
    """Type-II Anderson update z + beta g - (dZ + beta dG) gamma, gamma = argmin |g - dG gamma|."""
    slot = st.n % ANDERSON_M
    dz = jnp.where(st.has_prev, st.dz_Mx4.at[slot].set(z - st.z_prev), st.dz_Mx4)
    dg = jnp.where(st.has_prev, st.dg_Mx4.at[slot].set(g - st.g_prev), st.dg_Mx4)
    n = st.n + st.has_prev.astype(jnp.int32)
    gram = dg @ dg.T
    reg = 1e-10 * (jnp.trace(gram) + 1e-30)
    gamma = jnp.linalg.solve(gram + reg * jnp.eye(ANDERSON_M), dg @ g)
    beta = ANDERSON_BETA
    step = beta * g - (dz + beta * dg).T @ gamma
    step = jnp.where(n < 2, beta * g, step)  # plain mixing until the history has two entries
    step = jnp.clip(step, -0.5, 0.5)  # guard against wild extrapolation (z is log-scaled / O(0.1))
    step = jnp.where(jnp.all(jnp.isfinite(step)), step, beta * g)
    return Anderson(dz, dg, z, g, n, jnp.ones((), bool)), z + step


def anderson_new_map(st: Anderson) -> Anderson:
    """Keep the secant history for a nearby map (the next alpha): its Jacobian differs by O(d alpha), so
    the first step there is already quasi-Newton; only the previous iterate is forgotten."""
    return st._replace(has_prev=jnp.zeros((), bool))


class _State(NamedTuple):
    x_Px4: jnp.ndarray
    h_Px2xN: jnp.ndarray
    and_st: Anderson
    res_P: jnp.ndarray  # residual of the last evaluation (the iterated, free overlaps)
    res_free_P: jnp.ndarray  # the same including the pinned overlaps (reported; branch existence)
    last_full_P: jnp.ndarray  # was the last evaluation a full search
    done_P: jnp.ndarray
    it_P: jnp.ndarray
    it: jnp.ndarray
    n_full: jnp.ndarray  # batch-wide full searches done (profiling)
    obs: dict


def signature_ok(x_Px4, free_Px4, rho_P):
    """Branch signature: a free theta (semantic) must stay away from 0, a free m on a branch with pinned
    theta (positional) too; normalised by the natural scales sqrt(q rho) and sqrt(q + m^2)."""
    q, m, th = x_Px4[:, 0], x_Px4[:, 1], x_Px4[:, 3]
    th_ok = jnp.abs(th) / jnp.sqrt(jnp.maximum(q * rho_P, 1e-300)) > COLLAPSE
    m_ok = jnp.abs(m) / jnp.sqrt(jnp.maximum(q + m * m, 1e-300)) > COLLAPSE
    semantic = free_Px4[:, 3] > 0
    positional = (free_Px4[:, 3] == 0) & (free_Px4[:, 1] > 0)
    ok = jnp.where(semantic, th_ok, True) & jnp.where(positional, m_ok, True)
    return ok & (q > 0) & jnp.all(jnp.isfinite(x_Px4), axis=1)


def solve_batch(pb_P: Problem, x0_Px4, h0_Px2xN, free_Px4, quad: Quad, max_iter, n_plain=0, warm_h=False,
                and0: Anderson | None = None, tol=TOL):
    """Solve P fixed points at once (traceable; call under jit and x64).

    The first ``n_plain`` iterations are the authors' damped iteration x <- 0.2 F(x) + 0.8 x (a cold start
    must not let Anderson jump to an unstable fixed point), then Anderson acceleration.
    ``and0``: the Anderson history to start from (default: none).
    Returns dict: x (P,4), h (P,2,N), anderson, res (P,), iterations (P,), converged (P,), test_error,
    train_loss, hats (P,4). ``converged`` = residual <= ACCEPT_TOL and the branch signature holds.
    ``tol``: the stopping tolerance (TOL; ACCEPT_TOL scales with it).
    """
    rho_P = pb_P.sigma**2
    P = x0_Px4.shape[0]

    def evaluate(x, h, full):  # full: one batch-wide bool (the cond stays a cond under vmap)
        return jax.vmap(lambda x_, h_, pb: overlap_map(x_, h_, pb, quad, full))(x, h, pb_P)

    def body(s: _State) -> _State:
        # full search: periodically (not at it = 0 of a warm start: h* of the previous alpha is reused) and
        # always before a fixed point is accepted
        every = jnp.where(warm_h & (n_plain == 0), FULL_EVERY_WARM, FULL_EVERY)
        periodic = (s.it % every == 0) & ((s.it > 0) | (n_plain > 0) | ~warm_h)
        # The acceptance search is batch-wide (under vmap a full search costs every problem ~40 warm
        # iterations), so it is done once every unfinished problem is ready for it, not once per problem.
        ready = s.done_P | (s.res_P < tol)
        accept = jnp.all(ready) & jnp.any(~s.last_full_P & ~s.done_P)
        full = (periodic & jnp.any(~s.done_P)) | accept
        xn, hn, obs = evaluate(s.x_Px4, s.h_Px2xN, full)
        res_free = jax.vmap(residual)(s.x_Px4, xn, rho_P)  # includes the pinned overlaps' updates
        xn = jnp.where(free_Px4 > 0, xn, s.x_Px4)
        res = jax.vmap(residual)(s.x_Px4, xn, rho_P)
        z = jax.vmap(to_z)(s.x_Px4, rho_P)
        g = jax.vmap(to_z)(xn, rho_P) - z
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        # A basin switch in a full search makes the map jump by a constant: the secant pair across the jump
        # is dropped, the history (the map's Jacobian) is kept.
        switch = full & (res > 10 * s.res_P) & (s.it > 0)
        and_in = jax.tree.map(lambda a, b: jnp.where(switch.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                              jax.vmap(anderson_new_map)(s.and_st), s.and_st)
        and_new, z_new = jax.vmap(anderson_step)(and_in, z, g)
        x_next = jax.vmap(from_z)(z_new, rho_P)
        x_next = jnp.where(s.it < n_plain, PLAIN_MIX * xn + (1 - PLAIN_MIX) * s.x_Px4, x_next)
        x_next = jnp.where(free_Px4 > 0, x_next, s.x_Px4)
        now_done = full & (res < tol)
        done = s.done_P | now_done
        keep = lambda old, new: jnp.where(s.done_P.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)
        return _State(
            x_Px4=keep(s.x_Px4, jnp.where(now_done[:, None], s.x_Px4, x_next)),
            h_Px2xN=keep(s.h_Px2xN, hn),
            and_st=jax.tree.map(keep, s.and_st, and_new),
            res_P=keep(s.res_P, res),
            res_free_P=keep(s.res_free_P, res_free),
            last_full_P=keep(s.last_full_P, jnp.broadcast_to(full, (P,))),
            done_P=done,
            it_P=keep(s.it_P, s.it_P + 1),
            it=s.it + 1,
            n_full=s.n_full + full.astype(jnp.int32),
            obs=jax.tree.map(keep, s.obs, obs),
        )

    obs0 = dict(hats=jnp.zeros((P, 4)), test_error=jnp.zeros(P), train_loss=jnp.zeros(P), EM=jnp.zeros(P))
    if and0 is None:
        and0 = jax.vmap(anderson_init)(jax.vmap(to_z)(x0_Px4, rho_P))
    s0 = _State(x0_Px4, h0_Px2xN, and0, jnp.full(P, jnp.inf), jnp.full(P, jnp.inf), jnp.zeros(P, bool),
                jnp.zeros(P, bool), jnp.zeros(P, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), obs0)
    s = lax.while_loop(lambda s: (s.it < max_iter) & ~jnp.all(s.done_P), body, s0)
    conv = (s.res_free_P <= ACCEPT_TOL / TOL * tol) & s.last_full_P & signature_ok(s.x_Px4, free_Px4, rho_P)
    return dict(x=s.x_Px4, h=s.h_Px2xN, anderson=s.and_st, res=s.res_free_P, iterations=s.it_P, converged=conv,
                n_full=jnp.broadcast_to(s.n_full, (P,)), **s.obs)
