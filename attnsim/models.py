"""The two students of docs/model.md as Flax (linen) modules: the definitions the fast training path is
tested against (``attnsim.training`` trains through an equivalent Gram-matrix form of the same loss).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class TiedAttention(nn.Module):
    """Tied low-rank dot-product attention f_Q(x) = softmax(x Q Q^T x^T / d) x, Q in R^{d x r}.

    Input x_NxLxD, output N x L x D. The default initialiser is the paper's random init 0.1 N(0, 1).
    """

    d: int
    r: int = 1

    @nn.compact
    def __call__(self, x_NxLxD: jax.Array) -> jax.Array:
        Q = self.param("Q", nn.initializers.normal(stddev=0.1), (self.d, self.r))
        h_NxLxR = jnp.einsum("nld,dr->nlr", x_NxLxD, Q) / jnp.sqrt(self.d)
        S_NxLxL = jax.nn.softmax(jnp.einsum("nlr,nkr->nlk", h_NxLxR, h_NxLxR), axis=-1)
        return jnp.einsum("nlk,nkd->nld", S_NxLxL, x_NxLxD)


class LinearPositional(nn.Module):
    """The linear positional baseline f_B(x) = B x, B in R^{L x L}: mixes tokens by position only."""

    L: int

    @nn.compact
    def __call__(self, x_NxLxD: jax.Array) -> jax.Array:
        B = self.param("B", nn.initializers.zeros, (self.L, self.L))
        return jnp.einsum("lk,nkd->nld", B, x_NxLxD)


def empirical_risk(f_NxLxD: jax.Array, y_NxLxD: jax.Array, params_sq_norm, lam) -> jax.Array:
    """R = sum_mu |y - f|_F^2 / (2d) + lam/2 |params|^2 (docs/model.md; summed, not averaged, over samples)."""
    d = y_NxLxD.shape[-1]
    return jnp.sum((y_NxLxD - f_NxLxD) ** 2) / (2 * d) + 0.5 * lam * params_sq_norm
