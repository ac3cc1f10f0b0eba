"""One run: a pure function of (static shapes, seed key, per-run hyper-parameter arrays).

``run = make_run(static, steps)`` returns ``run(seed_key, hp) -> (Q, metrics)``: draws the seed's data,
trains the tied attention student for ``steps`` steps with optax (``train_steps``, a ``lax.fori_loop``),
fits the linear baseline in closed form and evaluates both. A sweep (``attnsim.sweep.Engine``) vmaps the
same pieces (seed data, init, training segments, evaluation) over runs of one seed, whose data is drawn
once and shared, and a further ``vmap`` over seeds. The step count is not part of ``Static``: the
engine's programs take it at run time, so sweeps of different ``steps`` share them.

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
from attnsim.config import NAMED_A

INIT_IDS = {"random": 0, "semantic": 1, "positional": 2, "mixed": 3}
RANDOM_INIT_STD = 0.1


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that fixes the compiled program (hashable: a jit static argument, and the key of the
    sweep engine's compile cache). Not the step count: a run-time argument of ``train_steps``."""

    d: int
    L: int = 2
    r: int = 1
    r_t: int = 1
    n_max: int = 1  # training samples held per seed (runs use the first n <= n_max)
    optimizer: str = "gd"
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
            A=NAMED_A["standard"]) -> HParams:
    """One run's HParams from Python values."""
    return HParams(*(jnp.asarray(v, jnp.float32) for v in (omega, sigma, lam, lam_lin, lr)),
                   n=jnp.asarray(n, jnp.int32), init=jnp.asarray(INIT_IDS[init], jnp.int32),
                   A=jnp.asarray(A, jnp.float32))


def attention(h_NxLxR: jax.Array) -> jax.Array:
    """Row-wise softmax(h h^T), N x L x L."""
    return jax.nn.softmax(data.outer(h_NxLxR), axis=-1)


def sq_error(S, T, G_ee, G_pe, G_pp, sigma) -> jax.Array:
    """Per-sample |T z - S (p + z)|_F^2 / (2d) with z = sigma eps, from D = T - S and the seed's Grams
    (all ... x L x L; G_ee = eps eps^T / d, G_pe = p eps^T / d):
    = 1/2 [sigma^2 tr(D G_ee D^T) - 2 sigma tr(S G_pe D^T) + tr(S G_pp S^T)]. sigma multiplies the
    per-sample traces, so a run never holds sigma-scaled copies of the Grams. Also the baseline's error
    with S = B."""
    D = T - S
    return 0.5 * (sigma**2 * _quad(D, G_ee, D) - 2.0 * sigma * _quad(S, G_pe, D) + _quad(S, G_pp, S))


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
    so m = 1/sqrt(d)); mixed (r >= 2): the first column is Q*'s first, the second p_1 (one direction
    semantic, one positional); further columns keep the random init."""
    Q_rand = RANDOM_INIT_STD * jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(key, data.INIT), init), (static.d, static.r))
    k = min(static.r, static.r_t)
    Q_sem = Q_rand.at[:, :k].set(Q_star[:, :k])
    Q_pos = Q_rand.at[:, 0].set(p_LxD[0])
    Q_mix = Q_rand.at[:, 0].set(Q_star[:, 0]).at[:, 1].set(p_LxD[0]) if static.r >= 2 else Q_rand
    return jnp.select([init == INIT_IDS["semantic"], init == INIT_IDS["positional"], init == INIT_IDS["mixed"]],
                      [Q_sem, Q_pos, Q_mix], Q_rand)


class Problem(NamedTuple):
    """One run's view of a sample set: the seed's sigma-free statistics (shared by the seed's runs, not
    copied per run), the run's scalars and sample weights. The teacher mixing T and the sigma-scaled
    Grams are derived where they are used (:func:`teacher_T`, :func:`sq_error`)."""

    eps: jax.Array  # N x L x D standard noise (shared by the runs of a seed)
    stats: data.SeedStats  # of eps (shared by the runs of a seed)
    sigma: jax.Array
    omega: jax.Array
    A: jax.Array  # L x L
    weight: jax.Array  # N, 1 for the run's samples, 0 for padding


def problem(eps, stats: data.SeedStats, hp: HParams, weight) -> Problem:
    return Problem(eps, stats, hp.sigma, hp.omega, hp.A, weight)


def teacher_T(pr: Problem) -> jax.Array:
    """T_NxLxL = (1 - omega) softmax(t t^T) + omega A with t = sigma u, the teacher's fields."""
    return data.teacher_mixing(pr.sigma * pr.stats.u, pr.omega, pr.A)


def data_loss(Q, pr: Problem, p_LxD, sigma, G_pp) -> jax.Array:
    """sum_mu weight_mu |y - f_Q(x)|^2 / (2d): one pass over eps for h = (p + sigma eps) Q / sqrt(d)."""
    d = p_LxD.shape[-1]
    h = ((p_LxD @ Q)[None] + sigma * jnp.einsum("nld,dr->nlr", pr.eps, Q)) / jnp.sqrt(d)
    S = attention(h)
    return jnp.sum(pr.weight * sq_error(S, teacher_T(pr), pr.stats.G_ee, pr.stats.G_pe, G_pp, sigma))


def ridge_baseline(pr: Problem, G_pp, lam_lin, lin_input: str) -> jax.Array:
    """B_LxL = argmin sum_mu w |y - B u|^2/(2d) + lam_lin/2 |B|^2 with u = x (or z): the normal equations
    B (sum G_uu + lam_lin I) = sum T G_zu."""
    G_zz = pr.sigma**2 * pr.stats.G_ee
    G_zp = pr.sigma * jnp.swapaxes(pr.stats.G_pe, -1, -2)
    if lin_input == "x":
        G_uu = G_pp[None] + jnp.swapaxes(G_zp, -1, -2) + G_zp + G_zz
        G_zu = G_zp + G_zz
    else:
        G_uu, G_zu = G_zz, G_zz
    w = pr.weight[:, None, None]
    lhs = jnp.sum(w * G_uu, 0) + lam_lin * jnp.eye(G_pp.shape[0])
    rhs = jnp.sum(w * (teacher_T(pr) @ G_zu), 0)
    return jnp.linalg.solve(lhs.T, rhs.T).T


def baseline_error(B, pr: Problem, G_pp, lin_input: str) -> jax.Array:
    """Per-sample error of the baseline (N,)."""
    T = teacher_T(pr)
    B = jnp.broadcast_to(B, T.shape)
    if lin_input == "x":
        return sq_error(B, T, pr.stats.G_ee, pr.stats.G_pe, G_pp, pr.sigma)
    zeros = jnp.zeros_like(G_pp)
    return sq_error(B, T, pr.stats.G_ee, zeros, zeros, pr.sigma)


def overlaps(Q, Q_star, p_LxD, sigma) -> dict:
    """m = |p_1^T Q| / sqrt(d), theta = sigma^2 |Q*^T Q|_F / d, q = sigma^2 tr(Q^T Q) / d (for r = 1: |m|,
    |theta|, q of docs/model.md; rotation-invariant for r > 1)."""
    d = Q.shape[0]
    return dict(m=jnp.linalg.norm(p_LxD[0] @ Q) / jnp.sqrt(d),
                theta=sigma**2 * jnp.linalg.norm(Q_star.T @ Q) / d,
                q=sigma**2 * jnp.sum(Q * Q) / d)


class SeedData(NamedTuple):
    """What the runs of one seed share: drawn once from the seed key (unbatched under the run vmap)."""

    key: jax.Array
    p: jax.Array  # L x D positional embeddings
    G_pp: jax.Array  # L x L, p p^T / d
    Q_star: jax.Array  # D x r_t teacher
    eps: jax.Array  # n_max x L x D standard training noise
    stats: data.SeedStats


class TrainState(NamedTuple):
    """A run's training state: Q, the optimizer state and the number of steps done."""

    Q: jax.Array
    opt_state: optax.OptState
    step: jax.Array


def make_seed_data(static: Static):
    """``seed_data(seed_key) -> SeedData``."""

    def seed_data(seed_key) -> SeedData:
        p = data.positional_embeddings(static.d, static.L)
        Q_star = data.teacher(seed_key, static.d, static.r_t)
        eps = data.train_noise(seed_key, static.n_max, static.L, static.d)
        return SeedData(seed_key, p, p @ p.T / static.d, Q_star, eps, data.seed_stats(eps, p, Q_star))

    return seed_data


def _train_problem(static: Static, sd: SeedData, hp: HParams) -> Problem:
    weight = (jnp.arange(static.n_max) < hp.n).astype(jnp.float32)
    return problem(sd.eps, sd.stats, hp, weight)


def init_state(static: Static, sd: SeedData, hp: HParams) -> TrainState:
    Q0 = initial_Q(static, sd.key, sd.Q_star, sd.p, hp.init)
    return TrainState(Q0, optimizer(static, hp).init(Q0), jnp.int32(0))


def train_steps(static: Static, sd: SeedData, hp: HParams, state: TrainState, num_steps) -> TrainState:
    """``num_steps`` optimizer steps (an int or a traced scalar). The loop's trip count is a run-time
    value, so one compiled body serves every segment length: training in segments of any lengths gives
    the same bits as in one go (what makes checkpointing invisible in the results)."""
    pr = _train_problem(static, sd, hp)
    loss = lambda Q: data_loss(Q, pr, sd.p, hp.sigma, sd.G_pp)
    opt = optimizer(static, hp)

    def step(_, carry):
        Q, opt_state = carry
        updates, opt_state = opt.update(jax.grad(loss)(Q), opt_state, Q)
        return optax.apply_updates(Q, updates), opt_state

    num_steps = jnp.asarray(num_steps, jnp.int32)
    Q, opt_state = jax.lax.fori_loop(0, num_steps, step, (state.Q, state.opt_state))
    return TrainState(Q, opt_state, state.step + num_steps)


def evaluate(static: Static, sd: SeedData, hp: HParams, Q) -> dict:
    """The metrics of docs/model.md for a trained Q, with the baseline fitted on the same training samples."""
    d = static.d
    pr = _train_problem(static, sd, hp)
    train_loss = _train_loss(pr, sd, hp, Q, d)
    B = ridge_baseline(pr, sd.G_pp, hp.lam_lin, static.lin_input)
    lin_train_loss = (jnp.sum(pr.weight * baseline_error(B, pr, sd.G_pp, static.lin_input))
                      + 0.5 * hp.lam_lin * jnp.sum(B * B)) / d
    test_error, lin_test_error = _test_errors(static, sd.key, hp, Q, sd.Q_star, B, sd.p, sd.G_pp)

    diverged = ~(jnp.isfinite(train_loss) & jnp.all(jnp.isfinite(Q)))
    nan = jnp.float32(jnp.nan)
    metrics = dict(train_loss=train_loss, test_error=test_error, **overlaps(Q, sd.Q_star, sd.p, hp.sigma))
    metrics = {k: jnp.where(diverged, nan, v) for k, v in metrics.items()}
    metrics.update(lin_test_error=lin_test_error, lin_train_loss=lin_train_loss, diverged=diverged)
    return metrics


def _train_loss(pr: Problem, sd: SeedData, hp: HParams, Q, d: int) -> jax.Array:
    """R(Q) / d on the run's training samples."""
    return (data_loss(Q, pr, sd.p, hp.sigma, sd.G_pp) + 0.5 * hp.lam * jnp.sum(Q * Q)) / d


def observe(static: Static, sd: SeedData, hp: HParams, Q) -> dict:
    """What a learning curve records during training: train_loss, m, theta, q (as in :func:`evaluate`)."""
    pr = _train_problem(static, sd, hp)
    return dict(train_loss=_train_loss(pr, sd, hp, Q, static.d), **overlaps(Q, sd.Q_star, sd.p, hp.sigma))


def make_run(static: Static, steps: int):
    """Build ``run(seed_key, hp) -> (Q_DxR, metrics)`` that trains ``steps`` steps; pure, jit- and
    vmap-able (see module doc)."""
    seed_data = make_seed_data(static)

    def run(seed_key, hp: HParams):
        with jax.default_matmul_precision("highest"):  # full float32 products on GPU/TPU too (sweep.full_precision)
            sd = seed_data(seed_key)
            state = train_steps(static, sd, hp, init_state(static, sd, hp), steps)
            return state.Q, evaluate(static, sd, hp, state.Q)

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
