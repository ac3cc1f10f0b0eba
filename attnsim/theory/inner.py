"""The inner problem of the L = 2, rank-1 theory: the global minimiser h* of M at every quadrature node.

M(h) = |h - w|^2 / V + loss(h), loss(h) = sigma^2 |s(h) - T(t)|_F^2 (the teacher term included), with
s_11(u) = sigmoid(u_1 (u_1 - u_2)), s_22(u) = sigmoid(u_2 (u_2 - u_1)) and |s(h) - T|_F^2 =
2 (s_11 - T_11)^2 + 2 (s_22 - T_22)^2 (rows sum to 1). M is not convex: ``inner_full`` screens the basins
of w and of the two zeros +-h0 of the loss part, then polishes by a batched damped Newton method. All
functions broadcast elementwise over the nodes (arrays of shape (N,) or broadcastable).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

NEWTON_FULL = 8  # Newton iterations of a full search
NEWTON_SCREEN = 4  # of which from every start (then only from the best)
NEWTON_WARM = 3  # Newton iterations from a warm start
_STEPS = (1.0, 0.25, 0.0)  # parallel line search (0: stay)


class Node(NamedTuple):
    """Per-node data of the inner problem, each of shape (N,) (or broadcastable)."""

    w1: jnp.ndarray
    w2: jnp.ndarray
    T11: jnp.ndarray
    T22: jnp.ndarray


def loss(h1, h2, T11, T22, sigma2):
    """loss(h) = sigma^2 |s(h) - T|_F^2 = 2 sigma^2 [(s_11(h) - T_11)^2 + (s_22(h) - T_22)^2]."""
    d = h1 - h2
    return 2.0 * sigma2 * ((jax.nn.sigmoid(h1 * d) - T11) ** 2 + (jax.nn.sigmoid(-h2 * d) - T22) ** 2)


def M(h1, h2, nd: Node, V, sigma2):
    """M(h) = |h - w|^2 / V + loss(h)."""
    return ((h1 - nd.w1) ** 2 + (h2 - nd.w2) ** 2) / V + loss(h1, h2, nd.T11, nd.T22, sigma2)


def newton_step(h1, h2, nd: Node, V, sigma2):
    """One damped Newton step on M with analytic gradient/Hessian and a parallel line search.

    Through a_1 = h_1 (h_1 - h_2), a_2 = h_2 (h_2 - h_1): grad a_1 = (2h_1 - h_2, -h_1),
    grad a_2 = (-h_2, 2h_2 - h_1), Hess a_1 = [[2, -1], [-1, 0]], Hess a_2 = [[0, -1], [-1, 2]].
    The Hessian is shifted to have eigenvalues >= 1e-3/V; the step is the best of a few fractions.
    """
    d = h1 - h2
    g1, g2 = jax.nn.sigmoid(h1 * d), jax.nn.sigmoid(-h2 * d)
    p1, p2 = g1 * (1 - g1), g2 * (1 - g2)
    e1, e2 = g1 - nd.T11, g2 - nd.T22
    c1, c2 = 4 * sigma2 * e1 * p1, 4 * sigma2 * e2 * p2  # d loss / d a
    k1 = 4 * sigma2 * (p1 * p1 + e1 * p1 * (1 - 2 * g1))  # d^2 loss / d a^2
    k2 = 4 * sigma2 * (p2 * p2 + e2 * p2 * (1 - 2 * g2))
    u1x, u1y, u2x, u2y = 2 * h1 - h2, -h1, -h2, 2 * h2 - h1
    gx = 2 * (h1 - nd.w1) / V + c1 * u1x + c2 * u2x
    gy = 2 * (h2 - nd.w2) / V + c1 * u1y + c2 * u2y
    hxx = 2 / V + 2 * c1 + k1 * u1x * u1x + k2 * u2x * u2x
    hxy = -c1 - c2 + k1 * u1x * u1y + k2 * u2x * u2y
    hyy = 2 / V + 2 * c2 + k1 * u1y * u1y + k2 * u2y * u2y
    lmin = 0.5 * (hxx + hyy) - jnp.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2)
    shift = jnp.maximum(0.0, 1e-3 / V - lmin)
    a, c = hxx + shift, hyy + shift
    det = a * c - hxy**2
    dx = -(c * gx - hxy * gy) / det
    dy = -(a * gy - hxy * gx) / det
    norm = jnp.sqrt(dx * dx + dy * dy)
    cap = jnp.minimum(1.0, 1.0 / jnp.maximum(norm, 1e-300))  # trust radius 1 (fields are O(1))
    dx, dy = dx * cap, dy * cap
    M0 = ((h1 - nd.w1) ** 2 + (h2 - nd.w2) ** 2) / V + 2 * sigma2 * (e1 * e1 + e2 * e2)  # = M(h)
    # Parallel line search: the candidate steps along a leading axis (one copy of M in the compiled code).
    tau_C = jnp.asarray(_STEPS[:-1], dx.dtype).reshape((-1,) + (1,) * jnp.ndim(dx))
    c1_C = jnp.concatenate([h1[None] + tau_C * dx[None], h1[None]])  # the last step (0) is h itself
    c2_C = jnp.concatenate([h2[None] + tau_C * dy[None], h2[None]])
    M_C = jnp.concatenate([M(c1_C[:-1], c2_C[:-1], Node(*(a[None] for a in nd)), V, sigma2), M0[None]])
    # near a minimum M is flat below round-off: take the pure Newton step there
    M_C = M_C.at[0].set(jnp.where((shift == 0) & (norm < 1e-5), -jnp.inf, M_C[0]))
    M_C = jnp.where(jnp.isnan(M_C), jnp.inf, M_C)
    iota = jnp.arange(len(_STEPS)).reshape((-1,) + (1,) * jnp.ndim(dx))
    lowest = M_C == jnp.min(M_C, axis=0, keepdims=True)
    first = jnp.min(jnp.where(lowest, iota, len(_STEPS)), axis=0, keepdims=True)  # first lowest candidate
    sel = iota == first
    return jnp.sum(jnp.where(sel, c1_C, 0.0), axis=0), jnp.sum(jnp.where(sel, c2_C, 0.0), axis=0)


def newton(h1, h2, nd: Node, V, sigma2, n_iter):
    """n_iter Newton steps (int, or a traced int)."""
    body = lambda _, hh: newton_step(hh[0], hh[1], nd, V, sigma2)
    return lax.fori_loop(0, n_iter, body, (h1, h2))


def zero_loss_point(nd: Node):
    """The point h0 with s(h0) = T exactly (loss 0), where it exists; (h1_N, h2_N).

    loss depends on h only through a_1 = h_1 d, a_2 = -h_2 d (d = h_1 - h_2): a_1 + a_2 = d^2 and
    a_1 - a_2 = u d (u = h_1 + h_2). So loss = 0 at a = logit(T) is reached at exactly h0 and -h0 with
    d = sqrt(a_1 + a_2), u = (a_1 - a_2) / d when a_1 + a_2 > 0; otherwise the valley runs off along
    d -> 0 and h0 (d floored at 1e-3) is a far point on it.
    """
    logit = lambda p: jnp.log(p) - jnp.log1p(-p)
    a1 = logit(jnp.clip(nd.T11, 1e-12, 1 - 1e-12))
    a2 = logit(jnp.clip(nd.T22, 1e-12, 1 - 1e-12))
    d = jnp.sqrt(jnp.maximum(a1 + a2, 1e-6))
    u = (a1 - a2) / d
    return 0.5 * (u + d), 0.5 * (u - d)


def best_start(nd: Node, V, sigma2, h_2xN):
    """Start in the basin of the global minimiser h* of M at every node (multi-start Newton screening).
    Returns (h1_N, h2_N); ``inner_full`` polishes it.

    Starts: w (the minimiser of the quadratic part), +-h0 (the two zeros of the loss part,
    ``zero_loss_point``) and the warm start h_2xN. M = |h - w|^2 / V + loss is a weak pull (1/V is small)
    towards w on the loss landscape, whose minima are +-h0 and plateaus, so its basins are those of w
    and +-h0 (checked against an exhaustive search: docs/theory.md, "Solver"). Newton runs NEWTON_SCREEN
    steps from w and +-h0, then the lowest of these and the warm start is kept.
    """
    h01, h02 = zero_loss_point(nd)
    ndS = Node(*(a[None, :] for a in nd))
    # The screening only ranks the basins (the winner is polished in float64): float32 halves its cost.
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    h1_SN, h2_SN = newton(f32(jnp.stack([nd.w1, h01, -h01])), f32(jnp.stack([nd.w2, h02, -h02])),
                           Node(*map(f32, ndS)), f32(V), f32(sigma2), NEWTON_SCREEN)
    h1_SN, h2_SN = h1_SN.astype(nd.w1.dtype), h2_SN.astype(nd.w1.dtype)
    # the warm start is (nearly) converged already: it joins unscreened
    h1_SN, h2_SN = jnp.concatenate([h1_SN, h_2xN[:1]]), jnp.concatenate([h2_SN, h_2xN[1:]])
    h1_SN, h2_SN = pick_lowest(h1_SN, h2_SN, ndS, V, sigma2, 1)
    return h1_SN[0], h2_SN[0]


def inner_full(nd: Node, V, sigma2, h_2xN):
    """Global minimiser h* of M at every node: ``best_start`` polished by Newton. Returns (h1_N, h2_N)."""
    return newton(*best_start(nd, V, sigma2, h_2xN), nd, V, sigma2, NEWTON_FULL - NEWTON_SCREEN)


def pick_lowest(h1_SN, h2_SN, ndS: Node, V, sigma2, n_keep: int):
    """Per node, the n_keep starts with the lowest M (first on ties), shape (n_keep, N); no argmin/top_k
    (slow on CPU): min, then the first index attaining it."""
    M_SN = M(h1_SN, h2_SN, ndS, V, sigma2)
    M_SN = jnp.where(jnp.isnan(M_SN), jnp.inf, M_SN)
    iota = jnp.arange(M_SN.shape[0])[:, None]
    out1, out2 = [], []
    for _ in range(n_keep):
        lo = jnp.min(M_SN, axis=0, keepdims=True)
        i = jnp.min(jnp.where(M_SN == lo, iota, M_SN.shape[0] - 1), axis=0, keepdims=True)
        sel = iota == i
        out1.append(jnp.sum(jnp.where(sel, h1_SN, 0.0), axis=0))
        out2.append(jnp.sum(jnp.where(sel, h2_SN, 0.0), axis=0))
        M_SN = jnp.where(sel, jnp.inf, M_SN)
    return jnp.stack(out1), jnp.stack(out2)
