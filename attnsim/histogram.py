"""The histogram (counting) task of the paper's Section 2: data, the one-layer transformer, its training.

A sequence holds ``length`` tokens drawn uniformly from an alphabet of ``alphabet`` symbols; the target at each
position is how often that position's token occurs in the sequence (``length + 1`` classes, 0..length). The
student (:class:`Transformer`) adds a token and a learned positional embedding (width ``width``), applies one
dot-product attention layer (query, key, value ``width x width``, scores scaled by 1/sqrt(width), no residual),
a LayerNorm and an MLP ``width -> hidden (ReLU) -> classes``; the loss is the cross-entropy per token.

Variants (``VARIANTS``) differ only in what the query and key see. "semantic": the token embedding lives on
the first half of the width, the positional one on the second half (each zeroed on the other half), and
queries and keys read the first half only; "positional": the same, reading the second half; "free": both
embeddings span the whole width and queries and keys read all of it. The value always reads everything.
A variant is a set of three 0/1 masks over the width (:func:`variant_masks`), an input of the model, so that
runs of different variants share one compiled program.

A run is a pure function of (the dataset, its variant, its training-set size n_train, its seed): its
parameters are drawn from its seed (:func:`init_params`), and each epoch visits its first ``n_train`` training sequences in an
order drawn from (its key, the epoch), in minibatches of ``batch`` (the last one smaller), with Adam. A chunk
of runs with different n_train is padded to a common ``n_max``: the padded steps do nothing, and a sample's
place in the order depends on its own index only (``jax.random.fold_in``), so a run's numbers do not depend
on what it is batched with.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

VARIANTS = ("positional", "semantic", "free")
VARIANT_IDS = {v: i for i, v in enumerate(VARIANTS)}


@dataclasses.dataclass(frozen=True)
class Shape:
    """What fixes a compiled program (hashable): the task's sizes, the batch and the padded n_max."""

    length: int = 10
    alphabet: int = 15
    width: int = 64
    hidden: int = 128
    batch: int = 32
    n_max: int = 1
    n_val: int = 1

    @property
    def classes(self) -> int:
        return self.length + 1

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_max // self.batch)


class Dataset(NamedTuple):
    """Token sequences (int32) and their targets, the histogram counts (int32); N x length each."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def counts(x_NxL: np.ndarray) -> np.ndarray:
    """The histogram targets: y[i, l] = #{k : x[i, k] == x[i, l]} (the position's own token included)."""
    return (x_NxL[:, :, None] == x_NxL[:, None, :]).sum(-1).astype(np.int32)


def make_dataset(seed: int, draws: int, length: int, alphabet: int, train_fraction: float) -> Dataset:
    """``draws`` uniform sequences, duplicates removed, shuffled and split into training (the first
    ``int(train_fraction * unique)``) and validation (the rest) sets; a function of ``seed`` alone."""
    rng = np.random.default_rng(seed)
    x = np.unique(rng.integers(0, alphabet, (draws, length)), axis=0)
    x = x[rng.permutation(len(x))].astype(np.int32)
    cut = int(train_fraction * len(x))
    return Dataset(x[:cut], counts(x[:cut]), x[cut:], counts(x[cut:]))


def unique_count(draws: int, length: int, alphabet: int, seed: int) -> int:
    """How many distinct sequences ``make_dataset`` keeps (to size training sets before drawing them)."""
    rng = np.random.default_rng(seed)
    return len(np.unique(rng.integers(0, alphabet, (draws, length)), axis=0))


def variant_masks(variant_id: jax.Array, width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(token, position, query-key) masks over the width (0/1 floats, each (width,)) of a variant id."""
    first = (jnp.arange(width) < width // 2).astype(jnp.float32)
    ones = jnp.ones(width, jnp.float32)
    restricted = variant_id != VARIANT_IDS["free"]
    token = jnp.where(restricted, first, ones)
    position = jnp.where(restricted, 1.0 - first, ones)
    qk = jnp.select([variant_id == VARIANT_IDS["semantic"], variant_id == VARIANT_IDS["positional"]],
                    [first, 1.0 - first], ones)
    return token, position, qk


def _torch_uniform(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for linear layers, which the authors used."""
    bound = 1.0 / np.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Transformer(nn.Module):
    """The one-layer transformer of the histogram task. ``tokens`` (..., length) int ->
    (logits (..., length, classes), attention (..., length, length), rows: queries)."""

    length: int = 10
    alphabet: int = 15
    width: int = 64
    hidden: int = 128

    @nn.compact
    def __call__(self, tokens: jax.Array, variant_id: jax.Array):
        token_mask, position_mask, qk_mask = variant_masks(variant_id, self.width)
        w = self.width
        E = self.param("token_embedding", nn.initializers.normal(1.0), (self.alphabet, w))
        P = self.param("position_embedding", nn.initializers.normal(1.0), (self.length, w))
        e = E[tokens]  # (..., length, width)
        over = lambda mask: mask.reshape((1,) * (e.ndim - 1) + (w,))  # noqa: E731  (width,) -> (1.., width)
        x = e * over(token_mask) + jnp.broadcast_to(P * position_mask[None], e.shape)
        Wq, Wk, Wv = (self.param(name, _torch_uniform(w), (w, w)) for name in ("query", "key", "value"))
        scores = ((x * over(qk_mask)) @ Wq) @ jnp.swapaxes((x * over(qk_mask)) @ Wk, -1, -2) / np.sqrt(w)
        attention = jax.nn.softmax(scores, axis=-1)
        h = nn.LayerNorm(epsilon=1e-5)(attention @ (x @ Wv))
        h = nn.relu(nn.Dense(self.hidden, kernel_init=_torch_uniform(w), bias_init=_torch_uniform(w))(h))
        logits = nn.Dense(self.length + 1, kernel_init=_torch_uniform(self.hidden),
                          bias_init=_torch_uniform(self.hidden))(h)
        return logits, attention


def model(shape: Shape) -> Transformer:
    return Transformer(shape.length, shape.alphabet, shape.width, shape.hidden)


def init_params(shape: Shape, rng: np.random.Generator) -> dict:
    """A fresh model's parameters (the tree of ``model(shape).init``), drawn on the host with ``rng``: the
    same bits on every backend and nothing to compile (XLA takes seconds per threefry draw on a CPU).
    PyTorch's defaults, as the authors had, and as the module's own initialisers: embeddings N(0, 1);
    attention matrices, dense kernels and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); LayerNorm 1 and 0."""
    w, h, c = shape.width, shape.hidden, shape.classes
    u = lambda fan_in, *dims: rng.uniform(-1, 1, dims).astype(np.float32) / np.float32(np.sqrt(fan_in))  # noqa: E731
    n = lambda *dims: rng.standard_normal(dims).astype(np.float32)  # noqa: E731
    return {"token_embedding": n(shape.alphabet, w), "position_embedding": n(shape.length, w),
            "query": u(w, w, w), "key": u(w, w, w), "value": u(w, w, w),
            "LayerNorm_0": {"scale": np.ones(w, np.float32), "bias": np.zeros(w, np.float32)},
            "Dense_0": {"kernel": u(w, w, h), "bias": u(w, h)},
            "Dense_1": {"kernel": u(h, h, c), "bias": u(h, c)}}


PERTURBED = ("query", "key", "token_embedding", "position_embedding")


def perturbation(shape: Shape, rng: np.random.Generator, scale: float) -> dict:
    """``scale`` N(0, 1) noise for the parameters the reparametrisation perturbs (PERTURBED), on the host."""
    dims = {"query": (shape.width,) * 2, "key": (shape.width,) * 2,
            "token_embedding": (shape.alphabet, shape.width), "position_embedding": (shape.length, shape.width)}
    return {k: (scale * rng.standard_normal(dims[k])).astype(np.float32) for k in PERTURBED}


def cross_entropy(params, shape: Shape, variant_id, x_BxL, y_BxL, weight_B) -> jax.Array:
    """Mean cross-entropy per token over the sequences of weight 1 (weight 0: padding)."""
    logits, _ = model(shape).apply({"params": params}, x_BxL, variant_id)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, y_BxL)
    return jnp.sum(weight_B[:, None] * per_token) / jnp.maximum(shape.length * jnp.sum(weight_B), 1.0)


def epoch_order(key: jax.Array, epoch: jax.Array, n_train: jax.Array, n_max: int) -> jax.Array:
    """A permutation of range(n_max) that visits 0..n_train-1 first, in an order drawn from (key, epoch):
    sample i's sort key depends on (key, epoch, i) only, not on n_max."""
    k = jax.random.fold_in(key, epoch)
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(k, i)))(jnp.arange(n_max))
    return jnp.argsort(jnp.where(jnp.arange(n_max) < n_train, u, 2.0 + u))


class RunState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    epoch: jax.Array  # epochs done


def adam(lr: float) -> optax.GradientTransformation:
    """The authors' optimiser: Adam with betas (0.9, 0.98), eps 1e-9."""
    return optax.adam(lr, b1=0.9, b2=0.98, eps=1e-9)


def init_state(shape: Shape, opt: optax.GradientTransformation, params) -> RunState:
    return RunState(params, opt.init(params), jnp.int32(0))


def train_epochs(shape: Shape, opt: optax.GradientTransformation, train_x, train_y, variant_id, n_train, key,
                 state: RunState, epochs) -> RunState:
    """``epochs`` (a run-time value) epochs of minibatch training of one run on its first ``n_train``
    sequences of ``train_x`` (n_max x length). Steps whose batch holds none of the run's sequences do nothing."""
    B = shape.batch
    grad = jax.grad(cross_entropy)

    def step(carry, j):
        params, opt_state, order = carry
        idx = jax.lax.dynamic_slice(order, (j * B,), (B,))
        weight = ((j * B + jnp.arange(B)) < n_train).astype(jnp.float32)
        g = grad(params, shape, variant_id, train_x[idx], train_y[idx], weight)
        updates, new_opt = opt.update(g, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        live = j * B < n_train
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)  # noqa: E731
        return (keep(new_params, params), keep(new_opt, opt_state), order), None

    def epoch(_, s: RunState) -> RunState:
        order = jnp.concatenate([epoch_order(key, s.epoch, n_train, shape.n_max),
                                 jnp.zeros(shape.steps_per_epoch * B - shape.n_max, jnp.int32)])
        (params, opt_state, _), _ = jax.lax.scan(step, (s.params, s.opt_state, order),
                                                 jnp.arange(shape.steps_per_epoch))
        return RunState(params, opt_state, s.epoch + 1)

    return jax.lax.fori_loop(0, epochs, epoch, state)


def _batched_apply(shape: Shape, params, variant_id, x_NxL, chunk: int = 4096):
    """(logits, attention) of N sequences, computed ``chunk`` at a time (bounded memory)."""
    n = x_NxL.shape[0]
    pad = (-n) % chunk
    xs = jnp.concatenate([x_NxL, jnp.zeros((pad, shape.length), x_NxL.dtype)]).reshape(-1, chunk, shape.length)
    f = lambda xb: model(shape).apply({"params": params}, xb, variant_id)  # noqa: E731
    logits, attention = jax.lax.map(f, xs)
    return (logits.reshape(-1, shape.length, shape.classes)[:n], attention.reshape(-1, shape.length, shape.length)[:n])


def same_token_attention(x_NxL, attention_NxLxL) -> jax.Array:
    """Mean over sequences and queries of the attention weight on keys holding the query's own token
    (itself included): 1/length for uniform attention on distinct tokens, 1 for a purely semantic match."""
    same = (x_NxL[:, :, None] == x_NxL[:, None, :]).astype(attention_NxLxL.dtype)
    return jnp.mean(jnp.sum(attention_NxLxL * same, -1))


def self_attention(attention_NxLxL) -> jax.Array:
    """Mean attention weight of a query on its own position."""
    return jnp.mean(jnp.diagonal(attention_NxLxL, axis1=-2, axis2=-1))


def token_dependence(attention_NxLxL) -> jax.Array:
    """How much the attention depends on the tokens: the mean over sequences and queries of the total-variation
    distance between a query's attention and its average over the sequences. 0 for a purely positional
    mechanism (the same map for every sequence), up to 1."""
    mean = jnp.mean(attention_NxLxL, axis=0, keepdims=True)
    return jnp.mean(0.5 * jnp.sum(jnp.abs(attention_NxLxL - mean), -1))


def evaluate(shape: Shape, params, variant_id, n_train, train_x, train_y, val_x, val_y) -> dict:
    """train_loss (on the run's n_train sequences), val_loss, val_accuracy (per token), and, on the validation
    sequences, same_token_attention, self_attention and token_dependence."""
    logits, _ = _batched_apply(shape, params, variant_id, train_x)
    per_seq = optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean(-1)
    w = (jnp.arange(train_x.shape[0]) < n_train).astype(jnp.float32)
    val_logits, attention = _batched_apply(shape, params, variant_id, val_x)
    return dict(train_loss=jnp.sum(w * per_seq) / jnp.sum(w),
                val_loss=optax.softmax_cross_entropy_with_integer_labels(val_logits, val_y).mean(),
                val_accuracy=jnp.mean(jnp.argmax(val_logits, -1) == val_y),
                same_token_attention=same_token_attention(val_x, attention),
                self_attention=self_attention(attention), token_dependence=token_dependence(attention))


def free_view(params, variant_id, width: int, noise: dict):
    """A trained restricted model as parameters of the free model with the same function (the authors'
    reparametrisation): the query and key matrices restricted to the variant's half (F Wq, F Wk), each
    embedding zeroed outside its half; then ``noise`` (:func:`perturbation`) added to those four. A free run
    is returned unchanged, noise aside."""
    token_mask, position_mask, qk_mask = variant_masks(variant_id, width)
    p = dict(params)
    p["query"] = qk_mask[:, None] * params["query"]
    p["key"] = qk_mask[:, None] * params["key"]
    p["token_embedding"] = params["token_embedding"] * token_mask[None]
    p["position_embedding"] = params["position_embedding"] * position_mask[None]
    for name in PERTURBED:
        p[name] = p[name] + noise[name]
    return p


def distance(a, b) -> jax.Array:
    """L2 distance between two parameter trees (all leaves as one vector)."""
    return jnp.sqrt(sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))
