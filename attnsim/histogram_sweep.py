"""The histogram task as a sweep: its config, grid, chunks and engine (``attnsim.histogram`` has the model).

A run is one (variant, n_train, seed). Every run reads the same dataset (drawn once from ``data_seed``), so a
chunk is one group of runs padded to a common ``n_max`` (a ``sweep.ladder`` value) and vmapped with the data
unbatched; the run axis is sharded over the local devices. A run trains ``epochs`` epochs with Adam; then,
when ``retrain_epochs`` > 0, it is turned into the free model (``histogram.free_view``, noise
``retrain_noise``) and trained ``retrain_epochs`` more epochs with SGD, which measures how far the solution
is from a minimum of the free model (``drift``) against how far training took it from its initialisation
(``init_distance``). A chunk trains in segments of ``checkpoint_every`` epochs (the count a run-time
argument), checkpointed and resumed like the attention task's (``attnsim.checkpoint``); the runner
(``attnsim.runner``) treats both tasks alike through the names this module shares with ``attnsim.sweep``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attnsim import checkpoint, histogram, sweep
from attnsim.config import ConfigError, check, is_num
from attnsim.sweep import Chunk, ladder

RUN_COLUMNS = ["variant", "n_train", "seed", "epochs", "retrain_epochs"]
METRIC_COLUMNS = ["train_loss", "val_loss", "val_accuracy", "same_token_attention", "self_attention",
                  "token_dependence", "drift", "init_distance", "diverged"]
KEY_COLUMNS = ["variant", "n_train", "seed"]
FINGERPRINT_FIELDS = ("task", "length", "alphabet", "draws", "train_fraction", "data_seed", "width", "hidden",
                      "batch", "lr", "epochs", "min_steps", "retrain_epochs", "retrain_lr", "retrain_noise", "seed")
EXAMPLES = 4  # validation sequences whose attention maps every run records (attention.csv)
CPU_MAX_BATCH = 32
ACCEL_MAX_BATCH = 512
# Seconds per run and sequence-epoch at the default sizes, for `attnsim run --dry-run`: measured on the 2-core
# CPU (docs/README.md); the accelerator figure is an estimate.
SECONDS_PER_SEQUENCE_EPOCH = {"cpu": 9e-5, "gpu": 2e-6, "tpu": 2e-6}


def step_seconds(backend: str | None = None) -> float:
    return SECONDS_PER_SEQUENCE_EPOCH.get(backend or jax.default_backend(), 9e-5)


def default_config() -> ml_collections.ConfigDict:
    """The authors' protocol (SPOC-group/positional-and-semantic-attention, run_histogram.py)."""
    c = ml_collections.ConfigDict(type_safe=False)
    c.task = "histogram"
    c.name = "histogram"
    c.length = 10  # tokens per sequence
    c.alphabet = 15
    c.draws = 50_000  # sequences drawn before duplicates are removed
    c.train_fraction = 0.7
    c.data_seed = 42
    c.width = 64
    c.hidden = 128
    c.variants = ("positional", "semantic")
    c.n_trains = ()  # training-set sizes; () = the whole training split
    c.seeds = 10
    c.seed = 0  # base seed of the runs' keys
    c.batch = 32
    c.lr = 1e-3  # Adam, betas (0.9, 0.98), eps 1e-9
    c.epochs = 200
    c.min_steps = 0  # at least this many Adam steps per run: small training sets get more epochs (epochs_for)
    c.retrain_epochs = 100  # SGD epochs of the free model from the trained one (0 = no retraining)
    c.retrain_lr = 1e-3
    c.retrain_noise = 1e-3
    c.max_batch = 0  # runs per chunk; 0 = automatic
    c.checkpoint_every = 5  # epochs per training segment
    c.checkpoint_seconds = 60.0
    return c


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Check every field; raise ConfigError naming the first invalid one."""
    for f in ("length", "alphabet", "draws", "width", "hidden", "seeds", "batch", "epochs", "checkpoint_every"):
        check(isinstance(cfg[f], int) and cfg[f] >= 1, f, cfg[f], "must be an integer >= 1")
    check(cfg.length >= 2, "length", cfg.length, "must be >= 2")
    check(cfg.alphabet >= 2, "alphabet", cfg.alphabet, "must be >= 2")
    check(cfg.width % 2 == 0, "width", cfg.width, "must be even (the variants split it in halves)")
    for f in ("retrain_epochs", "seed", "data_seed", "max_batch", "min_steps"):
        check(isinstance(cfg[f], int) and cfg[f] >= 0, f, cfg[f], "must be an integer >= 0")
    check(is_num(cfg.train_fraction) and 0 < cfg.train_fraction < 1, "train_fraction", cfg.train_fraction,
          "must lie in (0, 1)")
    for f in ("lr", "retrain_lr"):
        check(is_num(cfg[f]) and cfg[f] > 0, f, cfg[f], "must be > 0")
    check(is_num(cfg.retrain_noise) and cfg.retrain_noise >= 0, "retrain_noise", cfg.retrain_noise, "must be >= 0")
    check(is_num(cfg.checkpoint_seconds) and cfg.checkpoint_seconds >= 0, "checkpoint_seconds",
          cfg.checkpoint_seconds, "must be >= 0 (0 = save after every segment)")
    check(len(cfg.variants) >= 1 and all(v in histogram.VARIANTS for v in cfg.variants), "variants", cfg.variants,
          f"must be a non-empty tuple of {histogram.VARIANTS}")
    check(len(set(cfg.variants)) == len(cfg.variants), "variants", cfg.variants, "has duplicates")
    check(all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in cfg.n_trains), "n_trains",
          cfg.n_trains, "every size must be an integer >= 1")
    check(len(set(cfg.n_trains)) == len(cfg.n_trains), "n_trains", cfg.n_trains, "has duplicates")
    available = train_size(cfg)
    check(all(n <= available for n in cfg.n_trains), "n_trains", cfg.n_trains,
          f"the training split holds {available} sequences (draws={cfg.draws}, train_fraction={cfg.train_fraction})")
    check(train_size(cfg) >= 1 and histogram.unique_count(cfg.draws, cfg.length, cfg.alphabet, cfg.data_seed)
          - available >= EXAMPLES, "draws", cfg.draws, f"too few for a training split and {EXAMPLES} validation sequences")


@functools.lru_cache(maxsize=16)
def _train_size(draws: int, length: int, alphabet: int, data_seed: int, train_fraction: float) -> int:
    return int(train_fraction * histogram.unique_count(draws, length, alphabet, data_seed))


def train_size(cfg) -> int:
    """Sequences in the training split of ``cfg``'s dataset."""
    return _train_size(cfg.draws, cfg.length, cfg.alphabet, cfg.data_seed, cfg.train_fraction)


def n_trains(cfg) -> tuple[int, ...]:
    return tuple(cfg.n_trains) or (train_size(cfg),)


def dataset(cfg) -> histogram.Dataset:
    return histogram.make_dataset(cfg.data_seed, cfg.draws, cfg.length, cfg.alphabet, cfg.train_fraction)


def epochs_for(cfg, n_train: int) -> int:
    """Adam epochs of a run of ``n_train`` sequences: ``epochs``, or more where that makes fewer than
    ``min_steps`` steps. Counted at the run's padded size (sweep.ladder), so that the runs of a chunk share it."""
    return max(cfg.epochs, -(-cfg.min_steps // -(-ladder(n_train) // cfg.batch)))


def steps(cfg) -> int:
    """The most epochs a run has in all (the unit of progress and checkpoints): training, then retraining."""
    return max(epochs_for(cfg, n) for n in n_trains(cfg)) + cfg.retrain_epochs


def expand_grid(cfg: ml_collections.ConfigDict) -> pd.DataFrame:
    """One row per run: variants x n_trains x seeds."""
    rows = [dict(variant=v, n_train=n, seed=s, epochs=epochs_for(cfg, n), retrain_epochs=cfg.retrain_epochs)
            for v, n, s in itertools.product(cfg.variants, n_trains(cfg), range(cfg.seeds))]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def default_max_batch(cfg, devices: int = 1) -> int:
    """Runs per chunk: ``cfg.max_batch`` if set, else a backend cap (a run's state is ~0.5 MB)."""
    if cfg.max_batch:
        return cfg.max_batch
    return (CPU_MAX_BATCH if jax.default_backend() == "cpu" else ACCEL_MAX_BATCH) * devices


def sweep_plan(cfg, grid: pd.DataFrame, todo: pd.DataFrame, max_batch: int, devices: int = 1,
               resumable: list[checkpoint.Saved] = ()) -> list[Chunk]:
    """The chunks of ``todo``: the resumable ones first, then by n_train level (largest first) in groups of
    at most ``max_batch`` runs, cut from the front (so that a resumed sweep's plan is the rest of the plan)."""
    first = [Chunk(s.seeds, s.n_max, s.groups) for s in resumable]
    taken = {i for c in first for i in c.rows}
    rest = todo.drop(sorted(taken)).assign(_level=lambda t: t.n_train.map(ladder))
    order = rest.sort_values(["_level", "n_train", "variant", "seed"], ascending=[False, False, True, True],
                             kind="stable")
    chunks = []
    for level, same in order.groupby("_level", sort=False):
        rows = same.index.tolist()
        chunks += [Chunk((0,), int(level), (tuple(rows[k:k + max_batch]),)) for k in range(0, len(rows), max_batch)]
    return first + chunks


def padded_runs(count: int, devices: int) -> int:
    """Runs a chunk is padded to: a multiple of the device count (a sweep has a chunk or two per training-set
    size, so padding to powers of two, as the attention task does to share programs, would cost more than
    the compilations it saves)."""
    return -(-count // devices) * devices


def padding_waste(runs: pd.DataFrame, chunks: list[Chunk], devices: int = 1) -> float:
    """Fraction of the sample-epochs computed on padding (samples beyond a run's n_train, padded runs)."""
    done = sum(c.n_max * padded_runs(len(c.rows), devices) for c in chunks)
    return 1.0 - sum(int(runs.at[i, "n_train"]) for c in chunks for i in c.rows) / done


class State(NamedTuple):
    """A run's training state (every leaf with leading axes (1, runs) in a chunk)."""

    params: dict
    opt_state: tuple  # Adam's (the retraining's SGD keeps none)
    epoch: jax.Array  # epochs done, training and retraining
    init: dict  # the initial parameters
    start: dict  # the retraining's start (the free view of the trained model; = init before it)
    init_distance: jax.Array  # |free view of the trained model - init|


class _Programs(NamedTuple):
    setup: Callable  # (params) -> state
    train: Callable  # (data, variants, n_train, keys, state, epochs) -> state: Adam epochs
    reparametrise: Callable  # (variants, noise, state) -> state: the free view, the retraining's start
    retrain: Callable  # (data, variants, n_train, keys, state, epochs) -> state: SGD epochs of the free model
    finish: Callable  # (data, variants, n_train, state) -> (metrics, attention maps of the EXAMPLES)
    runs: NamedSharding  # of everything with a run axis: (1, runs, ...)


def _shape(cfg, n_max: int) -> histogram.Shape:
    return histogram.Shape(cfg.length, cfg.alphabet, cfg.width, cfg.hidden, cfg.batch, n_max)


def _per_run(f: Callable, *axes) -> Callable:
    """``f`` of one run, vmapped over the chunk's (1, runs) axes (None: shared by every run)."""
    return jax.vmap(jax.vmap(f, in_axes=axes), in_axes=axes)


def _segment(shape: histogram.Shape, opt, retraining: bool) -> Callable:
    """A training segment of ``epochs`` epochs (a run-time value): Adam on the run's variant, or (``retraining``)
    SGD on the free model with an epoch order of its own."""
    free = histogram.VARIANT_IDS["free"]

    def one_run(data, variant, n, key, s: State, epochs) -> State:
        rs = histogram.RunState(s.params, opt.init(s.params) if retraining else s.opt_state, s.epoch)
        out = histogram.train_epochs(shape, opt, data["train_x"], data["train_y"], jnp.int32(free) if retraining
                                     else variant, n, jax.random.fold_in(key, 2) if retraining else key, rs, epochs)
        return s._replace(params=out.params, opt_state=s.opt_state if retraining else out.opt_state, epoch=out.epoch)

    return _per_run(one_run, None, 0, 0, 0, 0, None)


@functools.lru_cache(maxsize=16)
def _compile(shape: histogram.Shape, lr: float, retrain_lr: float, devices: tuple) -> _Programs:
    """The programs of chunks of one shape, jitted over a mesh of ``devices`` with the run axis sharded."""
    from attnsim.sweep import full_precision

    adam, sgd = histogram.adam(lr), optax.sgd(retrain_lr)

    def setup(params):
        def one_run(params):
            return State(params, adam.init(params), jnp.int32(0), params, params, jnp.float32(0))
        return _per_run(one_run, 0)(params)

    def reparametrise(variants, noise, state):
        def one_run(variant, noise, s):
            start = histogram.free_view(s.params, variant, shape.width, noise)
            return s._replace(params=start, start=start, init_distance=histogram.distance(start, s.init))
        return _per_run(one_run, 0, 0, 0)(variants, noise, state)

    def finish(data, variants, n_train, state):
        def one_run(data, variant, n, s):
            m = histogram.evaluate(shape, s.params, variant, n, data["train_x"], data["train_y"], data["val_x"],
                                   data["val_y"])
            m.update(drift=histogram.distance(s.params, s.start), init_distance=s.init_distance)
            _, attention = histogram.model(shape).apply({"params": s.params}, data["val_x"][:EXAMPLES], variant)
            return m, attention
        return _per_run(one_run, None, 0, 0, 0)(data, variants, n_train, state)

    mesh = Mesh(np.array(devices), ("runs",))
    one, runs = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "runs"))
    jit = lambda f, **kw: jax.jit(full_precision(f), **kw)  # noqa: E731
    segment = dict(in_shardings=(one, runs, runs, runs, runs, one), out_shardings=runs)
    return _Programs(setup=jit(setup, in_shardings=(runs,), out_shardings=runs),
                     train=jit(_segment(shape, adam, False), **segment),
                     reparametrise=jit(reparametrise, in_shardings=(runs, runs, runs), out_shardings=runs),
                     retrain=jit(_segment(shape, sgd, True), **segment),
                     finish=jit(finish, in_shardings=(one, runs, runs, runs), out_shardings=runs),
                     runs=runs)


class Engine:
    """Compiles (once per chunk shape) and runs chunks of histogram runs: the interface of ``sweep.Engine``."""

    def __init__(self, cfg: ml_collections.ConfigDict, devices=None):
        self.cfg = cfg
        self.devices = list(devices or jax.local_devices())
        self._ran: set = set()
        self._data = None

    @property
    def data(self) -> dict:
        """The dataset as device arrays (drawn on first use)."""
        if self._data is None:
            self._data = {k: jnp.asarray(v) for k, v in dataset(self.cfg)._asdict().items()}
        return self._data

    def programs(self, n_max: int) -> _Programs:
        c = self.cfg
        return _compile(_shape(c, n_max), float(c.lr), float(c.retrain_lr), tuple(self.devices))

    def padded_shape(self, chunk: Chunk) -> tuple[int, int]:
        return 1, padded_runs(len(chunk.rows), len(self.devices))

    def inputs(self, runs: pd.DataFrame, chunk: Chunk):
        """(variant ids, n_train, keys, initial parameters, retraining noise) of a chunk's runs, host arrays
        with leading axes (1, padded runs) (padding: copies of the first run). A run's key, parameters and
        noise depend on (config.seed, its seed) alone."""
        sub = runs.loc[list(chunk.rows)]
        size = self.padded_shape(chunk)[1]
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], size - len(a), 0)])[None]  # noqa: E731
        stack = lambda trees: jax.tree.map(lambda *a: pad(np.stack(a)), *trees)  # noqa: E731
        shape, seeds = _shape(self.cfg, chunk.n_max), [int(s) for s in sub.seed]
        variants = np.asarray([histogram.VARIANT_IDS[v] for v in sub.variant], np.int32)
        keys = np.stack([np.asarray(jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), s)) for s in seeds])
        params = stack([histogram.init_params(shape, np.random.default_rng([self.cfg.seed, s])) for s in seeds])
        noise = stack([histogram.perturbation(shape, np.random.default_rng([self.cfg.seed, s, 1]),
                                              self.cfg.retrain_noise) for s in seeds])
        return pad(variants), pad(sub.n_train.to_numpy(np.int32)), pad(keys), params, noise

    def state_template(self, n_max: int, shape: tuple[int, int]):
        one = histogram.init_params(_shape(self.cfg, n_max), np.random.default_rng(0))
        params = jax.tree.map(lambda a: np.zeros(shape + a.shape, a.dtype), one)
        abstract = jax.eval_shape(self.programs(n_max).setup, params)
        return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)

    def is_compiled(self, chunk: Chunk) -> bool:
        return (chunk.n_max, self.padded_shape(chunk)) in self._ran

    def run_chunk(self, runs: pd.DataFrame, chunk: Chunk, resume_state=None, steps_done: int = 0,
                  after_segment: Callable | None = None, status: Callable[[str], None] | None = None):
        """Train and evaluate a chunk: (a float32 table, one row per run, columns (row label, *METRIC_COLUMNS);
        attention maps of the EXAMPLES, (runs, EXAMPLES, length, length)). Segments, resume and the callbacks
        as in ``sweep.Engine.run_chunk``; the retraining's start is taken right after the last Adam segment,
        before its callback, so a saved state is always at a segment boundary of one phase."""
        status = status or (lambda what: None)
        fresh = not self.is_compiled(chunk)
        status("compiling" if fresh else "training")
        prog = self.programs(chunk.n_max)
        variants, n_train, keys, params, noise = jax.device_put(self.inputs(runs, chunk), prog.runs)
        if resume_state is not None:
            state = jax.device_put(sweep.pad_leading(resume_state, self.padded_shape(chunk)), prog.runs)
        else:
            state = prog.setup(params)
        E = chunk_epochs(runs, chunk)
        done, total = steps_done, E + self.cfg.retrain_epochs
        while done < total:
            phase_end = E if done < E else total
            k = min(self.cfg.checkpoint_every, phase_end - done)
            segment = prog.train if done < E else prog.retrain
            state = segment(self.data, variants, n_train, keys, state, np.int32(k))
            done += k
            if done == E and self.cfg.retrain_epochs:
                state = prog.reparametrise(variants, noise, state)
            state = jax.block_until_ready(state)
            status("training")
            if after_segment is not None:
                after_segment(state, done)
        status("compiling the evaluation" if fresh else "evaluating")
        metrics, maps = jax.device_get(prog.finish(self.data, variants, n_train, state))
        self._ran.add((chunk.n_max, self.padded_shape(chunk)))
        count = len(chunk.rows)
        table = np.empty((count, 1 + len(METRIC_COLUMNS)), np.float32)
        table[:, 0] = chunk.rows
        for j, name in enumerate(METRIC_COLUMNS[:-1]):
            table[:, 1 + j] = np.asarray(metrics[name])[0, :count]
        table[:, -1] = ~np.all(np.isfinite(table[:, 1:-1]), axis=1)
        if not self.cfg.retrain_epochs:
            table[:, 1 + METRIC_COLUMNS.index("drift")] = np.nan
            table[:, 1 + METRIC_COLUMNS.index("init_distance")] = np.nan
        return table, np.asarray(maps)[0, :count]


def chunk_epochs(runs: pd.DataFrame, chunk: Chunk) -> int:
    """The Adam epochs of a chunk's runs (one value: epochs_for depends on the padded size only)."""
    (epochs,) = set(runs.loc[list(chunk.rows), "epochs"].astype(int))
    return int(epochs)


ATTENTION_COLUMNS = KEY_COLUMNS + ["example", "query", "key", "query_token", "key_token", "weight"]


def attention_rows(runs: pd.DataFrame, rows: tuple[int, ...], maps: np.ndarray, examples: np.ndarray) -> pd.DataFrame:
    """Attention maps as a tidy table (attention.csv): per run, example sequence, query and key position, the
    tokens there and the weight."""
    R, X, L, _ = maps.shape
    r, x, q, k = np.meshgrid(np.arange(R), np.arange(X), np.arange(L), np.arange(L), indexing="ij")
    keys = runs.loc[list(rows), KEY_COLUMNS].to_numpy()[r.ravel()]
    out = pd.DataFrame(keys, columns=KEY_COLUMNS)
    out["example"], out["query"], out["key"] = x.ravel(), q.ravel(), k.ravel()
    out["query_token"], out["key_token"] = examples[x.ravel(), q.ravel()], examples[x.ravel(), k.ravel()]
    out["weight"] = maps.ravel()
    return out.astype({"n_train": int, "seed": int})


def iterate(cfg, runs: pd.DataFrame, max_batch: int | None = None, devices=None, chunks: list[Chunk] | None = None,
            engine: Engine | None = None, resumed: dict | None = None,
            checkpointer: checkpoint.Checkpointer | None = None, progress: Callable[[float], None] | None = None,
            status: Callable[[str], None] | None = None,
            on_attention: Callable[[pd.DataFrame], None] | None = None) -> Iterator[pd.DataFrame]:
    """Yield the results of ``runs`` chunk by chunk (as ``sweep.iterate``); ``on_attention(table)`` receives
    each chunk's attention maps (:func:`attention_rows`) before its rows are yielded."""
    engine = engine or Engine(cfg, devices)
    if chunks is None:
        chunks = sweep_plan(cfg, runs, runs, max_batch or default_max_batch(cfg, len(engine.devices)))
    progress, resumed = progress or (lambda k: None), resumed or {}
    examples = dataset(cfg).val_x[:EXAMPLES]
    for chunk in chunks:
        total = chunk_epochs(runs, chunk) + cfg.retrain_epochs
        start = resumed.get(chunk)
        done = start.steps_done if start else 0
        progress(len(chunk.rows) * done / total)
        after = sweep.after_segment(runs, chunk, checkpointer, done, total,
                                    lambda k, c=len(chunk.rows): progress(c * k / total), key_columns=KEY_COLUMNS)
        table, maps = engine.run_chunk(runs, chunk, start and start.state, done, after, status)
        if on_attention is not None:
            on_attention(attention_rows(runs, chunk.rows, maps, examples))
        yield sweep.result_rows(runs, table, METRIC_COLUMNS)
