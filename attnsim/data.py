"""The data model of docs/model.md as pure functions of PRNG keys.

Tokens x_l = p_l + z_l with z_l ~ N(0, sigma^2 I_d); the target is
y = [(1 - omega) softmax(z Q* Q*^T z^T / d) + omega A] z.

Key discipline (every key is a ``fold_in`` of the run's own coordinates, never of its place in a batch):

- ``seed_key(base, s)``: everything of seed index ``s`` derives from it;
- teacher Q*: ``fold_in(seed_key, TEACHER)``;
- training sample mu: ``fold_in(fold_in(seed_key, TRAIN), mu)``, so the training sets of one seed are
  nested across alpha (the first n samples of one stream) and shared by every init, omega and sigma;
- test sample mu: ``fold_in(fold_in(seed_key, TEST), mu)``;
- random init: ``fold_in(fold_in(seed_key, INIT), init_id)``.

The noise is drawn standard (``eps``) and scaled by sigma in the run, so runs that differ only in sigma
share their draws. A sample enters the loss only through a few L x L Gram matrices and the
projections of eps on Q and Q*, which :func:`seed_stats` precomputes (see ``attnsim.training``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

TEACHER, TRAIN, TEST, INIT = 0, 1, 2, 3


def seed_key(base_seed: int, seed_index) -> jax.Array:
    """The key of seed index ``seed_index`` under base seed ``base_seed`` (raw uint32[2] key data)."""
    return jax.random.fold_in(jax.random.PRNGKey(base_seed), seed_index)


def positional_embeddings(d: int, L: int) -> jax.Array:
    """p_LxD, unit-norm rows. p_1 = +1/sqrt(d), p_2 = -1/sqrt(d) (the paper's L = 2 choice); for L > 2
    the further rows are fixed random sign vectors / sqrt(d) (key 0, the same for every seed)."""
    ones = jnp.ones((1, d)) / jnp.sqrt(d)
    rows = [ones, -ones]
    if L > 2:
        signs = jax.random.rademacher(jax.random.PRNGKey(0), (L - 2, d), dtype=jnp.float32)
        rows.append(signs / jnp.sqrt(d))
    return jnp.concatenate(rows, axis=0)


def teacher(key: jax.Array, d: int, r_t: int) -> jax.Array:
    """Q*_DxRt with i.i.d. N(0, 1) entries, from the seed key."""
    return jax.random.normal(jax.random.fold_in(key, TEACHER), (d, r_t))


def noise(stream: jax.Array, start, count: int, L: int, d: int) -> jax.Array:
    """eps_NxLxD, standard normal; sample ``start + i`` drawn from ``fold_in(stream, start + i)``."""
    idx = start + jnp.arange(count)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(stream, i), (L, d)))(idx)


def train_noise(key: jax.Array, n: int, L: int, d: int) -> jax.Array:
    """The first n training samples' standard noise of a seed, eps_NxLxD."""
    return noise(jax.random.fold_in(key, TRAIN), 0, n, L, d)


def test_stream(key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, TEST)


def outer(h_NxLxR: jax.Array) -> jax.Array:
    """h h^T per sample, N x L x L (broadcast products: faster than a batched tiny matmul on CPU)."""
    return jnp.sum(h_NxLxR[:, :, None, :] * h_NxLxR[:, None, :, :], axis=-1)


def teacher_mixing(t_NxLxRt: jax.Array, omega, A_LxL: jax.Array) -> jax.Array:
    """T_NxLxL = (1 - omega) softmax(t t^T) + omega A, with t = z Q* / sqrt(d) the teacher's fields."""
    scores = outer(t_NxLxRt)
    return (1.0 - omega) * jax.nn.softmax(scores, axis=-1) + omega * A_LxL[None]


def tokens_and_targets(eps_NxLxD, p_LxD, Q_star, sigma, omega, A_LxL):
    """Explicit (x, y), each N x L x D: for tests and the reference forward pass, not for training."""
    d = p_LxD.shape[-1]
    z = sigma * eps_NxLxD
    t = jnp.einsum("nld,dr->nlr", z, Q_star) / jnp.sqrt(d)
    T = teacher_mixing(t, omega, A_LxL)
    return p_LxD[None] + z, jnp.einsum("nlk,nkd->nld", T, z)


class SeedStats(NamedTuple):
    """What the loss needs of samples eps_NxLxD of one seed (sigma-free; scale by sigma per run).

    G_ee: (N, L, L) eps eps^T / d;  G_pe: (N, L, L) p eps^T / d;  u: (N, L, r_t) eps Q* / sqrt(d).
    """

    G_ee: jax.Array
    G_pe: jax.Array
    u: jax.Array


def seed_stats(eps_NxLxD: jax.Array, p_LxD: jax.Array, Q_star: jax.Array) -> SeedStats:
    d = p_LxD.shape[-1]
    return SeedStats(
        G_ee=jnp.einsum("nld,nkd->nlk", eps_NxLxD, eps_NxLxD) / d,
        G_pe=jnp.einsum("ld,nkd->nlk", p_LxD, eps_NxLxD) / d,
        u=jnp.einsum("nld,dr->nlr", eps_NxLxD, Q_star) / jnp.sqrt(d),
    )
