"""A sweep: the config's grid of runs, grouped into batched, compiled chunks.

A run is one (omega, sigma, lam, alpha, seed, init). Runs of one seed share their training and test
data (``attnsim.data``), so a chunk holds runs of a single seed and vmaps ``training.make_run`` over
them with the seed key unbatched: the data is drawn once and every step is a matrix-matrix product
over the chunk's runs. Runs with different n share a chunk by padding to the chunk's largest n
(masked out of the loss); chunks are cut so that no run's n is below ``MIN_FILL`` of the chunk's
largest, which bounds the padded work. The run axis is sharded over the local devices.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attnsim import config as config_lib
from attnsim import data, training

MIN_FILL = 0.75  # a run in a chunk uses at least this fraction of the chunk's padded samples

RUN_COLUMNS = ["omega", "sigma", "lam", "alpha", "n", "d", "L", "r", "seed", "init", "optimizer", "steps"]
METRIC_COLUMNS = ["train_loss", "test_error", "m", "theta", "q", "lin_test_error", "lin_train_loss", "diverged"]
# Columns that identify a run (used to skip finished runs when a sweep is re-run).
KEY_COLUMNS = ["omega", "sigma", "lam", "alpha", "seed", "init"]


def expand_grid(cfg: ml_collections.ConfigDict) -> pd.DataFrame:
    """One row per run: the product omega x sigma x lam x alpha x seed x init, with n = round(alpha d)."""
    rows = []
    for omega, sigma, lam, alpha, seed, init in itertools.product(
        config_lib.sweep_values(cfg, "omega"), config_lib.sweep_values(cfg, "sigma"),
        config_lib.sweep_values(cfg, "lam"), cfg.alphas, range(cfg.seeds), cfg.inits,
    ):
        rows.append(dict(omega=float(omega), sigma=float(sigma), lam=float(lam), alpha=float(alpha),
                         n=int(round(alpha * cfg.d)), d=cfg.d, L=cfg.L, r=cfg.r, seed=seed, init=init,
                         optimizer=cfg.optimizer, steps=cfg.steps))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Runs (row indices into the grid) of one seed, trained together with n_max padded samples."""

    seed: int
    n_max: int
    rows: tuple[int, ...]


def plan_chunks(runs: pd.DataFrame, max_batch: int) -> list[Chunk]:
    """Cut each seed's runs, largest n first, into chunks of at most ``max_batch`` runs whose n are all
    >= MIN_FILL * the chunk's largest n."""
    chunks = []
    for seed, group in runs.groupby("seed", sort=True):
        order = group.sort_values(["n", "init"], ascending=[False, True], kind="stable").index.tolist()
        while order:
            n_top = int(runs.at[order[0], "n"])
            take = [i for i in order if runs.at[i, "n"] >= MIN_FILL * n_top][:max_batch]
            chunks.append(Chunk(seed=int(seed), n_max=n_top, rows=tuple(take)))
            order = [i for i in order if i not in set(take)]
    return chunks


def padding_waste(runs: pd.DataFrame, chunks: list[Chunk]) -> float:
    """Fraction of the sample-steps computed on padding."""
    done = sum(c.n_max * len(c.rows) for c in chunks)
    useful = sum(int(runs.at[i, "n"]) for c in chunks for i in c.rows)
    return 1.0 - useful / done


def default_max_batch(cfg: ml_collections.ConfigDict) -> int:
    """Runs per chunk: bounded by a memory budget for the per-run step intermediates (n x L x r floats
    a few times over, plus d x r for Q and its optimizer state)."""
    if cfg.max_batch:
        return cfg.max_batch
    n_max = max(int(round(a * cfg.d)) for a in cfg.alphas)
    per_run_bytes = 4 * (8 * n_max * cfg.L * (cfg.r + cfg.L) + 4 * cfg.d * cfg.r)
    budget = 512 * 2**20
    return int(max(1, min(256, budget // per_run_bytes)))


def _hparams(cfg, runs: pd.DataFrame, rows) -> training.HParams:
    sub = runs.loc[list(rows)]
    count = len(sub)
    full = lambda v: jnp.full((count,), v, jnp.float32)
    return training.HParams(
        omega=jnp.asarray(sub.omega.to_numpy(), jnp.float32), sigma=jnp.asarray(sub.sigma.to_numpy(), jnp.float32),
        lam=jnp.asarray(sub.lam.to_numpy(), jnp.float32), lam_lin=full(cfg.lam_lin), lr=full(cfg.lr),
        n=jnp.asarray(sub.n.to_numpy(), jnp.int32),
        init=jnp.asarray([training.INIT_IDS[i] for i in sub.init], jnp.int32),
        A=jnp.broadcast_to(jnp.asarray(config_lib.teacher_A(cfg), jnp.float32), (count, cfg.L, cfg.L)),
    )


def padded_count(count: int, devices: int) -> int:
    """Runs a chunk of ``count`` is padded to: the next power of two, and a multiple of the device count,
    so that a sweep compiles a few chunk shapes, not one per distinct chunk size."""
    size = 1 << max(0, count - 1).bit_length()
    return -(-size // devices) * devices


def _pad_runs(hp: training.HParams, size: int) -> training.HParams:
    """Pad the run axis to ``size`` by repeating the first run (the copies are discarded)."""
    count = hp.n.shape[0]
    extra = size - count
    if not extra:
        return hp
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], extra, axis=0)]), hp)


class Engine:
    """Compiles (once per distinct chunk shape) and runs chunks; shards the run axis over devices."""

    def __init__(self, cfg: ml_collections.ConfigDict, devices=None):
        self.cfg = cfg
        self.devices = list(devices or jax.local_devices())
        self.mesh = Mesh(np.array(self.devices), ("runs",))
        self._compiled = {}

    def static(self, n_max: int) -> training.Static:
        c = self.cfg
        return training.Static(d=c.d, L=c.L, r=c.r, r_t=c.r_t, n_max=n_max, optimizer=c.optimizer,
                               steps=c.steps, n_test=c.n_test, test_chunk=c.test_chunk, lin_input=c.lin_input)

    def _fn(self, n_max: int):
        if n_max not in self._compiled:
            batched = jax.vmap(training.make_run(self.static(n_max)), in_axes=(None, 0))
            runs = NamedSharding(self.mesh, P("runs"))
            self._compiled[n_max] = jax.jit(
                lambda key, hp: batched(key, hp)[1],
                in_shardings=(NamedSharding(self.mesh, P()), runs), out_shardings=runs)
        return self._compiled[n_max]

    def run_chunk(self, runs: pd.DataFrame, chunk: Chunk) -> pd.DataFrame:
        """Train and evaluate a chunk; returns its rows of results (grid columns + metrics)."""
        hp = _hparams(self.cfg, runs, chunk.rows)
        hp = _pad_runs(hp, padded_count(len(chunk.rows), len(self.devices)))
        key = data.seed_key(self.cfg.seed, chunk.seed)
        metrics = jax.device_get(self._fn(chunk.n_max)(key, hp))
        out = runs.loc[list(chunk.rows)].copy()
        for name in METRIC_COLUMNS:
            out[name] = np.asarray(metrics[name])[: len(chunk.rows)]
        out["diverged"] = out["diverged"].astype(bool)
        return out


def iterate(cfg: ml_collections.ConfigDict, runs: pd.DataFrame, max_batch: int | None = None,
            devices=None) -> Iterator[pd.DataFrame]:
    """Yield the results of ``runs`` chunk by chunk."""
    engine = Engine(cfg, devices)
    for chunk in plan_chunks(runs, max_batch or default_max_batch(cfg)):
        yield engine.run_chunk(runs, chunk)


def global_minimum(results: pd.DataFrame) -> pd.DataFrame:
    """Per (omega, sigma, lam, alpha, seed): the run (over inits) with the lowest train_loss, the
    empirical global minimum of MODEL.md. Diverged runs never win."""
    ok = results[~results.diverged.astype(bool)]
    idx = ok.groupby(["omega", "sigma", "lam", "alpha", "seed"])["train_loss"].idxmin()
    return ok.loc[idx.dropna().astype(int)]
