"""One run: a pure function of (static shapes, seed key, per-run hyper-parameter arrays).

``run = make_run(static)`` returns ``run(seed_key, hp) -> (Q, metrics)``: draws the seed's data, trains
the tied attention student with optax under ``lax.scan``, fits the linear baseline in closed form and
evaluates both. A sweep is ``jax.vmap(run, in_axes=(None, 0))`` over runs of one seed (the data is then
drawn once and shared, because it depends only on the unbatched key) and a further ``vmap`` over seeds.

The fast path. Write y - f(x) = (T - S) z - S p with S = softmax(h h^T), h = x Q / sqrt(d), and
T = (1 - omega) softmax(t t^T) + omega A. Then |y - f|^2 / d depends on a sample only through the
L x L Gram matrices z z^T / d, p z^T / d, p p^T / d and the projections x Q, z Q* (see
:func:`sq_error`), so a step costs two passes over the training inputs (h = x Q and its transpose for
the gradient) and builds no L x d intermediate. ``tests/test_training.py`` checks it against the Flax
modules of ``attnsim.models``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from attnsim import data

INIT_IDS = {"random": 0, "semantic": 1, "positional": 2}
RANDOM_INIT_STD = 0.1


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that fixes the shapes of the compiled program (hashable, a jit static argument)."""

    d: int
    L: int = 2
    r: int = 1
    r_t: int = 1
    n_max: int = 1  # training samples held per seed (runs use the first n <= n_max)
    optimizer: str = "gd"
    steps: int = 5000
    n_test: int = 10000
    test_chunk: int = 2000
    lin_input: str = "x"  # the baseline sees x ("x") or z ("z")


class HParams(NamedTuple):
    """Per-run arrays (scalars for one run; a leading run axis under vmap)."""

    omega: jax.Array
    sigma: jax.Array
    lam: jax.Array
    lam_lin: jax.Array
    lr: jax.Array
    n: jax.Array  # int32, number of training samples, <= Static.n_max
    init: jax.Array  # int32, an INIT_IDS value
    A: jax.Array  # L x L


def hparams(omega=0.3, sigma=0.5, lam=0.01, lam_lin=1e-4, lr=0.15, n=1, init="random",
            A=((0.6, 0.4), (0.4, 0.6))) -> HParams:
    """One run's HParams from Python values."""
    return HParams(*(jnp.asarray(v, jnp.float32) for v in (omega, sigma, lam, lam_lin, lr)),
                   n=jnp.asarray(n, jnp.int32), init=jnp.asarray(INIT_IDS[init], jnp.int32),
                   A=jnp.asarray(A, jnp.float32))


def attention(h_NxLxR: jax.Array) -> jax.Array:
    """Row-wise softmax(h h^T), N x L x L."""
    return jax.nn.softmax(data.outer(h_NxLxR), axis=-1)


def sq_error(S, T, G_zz, G_pz, G_pp) -> jax.Array:
    """Per-sample |T z - S (p + z)|_F^2 / (2d), from D = T - S and the Grams (all ... x L x L):
    = 1/2 [tr(D G_zz D^T) - 2 tr(S G_pz D^T) + tr(S G_pp S^T)]. Also the baseline's error with S = B."""
    D = T - S
    return 0.5 * (_quad(D, G_zz, D) - 2.0 * _quad(S, G_pz, D) + _quad(S, G_pp, S))


def _quad(X, G, Y):
    """tr(X G Y^T) over the trailing L x L axes. Written as broadcast products and sums: batched tiny
    matrix products (einsum) compile to slow per-sample GEMM calls on CPU."""
    G = jnp.broadcast_to(G, X.shape)
    XG = jnp.sum(X[..., :, :, None] * G[..., None, :, :], axis=-2)
    return jnp.sum(XG * Y, axis=(-2, -1))


def optimizer(static: Static, hp: HParams) -> optax.GradientTransformation:
    """GD or Adam with the l2 term as weight decay (gradient + lam Q), as the authors trained."""
    base = optax.sgd(hp.lr) if static.optimizer == "gd" else optax.adam(hp.lr)
    return optax.chain(optax.add_decayed_weights(hp.lam), base)


def initial_Q(static: Static, key, Q_star, p_LxD, init) -> jax.Array:
    """Q0_DxR. random: 0.1 N(0, 1) from (seed, init id); semantic: the first columns are Q*;
    positional: the first column is p_1 (= 1/sqrt(d) for the default embeddings, the authors' choice,
    so m = 1/sqrt(d)); further columns keep the random init."""
    Q_rand = RANDOM_INIT_STD * jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(key, data.INIT), init), (static.d, static.r))
    k = min(static.r, static.r_t)
    Q_sem = Q_rand.at[:, :k].set(Q_star[:, :k])
    Q_pos = Q_rand.at[:, 0].set(p_LxD[0])
    return jnp.select([init == INIT_IDS["semantic"], init == INIT_IDS["positional"]], [Q_sem, Q_pos], Q_rand)


class Problem(NamedTuple):
    """One run's view of a sample set: Grams scaled by sigma, teacher mixing T, sample weights."""

    eps: jax.Array  # N x L x D standard noise (shared by the runs of a seed)
    T: jax.Array  # N x L x L
    G_zz: jax.Array
    G_pz: jax.Array
    weight: jax.Array  # N, 1 for the run's samples, 0 for padding


def problem(eps, stats: data.SeedStats, hp: HParams, weight) -> Problem:
    return Problem(eps, data.teacher_mixing(hp.sigma * stats.u, hp.omega, hp.A),
                   hp.sigma**2 * stats.G_ee, hp.sigma * stats.G_pe, weight)


def data_loss(Q, pr: Problem, p_LxD, sigma, G_pp) -> jax.Array:
    """sum_mu weight_mu |y - f_Q(x)|^2 / (2d): one pass over eps for h = (p + sigma eps) Q / sqrt(d)."""
    d = p_LxD.shape[-1]
    h = ((p_LxD @ Q)[None] + sigma * jnp.einsum("nld,dr->nlr", pr.eps, Q)) / jnp.sqrt(d)
    return jnp.sum(pr.weight * sq_error(attention(h), pr.T, pr.G_zz, pr.G_pz, G_pp))


def ridge_baseline(pr: Problem, G_pp, lam_lin, lin_input: str) -> jax.Array:
    """B_LxL = argmin sum_mu w |y - B u|^2/(2d) + lam_lin/2 |B|^2 with u = x (or z): the normal equations
    B (sum G_uu + lam_lin I) = sum T G_zu."""
    G_zp = jnp.swapaxes(pr.G_pz, -1, -2)
    if lin_input == "x":
        G_uu = G_pp[None] + pr.G_pz + G_zp + pr.G_zz
        G_zu = G_zp + pr.G_zz
    else:
        G_uu, G_zu = pr.G_zz, pr.G_zz
    w = pr.weight[:, None, None]
    lhs = jnp.sum(w * G_uu, 0) + lam_lin * jnp.eye(G_pp.shape[0])
    rhs = jnp.sum(w * (pr.T @ G_zu), 0)
    return jnp.linalg.solve(lhs.T, rhs.T).T


def baseline_error(B, pr: Problem, G_pp, lin_input: str) -> jax.Array:
    """Per-sample error of the baseline (N,)."""
    B = jnp.broadcast_to(B, pr.T.shape)
    if lin_input == "x":
        return sq_error(B, pr.T, pr.G_zz, pr.G_pz, G_pp)
    zeros = jnp.zeros_like(G_pp)
    return sq_error(B, pr.T, pr.G_zz, zeros, zeros)


def overlaps(Q, Q_star, p_LxD, sigma) -> dict:
    """m = |p_1^T Q| / sqrt(d), theta = sigma^2 |Q*^T Q|_F / d, q = sigma^2 tr(Q^T Q) / d (for r = 1: |m|,
    |theta|, q of MODEL.md; rotation-invariant for r > 1)."""
    d = Q.shape[0]
    return dict(m=jnp.linalg.norm(p_LxD[0] @ Q) / jnp.sqrt(d),
                theta=sigma**2 * jnp.linalg.norm(Q_star.T @ Q) / d,
                q=sigma**2 * jnp.sum(Q * Q) / d)


def make_run(static: Static):
    """Build ``run(seed_key, hp) -> (Q_DxR, metrics)``; pure, jit- and vmap-able (see module doc)."""
    d, L = static.d, static.L

    def run(seed_key, hp: HParams):
        p = data.positional_embeddings(d, L)
        G_pp = p @ p.T / d
        Q_star = data.teacher(seed_key, d, static.r_t)
        eps = data.train_noise(seed_key, static.n_max, L, d)
        weight = (jnp.arange(static.n_max) < hp.n).astype(jnp.float32)
        pr = problem(eps, data.seed_stats(eps, p, Q_star), hp, weight)
        loss = lambda Q: data_loss(Q, pr, p, hp.sigma, G_pp)

        Q0 = initial_Q(static, seed_key, Q_star, p, hp.init)
        opt = optimizer(static, hp)

        def step(carry, _):
            Q, state = carry
            updates, state = opt.update(jax.grad(loss)(Q), state, Q)
            return (optax.apply_updates(Q, updates), state), None

        (Q, _), _ = jax.lax.scan(step, (Q0, opt.init(Q0)), length=static.steps)
        train_loss = (loss(Q) + 0.5 * hp.lam * jnp.sum(Q * Q)) / d

        B = ridge_baseline(pr, G_pp, hp.lam_lin, static.lin_input)
        lin_train_loss = (jnp.sum(weight * baseline_error(B, pr, G_pp, static.lin_input))
                          + 0.5 * hp.lam_lin * jnp.sum(B * B)) / d
        test_error, lin_test_error = _test_errors(static, seed_key, hp, Q, Q_star, B, p, G_pp)

        diverged = ~(jnp.isfinite(train_loss) & jnp.all(jnp.isfinite(Q)))
        nan = jnp.float32(jnp.nan)
        metrics = dict(train_loss=train_loss, test_error=test_error, **overlaps(Q, Q_star, p, hp.sigma))
        metrics = {k: jnp.where(diverged, nan, v) for k, v in metrics.items()}
        metrics.update(lin_test_error=lin_test_error, lin_train_loss=lin_train_loss, diverged=diverged)
        return Q, metrics

    return run


def _test_errors(static: Static, seed_key, hp: HParams, Q, Q_star, B, p, G_pp):
    """Mean test error of the student and the baseline over the seed's n_test fresh samples, streamed in
    chunks of ``test_chunk`` (never more than one chunk in memory)."""
    chunk = min(static.test_chunk, static.n_test)
    n_chunks = -(-static.n_test // chunk)
    stream = data.test_stream(seed_key)

    def body(sums, c):
        eps = data.noise(stream, c * chunk, chunk, static.L, static.d)
        weight = (c * chunk + jnp.arange(chunk) < static.n_test).astype(jnp.float32)
        pr = problem(eps, data.seed_stats(eps, p, Q_star), hp, weight)
        att = data_loss(Q, pr, p, hp.sigma, G_pp)
        lin = jnp.sum(weight * baseline_error(B, pr, G_pp, static.lin_input))
        return (sums[0] + att, sums[1] + lin), None

    (att, lin), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0)), jnp.arange(n_chunks))
    return att / static.n_test, lin / static.n_test
