"""Configs: defaults, loading from a Python file, command-line overrides and validation.

A config file defines ``get_config(arg=None) -> ml_collections.ConfigDict``; ``arg`` is the optional
string after a colon in ``--config configs/omega03.py:small``. Every field is validated by
:func:`validate` before any work starts; an invalid field raises :class:`ConfigError` with one line
naming the field, its value and the problem.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

# Named teacher mixing matrices A (L = 2).
NAMED_A = {
    "standard": ((0.6, 0.4), (0.4, 0.6)),
    "second": ((0.3, 0.7), (0.8, 0.2)),
}
INITS = ("random", "semantic", "positional", "mixed")
OPTIMIZERS = ("gd", "adam")
LIN_INPUTS = ("x", "z")
TASKS = ("attention", "histogram")
# The paper's 25-point alpha grid in [0.01, 2].
PAPER_ALPHAS = tuple(float(a) for a in np.round(np.linspace(0.01, 2.0, 25), 6))


# The reduced variants' alpha grid (configs/*.py:small).
SMALL_ALPHAS = (0.25, 0.5, 1.0, 1.25, 1.5, 2.0)


def experiment(arg: str | None, full: dict, small: dict) -> ml_collections.ConfigDict:
    """An experiment config (configs/*.py): the fields ``full``, updated by ``small`` (and the name suffixed
    "-small") when ``arg == "small"``; any other argument is an error."""
    if arg not in (None, "small"):
        raise ValueError(f"unknown argument {arg!r} (use 'small' or nothing)")
    fields = dict(full, **small, name=full["name"] + "-small") if arg == "small" else full
    return ml_collections.ConfigDict(fields)


class ConfigError(ValueError):
    """An invalid config field, CLI argument or path: reported as one line, exit status 2."""


def default_config() -> ml_collections.ConfigDict:
    """The paper's defaults (docs/model.md; the README lists the fields). Every valid field appears here."""
    c = ml_collections.ConfigDict(type_safe=False)  # types are checked by _set_field and validate
    c.task = "attention"  # the tied-attention model; "histogram": attnsim.histogram_sweep (its own fields)
    c.name = "default"
    # Model and data.
    c.d = 1000
    c.ds = ()  # a non-empty tuple runs one sweep per d, into WORKDIR/d<d> (finite-size scaling; overrides `d`)
    c.L = 2
    c.r = 1
    c.r_t = 1
    c.sigma = 0.5
    c.sigmas = ()  # a non-empty tuple sweeps sigma (overrides `sigma`)
    c.omega = 0.3
    c.omegas = ()  # a non-empty tuple sweeps omega (overrides `omega`)
    c.A = "standard"  # name in NAMED_A, or an L x L row-stochastic matrix as nested tuples
    c.lam = 0.01
    c.lams = ()  # a non-empty tuple sweeps lam (overrides `lam`)
    c.lam_lin = 1e-4
    c.lin_input = "x"  # the baseline sees x = p + z ("x") or, as the authors did, z ("z")
    c.alphas = PAPER_ALPHAS
    c.seeds = 1  # number of independent seeds: teacher, data and random init all depend on it
    c.seed = 0  # base seed (root PRNG key)
    c.inits = ("random", "semantic")
    # Training.
    c.optimizer = "gd"
    c.lr = 0.15
    c.steps = 5000
    # Evaluation.
    c.n_test = 10000  # fresh test samples per seed (one test set per seed), streamed in chunks of `test_chunk`
    c.test_chunk = 2000
    # Engine.
    c.max_batch = 0  # max runs per compiled call (0 = automatic, from memory_budget and the backend)
    c.memory_budget = 0.0  # GiB a chunk may use (0 = automatic: 60% of accelerator memory, 40% of RAM on CPU)
    # Checkpoints (attnsim.checkpoint): a chunk trains in segments of `checkpoint_every` steps (the numbers
    # do not depend on it) and its state is saved after a segment once `checkpoint_seconds` have passed
    # since the last save (0 = after every segment).
    c.checkpoint_every = 500
    c.checkpoint_seconds = 60.0
    # Learning curves: train_loss, m, theta, q of every run every `record_every` steps (and at step 0), in
    # WORKDIR/curves.csv (0 = off). Training is cut at those steps, which changes no result.
    c.record_every = 0
    # Theory.
    c.quad_order = 10  # Gauss-Hermite nodes per dimension (~1.5e-3 relative of order 20), or "authors"
    # Quasi-Monte-Carlo points of the generic theory (any config but L = 2, r = r_t = 1): a power of 2
    # (docs/theory_general.md: ~1e-3 relative at 2^12, ~4x cheaper than 2^14).
    c.qmc_samples = 4096
    return c


def sweep_values(cfg: ml_collections.ConfigDict, field: str) -> tuple[float, ...]:
    """The swept values of ``omega``/``sigma``/``lam``: the tuple field if non-empty, else the scalar."""
    many = tuple(cfg[field + "s"])
    return many if many else (cfg[field],)


def teacher_A(cfg: ml_collections.ConfigDict) -> np.ndarray:
    """The L x L mixing matrix A of the teacher, as float64 numpy."""
    if isinstance(cfg.A, str):
        return np.asarray(NAMED_A[cfg.A], dtype=np.float64)
    return np.asarray(cfg.A, dtype=np.float64)


def per_d(cfg: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
    """The sweeps a config stands for: [("", cfg)], or with ``ds`` one (sub-folder "d<d>", config with that d)
    per d (each validated and locked)."""
    if not cfg.ds:
        return [("", cfg)]
    out = []
    for d in cfg.ds:
        one = ml_collections.ConfigDict(cfg.to_dict(), type_safe=False)
        one.d, one.ds = d, ()
        validate(one)
        one.lock()
        out.append((f"d{d}", one))
    return out


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load ``PATH[:ARG]``, apply ``FIELD=VALUE`` overrides, validate, and return a locked config."""
    file_part, _, arg = path.partition(":")
    file = Path(file_part)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"attnsim_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is bad input, not a crash
        raise ConfigError(f"--config {path}: cannot be loaded: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config {path}: defines no get_config()")
    try:
        user = module.get_config(arg) if arg else module.get_config()
    except Exception as e:
        raise ConfigError(f"--config {path}: get_config({arg!r}) failed: {type(e).__name__}: {e}") from None
    task = user.get("task", "attention")
    if task not in TASKS:
        raise ConfigError(f"config.task={task!r}: must be one of {TASKS}")
    cfg = default_config() if task == "attention" else _histogram().default_config()
    for key, value in user.items():
        _set_field(cfg, key, value, source=f"{file}")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--config.{item}: expected --config.FIELD=VALUE")
        _set_field(cfg, key, _parse_value(text), source="--config")
    if cfg.task != task:
        raise ConfigError(f"--config.task={cfg.task}: the task is the config file's ({task}); use a config of that task")
    (validate if task == "attention" else _histogram().validate)(cfg)
    cfg.lock()
    return cfg


def _histogram():
    from attnsim import histogram_sweep

    return histogram_sweep


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: --config.A=second


def _set_field(cfg: ml_collections.ConfigDict, key: str, value: Any, source: str) -> None:
    if key not in cfg:
        raise ConfigError(f"config.{key}: unknown field (from {source}); known: {', '.join(sorted(cfg))}")
    default = cfg[key]
    if key == "quad_order" and value == "authors":  # the one string an integer field takes (validate checks it)
        cfg[key] = value
        return
    if key == "A":
        if not isinstance(value, (str, list, tuple, np.ndarray)):
            raise ConfigError(f"config.A={value!r}: must be a name ({'/'.join(NAMED_A)}) or an L x L matrix")
        cfg[key] = value if isinstance(value, str) else tuple(tuple(float(v) for v in row) for row in np.atleast_2d(value))
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = (value,)  # a single value is a one-element sweep
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"config.{key}={value!r}: expected {type(default).__name__}, got {type(value).__name__}")
    cfg[key] = value


def check(ok: bool, field: str, value: Any, problem: str) -> None:
    if not ok:
        raise ConfigError(f"config.{field}={value!r}: {problem}")


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Check every field; raise ConfigError naming the first invalid one."""
    for f in ("d", "L", "r", "r_t", "seeds", "steps"):
        check(isinstance(cfg[f], int) and cfg[f] >= 1, f, cfg[f], "must be an integer >= 1")
    check(cfg.L >= 2, "L", cfg.L, "must be >= 2 (a sequence has at least two tokens)")
    check(all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in cfg.ds), "ds", cfg.ds,
           "every d must be an integer >= 1")
    check(len(set(cfg.ds)) == len(cfg.ds), "ds", cfg.ds, "has duplicates")
    check(all(round(a * d) >= 1 for a in cfg.alphas for d in cfg.ds), "alphas", cfg.alphas,
           f"n = round(alpha * d) must be >= 1 for every alpha and every d of ds = {cfg.ds}")
    check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "must be an integer >= 0")
    check(isinstance(cfg.n_test, int) and cfg.n_test >= 1, "n_test", cfg.n_test, "must be an integer >= 1")
    check(isinstance(cfg.test_chunk, int) and cfg.test_chunk >= 1, "test_chunk", cfg.test_chunk, "must be an integer >= 1")
    check(isinstance(cfg.max_batch, int) and cfg.max_batch >= 0, "max_batch", cfg.max_batch, "must be an integer >= 0")
    check(is_num(cfg.memory_budget) and cfg.memory_budget >= 0, "memory_budget", cfg.memory_budget,
           "must be >= 0 (GiB; 0 = automatic)")
    check(isinstance(cfg.checkpoint_every, int) and cfg.checkpoint_every >= 1, "checkpoint_every",
           cfg.checkpoint_every, "must be an integer >= 1 (steps per training segment)")
    check(isinstance(cfg.record_every, int) and cfg.record_every >= 0, "record_every", cfg.record_every,
           "must be an integer >= 0 (steps between learning-curve records; 0 = off)")
    check(is_num(cfg.checkpoint_seconds) and cfg.checkpoint_seconds >= 0, "checkpoint_seconds",
           cfg.checkpoint_seconds, "must be >= 0 (0 = save after every segment)")
    check(cfg.quad_order == "authors" or (isinstance(cfg.quad_order, int) and not isinstance(cfg.quad_order, bool)
                                           and 2 <= cfg.quad_order <= 64), "quad_order", cfg.quad_order,
           'must be an integer in [2, 64] or "authors" (the authors\' 144-node cubature)')
    q = cfg.qmc_samples
    check(isinstance(q, int) and not isinstance(q, bool) and 2**8 <= q <= 2**20 and q & (q - 1) == 0, "qmc_samples",
          q, "must be a power of 2 in [256, 1048576] (scrambled-Sobol points of the generic theory)")
    for f, lo_ok, problem in (
        ("sigma", lambda v: v > 0, "must be > 0"),
        ("omega", lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
        ("lam", lambda v: v >= 0, "must be >= 0"),
    ):
        check(is_num(cfg[f]) and lo_ok(cfg[f]), f, cfg[f], problem)
        many = cfg[f + "s"]
        check(all(is_num(v) and lo_ok(v) for v in many), f + "s", many, "every value " + problem)
    check(is_num(cfg.lam_lin) and cfg.lam_lin >= 0, "lam_lin", cfg.lam_lin, "must be >= 0")
    check(is_num(cfg.lr) and cfg.lr > 0, "lr", cfg.lr, "must be > 0")
    check(len(cfg.alphas) >= 1, "alphas", cfg.alphas, "must hold at least one value")
    check(all(is_num(a) and a > 0 for a in cfg.alphas), "alphas", cfg.alphas, "every alpha must be > 0")
    check(all(round(a * cfg.d) >= 1 for a in cfg.alphas), "alphas", cfg.alphas,
           f"n = round(alpha * d) must be >= 1 for every alpha (d = {cfg.d})")
    check(len(cfg.inits) >= 1 and all(i in INITS for i in cfg.inits), "inits", cfg.inits,
           f"must be a non-empty tuple of {INITS}")
    check(len(set(cfg.inits)) == len(cfg.inits), "inits", cfg.inits, "has duplicates")
    check("mixed" not in cfg.inits or cfg.r >= 2, "inits", cfg.inits,
          f"'mixed' (one column semantic, one positional) needs a student rank r >= 2, not r = {cfg.r}")
    check(cfg.optimizer in OPTIMIZERS, "optimizer", cfg.optimizer, f"must be one of {OPTIMIZERS}")
    check(cfg.lin_input in LIN_INPUTS, "lin_input", cfg.lin_input, f"must be one of {LIN_INPUTS}")
    if isinstance(cfg.A, str):
        check(cfg.A in NAMED_A, "A", cfg.A, f"unknown name; use one of {tuple(NAMED_A)} or an L x L matrix")
        check(cfg.L == 2, "A", cfg.A, f"named matrices are 2 x 2 but L = {cfg.L}; give an L x L matrix")
    else:
        A = np.asarray(cfg.A, dtype=np.float64)
        check(A.shape == (cfg.L, cfg.L), "A", cfg.A, f"must be {cfg.L} x {cfg.L} (L = {cfg.L}), got shape {A.shape}")
        check(bool(np.all(np.isfinite(A)) and np.all(A >= 0) and np.allclose(A.sum(1), 1.0, atol=1e-6)),
               "A", cfg.A, "must be row-stochastic (non-negative entries, rows summing to 1)")
