"""A sweep: the config's grid of runs, grouped into batched, compiled chunks.

A run is one (omega, sigma, lam, alpha, seed, init). Runs of one seed share their training and test
data (``attnsim.data``), so the pieces of a run (``training.make_seed_data``, ``init_state``,
``train_steps``, ``evaluate``) are vmapped over a group of runs of one seed with the seed data unbatched:
the data is drawn once and every step is a matrix-matrix product over the group. A chunk vmaps that
again over the groups of several seeds (see Engine). Runs with different n share a group by padding to
a common n_max (masked out of the loss): a canonical value (``ladder``), merged with the next larger one
where the padded training costs less than compiling another shape (``sample_levels``), so that a sweep
compiles few programs. The run axis is sharded over the local devices.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import math
import os
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import jax
import ml_collections
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attnsim import config as config_lib
from attnsim import checkpoint, data, training

RUN_COLUMNS = ["omega", "sigma", "lam", "alpha", "n", "d", "L", "r", "seed", "init", "optimizer", "steps"]
METRIC_COLUMNS = ["train_loss", "test_error", "m", "theta", "q", "lin_test_error", "lin_train_loss", "diverged"]
# Columns that identify a run (used to skip finished runs when a sweep is re-run).
KEY_COLUMNS = ["omega", "sigma", "lam", "alpha", "seed", "init"]


def steps(cfg: ml_collections.ConfigDict) -> int:
    """A run's training steps (the unit of progress and checkpoints; attnsim.tasks)."""
    return cfg.steps


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
    """Runs trained together: for each of ``seeds``, a group of runs (row labels into the grid) of that
    seed, all padded to ``n_max`` samples. The seeds' groups have the same size."""

    seeds: tuple[int, ...]
    n_max: int
    groups: tuple[tuple[int, ...], ...]

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(i for g in self.groups for i in g)


# The cost model behind the chunk plan (and `attnsim run --dry-run`): seconds of one training step per sample,
# token and dimension, and of compiling the programs of one chunk shape. From scripts/bench_sweep.py on a
# 2-core CPU; the accelerator figures are estimates (docs/README.md).
STEP_SECONDS_PER_SAMPLE_DIM = {"cpu": 2e-10, "gpu": 5e-12, "tpu": 5e-12}
COMPILE_SECONDS_PER_SHAPE = {"cpu": 4.0, "gpu": 10.0, "tpu": 10.0}


def ladder(n: int) -> int:
    """The canonical sample count a run of n samples is padded to: n itself up to 16, then the next of
    eight geometric steps per octave (from 512 on rounded up to a multiple of 8): at most ~12% padding.
    Shapes then repeat across sweeps and configs, so the persistent compilation cache serves them."""
    if n <= 16:
        return int(n)
    v = math.ceil(2 ** (math.ceil(8 * math.log2(n) - 1e-9) / 8) - 1e-9)
    return int(8 * math.ceil(v / 8) if v >= 512 else v)


def sample_levels(grid: pd.DataFrame, cfg: ml_collections.ConfigDict, backend: str | None = None,
                  compile_seconds: float | None = None, step_seconds: float | None = None) -> dict[int, int]:
    """{n: the n_max its runs are padded to}: each n's ladder value, and then, from the largest down, a
    ladder value merged into the next larger level when training its runs padded up to that level costs
    less than compiling a shape of its own (``compile_seconds``), at ``step_seconds`` per padded sample,
    token, dimension and step (defaults: the backend's in COMPILE_SECONDS_PER_SHAPE,
    STEP_SECONDS_PER_SAMPLE_DIM). So an exploratory sweep (small d, few steps) is padded into a few shapes
    and a long one at large d keeps every n tight. ``grid``: the config's whole grid (sweep.expand_grid),
    so that the levels, and with them the chunks, do not change as runs finish."""
    backend = backend or jax.default_backend()
    compile_seconds = COMPILE_SECONDS_PER_SHAPE.get(backend, 4.0) if compile_seconds is None else compile_seconds
    step_seconds = STEP_SECONDS_PER_SAMPLE_DIM.get(backend, 2e-10) if step_seconds is None else step_seconds
    per_sample = step_seconds * cfg.steps * cfg.L * cfg.d
    counts = grid.n.map(ladder).value_counts().sort_index(ascending=False)
    level, top = {}, None
    for value, count in counts.items():
        if top is None or (top - value) * count * per_sample >= compile_seconds:
            top = value
        level[int(value)] = int(top)
    return {int(n): level[ladder(int(n))] for n in grid.n.unique()}


def plan_chunks(runs: pd.DataFrame, max_batch: int, levels: dict[int, int] | None = None,
                max_seeds: int | None = None) -> list[Chunk]:
    """Cut each seed's runs, by level (``levels``: n -> n_max, see :func:`sample_levels`; default: each n's
    :func:`ladder` value) and largest n first, into groups of at most ``max_batch`` runs of one level; then
    pack groups of different seeds with the same shape (n_max, size) into one chunk of at most ``max_batch``
    runs and ``max_seeds`` seeds (a vmap over seeds around the vmap over runs). Groups are cut from the
    front, so the plan of the
    runs left after some chunks finished is the rest of the plan (what makes a resumed sweep bit-identical:
    a run's bits depend on its chunk's composition)."""
    level = (lambda n: levels[int(n)]) if levels is not None else ladder
    groups = []  # (seed, n_max, rows)
    for seed, group in runs.groupby("seed", sort=True):
        group = group.assign(_level=group.n.map(level))
        order = group.sort_values(["_level", "n", "init"], ascending=[False, False, True], kind="stable")
        for n_max, same in order.groupby("_level", sort=False):
            rows = same.index.tolist()
            for k in range(0, len(rows), max_batch):
                groups.append((int(seed), int(n_max), tuple(rows[k:k + max_batch])))
    by_shape: dict[tuple[int, int], list] = {}
    for g in groups:
        by_shape.setdefault((g[1], len(g[2])), []).append(g)
    chunks = []
    for (n_max, size), same in by_shape.items():
        per = max(1, min(max_batch // size, max_seeds or max_batch))
        for k in range(0, len(same), per):
            part = same[k:k + per]
            chunks.append(Chunk(seeds=tuple(g[0] for g in part), n_max=n_max, groups=tuple(g[2] for g in part)))
    return chunks


def padding_waste(runs: pd.DataFrame, chunks: list[Chunk], devices: int = 1) -> float:
    """Fraction of the sample-steps computed on padding: samples beyond a run's n, and the runs and seeds a
    chunk is padded with up to its compiled shape (``padded_count``) on ``devices`` devices."""
    done = sum(c.n_max * padded_count(len(c.seeds), 1) * padded_count(max(len(g) for g in c.groups), devices)
               for c in chunks)
    useful = sum(int(runs.at[i, "n"]) for c in chunks for i in c.rows)
    return 1.0 - useful / done


def _program_bytes(cfg: ml_collections.ConfigDict, n_max: int) -> list[tuple[int, int]]:
    """(bytes per seed, bytes per run) of a chunk's three programs. setup draws the training set (~7 copies
    of n_max x L x d float32 with the random bits and the Grams); training reads the set and holds the step's
    N x L x (L, r) intermediates per run; evaluation holds the set and ~6 copies of one test chunk. Every
    program holds each run's Q and optimizer state. (Calibrated against XLA's buffer assignment of the
    compiled programs, ``memory_analysis``: tests/test_memory.py.)"""
    train_set = 4 * n_max * cfg.L * cfg.d
    test_chunk = 4 * min(cfg.test_chunk, cfg.n_test) * cfg.L * cfg.d
    state = 4 * 6 * cfg.d * cfg.r
    step = 4 * n_max * cfg.L * (12 * max(cfg.L, cfg.r) + 3 * cfg.L)
    return [(7 * train_set, state), (train_set, state + step), (train_set + 6 * test_chunk, state)]


def seed_bytes(cfg: ml_collections.ConfigDict, n_max: int) -> int:
    """The most memory one seed's data takes in any of a chunk's programs."""
    return max(s for s, _ in _program_bytes(cfg, n_max))


def run_bytes(cfg: ml_collections.ConfigDict, n_max: int) -> int:
    """The most memory one run takes in any of a chunk's programs."""
    return max(r for _, r in _program_bytes(cfg, n_max))


def chunk_bytes(cfg: ml_collections.ConfigDict, n_max: int, runs: int, seeds: int = 1) -> int:
    """Estimated peak memory of a chunk of ``runs`` runs (in all) of ``seeds`` seeds, padded to n_max samples,
    on one device: the largest of its programs'."""
    return max(seeds * s + runs * r for s, r in _program_bytes(cfg, n_max))


def default_memory_budget() -> int:
    """Bytes a chunk may use: 60% of the first local device's memory limit where the backend reports it
    (GPU/TPU), else 40% of the machine's physical memory (CPU)."""
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return int(0.6 * stats["bytes_limit"])
    try:
        return int(0.4 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


# Runs per chunk on CPU: the best of 1..64 for every d in 30..1000 in scripts/bench_sweep.py (README,
# performance section); wider chunks gain little there and delay the first results.
CPU_MAX_BATCH = 64
ACCEL_MAX_BATCH = 1024


def default_max_batch(cfg: ml_collections.ConfigDict, devices: int = 1) -> int:
    """Runs per chunk: ``cfg.max_batch`` if set, else the most that fit the memory budget (per device),
    capped per backend. Raises ConfigError when a single run does not fit."""
    budget = int(cfg.memory_budget * 2**30) if cfg.memory_budget else default_memory_budget()
    n_max = max(int(round(a * cfg.d)) for a in cfg.alphas)
    one = chunk_bytes(cfg, n_max, 1)
    if one > budget:
        raise config_lib.ConfigError(
            f"config.memory_budget: one run at d={cfg.d}, n={n_max} needs {one / 2**30:.2f} GiB, more than the "
            f"budget of {budget / 2**30:.2f} GiB; raise config.memory_budget (GiB) or lower d / alphas / test_chunk")
    if cfg.max_batch:
        return cfg.max_batch
    fit = devices * ((budget - seed_bytes(cfg, n_max)) // run_bytes(cfg, n_max))  # runs of one seed
    cap = CPU_MAX_BATCH if jax.default_backend() == "cpu" else ACCEL_MAX_BATCH
    return int(max(1, min(cap * devices, fit)))


def default_max_seeds(cfg: ml_collections.ConfigDict, max_batch: int, devices: int = 1) -> int:
    """Seeds a chunk of at most ``max_batch`` runs may mix: each brings its own data (seed_bytes, on every
    device), so as many as fit the memory budget beside the runs."""
    budget = int(cfg.memory_budget * 2**30) if cfg.memory_budget else default_memory_budget()
    n_max = ladder(max(int(round(a * cfg.d)) for a in cfg.alphas))
    left = budget - -(-max_batch // devices) * run_bytes(cfg, n_max)
    return int(max(1, min(max_batch, left // seed_bytes(cfg, n_max))))


def _hparams(cfg, runs: pd.DataFrame, rows) -> training.HParams:
    """The runs' hyper-parameters as numpy arrays (built on the host: no device program per chunk)."""
    sub = runs.loc[list(rows)]
    count = len(sub)
    full = lambda v: np.full((count,), v, np.float32)  # noqa: E731
    return training.HParams(
        omega=sub.omega.to_numpy(np.float32), sigma=sub.sigma.to_numpy(np.float32),
        lam=sub.lam.to_numpy(np.float32), lam_lin=full(cfg.lam_lin), lr=full(cfg.lr),
        n=sub.n.to_numpy(np.int32), init=np.asarray([training.INIT_IDS[i] for i in sub.init], np.int32),
        A=np.broadcast_to(np.asarray(config_lib.teacher_A(cfg), np.float32), (count, cfg.L, cfg.L)).copy(),
    )


def padded_count(count: int, devices: int) -> int:
    """Runs a chunk of ``count`` is padded to: the next power of two, and a multiple of the device count,
    so that a sweep compiles a few chunk shapes, not one per distinct chunk size."""
    size = 1 << max(0, count - 1).bit_length()
    return -(-size // devices) * devices


def pad_leading(tree, shape: tuple[int, ...]):
    """Pad the leading axes of every leaf (host arrays) to ``shape`` by repeating index 0 along each (copies
    are discarded): a seed axis and a run axis for a chunk's parameters and states. numpy, on the host."""
    def pad(a):
        a = np.asarray(a)
        for axis, size in enumerate(shape):
            extra = size - a.shape[axis]
            if extra:
                a = np.concatenate([a, np.repeat(np.take(a, [0], axis=axis), extra, axis=axis)], axis)
        return a

    return jax.tree.map(pad, tree)


class Engine:
    """Compiles (once per distinct chunk shape) and runs chunks; shards the run axis over devices.

    A chunk runs as three compiled programs: ``setup`` (the seeds' data and the runs' initial states),
    ``train`` (a segment of steps, its length a run-time argument) and ``finish`` (the metrics), so that
    training can stop after any segment to be checkpointed and resumed with the same bits."""

    def __init__(self, cfg: ml_collections.ConfigDict, devices=None):
        self.cfg = cfg
        self.devices = list(devices or jax.local_devices())
        self._ran: set = set()  # (n_max, padded shape) of the chunks run so far

    def static(self, n_max: int) -> training.Static:
        c = self.cfg
        return training.Static(d=c.d, L=c.L, r=c.r, r_t=c.r_t, n_max=n_max, optimizer=c.optimizer,
                               n_test=c.n_test, test_chunk=c.test_chunk, lin_input=c.lin_input)

    def programs(self, n_max: int) -> "_Programs":
        """The compiled programs for chunks padded to ``n_max`` samples."""
        return _compile(self.static(n_max), tuple(self.devices))

    def padded_shape(self, chunk: Chunk) -> tuple[int, int]:
        """(seeds, runs per seed) a chunk is padded to: powers of two, the runs a multiple of the device
        count, so that a sweep compiles a few shapes."""
        return padded_count(len(chunk.seeds), 1), padded_count(max(len(g) for g in chunk.groups), len(self.devices))

    def state_template(self, n_max: int, shape: tuple[int, int]):
        """The structure of a chunk's TrainState padded to ``shape``, as zero host arrays."""
        one = _hparams(self.cfg, pd.DataFrame({c: [v] for c, v in _TEMPLATE_RUN.items()}), [0])
        hp = pad_leading(jax.tree.map(lambda a: a[None], one), shape)  # (seeds, runs, ...)
        seeds = np.zeros(shape[0], np.int32)
        abstract = jax.eval_shape(_setup(self.static(n_max)), np.int32(0), seeds, hp)[1]  # unsharded: any shape restores
        return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)

    def inputs(self, runs: pd.DataFrame, chunk: Chunk):
        """The arguments of a chunk's ``setup`` program: (base seed, seed indices (seeds,), HParams (seeds,
        runs, ...)), host arrays padded to ``padded_shape`` (built in numpy and transferred with the call,
        so a chunk runs no device program of its own besides the engine's)."""
        shape = self.padded_shape(chunk)
        hp = jax.tree.map(lambda *a: np.stack(a), *[_hparams(self.cfg, runs, g) for g in chunk.groups])
        seeds = np.asarray(chunk.seeds, np.int32)
        return np.int32(self.cfg.seed), pad_leading(seeds, shape[:1]), pad_leading(hp, shape)

    def is_compiled(self, chunk: Chunk) -> bool:
        """Whether this engine has already run a chunk of the same padded shape (its programs are compiled)."""
        return (chunk.n_max, self.padded_shape(chunk)) in self._ran

    def run_chunk(self, runs: pd.DataFrame, chunk: Chunk, resume_state=None, steps_done: int = 0,
                  after_segment: Callable | None = None, status: Callable[[str], None] | None = None,
                  curve: dict | None = None) -> np.ndarray:
        """Train and evaluate a chunk: a float32 table, one row per run, columns (row label, *METRIC_COLUMNS).

        ``resume_state`` (host arrays (seeds, runs, ...), from a checkpoint) continues the chunk after
        ``steps_done`` steps; ``after_segment(state, steps_done)`` is called after each training segment, once
        its computation has finished (JAX dispatches asynchronously: without the wait, the callback would run
        when the segment is queued, not done). ``status(what)`` is told "compiling" or "training" before the
        first segment, "training" after it and "evaluating" before the metrics.
        ``curve`` (with ``cfg.record_every`` > 0): a dict that receives ``{step: training.observe values,
        host arrays (seeds, runs) of the padded shape}`` at step 0 and every ``record_every`` steps
        (training is cut into segments there; a resumed chunk passes the records it had).
        Padding (discarded): the runs and seeds to ``padded_shape``, with copies of the first run / seed."""
        status = status or (lambda what: None)
        shape = self.padded_shape(chunk)
        fresh = not self.is_compiled(chunk)
        status("compiling" if fresh else "training")
        base, seeds, hp = self.inputs(runs, chunk)
        prog = self.programs(chunk.n_max)
        hp = jax.device_put(hp, prog.runs)  # once per chunk
        sd, state = prog.setup(base, seeds, hp)
        if resume_state is not None:
            state = jax.device_put(pad_leading(resume_state, shape), prog.runs)
        done, every = steps_done, self.cfg.record_every if curve is not None else 0
        if every and done == 0:
            curve[0] = jax.device_get(prog.observe(sd, hp, state))
        while done < self.cfg.steps:
            k = min(self.cfg.checkpoint_every, self.cfg.steps - done)
            if every:
                k = min(k, every - done % every)
            state = jax.block_until_ready(prog.train(sd, hp, state, k))
            done += k
            status("training")
            if every and done % every == 0:
                curve[done] = jax.device_get(prog.observe(sd, hp, state))
            if after_segment is not None:
                after_segment(state, done)
        status("compiling the evaluation" if fresh else "evaluating")
        metrics = jax.device_get(prog.finish(sd, hp, state))
        self._ran.add((chunk.n_max, shape))
        table = np.empty((len(chunk.rows), 1 + len(METRIC_COLUMNS)), np.float32)
        table[:, 0] = chunk.rows
        for j, name in enumerate(METRIC_COLUMNS):
            values = np.asarray(metrics[name])
            table[:, 1 + j] = np.concatenate([values[i, : len(g)] for i, g in enumerate(chunk.groups)])
        return table


def _setup(st: training.Static) -> Callable:
    """``setup(base seed, seed indices (seeds,), hp (seeds, runs)) -> (SeedData per seed, TrainState per
    run)``: the seeds' keys (data.seed_key) are derived inside the program."""
    seed_data = jax.vmap(training.make_seed_data(st))
    init = jax.vmap(jax.vmap(functools.partial(training.init_state, st), in_axes=(None, 0)))

    def setup(base, seeds, hp):
        sd = seed_data(jax.vmap(lambda s: data.seed_key(base, s))(seeds))
        return sd, init(sd, hp)

    return setup


class _Programs(NamedTuple):
    setup: Callable  # (keys, hp) -> (sd, state)
    train: Callable  # (sd, hp, state, steps) -> state
    observe: Callable  # (sd, hp, state) -> learning-curve values
    finish: Callable  # (sd, hp, state) -> metrics
    runs: NamedSharding  # of everything with a run axis: (seeds, runs, ...)


def full_precision(f: Callable) -> Callable:
    """``f`` traced under ``jax.default_matmul_precision("highest")``: its float32 products are computed in
    full float32 on every backend. (JAX's default lets GPUs use TF32 and TPUs bfloat16 passes; the branches'
    losses differ by ~1e-5 near alpha_c, so the empirical global minimum would be decided by rounding.)"""

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return f(*args, **kwargs)

    return wrapped


@functools.lru_cache(maxsize=32)
def _compile(st: training.Static, devices: tuple) -> _Programs:
    """Engine's programs, jitted over a mesh of ``devices`` with the run axis sharded; cached, so that
    engines of the same shapes in one process share them, whatever their step count (a run-time
    argument). (No buffer donation: an async checkpoint may still be copying the state.)"""
    mesh = Mesh(np.array(devices), ("runs",))
    per_run = lambda f, *extra: jax.vmap(jax.vmap(f, in_axes=(None, 0, 0, *extra)), in_axes=(0, 0, 0, *extra))
    train = per_run(functools.partial(training.train_steps, st), None)
    finish = per_run(lambda sd, hp, state: training.evaluate(st, sd, hp, state.Q))
    observe = per_run(lambda sd, hp, state: training.observe(st, sd, hp, state.Q))
    one, runs = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "runs"))
    jit = lambda f, **kw: jax.jit(full_precision(f), **kw)  # noqa: E731
    return _Programs(setup=jit(_setup(st), in_shardings=(one, one, runs), out_shardings=(one, runs)),
                     train=jit(train, in_shardings=(one, runs, runs, one), out_shardings=runs),
                     observe=jit(observe, in_shardings=(one, runs, runs), out_shardings=runs),
                     finish=jit(finish, in_shardings=(one, runs, runs), out_shardings=runs),
                     runs=runs)


# Any valid run: only its structure matters (Engine.state_template).
_TEMPLATE_RUN = dict(omega=0.0, sigma=1.0, lam=0.0, alpha=1.0, n=1, seed=0, init="random")


def result_rows(runs: pd.DataFrame, table: np.ndarray, metric_columns: list[str] = METRIC_COLUMNS) -> pd.DataFrame:
    """Results rows (grid columns + metrics) from a run_chunk table (row label, *metric_columns)."""
    out = runs.loc[table[:, 0].astype(np.int64)].copy()
    for j, name in enumerate(metric_columns):
        out[name] = table[:, 1 + j]
    out["diverged"] = out["diverged"].astype(bool)
    return out


def resumed_chunk(saved: checkpoint.Saved) -> Chunk:
    """The chunk a checkpoint holds."""
    return Chunk(saved.seeds, saved.n_max, saved.groups)


def sweep_plan(cfg: ml_collections.ConfigDict, grid: pd.DataFrame, todo: pd.DataFrame, max_batch: int,
               devices: int = 1, resumable: list[checkpoint.Saved] = ()) -> list[Chunk]:
    """The chunks of the runs ``todo`` of a config whose whole grid is ``grid``: :func:`plan` with the
    sample levels of the grid (so the plan does not change as runs finish) and as many seeds per chunk as
    fit the memory budget."""
    return plan(todo, max_batch, resumable, sample_levels(grid, cfg), default_max_seeds(cfg, max_batch, devices))


def plan(runs: pd.DataFrame, max_batch: int, resumable: list[checkpoint.Saved] = (),
         levels: dict[int, int] | None = None, max_seeds: int | None = None) -> list[Chunk]:
    """The chunks of ``runs`` in order: the chunks of the checkpoints that can be resumed, then the rest
    (:func:`plan_chunks` with ``levels`` and ``max_seeds``)."""
    first = [resumed_chunk(s) for s in resumable]
    taken = [i for c in first for i in c.rows]
    return first + plan_chunks(runs.drop(taken), max_batch, levels, max_seeds)


def _record(runs: pd.DataFrame, chunk: Chunk, key_columns: list[str] = KEY_COLUMNS) -> dict:
    """A chunk as JSON: its seeds, n_max and, per group, the ``key_columns`` of its runs."""
    keys = lambda g: [list(k) for k in runs.loc[list(g), key_columns].astype(object).itertuples(index=False)]
    return dict(seeds=list(chunk.seeds), n_max=chunk.n_max, groups=[keys(g) for g in chunk.groups])


def iterate(cfg: ml_collections.ConfigDict, runs: pd.DataFrame, max_batch: int | None = None,
            devices=None, chunks: list[Chunk] | None = None, engine: Engine | None = None,
            resumed: dict[Chunk, checkpoint.Resumed] | None = None,
            checkpointer: checkpoint.Checkpointer | None = None,
            progress: Callable[[float], None] | None = None,
            status: Callable[[str], None] | None = None,
            on_curves: Callable[[pd.DataFrame], None] | None = None) -> Iterator[pd.DataFrame]:
    """Yield the results of ``runs`` chunk by chunk, in the order of ``chunks`` (default: :func:`plan`);
    ``progress(k)`` is told of each k runs' worth of training finished (fractions of a chunk after each
    segment), ``status`` what the engine is doing (Engine.run_chunk).

    A chunk in ``resumed`` continues from its checkpoint, and ``checkpointer`` saves the chunk in training
    after its segments. A chunk is computed by the same programs whatever else is in the sweep, so its
    numbers do not depend on which process or shard computes it. With ``cfg.record_every`` > 0,
    ``on_curves(table)`` receives each chunk's learning curves (:func:`curve_rows`) before its rows are yielded.
    """
    engine = engine or Engine(cfg, devices)
    if chunks is None:
        devices = len(engine.devices)
        chunks = sweep_plan(cfg, runs, runs, max_batch or default_max_batch(cfg, devices), devices)
    progress = progress or (lambda k: None)
    resumed = resumed or {}
    for chunk in chunks:
        start = resumed.get(chunk)
        done = start.steps_done if start else 0
        progress(len(chunk.rows) * done / cfg.steps)
        curve = dict(start.curve) if start and start.curve else {} if cfg.record_every else None
        after = after_segment(runs, chunk, checkpointer, done, cfg.steps,
                               lambda k, c=len(chunk.rows): progress(c * k / cfg.steps), curve)
        table = engine.run_chunk(runs, chunk, start and start.state, done, after, status, curve)
        if curve is not None and on_curves is not None:
            on_curves(curve_rows(runs, chunk, curve))
        yield result_rows(runs, table)


CURVE_COLUMNS = ["step", "train_loss", "m", "theta", "q"]


def curve_rows(runs: pd.DataFrame, chunk: Chunk, curve: dict) -> pd.DataFrame:
    """A chunk's learning curves as a tidy table: one row per run and recorded step, the run's KEY_COLUMNS
    then CURVE_COLUMNS (curves.csv)."""
    parts = []
    for step in sorted(curve):
        part = runs.loc[list(chunk.rows), KEY_COLUMNS].reset_index(drop=True)
        part["step"] = int(step)
        for name in CURVE_COLUMNS[1:]:
            values = np.asarray(curve[step][name])
            part[name] = np.concatenate([values[i, : len(g)] for i, g in enumerate(chunk.groups)])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def after_segment(runs: pd.DataFrame, chunk: Chunk, checkpointer: checkpoint.Checkpointer | None,
                  steps_done: int, steps: int, progress: Callable[[float], None], curve: dict | None = None,
                  key_columns: list[str] = KEY_COLUMNS) -> Callable:
    """The callback after each training segment of a chunk that starts at ``steps_done`` of ``steps``:
    ``progress(steps of the segment)``, a save (when due; none after the last segment, whose results
    follow at once), then the fault hook. The checkpoint's record names the runs by ``key_columns``."""
    if checkpointer is not None:
        checkpointer.start_chunk()
        record = _record(runs, chunk, key_columns)
    previous = steps_done

    def after(state, done):
        nonlocal previous
        progress(done - previous)
        previous = done
        if checkpointer is not None and done < steps:
            extra = {} if curve is None else {"curve": checkpoint.curve_to_json(curve)}
            checkpointer.maybe_save(dict(record, **extra), state, done)
        checkpoint.fault("segment", before=checkpointer and checkpointer.wait)

    return after


def read_curves(path: Path) -> pd.DataFrame | None:
    """The learning curves of a workdir (curves.csv and those of other writers beside it), or None."""
    path = Path(path)
    return read_results(path / "curves.csv" if path.is_dir() else path, keys=KEY_COLUMNS + ["step"])


def read_results(path: Path, keys: list[str] = KEY_COLUMNS) -> pd.DataFrame | None:
    """The finished runs of a workdir, or None if there is none: ``path`` is its results.csv (or the workdir),
    read together with the results files of other processes and shards beside it (``results.*.csv``, see
    ``attnsim.workdir``), each run once. A last line cut short (a kill during a write) is ignored (and
    overwritten by the next :func:`append_results`)."""
    path = Path(path)
    folder, name = (path, "results.csv") if path.is_dir() else (path.parent, path.name)
    tables = [t for t in (_read_one(f) for f in table_files(folder, name)) if t is not None]
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0]
    return pd.concat(tables, ignore_index=True).drop_duplicates(keys, ignore_index=True)


def table_files(folder: Path, name: str = "results.csv") -> list[Path]:
    """The existing files of one table in a workdir: ``name`` (the lead's) and those of the other writers,
    ``<stem>.<writer>.csv`` (attnsim.workdir)."""
    folder = Path(folder)
    return [f for f in [folder / name, *sorted(folder.glob(Path(name).stem + ".*.csv"))] if f.is_file()]


def _read_one(path: Path) -> pd.DataFrame | None:
    text = path.read_text() if path.exists() else ""
    text = text[: text.rfind("\n") + 1]
    return pd.read_csv(io.StringIO(text)) if text.count("\n") > 1 else None


def append_results(path: Path, rows: pd.DataFrame) -> None:
    """Append rows to results.csv in one write, flushed to disk: after its last complete line (a line cut
    short by a kill is overwritten), with the header first if the file holds none."""
    with open(path, "a+b") as f:
        keep = f.seek(0, os.SEEK_END)
        f.seek(max(keep - 1, 0))
        if keep and f.read(1) != b"\n":  # a line cut short (rare): find the last complete one
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1
            f.truncate(keep)
        f.write(rows.to_csv(header=keep == 0, index=False).encode())
        f.flush()
        os.fsync(f.fileno())


def missing_runs(runs: pd.DataFrame, done: pd.DataFrame | None, keys: list[str] = KEY_COLUMNS) -> pd.DataFrame:
    """The runs of ``runs`` not in ``done`` (matched on ``keys``)."""
    if done is None or done.empty:
        return runs
    merged = runs.merge(done[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    return runs[(merged["_merge"] == "left_only").to_numpy()]


def global_minimum(results: pd.DataFrame) -> pd.DataFrame:
    """Per (d, omega, sigma, lam, alpha, seed): the run (over inits) with the lowest train_loss, the
    empirical global minimum of docs/model.md (d when present: results of several d share seed indices).
    Diverged runs never win."""
    ok = results[~results.diverged.astype(bool)].reset_index(drop=True)  # idxmin needs unique labels
    point = [c for c in ("d", "omega", "sigma", "lam", "alpha", "seed") if c in ok]
    return ok.loc[ok.groupby(point)["train_loss"].idxmin()]
