"""Checkpoints of the chunk in training (Orbax), so that a killed sweep resumes where it stopped.

Finished runs are recorded in results.csv, the sweep's record. The chunk in progress trains in segments of
``cfg.checkpoint_every`` steps; after a segment, once ``cfg.checkpoint_seconds`` have passed since the
chunk started or was last saved, its batched TrainState (the run axis sharded over the devices) is saved
by an Orbax CheckpointManager under WORKDIR/checkpoints, asynchronously, with a JSON record: the chunk's
runs (their KEY_COLUMNS), the steps done, the config fingerprint and a digest of the state.

Orbax writes a save into a temporary directory and renames it when complete, so a save killed midway is
never taken for a checkpoint. A checkpoint damaged afterwards (a deleted or overwritten file) fails to
restore or to match its digest: the previous one is used, with a warning. Because a segment's step count
is a run-time argument of one compiled program (``training.train_steps``), a resumed chunk ends with the
same bits as an uninterrupted one on the same devices with the same chunk plan (``max_batch``); on another
device count it is restored, re-padded, and agrees up to float32 reduction order.

Testing hook: ``ATTNSIM_FAULT=EVENT:N`` kills the process (SIGKILL) at the N-th EVENT, one of
``segment`` (after a training segment, once its save, if any, is complete), ``save`` (just after a save was started,
while it is written) and ``chunk`` (just after a chunk's rows were written to results.csv).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import pandas as pd

KEEP = 3  # checkpoints kept: the newest may be damaged, the one before it is the fallback

_fault_counts: collections.Counter = collections.Counter()


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


@dataclasses.dataclass
class Resumed:
    """A chunk restored from a checkpoint: per seed, the row labels (into the runs table) of its group,
    the steps done, and the state of its real runs, host arrays of shape (seeds, runs, ...)."""

    seeds: tuple[int, ...]
    n_max: int
    groups: tuple[tuple[int, ...], ...]
    steps_done: int
    state: Any


class Checkpointer:
    """The CheckpointManager of one workdir, with the time-based save rule and the fallback on damage."""

    def __init__(self, directory: Path, fingerprint: dict, every_seconds: float):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.fingerprint = fingerprint
        self.every_seconds = every_seconds
        self.manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=KEEP, enable_async_checkpointing=True, create=True))
        self._last = time.monotonic()

    def start_chunk(self) -> None:
        self._last = time.monotonic()

    def maybe_save(self, record: dict, state, steps_done: int) -> bool:
        """Save ``state`` (device arrays, padded chunk shape) with ``record`` (the chunk's runs as key
        tuples) if ``every_seconds`` have passed since the chunk started or was last saved."""
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

    def restore(self, runs: pd.DataFrame, key_columns: list[str], template: Callable) -> Resumed | None:
        """The newest usable checkpoint of a chunk whose runs are all in ``runs`` (still to do), or None.

        ``template(n_max, shape)`` gives the state's structure as host arrays of the saved padded shape.
        A checkpoint of runs already finished is stale and skipped; one written under another config
        fingerprint, or that fails to restore or to match its digest, is skipped with a warning."""
        ocp = self._ocp
        label = {tuple(k): i for i, k in zip(runs.index, runs[key_columns].itertuples(index=False))}
        foreign = False
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                if meta.get("fingerprint") != self.fingerprint:
                    if not foreign:  # e.g. copied from another workdir (--overwrite clears the folder)
                        foreign = True
                        self._foreign(step, meta.get("fingerprint"))
                    continue
                groups = tuple(tuple(label.get(tuple(k)) for k in g) for g in meta["groups"])
                if any(i is None for g in groups for i in g):
                    continue  # its runs are already in results.csv (or no longer in the config)
                shape = tuple(int(v) for v in meta["shape"])
            except Exception as e:  # an unreadable record: a damaged checkpoint
                self._damaged(step, e)
                continue
            like = template(meta["n_max"], shape)
            try:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(like))
                state = self.manager.restore(step, args=args)["state"]
                if digest(state) != meta["digest"]:
                    raise ValueError("the restored state does not match its digest")
            except Exception as e:  # missing, truncated or altered files
                self._damaged(step, e)
                continue
            S, R = len(groups), len(groups[0])
            return Resumed(seeds=tuple(meta["seeds"]), n_max=meta["n_max"], groups=groups,
                           steps_done=int(meta["steps_done"]), state=jax.tree.map(lambda a: a[:S, :R], state))
        return None

    def _foreign(self, step: int, theirs) -> None:
        """One warning line for checkpoints written under another config fingerprint (not restored)."""
        theirs = theirs if isinstance(theirs, dict) else {}
        diff = [f for f in {**self.fingerprint, **theirs} if theirs.get(f) != self.fingerprint.get(f)]
        what = f"{diff[0]}={theirs.get(diff[0])!r}, now {self.fingerprint.get(diff[0])!r}" if diff else "?"
        print(f"attnsim: warning: checkpoint {self.directory / str(step)} belongs to a different config ({what}); "
              "not restored", file=sys.stderr)

    def _damaged(self, step: int, e: Exception) -> None:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        print(f"attnsim: warning: checkpoint {self.directory / str(step)} is damaged ({type(e).__name__}: {first}); "
              "trying the previous one", file=sys.stderr)

    def wait(self) -> None:
        """Block until a save in flight is complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for a save in flight, then release the manager."""
        self.wait()
        self.manager.close()
