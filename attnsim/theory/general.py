"""Replica fixed-point theory of tied low-rank dot-product attention for general (L, r, r_t).

Derivation and conventions: docs/theory_general.md. Notation, defined once here:

- L tokens, student rank r, teacher rank r_t; rho = sigma^2 I_{r_t} (teacher field covariance).
- Overlaps ``x`` (a dict of arrays): q (r, r) and V (r, r) symmetric, m (L, r) (row l = m_l, the
  positional overlap of token l), theta (r_t, r).
- Hats: qh (r, r), Vh (r, r), mh (L, r), thh (r_t, r).
- P (L, L): Gram matrix p_l . p_k of the positional embeddings (default: [[1, -1], [-1, 1]] + identity
  for tokens 3..L, the d -> infinity limit of attnsim.data.positional_embeddings).
- Samples: xi (N, L, r), eta (N, L, r_t) standard Gaussians (randomised QMC).
  w_l = m_l + q^{1/2} xi_l, t_l = theta q^{-1/2} xi_l + V* eta_l, V* = (rho - theta q^{-1} theta^T)^{1/2}.
- Inner problem at each sample: h* = argmin_h M(h), h in R^{L x r},
  M(h) = sum_l (h_l - w_l)^T V^{-1} (h_l - w_l) + sigma^2 |softmax(h h^T) - T(t)|_F^2,
  T(t) = (1 - omega) softmax(t t^T) + omega A; f_l = V^{-1} (h*_l - w_l).
- Directions of the student can be switched off (``active``): such a column of Q is identically zero,
  its fields h_{., c} are held at 0 and its overlaps and hats are 0.

Public: ``solve`` (a DataFrame like ``attnsim.theory.solve``'s, one row per (omega, alpha, branch)),
``critical_lines`` (alpha_c, alpha_l on a grid), ``linear_baseline_error``; below them ``solve_branch`` /
``solve_point`` (one branch; dicts of matrix overlaps) and ``make_branch``. Everything numerical runs in float64
inside ``with jax.enable_x64(True):``; the public functions take and return numpy / pandas.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.stats import norm, qmc

from attnsim.theory.critical import persistent_edge
from attnsim.theory.domain import STANDARD_A, point_problem
from attnsim.theory.fixed_points import mark_global

KEYS = ("q", "V", "m", "theta")
DEFAULT_SAMPLES = 2**12  # QMC points of solve / critical_lines (scripts and docs use 2**14 for tables)

# Inner solver: Newton iterations of a full multi-start search (from every start, then from the best),
# and of a warm start; eigenvalue floor of the (saddle-free) Newton matrix relative to 2 / max eig V.
NEWTON_SCREEN = 8
NEWTON_POLISH = 6
NEWTON_WARM = 4
EIG_FLOOR = 1e-3
LINE_STEPS = (1.0, 0.5, 0.25, 0.1, 0.0)
# Outer iteration.
TOL = 1e-7
FULL_EVERY = 15
N_PLAIN = 20  # damped iterations of a cold start before Anderson
PLAIN_MIX = 0.2  # the authors' damping
ANDERSON_M = 5
ANDERSON_BETA = 0.6
MAX_ITER = 300
COLLAPSE = 0.05  # normalised size below which a branch's signature component counts as collapsed
# (QMC moves pinned/vanishing components at the 1e-3 level; e.g. the r = 2 positional branch merging with the
# trivial one keeps |m| / sqrt(tr q + |m|^2) ~ 0.02: docs/theory_general.md)


# ----------------------------------------------------------------------------------------------------
# Problem description, branches, samples
# ----------------------------------------------------------------------------------------------------


def default_gram(L: int) -> np.ndarray:
    """P (L, L): p_l . p_k of the default embeddings as d -> infinity: p_1 = -p_2 = 1/sqrt(d) and, for
    L > 2, independent random sign vectors / sqrt(d) (orthogonal to everything else in the limit)."""
    P = np.eye(L)
    P[0, 1] = P[1, 0] = -1.0
    return P


class Problem(NamedTuple):
    """Scalars and matrices of one point: A (L, L) row-stochastic, P (L, L) positional Gram."""

    L: int
    r: int
    r_t: int
    omega: float
    sigma: float
    lam: float
    alpha: float
    A: np.ndarray
    P: np.ndarray


class Branch(NamedTuple):
    """A branch as data.

    free: dict like the overlaps, 1 where the component is iterated, 0 where it is pinned at its start
      value (a pinned component must sit in an invariant subspace of the map, e.g. theta = 0).
    active: (r,) 1/0, the student directions that exist (0: that column of Q is identically 0).
    x0: start point (dict of overlaps).
    require: overlaps ("theta", "m") that must stay non-zero (the branch's signature).
    """

    name: str
    free: dict
    active: tuple
    x0: dict
    require: tuple


def make_branch(kind: str, L: int, r: int, r_t: int, active=None, q0=None, m0=0.2, th0=0.35, V0=14.575):
    """Standard branches.

    kind: "semantic" (theta free in direction 1, m = 0), "positional" (theta = 0, m free in direction 1),
    "trivial" (theta = m = 0), "mixed" (r >= 2: direction 1 semantic, direction 2 positional).
    Gauge (Q -> Q O): direction 1 carries the semantic (or, for "positional", the positional) component;
    every other direction is pinned to have no theta and no m, and off-diagonal q, V are pinned at 0 (the
    subspace fixed by the reflections h_c -> -h_c, which the map preserves). Start: q = q0 (default 0.9
    semantic, 0.02 otherwise) on active directions, V = V0 I, m_1 = -m_2 = m0 (m_3.. = m0) on the positional
    direction, theta_11 = th0 on the semantic direction.
    """
    active = tuple(int(a) for a in (active if active is not None else (1,) * r))
    act = np.array(active, float)
    sem_dir = {"semantic": 0, "mixed": 0}.get(kind)
    pos_dir = {"positional": 0, "mixed": 1}.get(kind)
    if kind not in ("semantic", "positional", "trivial", "mixed") or (kind == "mixed" and r < 2):
        raise ValueError(f"unknown branch {kind!r} for r={r}")
    free = dict(q=np.diag(act), V=np.diag(act), m=np.zeros((L, r)), theta=np.zeros((r_t, r)))
    q0 = q0 if q0 is not None else (0.9 if kind == "semantic" else 0.02)
    x0 = dict(q=np.diag(q0 * act), V=np.diag(V0 * act + (1 - act)), m=np.zeros((L, r)), theta=np.zeros((r_t, r)))
    require = ()
    if sem_dir is not None:
        free["theta"][:, sem_dir] = 1.0
        x0["theta"][0, sem_dir] = th0 * min(1.0, np.sqrt(q0) / 0.9)
        require += ("theta",)
    if pos_dir is not None:
        free["m"][:, pos_dir] = 1.0
        x0["m"][:, pos_dir] = m0
        x0["m"][1, pos_dir] = -m0
        require += ("m",)
    for k in free:
        free[k] = free[k] * act[None, :]
        x0[k] = x0[k] if k == "V" else x0[k] * act[None, :]
    return Branch(kind, free, active, x0, require)


def qmc_samples(n: int, L: int, r: int, r_t: int, seed: int):
    """(xi (n, L, r), eta (n, L, r_t)): scrambled Sobol points of dimension L (r + r_t) mapped through the
    standard normal inverse CDF. n should be a power of 2 (balance of the Sobol net)."""
    dim = L * (r + r_t)
    u = qmc.Sobol(d=dim, scramble=True, seed=seed).random(n)
    g = norm.ppf(np.clip(u, 1e-16, 1 - 1e-16))
    return g[:, : L * r].reshape(n, L, r), g[:, L * r:].reshape(n, L, r_t)


# ----------------------------------------------------------------------------------------------------
# Small linear algebra on the active block
# ----------------------------------------------------------------------------------------------------


def _sym(a):
    return 0.5 * (a + a.T)


def _psd_sqrt(S, floor=0.0):
    """S^{1/2} and S^{-1/2} of a symmetric matrix (eigenvalues clipped at ``floor``; inverse uses 1e-300)."""
    lam, U = jnp.linalg.eigh(_sym(S))
    lam = jnp.maximum(lam, floor)
    s = jnp.sqrt(lam)
    return (U * s[None, :]) @ U.T, (U / jnp.maximum(s, 1e-150)[None, :]) @ U.T


def _completed(S, act):
    """S on the active block, identity on the inactive directions (keeps inverses finite)."""
    mask = act[:, None] * act[None, :]
    return S * mask + jnp.diag(1.0 - act)


# ----------------------------------------------------------------------------------------------------
# Fields and the inner problem (per sample; vmapped)
# ----------------------------------------------------------------------------------------------------


def fields(x, xi, eta, sigma, act):
    """w (N, L, r), t (N, L, r_t), and (q^{1/2}, q^{-1/2}, V*, V*^{-1}) for overlaps x on samples xi, eta."""
    r_t = eta.shape[-1]
    q = _completed(x["q"], act)
    qs, qis = _psd_sqrt(q)
    rho = sigma**2 * jnp.eye(r_t)
    th = x["theta"] * act[None, :]
    vstar, vstar_inv = _psd_sqrt(rho - th @ qis @ qis @ th.T, floor=0.0)
    w = (x["m"][None] + xi @ qs) * act[None, None, :]
    t = xi @ (qis @ th.T) + eta @ vstar
    return w, t, (qs, qis, vstar, vstar_inv)


def attention(h):
    """Row-wise softmax of h h^T for h (L, k)."""
    return jax.nn.softmax(h @ h.T, axis=-1)


def teacher_mixing(t, omega, A):
    """T (L, L) = (1 - omega) softmax(t t^T) + omega A for t (L, r_t)."""
    return (1.0 - omega) * attention(t) + omega * A


def loss_part(h, T, sigma2):
    """sigma^2 |softmax(h h^T) - T|_F^2 for one sample (h (L, r), T (L, L))."""
    return sigma2 * jnp.sum((attention(h) - T) ** 2)


def inner_objective(hflat, w, T, Vinv, sigma2):
    """M(h) for one sample: hflat (L r,), w (L, r), T (L, L), Vinv (r, r)."""
    h = hflat.reshape(w.shape)
    d = h - w
    return jnp.sum((d @ Vinv) * d) + loss_part(h, T, sigma2)


def _newton_step(hflat, w, T, Vinv, sigma2, amask, floor):
    """One saddle-free damped Newton step on M for one sample: the Hessian's eigenvalues replaced by
    max(|lambda|, floor), step capped at norm 1, best of LINE_STEPS fractions (0 = stay). Inactive
    coordinates (amask = 0) do not move."""
    M = lambda z: inner_objective(z, w, T, Vinv, sigma2)
    g = jax.grad(M)(hflat) * amask
    H = jax.hessian(M)(hflat) * (amask[:, None] * amask[None, :]) + jnp.diag(1.0 - amask)
    lam, U = jnp.linalg.eigh(H)
    step = -U @ ((U.T @ g) / jnp.maximum(jnp.abs(lam), floor))
    step = step * jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.linalg.norm(step), 1e-300))
    cands = jnp.stack([hflat + tau * step for tau in LINE_STEPS])
    vals = jax.vmap(M)(cands)
    vals = jnp.where(jnp.isnan(vals), jnp.inf, vals)
    return cands[jnp.argmin(vals)]


def _newton(h, w, T, Vinv, sigma2, amask, floor, n_iter):
    """n_iter Newton steps for a batch: h (N, L r), w (N, L, r), T (N, L, L)."""
    step = jax.vmap(_newton_step, in_axes=(0, 0, 0, None, None, None, None))
    return jax.lax.fori_loop(0, n_iter, lambda _, hh: step(hh, w, T, Vinv, sigma2, amask, floor), h)


def _starts(w, t, h_prev, r):
    """Starts of the multi-start search, (S, N, L, r): w, -w, +-t (teacher fields padded/cut to r
    columns), h_prev."""
    N, L, r_t = t.shape
    tt = jnp.concatenate([t, jnp.zeros((N, L, max(r - r_t, 0)))], axis=-1)[..., :r]
    return jnp.stack([w, -w, tt, -tt, h_prev])


def inner_solve(w, t, T, V, sigma2, act, h_prev, full: bool):
    """h* (N, L, r): global minimiser of M at every sample (multi-start when ``full``), else Newton
    from h_prev."""
    N, L, r = w.shape
    Vc = _completed(V, act)
    Vinv = jnp.linalg.inv(Vc)
    floor = EIG_FLOOR * 2.0 / jnp.max(jnp.linalg.eigvalsh(Vc))
    amask = jnp.tile(act, L)
    flat = lambda a: a.reshape(a.shape[0], L * r)
    if not full:
        return _newton(flat(h_prev), w, T, Vinv, sigma2, amask, floor, NEWTON_WARM).reshape(N, L, r)
    S_ = _starts(w, t, h_prev, r) * act[None, None, None, :]
    S = S_.shape[0]
    hs = _newton(S_.reshape(S * N, L * r), jnp.tile(w, (S, 1, 1)), jnp.tile(T, (S, 1, 1)), Vinv, sigma2, amask,
                 floor, NEWTON_SCREEN)
    Ms = jax.vmap(inner_objective, in_axes=(0, 0, 0, None, None))(hs, jnp.tile(w, (S, 1, 1)),
                                                                   jnp.tile(T, (S, 1, 1)), Vinv, sigma2)
    Ms = jnp.where(jnp.isnan(Ms), jnp.inf, Ms).reshape(S, N)
    best = jnp.take_along_axis(hs.reshape(S, N, L * r), jnp.argmin(Ms, axis=0)[None, :, None], axis=0)[0]
    return _newton(best, w, T, Vinv, sigma2, amask, floor, NEWTON_POLISH).reshape(N, L, r)


# ----------------------------------------------------------------------------------------------------
# The fixed-point map
# ----------------------------------------------------------------------------------------------------


def hats(x, h, w, xi, eta, alpha, aux, act):
    """Conjugates from the minimisers h (N, L, r):
    qh = alpha sum_l E[f_l f_l^T], mh_l = alpha E[f_l], thh = alpha V*^{-1} sum_l E[eta_l f_l^T],
    Vh = -alpha q^{-1/2} sum_l E[xi_l f_l^T] + q^{-1} theta^T thh (Stein form of -alpha sum_l E[df_l/dw_l]),
    symmetrised. Returns dict qh, Vh, mh, thh and f (N, L, r)."""
    qs, qis, vstar, vstar_inv = aux
    Vinv = jnp.linalg.inv(_completed(x["V"], act))
    f = ((h - w) @ Vinv) * act[None, None, :]
    N = f.shape[0]
    qh = alpha * jnp.einsum("nla,nlb->ab", f, f) / N
    mh = alpha * jnp.mean(f, axis=0)
    thh = alpha * vstar_inv @ jnp.einsum("nlk,nla->ka", eta, f) / N
    th = x["theta"] * act[None, :]
    Vh = -alpha * qis @ (jnp.einsum("nla,nlb->ab", xi, f) / N) + qis @ qis @ th.T @ thh
    mask = act[:, None] * act[None, :]
    return dict(qh=_sym(qh) * mask, Vh=_sym(Vh) * mask, mh=mh * act[None, :], thh=thh * act[None, :]), f


def overlaps_from_hats(hh, pb: Problem, act):
    """D = lam + sigma^2 Vh; V = sigma^2 D^{-1}; m = P mh D^{-1}; theta = sigma^2 rho thh D^{-1};
    q = sigma^2 D^{-1} C D^{-1}, C = sigma^2 qh + mh^T P mh + sigma^2 thh^T rho thh. Returns (x, D^{-1}, C)."""
    s2 = pb.sigma**2
    rho = s2 * jnp.eye(pb.r_t)
    mask = act[:, None] * act[None, :]
    D = _completed(pb.lam * jnp.eye(pb.r) + s2 * hh["Vh"], act)
    Dinv = _sym(jnp.linalg.inv(D)) * mask
    C = s2 * hh["qh"] + hh["mh"].T @ pb.P @ hh["mh"] + s2 * hh["thh"].T @ rho @ hh["thh"]
    x = dict(q=_sym(s2 * Dinv @ C @ Dinv), V=s2 * Dinv, m=pb.P @ hh["mh"] @ Dinv, theta=s2 * rho @ hh["thh"] @ Dinv)
    return x, Dinv, C


def free_entropy(x, hh, Dinv, C, EM, alpha):
    """Phi = 1/2 tr(Vh q) - 1/2 tr(qh V) - sum_l m_l . mh_l - tr(theta^T thh) + 1/2 tr(D^{-1} C)
    - (alpha / 2) E[M(h*)]; train_loss = -Phi."""
    return (0.5 * jnp.trace(hh["Vh"] @ x["q"]) - 0.5 * jnp.trace(hh["qh"] @ x["V"]) - jnp.sum(x["m"] * hh["mh"])
            - jnp.sum(x["theta"] * hh["thh"]) + 0.5 * jnp.trace(Dinv @ C) - 0.5 * alpha * EM)


@functools.partial(jax.jit, static_argnames=("L", "r", "r_t", "full"))
def fixed_point_map(x, h_prev, xi, eta, consts, act, L, r, r_t, full):
    """One application overlaps -> hats -> overlaps at x (dict). consts = (omega, sigma, lam, alpha, A, P).
    Returns (x_new, h*, obs) with obs: hats, test_error, train_loss (both evaluated at x)."""
    omega, sigma, lam, alpha, A, P = consts
    pb = Problem(L, r, r_t, omega, sigma, lam, alpha, A, P)
    s2 = sigma**2
    w, t, aux = fields(x, xi, eta, sigma, act)
    T = jax.vmap(teacher_mixing, in_axes=(0, None, None))(t, omega, A)
    h = inner_solve(w, t, T, x["V"], s2, act, h_prev, full)
    hh, _ = hats(x, h, w, xi, eta, alpha, aux, act)
    x_new, Dinv, C = overlaps_from_hats(hh, pb, act)
    Vinv = jnp.linalg.inv(_completed(x["V"], act))
    EM = jnp.mean(jax.vmap(inner_objective, in_axes=(0, 0, 0, None, None))(h.reshape(h.shape[0], -1), w, T, Vinv, s2))
    phi = free_entropy(x, hh, Dinv, C, EM, alpha)
    test_error = 0.5 * jnp.mean(jax.vmap(loss_part, in_axes=(0, 0, None))(w, T, s2))
    return x_new, h, dict(hats=hh, test_error=test_error, train_loss=-phi, EM=EM)


# ----------------------------------------------------------------------------------------------------
# Outer iteration
# ----------------------------------------------------------------------------------------------------


def _flatten(x, free):
    """Free components of x as one vector (in KEYS order)."""
    return np.concatenate([np.asarray(x[k])[np.asarray(free[k]) > 0] for k in KEYS])


def _unflatten(v, free, base):
    """Inverse of _flatten: base with its free components replaced by v (symmetric matrices stay symmetric)."""
    out, i = {}, 0
    for k in KEYS:
        a = np.array(base[k], dtype=float, copy=True)
        msk = np.asarray(free[k]) > 0
        n = int(msk.sum())
        a[msk] = v[i:i + n]
        i += n
        out[k] = _sym(a) if k in ("q", "V") else a
    return out


def residual(x, xn, branch: Branch, sigma, pinned=False):
    """Relative fixed-point residual over the free components (``pinned``: over the pinned ones of the active
    directions instead; with QMC samples a symmetry that pins them holds only to the sampling error):
    |dq_ab| / sqrt(q_aa q_bb), |dV_ab| / sqrt(V_aa V_bb), |dm_la| / sqrt(q_aa + m_la^2),
    |dtheta_ka| / sqrt(q_aa rho)."""
    act = np.array(branch.active, float) > 0
    dq = np.sqrt(np.maximum(np.diag(x["q"]), 1e-300))
    dV = np.sqrt(np.maximum(np.diag(x["V"]), 1e-300))
    parts = [np.abs(xn["q"] - x["q"]) / np.outer(dq, dq), np.abs(xn["V"] - x["V"]) / np.outer(dV, dV),
             np.abs(xn["m"] - x["m"]) / np.sqrt(dq[None] ** 2 + x["m"] ** 2),
             np.abs(xn["theta"] - x["theta"]) / (dq[None] * sigma)]
    sel = [act[:, None] & act[None, :], act[:, None] & act[None, :], np.broadcast_to(act[None], x["m"].shape),
           np.broadcast_to(act[None], x["theta"].shape)]
    sel = [s & ((np.asarray(branch.free[k]) > 0) != pinned) for s, k in zip(sel, KEYS)]
    r = max(float(np.max(p[s])) if s.any() else 0.0 for p, s in zip(parts, sel))
    return r if np.isfinite(r) else np.inf


def _scales(x):
    """Natural scale of every component (dict like x): sqrt(q_aa q_bb), sqrt(V_aa V_bb), sqrt(q_aa + m^2),
    sqrt(q_aa) (theta; times sigma would do as well)."""
    dq = np.sqrt(np.maximum(np.diag(x["q"]), 1e-300))
    dV = np.sqrt(np.maximum(np.diag(x["V"]), 1e-300))
    return dict(q=np.outer(dq, dq), V=np.outer(dV, dV), m=np.sqrt(dq[None] ** 2 + x["m"] ** 2),
                theta=np.broadcast_to(dq[None], x["theta"].shape))


def _valid(x, branch: Branch, sigma) -> bool:
    """q, V positive definite on the active block and theta q^{-1} theta^T <= rho."""
    act = np.array(branch.active) > 0
    q, V, th = x["q"][np.ix_(act, act)], x["V"][np.ix_(act, act)], x["theta"][:, act]
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(V)) and np.all(np.isfinite(th))):
        return False
    if np.linalg.eigvalsh(q).min() <= 0 or np.linalg.eigvalsh(V).min() <= 0:
        return False
    return bool(np.linalg.eigvalsh(sigma**2 * np.eye(th.shape[0]) - th @ np.linalg.solve(q, th.T)).min() > 0)


class _Anderson:
    """Type-II Anderson acceleration on the free coordinates (numpy)."""

    def __init__(self, m=ANDERSON_M, beta=ANDERSON_BETA):
        self.m, self.beta, self.dz, self.dg, self.prev = m, beta, [], [], None

    def reset(self):
        self.prev = None

    def step(self, z, g):
        if self.prev is not None:
            self.dz.append(z - self.prev[0])
            self.dg.append(g - self.prev[1])
            self.dz, self.dg = self.dz[-self.m:], self.dg[-self.m:]
        self.prev = (z, g)
        if len(self.dg) < 2:
            return z + self.beta * g
        dZ, dG = np.array(self.dz).T, np.array(self.dg).T
        gram = dG.T @ dG
        gamma = np.linalg.solve(gram + 1e-10 * (np.trace(gram) + 1e-30) * np.eye(len(gram)), dG.T @ g)
        return z + self.beta * g - (dZ + self.beta * dG) @ gamma


def signature_ok(x, branch: Branch, sigma) -> bool:
    """The branch's signature components (branch.require) stay away from 0, normalised by their scales."""
    act = np.array(branch.active) > 0
    trq = float(np.trace(x["q"][np.ix_(act, act)]))
    ok = True
    if "theta" in branch.require:
        ok &= np.linalg.norm(x["theta"]) / np.sqrt(max(trq, 1e-300) * sigma**2) > COLLAPSE
    if "m" in branch.require:
        ok &= np.linalg.norm(x["m"]) / np.sqrt(max(trq + np.sum(x["m"] ** 2), 1e-300)) > COLLAPSE
    return bool(ok)


def solve_point(L, r, r_t, omega, sigma, lam, alpha, A, branch: Branch, n_samples=2**14, seed=0, x0=None,
                h0=None, P=None, samples=None, tol=TOL, max_iter=MAX_ITER, cold=None):
    """Fixed point of one (L, r, r_t, omega, sigma, lam, alpha, A) on one branch.

    x0: start (default branch.x0); h0 (N, L, r): warm start of h* (same samples); samples: (xi, eta) to use
    instead of qmc_samples(n_samples, ..., seed); cold: damped iterations first (default: when h0 is None).
    Returns dict: x (overlaps), hats, test_error, train_loss, residual (free components), pinned_residual
    (how far the pinned components are from their own update: sampling error of the symmetry that pins
    them), converged, iterations, seconds, h.
    ``converged``: residual <= tol after a full inner search, valid overlaps, the branch signature holds.
    """
    t0 = time.time()
    P = default_gram(L) if P is None else np.asarray(P, float)
    xi, eta = samples if samples is not None else qmc_samples(n_samples, L, r, r_t, seed)
    cold = h0 is None if cold is None else cold
    with jax.enable_x64(True):
        act = jnp.asarray(branch.active, jnp.float64)
        consts = tuple(jnp.asarray(c, jnp.float64) for c in (omega, sigma, lam, alpha, np.asarray(A, float), P))
        xi_j, eta_j = jnp.asarray(xi, jnp.float64), jnp.asarray(eta, jnp.float64)
        x = {k: np.asarray((x0 if x0 is not None else branch.x0)[k], float) for k in KEYS}
        h = jnp.asarray(h0, jnp.float64) if h0 is not None else jnp.zeros((xi.shape[0], L, r))
        and_ = _Anderson()
        res, last_full, obs, it = np.inf, False, None, 0
        for it in range(max_iter):
            full = (it % FULL_EVERY == 0 and (it > 0 or h0 is None)) or (res < tol and not last_full)
            xn_j, h_new, obs_j = fixed_point_map({k: jnp.asarray(v) for k, v in x.items()}, h, xi_j, eta_j, consts,
                                                 act, L, r, r_t, bool(full))
            xn = {k: np.asarray(v) for k, v in xn_j.items()}
            obs = jax.device_get(obs_j)
            h, last_full = h_new, full
            res_old, res = res, residual(x, xn, branch, sigma)
            if full and res < tol:
                break
            if not np.isfinite(res) or res > 1e6:  # diverged (reported as not converged)
                break
            z, zn = _flatten(x, branch.free), _flatten(xn, branch.free)
            if full and res > 10 * res_old:
                and_.reset()  # a basin switch: drop the secant pair across the jump
            if cold and it < N_PLAIN:
                z_next = PLAIN_MIX * zn + (1 - PLAIN_MIX) * z
            else:
                z_next = and_.step(z, zn - z)
            # cap each step at half the component's natural scale (Anderson can extrapolate wildly)
            scale = _flatten(_scales(x), branch.free)
            z_next = z + np.clip(z_next - z, -0.5 * scale, 0.5 * scale)
            x_next = _unflatten(z_next, branch.free, x)
            if not _valid(x_next, branch, sigma):
                x_next = _unflatten(PLAIN_MIX * zn + (1 - PLAIN_MIX) * z, branch.free, x)
                and_.reset()
            x = x_next
    res_pinned = residual(x, xn, branch, sigma, pinned=True)
    conv = bool(last_full and res <= tol and _valid(x, branch, sigma) and signature_ok(x, branch, sigma))
    return dict(x=x, hats={k: np.asarray(v) for k, v in obs["hats"].items()}, test_error=float(obs["test_error"]),
                train_loss=float(obs["train_loss"]), residual=float(res),
                pinned_residual=float(res_pinned), converged=conv, iterations=it + 1,
                seconds=time.time() - t0, h=np.asarray(h))


def solve_branch(L, r, r_t, omega, sigma, lam, alphas, A, branch: Branch, n_samples=2**14, seed=0, samples=None,
                 **kw):
    """Continuation along ``alphas`` (in the given order): each alpha starts from the previous converged
    solution and its h*, on one QMC point set (``samples``, default qmc_samples(n_samples, ..., seed)).
    Returns a list of solve_point results (with 'alpha' added)."""
    out, x0, h0 = [], None, None
    samples = qmc_samples(n_samples, L, r, r_t, seed) if samples is None else samples
    for a in alphas:
        res = solve_point(L, r, r_t, omega, sigma, lam, a, A, branch, samples=samples, x0=x0, h0=h0, **kw)
        res["alpha"] = a
        out.append(res)
        if res["converged"]:
            x0, h0 = res["x"], res["h"]
    return out


# ----------------------------------------------------------------------------------------------------
# Tables: the public API (DataFrames like attnsim.theory.solve's)
# ----------------------------------------------------------------------------------------------------

COVERS = "the generic theory covers L >= 2, r >= 1, r_t >= 1, sigma > 0, a row-stochastic L x L A, alpha > 0"


def check_supported(L, r, r_t, sigma, A, alphas) -> None:
    """Raise ``ValueError`` (one line) unless the generic solver covers the point."""
    bad_shape = int(L) < 2 or int(r) < 1 or int(r_t) < 1
    problem = f"L={L}, r={r}, r_t={r_t}" if bad_shape else point_problem(int(L), sigma, A, alphas)
    if problem:
        raise ValueError(f"{problem} is not supported: {COVERS}")


def default_branches(r: int) -> tuple[str, ...]:
    """semantic and positional, and for r >= 2 the mixed branch (one direction of each)."""
    return ("semantic", "positional") + (("mixed",) if r >= 2 else ())


def linear_baseline_error(omega, L=2, r_t=1, sigma=0.5, n_samples=2**16, seed=0):
    """Population test error of the optimal linear positional baseline B = E[T], any L and r_t:
    sigma^2 (E|T|_F^2 - |E T|_F^2) / 2 with t (L, r_t) ~ N(0, sigma^2 I) (A drops out: only the variance of T
    enters). Randomised QMC over L r_t Gaussians. omega: float or array; returns float or array."""
    om = np.asarray(omega, np.float64)
    u = qmc.Sobol(d=L * r_t, scramble=True, seed=seed).random(n_samples)
    t = sigma * norm.ppf(np.clip(u, 1e-16, 1 - 1e-16)).reshape(n_samples, L, r_t)
    scores = np.einsum("nla,nka->nlk", t, t)
    s = np.exp(scores - scores.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    var = float(np.sum(s.var(axis=0)))
    out = sigma**2 * (1.0 - om) ** 2 * var / 2.0
    return float(out) if out.ndim == 0 else out


def _row(res: dict, r: int) -> dict:
    """A table row from a solve_point result: the simulator's rotation-invariant overlaps (q = tr q,
    m = |m_1|, theta = |theta|_F, V = tr V) and per student direction j: q_j = q_jj, m_j = |m_1j|,
    theta_j = |theta_.j|."""
    x = res["x"]
    row = dict(q=float(np.trace(x["q"])), m=float(np.linalg.norm(x["m"][0])), V=float(np.trace(x["V"])),
               theta=float(np.linalg.norm(x["theta"])), test_error=res["test_error"], train_loss=res["train_loss"],
               converged=res["converged"], iterations=res["iterations"], residual=res["residual"])
    for j in range(r):
        row.update({f"q_{j + 1}": float(x["q"][j, j]), f"m_{j + 1}": float(abs(x["m"][0, j])),
                    f"theta_{j + 1}": float(np.linalg.norm(x["theta"][:, j]))})
    return row


def solve(omegas, alphas, L=2, r=1, r_t=1, sigma=0.5, lam=0.01, A=None, branches=None,
          n_samples=DEFAULT_SAMPLES, seed=0) -> pd.DataFrame:
    """Fixed points for every (omega, sigma, lam) x alpha x branch of the (L, r, r_t) model.

    A: the L x L positional matrix (default: the standard 2 x 2 one; required for L > 2). branches: names of
    ``make_branch`` (default ``default_branches(r)``). Every branch is followed by continuation from the
    largest alpha down on one set of ``n_samples`` scrambled-Sobol points (seed ``seed``), shared by every
    branch and point so that branch differences are not sampling noise.
    Returns one row per (omega, sigma, lam, alpha, branch): omega, sigma, lam, alpha, branch, q, m, V, theta
    (as ``_row``), test_error, train_loss, converged, iterations, residual, per-direction q_j, m_j, theta_j,
    lin_test_error, global_min.
    """
    A = np.asarray(STANDARD_A if A is None else A, np.float64)
    al = np.atleast_1d(np.asarray(alphas, np.float64))
    check_supported(L, r, r_t, sigma, A, al)
    names = tuple(branches or default_branches(r))
    specs = {b: make_branch(b, L, r, r_t) for b in names}
    al_desc = np.unique(al)[::-1]
    samples = qmc_samples(n_samples, L, r, r_t, seed)
    rows = []
    for om in np.atleast_1d(np.asarray(omegas, np.float64)):
        for sg in np.atleast_1d(np.asarray(sigma, np.float64)):
            for lm in np.atleast_1d(np.asarray(lam, np.float64)):
                for b in names:
                    down = solve_branch(L, r, r_t, om, sg, lm, al_desc, A, specs[b], samples=samples)
                    for res in _retry_upwards(down, L, r, r_t, om, sg, lm, A, specs[b], samples):
                        rows.append(dict(omega=om, sigma=sg, lam=lm, alpha=res["alpha"], branch=b, **_row(res, r)))
    df = pd.DataFrame(rows)
    lin = {(om, sg): linear_baseline_error(om, L, r_t, sg) for om, sg in df[["omega", "sigma"]].drop_duplicates().to_numpy()}
    df["lin_test_error"] = [lin[(om, sg)] for om, sg in df[["omega", "sigma"]].to_numpy()]
    df = mark_global(df)
    return df.sort_values(["omega", "sigma", "lam", "alpha", "branch"], kind="stable").reset_index(drop=True)


def _retry_upwards(down: list, L, r, r_t, omega, sigma, lam, A, branch: Branch, samples) -> list:
    """A continuation from the largest alpha down can miss a branch at its cold start (or after a failed
    point): every point that did not converge is solved again warm from the converged point just below it
    (alphas ascending), which is kept if it converges. ``down``: solve_branch's results, alphas descending."""
    out = list(down)
    for i in range(len(out) - 2, -1, -1):  # ascending alpha
        below = out[i + 1]
        if not out[i]["converged"] and below["converged"]:
            res = solve_point(L, r, r_t, omega, sigma, lam, out[i]["alpha"], A, branch, samples=samples,
                              x0=below["x"], h0=below["h"])
            res["alpha"] = out[i]["alpha"]
            if res["converged"]:
                out[i] = res
    return out


def _last_crossing(x, y) -> float:
    """The x where y (at increasing x) last changes sign from >= 0 to < 0, linearly interpolated; NaN if never."""
    idx = np.flatnonzero(np.isfinite(y[:-1]) & np.isfinite(y[1:]) & (y[:-1] >= 0) & (y[1:] < 0))
    if not len(idx):
        return float("nan")
    i = idx[-1]
    return float(x[i] + y[i] * (x[i + 1] - x[i]) / (y[i] - y[i + 1]))


def critical_lines(omegas, L=2, r=1, r_t=1, sigma=0.5, lam=0.01, A=None, alpha_max=2.0, n_grid=10, branches=None,
                   n_samples=DEFAULT_SAMPLES, seed=0) -> pd.DataFrame:
    """alpha_c, alpha_l and the spinodals of the (L, r, r_t) model on the grid alpha_max (1..n_grid)/n_grid.

    - alpha_c: the last alpha where the best branch with theta != 0 (semantic, mixed) becomes the global
      minimum over those with theta = 0 (positional, trivial): the difference of their lowest train losses
      changes sign, linearly interpolated between grid points;
    - alpha_l: the global minimum's test_error falls below the linear baseline's (last crossing);
    - alpha_sp_<branch>: the midpoint of the first grid interval where the branch appears or disappears.
    NaN where none in (0, alpha_max]. Also global_branch_at_max: the global minimum at alpha_max.
    Returns one row per (omega, sigma, lam).
    """
    alpha_A = alpha_max * np.arange(1, n_grid + 1) / n_grid
    names = tuple(branches or default_branches(r))
    df = solve(omegas, alpha_A, L, r, r_t, sigma, lam, A, names, n_samples, seed)
    semantic_like = [b for b in names if "theta" in make_branch(b, L, r, r_t).require]
    rows = []
    for (om, sg, lm), g in df.groupby(["omega", "sigma", "lam"]):
        tl = g.assign(train_loss=g.train_loss.where(g.converged)).pivot(index="alpha", columns="branch",
                                                                        values="train_loss").reindex(alpha_A)
        sem = tl[[b for b in semantic_like if b in tl]].min(axis=1, skipna=True)
        other = tl[[b for b in tl if b not in semantic_like]].min(axis=1, skipna=True)
        glob = g[g.global_min].set_index("alpha").reindex(alpha_A)
        row = dict(omega=om, sigma=sg, lam=lm, alpha_c=_last_crossing(alpha_A, (sem - other).to_numpy()),
                   alpha_l=_last_crossing(alpha_A, (glob.test_error - g.lin_test_error.iloc[0]).to_numpy()))
        for b in names:
            j = persistent_edge(np.isfinite(tl[b].to_numpy()))
            row[f"alpha_sp_{b}"] = 0.5 * (alpha_A[j] + alpha_A[j + 1]) if j >= 0 else np.nan
        row["global_branch_at_max"] = glob.branch.iloc[-1] if glob.branch.notna().iloc[-1] else "none"
        row["lin_test_error"] = g.lin_test_error.iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)
