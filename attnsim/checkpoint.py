"""Checkpoints of the chunks in training (Orbax), so that a killed sweep resumes where it stopped.

Finished runs are recorded in the results files, the sweep's record. A chunk in progress trains in segments
of ``cfg.checkpoint_every`` steps; after a segment has *finished* (the caller waits for its result), once
``cfg.checkpoint_seconds`` have passed since the chunk started or was last saved, its batched TrainState is
saved by an Orbax CheckpointManager, asynchronously, with a JSON record: the chunk's runs (their
KEY_COLUMNS), the steps done, the config fingerprint and a digest of the state.

Every writer of a workdir (the single process, each process of a multi-process launch, each shard) saves
into a folder of its own (``attnsim.workdir``), so no two processes ever write one checkpoint folder and no
save waits for another process: the manager runs in a process without ``jax.distributed`` (see
``attnsim.cluster``), so Orbax coordinates nothing. A relaunch reads the records of every folder it may
resume (:func:`find`) before any process writes, so all processes agree on the chunks; only the process that
owns a chunk loads its state (:func:`load`).

Orbax writes a save into a temporary directory and renames it when complete, so a save killed midway is
never taken for a checkpoint. A checkpoint damaged afterwards (a deleted or overwritten file) fails to
restore or to match its digest: the previous one of the same chunk is used, with a warning. Because a
segment's step count is a run-time argument of one compiled program (``training.train_steps``), a resumed
chunk ends with the same bits as an uninterrupted one on the same devices with the same chunk plan
(``max_batch``); on another device count it is restored, re-padded, and agrees up to float32 reduction order.

Testing hook: ``ATTNSIM_FAULT=EVENT:N`` kills the process (SIGKILL) at the N-th EVENT, one of
``segment`` (after a finished training segment, once its save, if any, is complete), ``save`` (just after a
save was started, while it is written) and ``chunk`` (just after a chunk's rows were written).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np
import pandas as pd

KEEP = 3  # checkpoints kept per folder: the newest may be damaged, the ones before it are the fallback

# Config fields that change what a finished run's numbers mean: results and checkpoints are only reused
# under the same values.
FINGERPRINT_FIELDS = ("d", "L", "r", "r_t", "A", "lam_lin", "lin_input", "seed", "optimizer", "lr", "steps",
                      "n_test", "test_chunk")

_fault_counts: collections.Counter = collections.Counter()


def fingerprint(cfg) -> dict:
    """The FINGERPRINT_FIELDS of a config (its task's: ``histogram_sweep.FINGERPRINT_FIELDS`` for the
    histogram task), as JSON stores them (tuples become lists)."""
    fields = FINGERPRINT_FIELDS
    if cfg.get("task", "attention") == "histogram":
        from attnsim import histogram_sweep

        fields = histogram_sweep.FINGERPRINT_FIELDS
    return json.loads(json.dumps({f: cfg[f] for f in fields}))


def fingerprint_difference(mine: dict, theirs) -> str | None:
    """``"FIELD=THEIRS, now MINE"`` for the first field where two fingerprints differ, or None."""
    theirs = theirs if isinstance(theirs, dict) else {}
    diff = [f for f in {**mine, **theirs} if theirs.get(f) != mine.get(f)]
    return f"{diff[0]}={theirs.get(diff[0])!r}, now {mine.get(diff[0])!r}" if diff else None


def fault(event: str, before: Callable[[], None] | None = None) -> None:
    """The ATTNSIM_FAULT testing hook (module docstring); ``before()`` runs just before the kill."""
    name, _, count = os.environ.get("ATTNSIM_FAULT", "").partition(":")
    if name != event:
        return
    _fault_counts[event] += 1
    if _fault_counts[event] == int(count or 1):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)


def digest(state) -> str:
    """SHA-256 of a state's leaves (host arrays), in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(state)):
        a = np.ascontiguousarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Saved:
    """A checkpoint's record, found on disk: the chunk (per seed, the row labels into the runs table of its
    group), the steps done and the padded shape of the saved state."""

    directory: Path
    step: int
    seeds: tuple[int, ...]
    n_max: int
    groups: tuple[tuple[int, ...], ...]
    steps_done: int
    shape: tuple[int, int]

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(i for g in self.groups for i in g)


@dataclasses.dataclass
class Resumed:
    """A chunk restored from a checkpoint: its Saved record, the state of its real runs, host arrays of
    shape (seeds, runs, ...), and its learning-curve records so far (Engine.run_chunk's ``curve``)."""

    saved: Saved
    state: Any
    curve: dict | None = None

    @property
    def steps_done(self) -> int:
        return self.saved.steps_done


def _manager(directory: Path, read_only: bool):
    import orbax.checkpoint as ocp

    # (Orbax's read_only option logs warnings on every use: a manager that is never asked to save is enough.)
    options = (ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False) if read_only else
               ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=True, create=True))
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _records(manager):
    """(step, record or the exception that reading it raised) for every checkpoint of a manager's folder,
    newest first."""
    import orbax.checkpoint as ocp

    for step in sorted(manager.all_steps(), reverse=True):
        try:
            yield step, manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # an unreadable record: a damaged checkpoint
            yield step, e


def find(directories: Iterable[Path], runs: pd.DataFrame, key_columns: list[str], fingerprint: dict) -> list[Saved]:
    """The chunks that can be resumed: per folder, the newest checkpoint of this config whose runs are all in
    ``runs`` (still to do), then, of chunks that share a run (left by launches of different process counts),
    the one with the most steps done. Ordered by their first run's row label, so that every process that
    reads the same folders gets the same list.

    Records that cannot be read are skipped with a warning (the previous checkpoint is tried); records of
    another config fingerprint (e.g. copied from another workdir) with one warning per folder."""
    label = {tuple(k): i for i, k in zip(runs.index, runs[key_columns].itertuples(index=False))}
    found = []
    for directory in directories:
        if not Path(directory).is_dir():
            continue
        foreign = False
        manager = _manager(directory, read_only=True)
        records = list(_records(manager))
        manager.close()
        for step, meta in records:
            if isinstance(meta, Exception):
                _damaged(directory, step, meta)
                continue
            if meta.get("fingerprint") != fingerprint:
                if not foreign:
                    foreign = True
                    what = fingerprint_difference(fingerprint, meta.get("fingerprint")) or "?"
                    print(f"attnsim: warning: checkpoint {Path(directory) / str(step)} belongs to a different config "
                          f"({what}); not restored", file=sys.stderr)
                continue
            try:
                groups = tuple(tuple(label.get(tuple(k)) for k in g) for g in meta["groups"])
                saved = Saved(Path(directory), step, tuple(meta["seeds"]), int(meta["n_max"]), groups,
                              int(meta["steps_done"]), tuple(int(v) for v in meta["shape"]))
            except (KeyError, TypeError, ValueError) as e:
                _damaged(directory, step, e)
                continue
            if any(i is None for i in saved.rows):
                continue  # its runs are already done (or no longer in the config)
            found.append(saved)
    found.sort(key=lambda s: (-s.steps_done, -s.step))
    kept, taken = [], set()
    for s in found:
        if taken.isdisjoint(s.rows):
            kept.append(s)
            taken.update(s.rows)
    return sorted(kept, key=lambda s: s.rows[0])


def load(saved: Saved, template: Callable) -> Resumed | None:
    """The state of a found checkpoint, checked against its digest; if it is damaged, that of an earlier
    checkpoint of the same chunk in its folder (with a warning); None if there is none (train afresh).
    ``template(n_max, shape)`` gives the state's structure as host arrays of the saved padded shape."""
    import orbax.checkpoint as ocp

    manager = _manager(saved.directory, read_only=True)
    try:
        for step, meta in _records(manager):
            if step > saved.step or isinstance(meta, Exception):
                continue
            try:
                same = (meta["seeds"] == list(saved.seeds) and meta["n_max"] == saved.n_max
                        and tuple(int(v) for v in meta["shape"]) == saved.shape and len(meta["groups"]) == len(saved.groups))
                if not same:
                    continue
                like = template(saved.n_max, saved.shape)
                state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(like)))["state"]
                if digest(state) != meta["digest"]:
                    raise ValueError("the restored state does not match its digest")
            except Exception as e:  # missing, truncated or altered files
                _damaged(saved.directory, step, e)
                continue
            S, R = len(saved.groups), len(saved.groups[0])
            at = dataclasses.replace(saved, step=step, steps_done=int(meta["steps_done"]))
            curve = curve_from_json(meta["curve"]) if "curve" in meta else None
            return Resumed(at, jax.tree.map(lambda a: a[:S, :R], state), curve)
    finally:
        manager.close()
    return None


def curve_to_json(curve: dict) -> list:
    """Learning-curve records ({step: {name: array}}) as JSON (float32 values survive exactly)."""
    return [[int(step), {k: np.asarray(v).tolist() for k, v in values.items()}] for step, values in sorted(curve.items())]


def curve_from_json(items: list) -> dict:
    return {int(step): {k: np.asarray(v, np.float32) for k, v in values.items()} for step, values in items}


def _damaged(directory: Path, step: int, e: Exception) -> None:
    first = str(e).splitlines()[0][:200] if str(e) else ""
    print(f"attnsim: warning: checkpoint {Path(directory) / str(step)} is damaged ({type(e).__name__}: {first}); "
          "trying the previous one", file=sys.stderr)


class Checkpointer:
    """The CheckpointManager of one writer's folder, with the time-based save rule."""

    def __init__(self, directory: Path, fingerprint: dict, every_seconds: float):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.fingerprint = fingerprint
        self.every_seconds = every_seconds
        self.manager = _manager(self.directory, read_only=False)
        self._last = time.monotonic()

    def start_chunk(self) -> None:
        self._last = time.monotonic()

    def maybe_save(self, record: dict, state, steps_done: int) -> bool:
        """Save ``state`` (device arrays of the padded chunk shape, whose computation has finished) with
        ``record`` (the chunk's runs as key tuples) if ``every_seconds`` have passed since the chunk started
        or was last saved."""
        if time.monotonic() - self._last < self.every_seconds:
            return False
        ocp = self._ocp
        meta = dict(record, steps_done=steps_done, fingerprint=self.fingerprint, digest=digest(state),
                    shape=list(jax.tree.leaves(state)[0].shape[:2]))
        step = (self.manager.latest_step() or 0) + 1
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))
        fault("save")
        self._last = time.monotonic()
        return True

    def wait(self) -> None:
        """Block until a save in flight is complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for a save in flight, then release the manager."""
        self.wait()
        self.manager.close()
