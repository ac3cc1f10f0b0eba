"""A sweep's workdir: who writes which file, the config record, and the union of what is done.

Every writer has files of its own, so that no file is ever written by two processes at once (shared file
systems give no such guarantee):

| writer | results | checkpoints |
|---|---|---|
| one process (``attnsim run``) or process 0 of a launch | ``results.csv`` | ``checkpoints/`` |
| process i > 0 of a launch | ``results.process{i}.csv`` | ``checkpoints.process{i}/`` |
| shard I of N (``--shard I/N``) | ``results.shard{I}-of-{N}.csv`` | ``checkpoints.shard{I}-of-{N}/`` |

Learning curves (``config.record_every``) go to ``curves.csv`` and ``curves.{tag}.csv`` like the results.
``sweep.read_results`` and ``sweep.read_curves`` read the union. When a sweep of one process or one launch is complete, its lead
merges every results file into ``results.csv`` and removes the checkpoints (:func:`merge`); shards, which
never know that the others are done, leave their files (``attnsim report`` reads the union).

``config.json`` records the config, its fingerprint (``checkpoint.FINGERPRINT_FIELDS``) and the shard count.
Results and checkpoints are reused only under the same fingerprint and shard count. The lead rewrites it
(atomically); a shard creates it only if it is missing (exclusively, so one shard wins) and otherwise just
checks it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

from attnsim import checkpoint, sweep
from attnsim.config import ConfigError

CONFIG = "config.json"
RESULTS = "results.csv"
CURVES = "curves.csv"
ATTENTION = "attention.csv"  # the histogram task's attention maps of a few validation sequences
CHECKPOINTS = "checkpoints"
PROCESSES = ".processes"  # heartbeat files of a multi-process launch (attnsim.cluster)


@dataclasses.dataclass(frozen=True)
class Shard:
    """The I-th of N disjoint parts of a config's grid (``--shard I/N``): its runs are every N-th row of the
    grid starting at row I, so the parts are fixed by the grid alone (not by chunk plans, devices or
    processes) and balanced to one run."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise ConfigError(f"--shard {text}: expected I/N with integers 0 <= I < N, e.g. --shard 0/4")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1:
            raise ConfigError(f"--shard {text}: the shard count N must be >= 1")
        if index >= count:
            raise ConfigError(f"--shard {text}: the shard index I must lie in [0, N) = [0, {count})")
        return cls(index, count)

    def select(self, runs):
        """The rows of the grid ``runs`` (sweep.expand_grid) in this shard."""
        return runs.iloc[self.index::self.count]

    @property
    def tag(self) -> str:
        return f"shard{self.index}-of-{self.count}"


@dataclasses.dataclass(frozen=True)
class Writer:
    """One writer of a workdir: its results file and checkpoint folder (table in the module docstring)."""

    workdir: Path
    tag: str = ""  # "" for the lead, "process{i}" or "shard{I}-of-{N}"

    @property
    def lead(self) -> bool:
        return self.tag == ""

    @property
    def results(self) -> Path:
        return self.workdir / (RESULTS if self.lead else f"results.{self.tag}.csv")

    @property
    def curves(self) -> Path:
        """Its learning curves (config.record_every): curves.csv or curves.TAG.csv, like results."""
        return self.workdir / (CURVES if self.lead else f"curves.{self.tag}.csv")

    def table(self, name: str) -> Path:
        """Its file of the table ``name`` (e.g. attention.csv): the name itself for the lead, NAME.TAG.csv else."""
        return self.workdir / (name if self.lead else f"{Path(name).stem}.{self.tag}.csv")

    @property
    def checkpoints(self) -> Path:
        return self.workdir / (CHECKPOINTS if self.lead else f"{CHECKPOINTS}.{self.tag}")


def writer(workdir: Path, process: int = 0, shard: Shard | None = None) -> Writer:
    if shard is not None:
        return Writer(workdir, shard.tag)
    return Writer(workdir, f"process{process}" if process else "")


def checkpoint_folders(workdir: Path) -> list[Path]:
    """Checkpoint folders of the lead and of every process (not of shards), in a fixed order."""
    folders = [workdir / CHECKPOINTS] + sorted(workdir.glob(f"{CHECKPOINTS}.process*"))
    return [f for f in folders if f.is_dir()]


def _has_work(workdir: Path) -> bool:
    return bool(sweep.table_files(workdir)) or any(workdir.glob(f"{CHECKPOINTS}*"))


def prepare(path: str) -> Path:
    """The workdir, created if missing; a clear ConfigError if it cannot be written."""
    workdir = Path(path)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".attnsim_write_test.{os.getpid()}"  # per process: several may share a workdir
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--workdir {path}: not writable ({e.strerror or e})") from None
    return workdir


def check(workdir: Path, cfg, shard: Shard | None) -> None:
    """Refuse (ConfigError) a workdir whose results or checkpoints belong to another config fingerprint or
    another shard count."""
    record = workdir / CONFIG
    if not (record.is_file() and _has_work(workdir)):
        return
    old = json.loads(record.read_text())
    what = checkpoint.fingerprint_difference(checkpoint.fingerprint(cfg), old.get("fingerprint", {}))
    if what:
        raise ConfigError(f"--workdir {workdir}: holds results of a different config ({what}); "
                          "use another workdir or --overwrite")
    theirs, mine = int(old.get("shards", 1)), shard.count if shard else 1
    if theirs != mine:
        started = f"with --shard I/{theirs}" if theirs > 1 else "without --shard"
        now = f"--shard {shard.index}/{shard.count}" if shard else "no --shard"
        raise ConfigError(f"--workdir {workdir}: was started {started} (now {now}); use the same shard count "
                          "or another workdir")


def clear(workdir: Path) -> None:
    """--overwrite: remove every results file, checkpoint folder and heartbeat."""
    for f in sweep.table_files(workdir) + sweep.table_files(workdir, CURVES) + sweep.table_files(workdir, ATTENTION):
        f.unlink()
    for d in workdir.glob(f"{CHECKPOINTS}*"):
        shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(workdir / PROCESSES, ignore_errors=True)


def record(workdir: Path, cfg, shard: Shard | None) -> None:
    """Write config.json: the lead replaces it; a shard creates it only where it is missing."""
    text = json.dumps({"fingerprint": checkpoint.fingerprint(cfg), "shards": shard.count if shard else 1,
                       "config": cfg.to_dict()}, indent=1, default=str)
    path = workdir / CONFIG
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    if shard is None:
        tmp.replace(path)
        return
    try:
        os.link(tmp, path)  # atomic and exclusive, also on NFS: the first shard's record stays
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def merge(workdir: Path, task=sweep) -> None:
    """Merge every results file (and curves / attention file) into results.csv (curves.csv, attention.csv)
    atomically, then remove the others and every checkpoint folder of the lead and of the processes. Only for
    a lead whose launch is complete. ``task``: the sweep's (attnsim.tasks), whose KEY_COLUMNS identify a run."""
    keys = task.KEY_COLUMNS
    tables = [(RESULTS, keys), (CURVES, keys + ["step"]), (ATTENTION, keys + ["example", "query", "key"])]
    for name, columns in tables:
        table = sweep.read_results(workdir / name, columns)
        parts = [f for f in sweep.table_files(workdir, name) if f.name != name and ".shard" not in f.name]
        if parts and table is not None:
            tmp = workdir / (name + ".tmp")
            tmp.write_text(table.to_csv(index=False))
            tmp.replace(workdir / name)
            for f in parts:
                f.unlink()
    for folder in checkpoint_folders(workdir):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(workdir / PROCESSES, ignore_errors=True)
