"""The process pool of ``critical_lines``: one solve uses one core, so omegas are split over processes."""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os

import jax
import numpy as np

_INHERITED_CONFIG = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                     "jax_compilation_cache_max_size")


def auto_workers(omegas) -> int:
    """Processes for critical_lines: one per usable core, at most one per 8 omegas (each process compiles
    the solver); one on an accelerator."""
    if jax.default_backend() != "cpu":
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), len(np.atleast_1d(omegas)) // 8))


def in_processes(fn, chunks, kwargs):
    """[fn(chunk, **kwargs) for chunk in chunks], each in its own spawned process, which inherits this
    process's persistent-compilation-cache settings (threads in one process gave no speed-up)."""
    settings = {k: jax.config.values[k] for k in _INHERITED_CONFIG}
    with concurrent.futures.ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_configure, initargs=(settings,)) as ex:
        return list(ex.map(functools.partial(_call_with, fn, kwargs), chunks))


def _configure(settings):
    for k, v in settings.items():
        if v is not None:
            jax.config.update(k, v)


def _call_with(fn, kwargs, arg):
    return fn(arg, **kwargs)
