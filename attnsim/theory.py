"""Fixed-point (replica) theory of tied rank-1 dot-product attention, L = 2 (spec: docs/theory.md).

Synopsis::

    from attnsim import theory
    df = theory.solve(omegas=[0.3], alphas=np.linspace(0.1, 2, 20))       # one row per (omega, alpha, branch)
    lines = theory.critical_lines(omegas=np.arange(0, 0.46, 0.05))         # alpha_c, alpha_l, spinodals
    theory.linear_baseline_error(0.3)                                       # ~0.00197

Notation (docs/theory.md; defined once here). Per Gauss-Hermite node of four standard Gaussians
(xi_1, xi_2, y_1, y_2):

- ``x = (q, m, V, theta)``: the overlaps. q = sigma^2 |Q|^2/d, m = 1^T Q / d, theta = sigma^2 Q*^T Q / d,
  V = response; ``hats = (qh, mh, Vh, thh)`` their conjugates; rho = sigma^2 (teacher field variance).
- ``w = (m + sqrt(q) xi_1, -m + sqrt(q) xi_2)``: the student's fields without the data term.
- ``t = V* y + (theta / sqrt(q)) xi``, V* = sqrt(rho - theta^2/q): the teacher's fields.
- Only the diagonal of the 2x2 row-stochastic mixings matters: s_11(u) = sigmoid(u_1 (u_1 - u_2)),
  s_22(u) = sigmoid(u_2 (u_2 - u_1)), and |s(h) - T|_F^2 = 2 (s_11 - T_11)^2 + 2 (s_22 - T_22)^2 with
  T = (1 - omega) s(t) + omega A.
- ``M(h) = |h - w|^2 / V + loss(h)``, loss(h) = sigma^2 |s(h) - T(t)|_F^2 (the full M, teacher term
  included); h* = argmin M (global), f = (h* - w) / V.

Algorithm. All nodes of the tensor Gauss-Hermite rule (K = ``quad_order`` per dimension) are processed
at once, folded exactly by the symmetries of each problem (``quad_rule_folded``: token swap for
A_11 = A_22, sign for the pinned m = 0 of the semantic branch, y -> -y for the pinned theta = 0 of the
positional one; ~K^4/4 nodes). The inner problem is solved by a batched damped Newton method with a
parallel line search; a full search (Newton from w, the two zeros +-h0 of the loss part and the warm
start; ``inner_full``) is done on the first iteration of a cold start, every ``FULL_EVERY``
(``FULL_EVERY_WARM`` along a continuation) iterations and before a fixed point is accepted; in between
Newton is warm-started from the previous h*. The outer iteration on (log q, m, log V, theta) is
Anderson-accelerated inside ``lax.while_loop``. Alpha is followed by continuation (largest alpha first;
each alpha starts from a quadratic extrapolation of the last three converged solutions, with the
previous h* and Anderson history). One compiled step (one alpha, one problem) serves everything:
problems (omega, sigma, lambda, branch) run one at a time, because in a vmapped batch every problem pays
for the union of all problems' outer iterations and full searches (measured 2-3x slower at 8 problems).

Quadrature check. The plain tensor rule puts sum(w_i^2) (27% at K = 10) of its weight on the diagonal
xi_1 = xi_2, a measure-zero set where w_1 = w_2 on the semantic branch, and there it has fixed points the
theory does not (a small-theta semantic branch below alpha ~ 0.76 at omega = 0.3, a positional one at
omega <= 0.06: quasi-Monte-Carlo rules collapse both). ``solve`` therefore re-solves each branch on the same
rule turned by 45 degrees (``quad_rule(K, rotated=True)``, even K: no node on the diagonals) at every
CHECK_STRIDE-th alpha and bisects where the verdict changes (``_quad_check_branches``); a point counts
only if both rules have it with theta (or |m|) within CHECK_TOL. ``quad_order="authors"`` solves on the
authors' 144-node cubature instead (``quad_rule_authors``): it reproduces their published files.

Speed and accuracy are measured by scripts/bench_theory.py and scripts/theory_convergence.py (their outputs:
docs/bench_theory.txt, docs/theory_convergence.txt; summarised in the README's Theory section).

Everything runs in float64 inside ``with jax.enable_x64(True):``; public functions return numpy /
pandas float64, so a float32 caller is unaffected.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax

from attnsim.config import NAMED_A

STANDARD_A = NAMED_A["standard"]
SECOND_A = NAMED_A["second"]

# Gauss-Hermite nodes per Gaussian dimension (K^4 nodes). scripts/theory_convergence.py, omega = 0.3,
# alpha = 1.5714: semantic branch within 1.2e-3 (relative) of K = 16 on q, V, theta, test_error,
# train_loss; positional branch q -2%, V -2.7%, test_error -0.6%, train_loss -2e-4 against a
# quasi-Monte-Carlo reference (K = 16 is as far off on the other side). Below alpha ~ 0.76 the plain
# rule's semantic theta is an artefact (quasi-Monte-Carlo: theta ~ 0 at alpha = 0.57); solve's check
# removes it.
DEFAULT_QUAD_ORDER = 10

BRANCHES = ("semantic", "positional", "trivial")
# Starting points (q, m, V, theta) at the largest alpha (docs/theory.md, "Branches").
_START_Q_M_V_TH = {
    "semantic": (0.9068, 0.0, 14.575, 0.3472),
    "positional": (0.02068, 0.2, 14.575, 0.0),
    "trivial": (0.02068, 0.0, 14.575, 0.0),
}
# Which overlaps the iteration may move. theta = 0 and m = 0 are invariant subspaces (t -> -t; (h, xi, y)
# -> -(h, xi, y) at m = 0, any A): pinned at 0 they stay there exactly, round-off cannot grow along an
# unstable direction, and the quadrature folds by the symmetry (quad_rule_folded). The semantic branch
# has m = 0 at its fixed points (docs/theory.md), so m is pinned there.
_FREE_Q_M_V_TH = {
    "semantic": (1.0, 0.0, 1.0, 1.0),
    "positional": (1.0, 1.0, 1.0, 0.0),
    "trivial": (1.0, 0.0, 1.0, 0.0),
}

TOL = 1e-8  # stopping tolerance on the relative fixed-point residual
ACCEPT_TOL = 1e-7  # converged when the residual is below this (stops at TOL; basin-switch limit cycles)
COLLAPSE = 1e-4  # a branch whose normalised signature overlap falls below this has collapsed
CHECK_TOL = 0.25  # a fixed point counts only if its signature overlap moves less than this on the check rule
CHECK_STRIDE = 8  # solve's check: every this many alphas of a branch by continuation, the rest in between
SPINODAL_RESOLUTION = 2e-3  # critical_lines bisects a spinodal to this width (or n_refine steps)
CHECK_SOLVE_TOL = 1e-6  # stopping tolerance of the check's solves (it compares overlaps to CHECK_TOL)
FULL_EVERY = 20  # full inner search every this many outer iterations
FULL_EVERY_WARM = 50  # the same along a continuation (h* warm from the previous alpha; accepted points
# always end with a full search)
MAX_ITER_COLD = 400
MAX_ITER_WARM = 80  # converged points need <= 32 (bench_theory); limit cycles would spend all
NEWTON_FULL = 8  # Newton iterations of a full search
NEWTON_SCREEN = 4  # of which from every start (then only from the best)
NEWTON_WARM = 3  # Newton iterations from a warm start
ANDERSON_M = 5  # Anderson history
ANDERSON_BETA = 0.6  # Anderson mixing
PLAIN_MIX = 0.2  # the authors' damping, used for the first N_PLAIN_COLD iterations of a cold start
N_PLAIN_COLD = 40
_STEPS = (1.0, 0.25, 0.0)  # parallel line search (0: stay)


# ----------------------------------------------------------------------------------------------------
# Validation and the linear baseline
# ----------------------------------------------------------------------------------------------------

_COVERS = "the theory covers L = 2, r = r_t = 1, sigma > 0, a row-stochastic 2x2 A, alpha > 0"


def check_supported(L, r, r_t, sigma, A, alphas) -> None:
    """Raise ``ValueError`` (one line) unless the point is inside what this solver covers."""
    sig = np.atleast_1d(np.asarray(sigma, dtype=float))
    A_arr = np.asarray(A, dtype=float)
    al = np.atleast_1d(np.asarray(alphas, dtype=float))
    if L != 2:
        problem = f"L={L}"
    elif r != 1 or r_t != 1:
        problem = f"r={r}, r_t={r_t}"
    elif not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        problem = f"sigma={sigma}"
    elif A_arr.shape != (2, 2) or np.any(A_arr < 0) or not np.allclose(A_arr.sum(1), 1.0, atol=1e-9):
        problem = f"A={A_arr.tolist()}"
    elif al.size == 0 or not np.all(np.isfinite(al)) or np.any(al <= 0):
        problem = f"alphas={al.tolist()}"
    else:
        return
    raise ValueError(f"{problem} is not supported: {_COVERS}")


def _as_A(A) -> np.ndarray:
    A_2x2 = np.asarray(A, dtype=np.float64)
    if A_2x2.shape != (2, 2):
        raise ValueError(f"A={A_2x2.tolist()} must be 2x2: {_COVERS}")
    return A_2x2


def linear_baseline_error(omega, sigma=0.5, A=STANDARD_A, quad_order=80):
    """Population test error of the optimal linear positional baseline B = E[T].

    test_error_lin = sigma^2 (E|T|_F^2 - |E T|_F^2) / 2 with t ~ N(0, rho I_2), rho = sigma^2. Only the
    variance of T enters, (1 - omega)^2 sum_ij Var s_ij(t), so A drops out (it is validated only).
    Computed with a 2-D Gauss-Hermite rule (the integrand is smooth; 80 nodes are converged to 1e-15).

    Args:
      omega: float or array (any shape). sigma: float or array broadcastable with omega.
    Returns: float, or float64 array of the broadcast shape.
    """
    _as_A(A)
    om, sig = np.broadcast_arrays(np.asarray(omega, np.float64), np.asarray(sigma, np.float64))
    x_K, w_K = np.polynomial.hermite_e.hermegauss(quad_order)
    w_K = w_K / w_K.sum()
    t1_KK, t2_KK = np.meshgrid(x_K, x_K, indexing="ij")
    w_KK = np.outer(w_K, w_K)
    out = np.empty(om.shape)
    for idx in np.ndindex(om.shape):
        s = sig[idx]  # teacher field std = sqrt(rho) = sigma
        a1 = (s * t1_KK) * (s * t1_KK - s * t2_KK)
        s11 = 1.0 / (1.0 + np.exp(-a1))
        s22 = 1.0 / (1.0 + np.exp(a1 - (s * t1_KK - s * t2_KK) ** 2))  # a2 = t2 (t2 - t1) = (t1-t2)^2 - a1
        var = 0.0
        for s_ij in (s11, s22):  # rows sum to 1: each diagonal entry's variance appears twice
            mean = np.sum(w_KK * s_ij)
            var += 2.0 * np.sum(w_KK * (s_ij - mean) ** 2)
        out[idx] = s**2 * (1.0 - om[idx]) ** 2 * var / 2.0
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------------------------------
# Quadrature
# ----------------------------------------------------------------------------------------------------


class Quad(NamedTuple):
    """Gauss-Hermite rule over (xi_1, xi_2, y_1, y_2): xi_Nx2, y_Nx2, wt_N (sum 1); hat_mask_4 zeroes the
    hats (qh, mh, Vh, thh) that vanish by a symmetry the rule was folded with."""

    xi_Nx2: np.ndarray
    y_Nx2: np.ndarray
    wt_N: np.ndarray
    hat_mask_4: np.ndarray = np.ones(4)


@functools.lru_cache(maxsize=None)
def quad_rule(K: int, rotated: bool = False) -> Quad:
    """The K^4-node tensor Gauss-Hermite rule for four independent standard Gaussians (numpy).

    ``rotated``: the same rule turned by 45 degrees in the (xi_1, xi_2) and in the (y_1, y_2) plane, node
    (a, b) of a plane at (a - b, a + b) / sqrt 2: as exact on polynomials (the Gaussian weight is rotation
    invariant) but with no node on the diagonals xi_1 = +-xi_2 for even K (for odd K the middle row lands
    there), where the plain rule puts sum(w^2) of the weight on the measure-zero set w_1 = w_2 of the
    semantic branch. The check rule of ``solve`` (``quad_spread``; ``_check_order``).
    """
    x_K, w_K = np.polynomial.hermite_e.hermegauss(K)
    x_K = (x_K - x_K[::-1]) / 2.0  # exactly symmetric nodes: keeps theta = 0 invariant to round-off
    w_K = (w_K + w_K[::-1]) / 2.0
    w_K = w_K / w_K.sum()
    g = np.meshgrid(x_K, x_K, x_K, x_K, indexing="ij")
    wg = np.meshgrid(w_K, w_K, w_K, w_K, indexing="ij")
    pts_Nx4 = np.stack([a.ravel() for a in g], axis=1)
    if rotated:  # elementwise (not a matrix product): the rotated nodes stay exactly symmetric
        c = np.sqrt(0.5)
        a, b, u, v = pts_Nx4.T
        pts_Nx4 = np.stack([c * (a - b), c * (a + b), c * (u - v), c * (u + v)], axis=1)
    wt_N = np.prod(np.stack([a.ravel() for a in wg], axis=1), axis=1)
    return Quad(pts_Nx4[:, :2].copy(), pts_Nx4[:, 2:].copy(), wt_N)


@functools.lru_cache(maxsize=None)
def quad_rule_folded(K: int, swap: bool = False, negate: bool = False, flip_y: bool = False,
                     rotated: bool = False) -> Quad:
    """quad_rule(K, rotated) folded by node symmetries of the problem: one node per orbit, with the orbit's
    weight.

    The tensor rule is exactly invariant under each map (nodes antisymmetrised), so the folded rule gives
    the same integrals for every integrand invariant under them:

    - ``swap`` (needs A_11 = A_22): (xi_1, xi_2, y_1, y_2) -> -(xi_2, xi_1, y_2, y_1) mirrors the problem,
      w -> -(w_2, w_1), t -> -(t_2, t_1), T_11 <-> T_22, h* -> -(h*_2, h*_1), f -> -(f_2, f_1): every
      integrand (f_1^2 + f_2^2, f_1 - f_2, f.y, f.xi, M, loss) is unchanged.
    - ``negate`` (needs m = 0): (xi, y) -> -(xi, y) gives w -> -w, t -> -t, T unchanged (s(-t) = s(t)),
      h* -> -h*, f -> -f: all integrands unchanged except f_1 - f_2, whose mean is 0 (mh = 0, masked).
    - ``flip_y`` (needs theta = 0): y -> -y leaves w and T (t = V* y) unchanged, so h* and f too: only
      f.y flips, thh = 0 (masked).
    Sizes: ~K^4 / 2 per symmetry, ~K^4 / 4 for two of them. On the rotated rule the swap is the map
    (a, b) -> (-a, b) of each plane's unrotated node.
    """
    full = quad_rule(K, rotated)
    i = np.arange(K**4).reshape(K, K, K, K)
    swap_map = i[::-1, :, ::-1, :] if rotated else i[::-1, ::-1, ::-1, ::-1].transpose(1, 0, 3, 2)
    gens = [g.ravel() for g, use in ((swap_map, swap), (i[::-1, ::-1, ::-1, ::-1], negate),
                                     (i[:, :, ::-1, ::-1], flip_y)) if use]
    rep = np.arange(K**4)  # orbit representative: the smallest index in the orbit
    while True:
        new = functools.reduce(lambda r, g: np.minimum(r, r[g]), gens, rep)
        if np.array_equal(new, rep):
            break
        rep = new
    wt = np.bincount(rep, weights=full.wt_N, minlength=K**4)
    keep = rep == np.arange(K**4)
    mask = np.array([1.0, 0.0 if negate else 1.0, 1.0, 0.0 if flip_y else 1.0])
    return Quad(full.xi_Nx2[keep].copy(), full.y_Nx2[keep].copy(), wt[keep].copy(), mask)


def quad_rule_sym(K: int) -> Quad:
    """quad_rule(K) folded by the token-swap-and-sign symmetry alone (A_11 = A_22; (K^4 + K^2) / 2 nodes)."""
    return quad_rule_folded(K, swap=True)


AUTHORS = "authors"  # quad_order value: the authors' cubature (quad_rule_authors), to reproduce their files
AUTHORS_OBS_ORDER = 16  # Gauss-Hermite order of test_error and E[M] under quad_order="authors"


@functools.lru_cache(maxsize=None)
def quad_rule_authors() -> Quad:
    """The cubature behind the authors' published fixed points (docs/theory.md, "Numerics"): 144 nodes.

    Their notebook integrates the hat updates with ``quadpy.e2r2.get_good_scheme(7)``, once over
    (xi_1, xi_2) and once over (y_1, y_2): the 12-point fully symmetric degree-7 rule for the weight
    exp(-|u|^2) in the plane (of the kind tabulated by Stroud, *Approximate calculation of multiple
    integrals*, 1971; this one: (+-r, 0), (0, +-r) with r^2 = 3; (+-s, +-s), (+-t, +-t) with
    s^2, t^2 = (9 -+ 3 sqrt 5) / 8; weights pi/36, pi (5 +- 2 sqrt 5) / 45), scaled by sqrt 2 to standard
    Gaussians. It is exact for polynomials of
    degree 7 in each pair (tests/test_theory.py) and invariant under every symmetry quad_rule_folded uses.
    """
    s5 = np.sqrt(5.0)
    r, s, t = np.sqrt(3.0), np.sqrt((9 - 3 * s5) / 8), np.sqrt((9 + 3 * s5) / 8)
    signs = np.array([(1, 1), (1, -1), (-1, 1), (-1, -1)], np.float64)
    pts_12x2 = np.sqrt(2.0) * np.concatenate([np.array([(r, 0), (0, r), (-r, 0), (0, -r)]), s * signs, t * signs])
    w_12 = np.repeat([1 / 36, (5 + 2 * s5) / 45, (5 - 2 * s5) / 45], 4)
    return Quad(np.repeat(pts_12x2, 12, axis=0), np.tile(pts_12x2, (12, 1)), np.repeat(w_12, 12) * np.tile(w_12, 12))


# ----------------------------------------------------------------------------------------------------
# The inner two-dimensional problem (all arrays broadcast elementwise: any shape ...)
# ----------------------------------------------------------------------------------------------------


class Node(NamedTuple):
    """Per-node data of the inner problem, each of shape (N,) (or broadcastable)."""

    w1: jnp.ndarray
    w2: jnp.ndarray
    T11: jnp.ndarray
    T22: jnp.ndarray


def _loss(h1, h2, T11, T22, sigma2):
    """loss(h) = sigma^2 |s(h) - T|_F^2 = 2 sigma^2 [(s_11(h) - T_11)^2 + (s_22(h) - T_22)^2]."""
    d = h1 - h2
    return 2.0 * sigma2 * ((jax.nn.sigmoid(h1 * d) - T11) ** 2 + (jax.nn.sigmoid(-h2 * d) - T22) ** 2)


def _M(h1, h2, nd: Node, V, sigma2):
    """M(h) = |h - w|^2 / V + loss(h)."""
    return ((h1 - nd.w1) ** 2 + (h2 - nd.w2) ** 2) / V + _loss(h1, h2, nd.T11, nd.T22, sigma2)


def _newton_step(h1, h2, nd: Node, V, sigma2):
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
    M_C = jnp.concatenate([_M(c1_C[:-1], c2_C[:-1], Node(*(a[None] for a in nd)), V, sigma2), M0[None]])
    # near a minimum M is flat below round-off: take the pure Newton step there
    M_C = M_C.at[0].set(jnp.where((shift == 0) & (norm < 1e-5), -jnp.inf, M_C[0]))
    M_C = jnp.where(jnp.isnan(M_C), jnp.inf, M_C)
    iota = jnp.arange(len(_STEPS)).reshape((-1,) + (1,) * jnp.ndim(dx))
    lowest = M_C == jnp.min(M_C, axis=0, keepdims=True)
    first = jnp.min(jnp.where(lowest, iota, len(_STEPS)), axis=0, keepdims=True)  # first lowest candidate
    sel = iota == first
    return jnp.sum(jnp.where(sel, c1_C, 0.0), axis=0), jnp.sum(jnp.where(sel, c2_C, 0.0), axis=0)


def _newton(h1, h2, nd: Node, V, sigma2, n_iter):
    """n_iter Newton steps (int, or a traced int)."""
    body = lambda _, hh: _newton_step(hh[0], hh[1], nd, V, sigma2)
    return lax.fori_loop(0, n_iter, body, (h1, h2))


def _zero_loss_point(nd: Node):
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


def _best_start(nd: Node, V, sigma2, h_2xN):
    """Start in the basin of the global minimiser h* of M at every node (multi-start Newton screening).
    Returns (h1_N, h2_N); ``inner_full`` polishes it.

    Starts: w (the minimiser of the quadratic part), +-h0 (the two zeros of the loss part,
    ``_zero_loss_point``) and the warm start h_2xN. M = |h - w|^2 / V + loss is a weak pull (1/V ~ 0.05)
    towards w on the loss landscape, whose minima are +-h0 and plateaus, so its basins are those of w
    and +-h0: checked against an exhaustive search (41 x 41 grid over the disc |h - w|^2 <= V loss(w)
    that contains h*, Newton from its 8 lowest local minima, 40 steps) at 71 converged points (omega 0 ..
    0.45, alpha 0.1 .. 2, both branches, K = 10): the same minimum at every node (M within 1e-16).
    Newton runs NEWTON_SCREEN steps from w and +-h0 (fewer, 3, miss the global basin at ~1e-3 of the
    nodes in the same check), then the lowest of these and the warm start is kept.
    """
    h01, h02 = _zero_loss_point(nd)
    ndS = Node(*(a[None, :] for a in nd))
    # The screening only ranks the basins (the winner is polished in float64): float32 halves its cost.
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    h1_SN, h2_SN = _newton(f32(jnp.stack([nd.w1, h01, -h01])), f32(jnp.stack([nd.w2, h02, -h02])),
                           Node(*map(f32, ndS)), f32(V), f32(sigma2), NEWTON_SCREEN)
    h1_SN, h2_SN = h1_SN.astype(nd.w1.dtype), h2_SN.astype(nd.w1.dtype)
    # the warm start is (nearly) converged already: it joins unscreened
    h1_SN, h2_SN = jnp.concatenate([h1_SN, h_2xN[:1]]), jnp.concatenate([h2_SN, h_2xN[1:]])
    h1_SN, h2_SN = _pick_lowest(h1_SN, h2_SN, ndS, V, sigma2, 1)
    return h1_SN[0], h2_SN[0]


def inner_full(nd: Node, V, sigma2, h_2xN):
    """Global minimiser h* of M at every node: ``_best_start`` polished by Newton. Returns (h1_N, h2_N)."""
    return _newton(*_best_start(nd, V, sigma2, h_2xN), nd, V, sigma2, NEWTON_FULL - NEWTON_SCREEN)


def _pick_lowest(h1_SN, h2_SN, ndS: Node, V, sigma2, n_keep: int):
    """Per node, the n_keep starts with the lowest M (first on ties), shape (n_keep, N); no argmin/top_k
    (slow on CPU): min, then the first index attaining it."""
    M_SN = _M(h1_SN, h2_SN, ndS, V, sigma2)
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


# ----------------------------------------------------------------------------------------------------
# The outer map overlaps -> hats -> overlaps, for one problem
# ----------------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """Scalars of one problem (a batch of them under vmap): omega, sigma, lam, alpha, A_11, A_22."""

    omega: jnp.ndarray
    sigma: jnp.ndarray
    lam: jnp.ndarray
    alpha: jnp.ndarray
    A11: jnp.ndarray
    A22: jnp.ndarray


def _nodes(x_4, pb: Problem, quad: Quad):
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
      full: bool (traced or not): the global search (``inner_full``) instead of Newton from h_2xN.
    Returns:
      (x_new_4, h_2xN, obs) with obs = dict(hats_4, test_error, train_loss, EM = E[M(h*)]) evaluated at x_4.
    """
    q, m, V, th = x_4[0], x_4[1], x_4[2], x_4[3]
    sigma2 = pb.sigma**2
    rho = sigma2
    nd, sq, vstar = _nodes(x_4, pb, quad)
    # full: inner_full; else Newton from the warm start (one float64 Newton loop in the compiled code)
    start = lax.cond(full, lambda: _best_start(nd, V, sigma2, h_2xN), lambda: (h_2xN[0], h_2xN[1]))
    h1, h2 = _newton(*start, nd, V, sigma2, jnp.where(full, NEWTON_FULL - NEWTON_SCREEN, NEWTON_WARM))
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
    EM = jnp.sum(wt * _M(h1, h2, nd, V, sigma2))
    phi = 0.5 * (Vh * q - qh * V) - m * mh - th * thh + 0.5 * quad_term / D - 0.5 * al * EM
    test_error = 0.5 * jnp.sum(wt * _loss(nd.w1, nd.w2, nd.T11, nd.T22, sigma2))
    obs = dict(hats=jnp.stack([qh, mh, Vh, thh]), test_error=test_error, train_loss=-phi, EM=EM)
    return x_new, jnp.stack([h1, h2], axis=0), obs


def _residual(x_4, xn_4, rho):
    """Relative fixed-point residual: |dq|/q, |dV|/V, |dm|/sqrt(q + m^2), |dtheta|/sqrt(q rho)."""
    q, m, V = x_4[0], x_4[1], x_4[2]
    scale = jnp.stack([q, jnp.sqrt(q + m * m), V, jnp.sqrt(q * rho)])
    r = jnp.max(jnp.abs(xn_4 - x_4) / jnp.maximum(scale, 1e-300))
    return jnp.where(jnp.isfinite(r), r, jnp.inf)


# Anderson acceleration in z = (log q, m, log V, atanh(theta / sqrt(q rho))): q, V > 0 and
# theta^2 < q rho (V* real) are built in.
def _to_z(x, rho):
    c = jnp.clip(x[3] / jnp.sqrt(jnp.maximum(x[0] * rho, 1e-300)), -1 + 1e-12, 1 - 1e-12)
    return jnp.stack([jnp.log(jnp.maximum(x[0], 1e-300)), x[1], jnp.log(jnp.maximum(x[2], 1e-300)), jnp.arctanh(c)])


def _from_z(z, rho):
    q = jnp.exp(z[0])
    return jnp.stack([q, z[1], jnp.exp(z[2]), jnp.sqrt(q * rho) * jnp.tanh(z[3])])


class _Anderson(NamedTuple):
    """Anderson history: the last ANDERSON_M secant pairs (rows beyond n are zero, which is harmless in
    the least-squares problem) and the previous iterate, if any (``has_prev``)."""

    dz_Mx4: jnp.ndarray
    dg_Mx4: jnp.ndarray
    z_prev: jnp.ndarray
    g_prev: jnp.ndarray
    n: jnp.ndarray  # secant pairs pushed so far (int)
    has_prev: jnp.ndarray  # bool: z_prev, g_prev belong to the current map


def _anderson_init(z):
    M = ANDERSON_M
    return _Anderson(jnp.zeros((M, 4)), jnp.zeros((M, 4)), z, jnp.zeros(4), jnp.zeros((), jnp.int32),
                     jnp.zeros((), bool))


def _anderson_step(st: _Anderson, z, g):
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
    return _Anderson(dz, dg, z, g, n, jnp.ones((), bool)), z + step


def _anderson_new_map(st: _Anderson) -> _Anderson:
    """Keep the secant history for a nearby map (the next alpha): its Jacobian differs by O(d alpha), so
    the first step there is already quasi-Newton; only the previous iterate is forgotten."""
    return st._replace(has_prev=jnp.zeros((), bool))


# ----------------------------------------------------------------------------------------------------
# Batched solver: P problems, one alpha each, under lax.while_loop
# ----------------------------------------------------------------------------------------------------


class _State(NamedTuple):
    x_Px4: jnp.ndarray
    h_Px2xN: jnp.ndarray
    and_st: _Anderson
    res_P: jnp.ndarray  # residual of the last evaluation (the iterated, free overlaps)
    res_free_P: jnp.ndarray  # the same including the pinned overlaps (reported; branch existence)
    last_full_P: jnp.ndarray  # was the last evaluation a full search
    done_P: jnp.ndarray
    it_P: jnp.ndarray
    it: jnp.ndarray
    n_full: jnp.ndarray  # batch-wide full searches done (profiling)
    obs: dict


def _signature_ok(x_Px4, free_Px4, rho_P):
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
                and0: _Anderson | None = None, tol=TOL):
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
        res_free = jax.vmap(_residual)(s.x_Px4, xn, rho_P)  # includes the pinned overlaps' updates
        xn = jnp.where(free_Px4 > 0, xn, s.x_Px4)
        res = jax.vmap(_residual)(s.x_Px4, xn, rho_P)
        z = jax.vmap(_to_z)(s.x_Px4, rho_P)
        g = jax.vmap(_to_z)(xn, rho_P) - z
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        # A basin switch in a full search makes the map jump by a constant: the secant pair across the jump
        # is dropped, the history (the map's Jacobian) is kept.
        switch = full & (res > 10 * s.res_P) & (s.it > 0)
        and_in = jax.tree.map(lambda a, b: jnp.where(switch.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                              jax.vmap(_anderson_new_map)(s.and_st), s.and_st)
        and_new, z_new = jax.vmap(_anderson_step)(and_in, z, g)
        x_next = jax.vmap(_from_z)(z_new, rho_P)
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
        and0 = jax.vmap(_anderson_init)(jax.vmap(_to_z)(x0_Px4, rho_P))
    s0 = _State(x0_Px4, h0_Px2xN, and0, jnp.full(P, jnp.inf), jnp.full(P, jnp.inf), jnp.zeros(P, bool),
                jnp.zeros(P, bool), jnp.zeros(P, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), obs0)
    s = lax.while_loop(lambda s: (s.it < max_iter) & ~jnp.all(s.done_P), body, s0)
    conv = (s.res_free_P <= ACCEPT_TOL / TOL * tol) & s.last_full_P & _signature_ok(s.x_Px4, free_Px4, rho_P)
    return dict(x=s.x_Px4, h=s.h_Px2xN, anderson=s.and_st, res=s.res_free_P, iterations=s.it_P, converged=conv,
                n_full=jnp.broadcast_to(s.n_full, (P,)), **s.obs)


def _continuation_init(x0_Px4, rho_P, n_nodes: int):
    """Carry of the continuation before its first alpha: (x, h, z_H, alpha_H, n_ok, anderson), with the
    last three converged solutions (Anderson coordinates z) and their alphas, newest first."""
    P = x0_Px4.shape[0]
    z = jax.vmap(_to_z)(x0_Px4, rho_P)
    return (x0_Px4, jnp.zeros((P, 2, n_nodes)), jnp.repeat(z[:, None], 3, axis=1), jnp.zeros((P, 3)),
            jnp.zeros(P, jnp.int32), jax.vmap(_anderson_init)(z))


_continuation_init_jit = jax.jit(_continuation_init, static_argnums=2)  # eager: ~20 ms a call


def _predict(z_H, al_H, n_ok, alpha):
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


def _continuation_step(carry, a, alpha_P, pb_P: Problem, free_Px4, quad: Quad, cold_first, tol=TOL):
    """One alpha of the continuation of P problems. Step a = 0 starts from the carried x (a cold start
    with N_PLAIN_COLD damped iterations when ``cold_first``); each later step starts from the last
    converged solution of its problem (h* and the Anderson history too), moved by a polynomial
    predictor through the last converged ones (``_predict``).
    Returns (carry, out) with out a dict of (P, ...) arrays."""
    rho_P = pb_P.sigma**2
    x_c, h_c, z_H, al_H, n_ok, and_c = carry
    first = (a == 0) & cold_first
    # (in the Anderson coordinates z, which keep q, V > 0 and theta^2 < q rho)
    z_pred = jax.vmap(_predict)(z_H, al_H, n_ok, alpha_P)
    x_start = jnp.where(free_Px4 > 0, jax.vmap(_from_z)(z_pred, rho_P), x_c)
    out = solve_batch(pb_P._replace(alpha=alpha_P), x_start, h_c, free_Px4, quad,
                      jnp.where(first, MAX_ITER_COLD, MAX_ITER_WARM), jnp.where(first, N_PLAIN_COLD, 0),
                      warm_h=a > 0, and0=jax.vmap(_anderson_new_map)(and_c), tol=tol)
    ok = out["converged"]
    keep_ok = lambda new, old: jnp.where(ok.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    z_new = jnp.concatenate([jax.vmap(_to_z)(out["x"], rho_P)[:, None], z_H[:, :2]], axis=1)
    al_new = jnp.concatenate([alpha_P[:, None], al_H[:, :2]], axis=1)
    carry = (keep_ok(out["x"], x_c), keep_ok(out["h"], h_c), keep_ok(z_new, z_H), keep_ok(al_new, al_H),
             jnp.where(ok, n_ok + 1, 0), jax.tree.map(keep_ok, out["anderson"], and_c))
    return carry, {k: v for k, v in out.items() if k not in ("h", "anderson")}


def _problem_quad(K, A_2x2, free_4, rotated: bool = False) -> Quad:
    """The rule for one problem, folded by every symmetry it has (``quad_rule_folded``): swap when
    A_11 = A_22, negate when m is pinned (at 0), flip_y when theta is pinned (at 0); padded with
    zero-weight nodes to ``_n_nodes(K, swap)`` so that every problem shares one compiled shape.
    K = AUTHORS: ``quad_rule_authors`` (unfolded), with the same hats masked. ``rotated``: the check rule."""
    if K == AUTHORS:
        mask = np.array([1.0, 0.0 if free_4[1] == 0 else 1.0, 1.0, 0.0 if free_4[3] == 0 else 1.0])
        return quad_rule_authors()._replace(hat_mask_4=mask)
    swap = _swap_symmetric(A_2x2)
    q = quad_rule_folded(_check_order(K) if rotated else K, swap, bool(free_4[1] == 0), bool(free_4[3] == 0),
                         rotated)
    pad = _n_nodes(K, swap) - len(q.wt_N)
    return Quad(np.pad(q.xi_Nx2, ((0, pad), (0, 0))), np.pad(q.y_Nx2, ((0, pad), (0, 0))), np.pad(q.wt_N, (0, pad)),
                q.hat_mask_4)


def _swap_symmetric(A_2x2) -> bool:
    return bool(A_2x2[0, 0] == A_2x2[1, 1])


def _n_nodes(K, swap: bool) -> int:
    """Nodes of the largest folded rule of the semantic and positional branches, plain or turned (one
    compiled shape for both)."""
    if K == AUTHORS:
        return len(quad_rule_authors().wt_N)
    return max(len(quad_rule_folded(k, swap, neg, not neg, rot).wt_N)
               for neg in (False, True) for k, rot in ((K, False), (_check_order(K), True)))


def _check_order(K: int) -> int:
    """Order of the check rule: K, or K + 1 for odd K (turned by 45 degrees, an odd rule's middle node
    row lands on the diagonals xi_1 = +-xi_2 with more weight than the plain rule has there)."""
    return K + K % 2


@functools.lru_cache(maxsize=None)
def _compiled_step(K: int):
    """The jitted single continuation step at order K: the only compiled solver (one shape, P = 1,
    ``_n_nodes(K, swap)`` nodes, the rule an argument), reused by every problem, branch, alpha and the
    refinements of critical_lines."""
    return jax.jit(_continuation_step)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def _grid(omegas, sigma, lam, branches):
    """Product grid of problems: DataFrame with omega, sigma, lam, branch (P rows)."""
    om = np.atleast_1d(np.asarray(omegas, np.float64))
    sg = np.atleast_1d(np.asarray(sigma, np.float64))
    lm = np.atleast_1d(np.asarray(lam, np.float64))
    for b in branches:
        if b not in BRANCHES:
            raise ValueError(f"branch={b!r} must be one of {BRANCHES}")
    idx = pd.MultiIndex.from_product([om, sg, lm, list(branches)], names=["omega", "sigma", "lam", "branch"])
    return idx.to_frame(index=False)


def _run_problems(K, A_2x2, omega_P, sigma_P, lam_P, alphas_AxP, x0_Px4, free_Px4, cold: bool, rotated=False,
                  tol=TOL):
    """Run the compiled continuation once per problem (batch of one; one compiled shape per number of
    alphas). Batching problems under vmap costs every problem the union of all their outer iterations
    and full searches (the batch-wide while_loop and cond): one problem at a time is 2-3x cheaper on a
    CPU already at 8 problems. (Problems on two Python threads do not run concurrently on XLA's CPU
    client: measured no gain.) Returns dict of numpy arrays (A, P, ...)."""
    step = _compiled_step(K)
    n_nodes = _n_nodes(K, _swap_symmetric(A_2x2))
    outs = []
    with jax.enable_x64(True):
        for i in range(len(omega_P)):
            pb = Problem(*(jnp.asarray([v], jnp.float64) for v in (omega_P[i], sigma_P[i], lam_P[i], 0.0,
                                                                    A_2x2[0, 0], A_2x2[1, 1])))
            free = jnp.asarray(free_Px4[i:i + 1], jnp.float64)
            quad = Quad(*(jnp.asarray(a, jnp.float64) for a in _problem_quad(K, A_2x2, free_Px4[i], rotated)))
            cold_ = jnp.asarray(cold)
            carry = _continuation_init_jit(jnp.asarray(x0_Px4[i:i + 1], jnp.float64), pb.sigma**2, n_nodes)
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


def _run_continuation(grid: pd.DataFrame, alphas_desc, A_2x2, K: int):
    """Solve every grid row along alphas_desc. Returns dict of numpy arrays (A, P, ...)."""
    P = len(grid)
    x0 = np.array([_START_Q_M_V_TH[b] for b in grid.branch], np.float64).reshape(P, 4)
    free = np.array([_FREE_Q_M_V_TH[b] for b in grid.branch], np.float64).reshape(P, 4)
    alphas_AxP = np.repeat(np.asarray(alphas_desc, np.float64)[:, None], P, axis=1)
    return _run_problems(K, A_2x2, grid.omega.to_numpy(np.float64), grid.sigma.to_numpy(np.float64),
                         grid.lam.to_numpy(np.float64), alphas_AxP, x0, free, True)


def _mark_global(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["omega", "sigma", "lam", "alpha"]
    tl = df.train_loss.where(df.converged, np.inf)
    best = tl.groupby([df[k] for k in keys]).transform("min")
    df["global_min"] = df.converged & (tl == best) & np.isfinite(tl)
    # ties (e.g. branches that merged): keep only the first
    df["global_min"] &= ~df[df.global_min].duplicated(keys).reindex(df.index, fill_value=False)
    return df


def solve(omegas, alphas, sigma=0.5, lam=0.01, A=STANDARD_A, quad_order=DEFAULT_QUAD_ORDER,
          branches=("semantic", "positional"), check=True) -> pd.DataFrame:
    """Fixed points for every (omega, sigma, lam) x alpha x branch (sigma, lam may be sequences).

    ``quad_order``: Gauss-Hermite nodes per Gaussian dimension, or ``AUTHORS`` ("authors") for the
    cubature of the authors' published solutions (quad_rule_authors; test_error and train_loss then
    integrated at order AUTHORS_OBS_ORDER as in _accurate_observables): reproduces
    tests/data/reference/theory_omega0.3_*.csv, not the converged theory.

    Alphas are followed by continuation from the largest down (cold start at the largest from the
    docs/theory.md starting point of each branch). Returns one row per (omega, sigma, lam, alpha, branch) with
    columns omega, sigma, lam, alpha, branch, q, m, V, theta, test_error, train_loss, converged,
    iterations, residual, lin_test_error, global_min, quad_spread. Non-converged rows keep their last
    iterate's numbers but must not be used (converged=False: the branch does not exist there, did not
    converge, or is an artefact of the rule's nodes).

    ``check``: confirm each branch on the same rule turned by 45 degrees (of order K + 1 for odd K;
    ``_quad_check_branches``: every CHECK_STRIDE-th alpha, and the rows in between where the verdict
    changes; not done for quad_order="authors", which reproduces a published computation). quad_spread
    is the relative change of the branch's signature overlap (theta, |m|) at the checked rows; rows above CHECK_TOL, or
    without a fixed point on the turned rule, are not converged. At omega = 0.3 this removes the semantic
    branch below alpha ~ 0.76, where the plain K = 10 rule has a spurious small theta (quasi-Monte-Carlo
    rules: the branch collapses onto theta = 0 between alpha = 0.7 and 0.8).
    """
    A_2x2 = _as_A(A)
    al = np.atleast_1d(np.asarray(alphas, np.float64))
    check_supported(2, 1, 1, sigma, A_2x2, al)
    al_desc = np.unique(al)[::-1].copy()
    grid = _grid(omegas, sigma, lam, branches)
    K = AUTHORS if quad_order == AUTHORS else int(quad_order)
    out = _run_continuation(grid, al_desc, A_2x2, K)
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
    if K == AUTHORS:
        df = _accurate_observables(df, out["EM"].ravel(), A_2x2)
    df["quad_spread"] = np.nan
    if check and K != AUTHORS:
        df = _quad_check_branches(df, A_2x2, K)
    df = _mark_global(df)
    df = df.sort_values(["omega", "sigma", "lam", "alpha", "branch"], kind="stable").reset_index(drop=True)
    return df


@jax.jit
def _observables_batch(x_Px4, h_Px2xN, pb_P: Problem, quad: Quad):
    """obs of overlap_map (full inner search) at P points."""
    return jax.vmap(lambda x, h, pb: overlap_map(x, h, pb, quad, True)[2])(x_Px4, h_Px2xN, pb_P)


def _accurate_observables(df: pd.DataFrame, EM_rule, A_2x2) -> pd.DataFrame:
    """test_error and train_loss of fixed points found with quad_rule_authors, integrated accurately.

    The authors integrated their observables with finer rules than their hat updates (docs/theory.md). Here
    test_error and E[M] (the only integral in train_loss = -Phi besides the hats) are re-integrated at
    Gauss-Hermite order AUTHORS_OBS_ORDER; the hats stay those of the fixed point's own rule:
    train_loss += (alpha / 2) (E[M]_accurate - E[M]_rule). Returns df with the two columns replaced.
    """
    df = df.copy()
    with jax.enable_x64(True):
        for branch in df.branch.unique():
            rows = (df.branch == branch).to_numpy()
            quad = Quad(*(jnp.asarray(a, jnp.float64) for a in
                          _problem_quad(AUTHORS_OBS_ORDER, A_2x2, np.array(_FREE_Q_M_V_TH[branch]))))
            pb = Problem(*(jnp.asarray(v, jnp.float64) for v in (
                df.omega[rows], df.sigma[rows], df.lam[rows], df.alpha[rows],
                np.full(rows.sum(), A_2x2[0, 0]), np.full(rows.sum(), A_2x2[1, 1]))))
            x = jnp.asarray(_x_of(df[rows]), jnp.float64)
            h0 = jnp.zeros((rows.sum(), 2, len(quad.wt_N)))
            obs = _observables_batch(x, h0, pb, quad)
            df.loc[rows, "test_error"] = np.asarray(obs["test_error"])
            df.loc[rows, "train_loss"] += 0.5 * df.alpha[rows] * (np.asarray(obs["EM"]) - EM_rule[rows])
    return df


def _solve_points(omega_P, alpha_P, branch_P, x0_Px4, sigma, lam, A_2x2, K, rotated=False, check=False,
                  tol=TOL) -> pd.DataFrame:
    """One fixed point per row (own omega, alpha, branch), warm-started from x0 (Anderson, no cold phase);
    on the check rule when ``rotated``; checked on it (``_quad_check``) when ``check``."""
    n = len(omega_P)
    omega_P = np.asarray(omega_P, np.float64).reshape(n)
    alpha_P = np.asarray(alpha_P, np.float64).reshape(n)
    branch_P = np.asarray(branch_P).reshape(n)
    free = np.array([_FREE_Q_M_V_TH[b] for b in branch_P], np.float64).reshape(n, 4)
    out = _run_problems(K, A_2x2, omega_P, np.full(n, float(sigma)), np.full(n, float(lam)), alpha_P[None, :],
                        np.asarray(x0_Px4, np.float64).reshape(n, 4), free, False, rotated, tol)
    out = {k: v[0] for k, v in out.items()}
    df = pd.DataFrame(dict(omega=omega_P, sigma=float(sigma), lam=float(lam), alpha=alpha_P, branch=branch_P,
                           q=out["x"][:, 0], m=out["x"][:, 1], V=out["x"][:, 2], theta=out["x"][:, 3],
                           test_error=out["test_error"], train_loss=out["train_loss"],
                           converged=out["converged"].astype(bool)))
    return _quad_check(df, A_2x2, K) if check else df


def _quad_check_branches(df: pd.DataFrame, A_2x2, K) -> pd.DataFrame:
    """``_quad_check`` along each branch (rows of one omega, sigma, lam, branch) at a fraction of its cost.

    Every CHECK_STRIDE-th alpha of each branch (and its two ends) is solved again on the check rule by
    continuation (all branches as one batch of problems, the largest alpha started from the plain rule's
    solution): a row passes when both rules converge there and its signature overlap moves less than
    CHECK_TOL. The outermost rows where the plain rule has the branch are checked on their own if no
    coarse row is there. Rows between two checked rows inherit their verdict when the two agree; between
    two that disagree the switch is found by bisection, checking single rows (warm from their solution).
    quad_spread is filled at the checked rows. (Checking every row instead costs several times as much:
    scripts/bench_theory.py.)
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
            x0[p] = _x_of(top)[0] if top.converged.iloc[0] else _START_Q_M_V_TH[br]
        omega_P = np.array([om for (om, _), _ in problems])
        free = np.array([_FREE_Q_M_V_TH[br] for (_, br), _ in problems], np.float64)
        out = _run_problems(K, A_2x2, omega_P, np.full(len(problems), sig), np.full(len(problems), lm),
                            np.repeat(coarse[:, None], len(problems), axis=1), x0, free, True, rotated=True,
                            tol=CHECK_SOLVE_TOL)
        for p, ((om, br), rows) in enumerate(problems):
            rows = rows.sort_values("alpha", ascending=False)
            x_rot = out["x"][:, p]
            sig_rot = _signature(pd.DataFrame(dict(branch=br, q=x_rot[:, 0], m=x_rot[:, 1], theta=x_rot[:, 3])))
            labels, ok = rows.index.to_numpy(), rows.converged.to_numpy(bool)
            known = np.full(len(rows), -1)  # -1 unknown, 0 fails, 1 passes
            for j, (lab, a) in enumerate(zip(labels, rows.alpha)):
                if a in at and ok[j]:
                    k = at[a]
                    sp = float(_spread(_signature(rows.iloc[[j]])[0], sig_rot[k], out["converged"][k, p]))
                    verdict[lab] = (sp <= CHECK_TOL, sp)
                    known[j] = int(sp <= CHECK_TOL)

            def check_row(j):
                chk = _quad_check(rows.iloc[[j]], A_2x2, K).iloc[0]
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


def _spread(s0, s_check, check_converged):
    """quad_spread: relative change of the signature overlap s0 on the check rule (inf where the check
    rule has no fixed point)."""
    return np.where(check_converged, np.abs(s_check - s0) / np.maximum(np.abs(s0), 1e-300), np.inf)


def _signature(df: pd.DataFrame) -> np.ndarray:
    """The overlap that defines each row's branch: theta (semantic), |m| (positional), q (trivial)."""
    b = df.branch.to_numpy()
    return np.where(b == "semantic", df.theta.abs(), np.where(b == "positional", df.m.abs(), df.q))


def _quad_check(df: pd.DataFrame, A_2x2, K) -> pd.DataFrame:
    """Every converged row re-solved on the check rule (quad_rule(K, rotated=True)), warm from its
    solution: quad_spread = relative change of the branch's signature overlap (inf where the branch
    does not converge or collapses there), and converged &= quad_spread <= CHECK_TOL. A fixed point that
    only one of two equally exact rules has is an artefact of that rule's nodes (docs/theory.md: h* jumps
    between basins, which tensor rules resolve poorly)."""
    df = df.copy()
    spread = np.full(len(df), np.nan)
    ok = df.converged.to_numpy(bool)
    for (sig, lm), pos in df[ok].groupby(["sigma", "lam"]).indices.items():
        i = np.flatnonzero(ok)[pos]
        rows = df.iloc[i]
        rot = _solve_points(rows.omega, rows.alpha, rows.branch, _x_of(rows), sig, lm, A_2x2, K, rotated=True,
                            tol=CHECK_SOLVE_TOL)
        spread[i] = _spread(_signature(rows), _signature(rot), rot.converged)
    df["quad_spread"] = spread
    df["converged"] = ok & (spread <= CHECK_TOL)
    return df


def _x_of(rows: pd.DataFrame) -> np.ndarray:
    return rows[["q", "m", "V", "theta"]].to_numpy(np.float64)


def _illinois(f_lo, f_hi, lo, hi, evaluate, n_iter: int):
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


def _cubic_at(alpha_A, f_OxA, i_R, alpha_R):
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


def _last_crossing(alpha_A, g_A):
    """Index i of the last sign change + -> - of g between alpha_A[i] and alpha_A[i+1] (finite), or -1:
    beyond it g stays <= 0 on the grid. (The first crossing can be a spurious one at tiny alpha, where the
    semantic branch is barely distinct from the positional one.)"""
    ok = np.isfinite(g_A[:-1]) & np.isfinite(g_A[1:]) & (g_A[:-1] > 0) & (g_A[1:] <= 0)
    return int(np.flatnonzero(ok)[-1]) if ok.any() else -1


def _persistent_edge(exists_A) -> int:
    """Index j of the first change exists[j] != exists[j+1] after isolated points (both neighbours agree
    with each other, not with the point) are overruled by their neighbours, or -1."""
    e = np.asarray(exists_A, bool).copy()
    isolated = np.flatnonzero((e[:-2] == e[2:]) & (e[1:-1] != e[:-2])) + 1
    e[isolated] = e[isolated - 1]
    change = e[1:] != e[:-1]
    return int(np.argmax(change)) if change.any() else -1


def critical_lines(omegas, sigma=0.5, lam=0.01, A=STANDARD_A, quad_order=DEFAULT_QUAD_ORDER,
                   alpha_max=2.0, n_grid=40, n_refine=5, interpolate=True, check=True, workers=1) -> pd.DataFrame:
    """alpha_c(omega), alpha_l(omega) and the spinodals of the two non-trivial branches.

    Both branches are solved on the grid alpha = alpha_max * (1..n_grid)/n_grid (continuation, all omegas
    batched); crossings are bracketed there and refined by Illinois steps on the branch differences,
    evaluated either on the cubic interpolant of the grid values (``interpolate``, no further solves;
    30 steps) or by solving the needed (omega, alpha) points, warm-started from the bracket's grid
    solution (``n_refine`` batched steps). At n_grid = 40, K = 10, omega = 0, 0.1, .., 0.4 the two agree
    within 2e-4 on alpha_c and on alpha_l except at omega = 0 (0.728 vs 0.741), where the semantic
    test_error jumps by 1e-4 between alpha = 0.74 and 0.75 (a basin switch on the K = 10 rule), right at
    the root (scripts/bench_theory.py --compare-refinement).

    - alpha_c: train_loss_semantic - train_loss_positional changes sign (+ -> -, last crossing).
    - alpha_l: the global minimum's test_error falls below the linear baseline's (last crossing; equal
      to alpha_c when the drop happens at the jump of the global minimum).
    - alpha_sp_semantic / alpha_sp_positional: the edge of the grid region where the branch exists
      (first change of `converged` along alpha that persists over the next grid point too, so a single
      point that failed to converge is not an edge), refined by bisection on existence to
      SPINODAL_RESOLUTION (at most n_refine steps).
    NaN where there is no crossing / edge in (0, alpha_max].

    ``workers`` > 1: the omegas are split over that many spawned processes (each compiles once, ~7 s; the
    solver itself runs on one core per process); the result does not depend on it. A calling script
    needs the usual ``if __name__ == "__main__":`` guard (spawned processes import it); on an
    accelerator keep 1 (every process would claim the device).

    Returns: DataFrame with omega, sigma, lam, alpha_c, alpha_l, alpha_sp_semantic, alpha_sp_positional,
    lin_test_error.
    """
    A_2x2 = _as_A(A)
    check_supported(2, 1, 1, sigma, A_2x2, [alpha_max])
    om = np.atleast_1d(np.asarray(omegas, np.float64))
    workers = min(int(workers), len(om))
    if workers > 1:
        kw = dict(sigma=sigma, lam=lam, A=A_2x2, quad_order=quad_order, alpha_max=alpha_max, n_grid=n_grid,
                  n_refine=n_refine, interpolate=interpolate, check=check)
        pos = [np.arange(i, len(om), workers) for i in range(workers)]  # interleaved: balanced loads
        parts = pd.concat(_in_processes(critical_lines, [om[p] for p in pos], kw), ignore_index=True)
        return parts.iloc[np.argsort(np.concatenate(pos), kind="stable")].reset_index(drop=True)
    K = AUTHORS if quad_order == AUTHORS else int(quad_order)
    check = check and K != AUTHORS  # the authors' rule reproduces a published computation: not checked (solve)
    alpha_A = alpha_max * np.arange(1, n_grid + 1) / n_grid
    grid = solve(om, alpha_A, sigma, lam, A_2x2, K, branches=("semantic", "positional"), check=check)
    lin = np.atleast_1d(linear_baseline_error(om, sigma, A_2x2))
    wide = {b: grid[grid.branch == b].pivot(index="omega", columns="alpha") for b in ("semantic", "positional")}

    @functools.cache
    def table(b, col):  # (n_omega, n_grid), NaN where the branch does not exist
        t = wide[b][col].reindex(index=om, columns=alpha_A).to_numpy(np.float64)
        return np.where(wide[b]["converged"].reindex(index=om, columns=alpha_A).to_numpy(bool), t, np.nan)

    def rows_at(b, i_om, i_al):  # the grid solution used as warm start
        g = grid[(grid.branch == b)].set_index(["omega", "alpha"])
        return _x_of(g.loc[list(zip(om[i_om], alpha_A[i_al]))])

    def solve_both(i_om, alpha_R, i_warm, branches=("semantic", "positional")):
        """Both branches at (omega[i_om], alpha_R), warm from grid column i_warm. Returns dict b -> frame."""
        out = {}
        for b in branches:
            x0 = rows_at(b, i_om, i_warm)
            x0 = np.where(np.isfinite(x0), x0, np.array(_START_Q_M_V_TH[b]))
            out[b] = _solve_points(om[i_om], alpha_R, [b] * len(i_om), x0, sigma, lam, A_2x2, K, check=check)
        return out

    def interpolated(i_om, alpha_R, branches):
        """Like solve_both, from the cubic interpolant of the grid values."""
        out = {}
        for b in branches:
            te, tl = (_cubic_at(alpha_A, table(b, c), i_om, alpha_R) for c in ("test_error", "train_loss"))
            out[b] = pd.DataFrame(dict(converged=np.isfinite(te) & np.isfinite(tl), test_error=te, train_loss=tl))
        return out

    def frames_at(i_om, alpha_R, i_warm, branches=("semantic", "positional")):
        return interpolated(i_om, alpha_R, branches) if interpolate else solve_both(i_om, alpha_R, i_warm, branches)

    def value(frames, kind, i_om):
        te = lambda f: np.where(f.converged, f.test_error, np.nan)
        tl = lambda f: np.where(f.converged, f.train_loss, np.nan)
        if kind == "c":
            return tl(frames["semantic"]) - tl(frames["positional"])
        return te(frames[kind[2:]]) - lin[i_om]

    def refine(kind, i_om, i_lo, lo, hi, f_lo, f_hi):
        if len(i_om) == 0:
            return np.array([])
        need = ("semantic", "positional") if kind == "c" else (kind[2:],)  # l_<branch>: one branch
        ev = lambda a: value(frames_at(i_om, a, i_lo + 1, need), kind, i_om)
        return _illinois(f_lo, f_hi, lo, hi, ev, 30 if interpolate else n_refine)

    n_om = len(om)
    tl_s, tl_p = table("semantic", "train_loss"), table("positional", "train_loss")
    te_s, te_p = table("semantic", "test_error"), table("positional", "test_error")
    out = pd.DataFrame(dict(omega=om, sigma=float(sigma), lam=float(lam)))

    # alpha_c
    diff = tl_s - tl_p
    idx_c = np.array([_last_crossing(alpha_A, diff[i]) for i in range(n_om)])
    has = np.flatnonzero(idx_c >= 0)
    alpha_c = np.full(n_om, np.nan)
    if len(has):
        i = idx_c[has]
        alpha_c[has] = refine("c", has, i, alpha_A[i], alpha_A[i + 1], diff[has, i], diff[has, i + 1])
    out["alpha_c"] = alpha_c

    # alpha_l: global-minimum test error minus the baseline, along the grid
    glob_s = np.where(np.isnan(tl_p), np.isfinite(tl_s), tl_s < tl_p)
    te_g = np.where(glob_s, te_s, te_p) - lin[:, None]
    alpha_l = np.full(n_om, np.nan)
    # Every omega's refinement is batched with the others of the same kind (one solve per Illinois step).
    smooth = {"semantic": [], "positional": []}  # (i_o, lo, hi, f_lo, f_hi)
    at_c = []  # (i_o, j): the global minimum switches branch inside the bracket, at the refined alpha_c
    for i_o in range(n_om):
        j = _last_crossing(alpha_A, te_g[i_o])
        if j < 0:
            continue
        if glob_s[i_o, j] == glob_s[i_o, j + 1]:  # same branch at both ends: smooth root
            b = "semantic" if glob_s[i_o, j] else "positional"
            smooth[b].append((i_o, j, alpha_A[j], alpha_A[j + 1], te_g[i_o, j], te_g[i_o, j + 1]))
        elif np.isfinite(alpha_c[i_o]) and alpha_A[j] < alpha_c[i_o] < alpha_A[j + 1]:
            at_c.append((i_o, j))
        else:
            alpha_l[i_o] = 0.5 * (alpha_A[j] + alpha_A[j + 1])  # switch without a refined alpha_c
    if at_c:
        i_c = np.array([e[0] for e in at_c])
        j_c = np.array([e[1] for e in at_c])
        fr = frames_at(i_c, alpha_c[i_c], j_c + 1)
        for k, (i_o, j) in enumerate(at_c):
            old = "semantic" if glob_s[i_o, j] else "positional"
            new = "positional" if old == "semantic" else "semantic"
            g_old = value({b: f.iloc[[k]] for b, f in fr.items()}, f"l_{old}", np.array([i_o]))[0]
            g_new = value({b: f.iloc[[k]] for b, f in fr.items()}, f"l_{new}", np.array([i_o]))[0]
            if g_old <= 0:  # the old branch already crossed before alpha_c
                smooth[old].append((i_o, j, alpha_A[j], alpha_c[i_o], te_g[i_o, j], g_old))
            elif g_new <= 0:  # the drop happens at the jump
                alpha_l[i_o] = alpha_c[i_o]
            else:
                smooth[new].append((i_o, j, alpha_c[i_o], alpha_A[j + 1], g_new, te_g[i_o, j + 1]))
    for b, items in smooth.items():
        if items:
            i_om, j, lo, hi, f_lo, f_hi = (np.array(c) for c in zip(*items))
            alpha_l[i_om] = refine(f"l_{b}", i_om.astype(int), j.astype(int), lo, hi, f_lo, f_hi)
    out["alpha_l"] = alpha_l

    # spinodals: bisection on existence
    for b, tab in (("semantic", tl_s), ("positional", tl_p)):
        exists = np.isfinite(tab)
        sp = np.full(n_om, np.nan)
        edges = [(i, j) for i in range(n_om) if (j := _persistent_edge(exists[i])) >= 0]
        if edges:
            i_om = np.array([e[0] for e in edges])
            j = np.array([e[1] for e in edges])
            lo, hi = alpha_A[j].copy(), alpha_A[j + 1].copy()
            lo_exists = exists[i_om, j]
            i_warm = np.where(lo_exists, j, j + 1)
            # bisection down to SPINODAL_RESOLUTION (each step solves and checks every edge once)
            n_sp = int(np.clip(np.ceil(np.log2(alpha_max / n_grid / SPINODAL_RESOLUTION)), 1, n_refine))
            for _ in range(n_sp):
                mid = 0.5 * (lo + hi)
                x0 = rows_at(b, i_om, i_warm)
                ok = _solve_points(om[i_om], mid, [b] * len(i_om), x0, sigma, lam, A_2x2, K,
                                   check=check).converged.to_numpy()
                move_lo = ok == lo_exists
                lo, hi = np.where(move_lo, mid, lo), np.where(move_lo, hi, mid)
            sp[i_om] = 0.5 * (lo + hi)
        out[f"alpha_sp_{b}"] = sp
    out["lin_test_error"] = lin
    return out


def auto_workers(omegas) -> int:
    """Processes for critical_lines: one per usable core, at most one per 8 omegas (each process compiles
    the solver, ~7 s); one on an accelerator."""
    if jax.default_backend() != "cpu":
        return 1
    import os

    return max(1, min(len(os.sched_getaffinity(0)), len(np.atleast_1d(omegas)) // 8))


_INHERITED_CONFIG = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                     "jax_compilation_cache_max_size")


def _in_processes(fn, chunks, kwargs):
    """[fn(chunk, **kwargs) for chunk in chunks], each in its own spawned process, which inherits this
    process's persistent-compilation-cache settings (one solve uses one core; threads in one process
    gave no speed-up)."""
    import concurrent.futures
    import multiprocessing

    settings = {k: jax.config.values[k] for k in _INHERITED_CONFIG}
    with concurrent.futures.ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_configure, initargs=(settings,)) as ex:
        return list(ex.map(functools.partial(_call_with, fn, kwargs), chunks))


def _configure(settings):
    for k, v in settings.items():
        if v is not None:
            jax.config.update(k, v)


def _call_with(fn, kwargs, arg):
    return fn(arg, **kwargs)


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
