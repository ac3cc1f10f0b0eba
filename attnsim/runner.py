"""Running a config's sweep into a workdir: what ``attnsim run`` and ``attnsim.run`` do.

    import attnsim
    from attnsim.config import load_config
    cfg = load_config("configs/demo.py", ["d=100", "seeds=2"])
    results = attnsim.run(cfg, "runs/demo100")   # a DataFrame, the rows of results.csv; a second call resumes

The runs already in the workdir's results files are skipped, chunks saved in checkpoints resume, the rest is
planned into chunks (``sweep.plan``) and trained. With a shard (``Shard``) only its part of the grid is run;
with several processes (``cluster.Rendezvous``) process i trains chunks i, i + P, i + 2P, ... of one plan
that every process reads from the workdir at the same moment. Who writes which file: ``attnsim.workdir``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from attnsim import checkpoint, cluster, workdir as workdir_lib
from attnsim.config import ConfigError
from attnsim.workdir import Shard

COMPILATION_CACHE_BYTES = 2 * 2**30  # JAX evicts the least recently used programs beyond this


def enable_compilation_cache() -> None:
    """Keep compiled programs on disk (JAX's persistent cache, at most COMPILATION_CACHE_BYTES) so that
    re-running or resuming a sweep skips compilation. ATTNSIM_COMPILATION_CACHE=DIR moves it, =0 turns
    it off. (The size bound keeps an access-time file per entry: a folder filled without it makes JAX warn
    on every write.)"""
    where = os.environ.get("ATTNSIM_COMPILATION_CACHE",
                           os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                        "attnsim", "jax-lru"))
    if where in ("", "0"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)


def run(cfg: ml_collections.ConfigDict, workdir: str | Path | None = None, *, overwrite: bool = False,
        shard: Shard | None = None, rendezvous: cluster.Rendezvous | None = None,
        progress: bool = True) -> pd.DataFrame:
    """Run the sweep of ``cfg`` (a validated config, ``config.load_config``) and return its rows, one per run
    of the grid (of the shard's part of it), as ``results.csv`` holds them, in grid order.

    ``workdir``: where results and checkpoints go; the sweep resumes from what is there (a finished sweep
    recomputes nothing). None: a temporary folder, removed afterwards. ``overwrite``: start afresh.
    ``shard``: only that part of the grid. ``rendezvous``: this process's place in a multi-process launch.
    Raises ConfigError (bad input, before anything is written) and cluster.ClusterError."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="attnsim-") as tmp:
            return run(cfg, tmp, shard=shard, progress=progress)
    if cfg.get("ds"):  # one sweep per d, each in its own sub-folder (report.read_workdir reads them all)
        if rendezvous is not None:
            raise ConfigError(f"config.ds={cfg.ds}: one d per multi-process launch (give --config.d=D and a "
                              "workdir per d)")
        import jax

        from attnsim import config as config_lib, sweep

        sweeps = config_lib.per_d(cfg)
        for _, one in sweeps:
            sweep.default_max_batch(one, jax.local_device_count())  # every d fits, before any work
        return pd.concat([run(one, Path(workdir) / sub, overwrite=overwrite, shard=shard, progress=progress)
                          for sub, one in sweeps], ignore_index=True)
    if shard is not None and (overwrite or rendezvous is not None):
        raise ConfigError("--shard: cannot be combined with " + ("--overwrite (shards share the workdir; delete "
                          "it instead)" if overwrite else "several processes (run one process per shard)"))
    enable_compilation_cache()
    import jax

    from attnsim import sweep, tasks

    task = tasks.of(cfg)
    max_batch = task.default_max_batch(cfg, jax.local_device_count())  # checks the memory budget
    path = workdir_lib.prepare(str(workdir))
    launch = rendezvous.launch if rendezvous else cluster.Launch()
    if launch.index == 0:
        workdir_lib.check(path, cfg, shard)
        if overwrite:
            workdir_lib.clear(path)
        workdir_lib.record(path, cfg, shard)
    heartbeat = None
    if rendezvous:
        rendezvous.barrier("workdir prepared")
        heartbeat = cluster.Heartbeat(path / workdir_lib.PROCESSES, launch)
    try:
        _Sweep(cfg, path, launch, shard, max_batch, heartbeat, rendezvous, progress).run()
    except BaseException:
        if heartbeat:
            heartbeat.stop("stopped")
        raise
    grid = task.expand_grid(cfg)
    grid = shard.select(grid) if shard else grid
    done = sweep.read_results(path / workdir_lib.RESULTS, task.KEY_COLUMNS)
    if done is None:  # a process of a launch whose lead has not written its rows yet
        return pd.DataFrame(columns=task.RUN_COLUMNS + task.METRIC_COLUMNS)
    return grid[task.KEY_COLUMNS].merge(done, on=task.KEY_COLUMNS, how="inner")[done.columns]


def describe(cfg: ml_collections.ConfigDict, workdir: str | Path | None = None, shard: Shard | None = None) -> str:
    """`attnsim run --dry-run`: the runs, chunks and compiled shapes a run of ``cfg`` into ``workdir`` would
    have (finished runs in an existing workdir are counted as done), and a rough estimate of its time.
    Reads only; writes nothing."""
    import jax

    from attnsim import config as config_lib, sweep

    if cfg.get("task", "attention") == "histogram":
        return _describe_histogram(cfg, workdir, shard)
    backend = jax.default_backend()
    lines, total = [], 0.0
    for sub, one in config_lib.per_d(cfg):
        max_batch = sweep.default_max_batch(one, jax.local_device_count())
        grid = sweep.expand_grid(one)
        mine = shard.select(grid) if shard else grid
        folder = Path(workdir) / sub if workdir is not None else None
        done = sweep.read_results(folder / workdir_lib.RESULTS) if folder is not None and folder.is_dir() else None
        todo = sweep.missing_runs(mine, done)
        chunks = sweep.sweep_plan(one, grid, todo, max_batch, jax.local_device_count()) if len(todo) else []
        engine = sweep.Engine(one)
        shapes = sorted({(c.n_max, engine.padded_shape(c)) for c in chunks})
        sample_steps = sum(c.n_max * int(np.prod(engine.padded_shape(c))) for c in chunks) * one.steps
        seconds = (sample_steps * one.L * one.d * sweep.STEP_SECONDS_PER_SAMPLE_DIM.get(backend, 2e-10)
                   + len(shapes) * sweep.COMPILE_SECONDS_PER_SHAPE.get(backend, 4.0))
        total += seconds
        where = f"{sub}: d = {one.d}: " if sub else ""
        part = f" (shard {shard.index}/{shard.count}: {len(mine)})" if shard else ""
        lines.append(f"{where}{len(grid)} runs{part}, {len(mine) - len(todo)} done, {len(todo)} to do in "
                     f"{len(chunks)} chunks of at most {max_batch} runs; {len(shapes)} compiled shapes (n_max, "
                     f"seeds x runs): {', '.join(f'{n}:{a}x{b}' for n, (a, b) in shapes) or 'none'}; "
                     f"{sample_steps:.3g} padded sample-steps, padding waste "
                     f"{sweep.padding_waste(todo, chunks, jax.local_device_count()) if chunks else 0:.0%}")
    lines.append(f"estimated time on this machine ({jax.local_device_count()} {backend} device(s)): "
                 f"~{total:.0f} s (a rough model: compilation per shape plus sample-steps x L x d at a "
                 f"benchmarked rate; within a factor of ~2-3)")
    return "\n".join(lines)


def _describe_histogram(cfg, workdir, shard: Shard | None) -> str:
    import jax

    from attnsim import histogram_sweep as task, sweep

    grid = task.expand_grid(cfg)
    mine = shard.select(grid) if shard else grid
    folder = Path(workdir) if workdir is not None else None
    done = sweep.read_results(folder / workdir_lib.RESULTS, task.KEY_COLUMNS) if folder and folder.is_dir() else None
    todo = sweep.missing_runs(mine, done, task.KEY_COLUMNS)
    devices = jax.local_device_count()
    chunks = task.sweep_plan(cfg, grid, todo, task.default_max_batch(cfg, devices), devices) if len(todo) else []
    sample_epochs = sum(c.n_max * task.padded_runs(len(c.rows), devices) * (task.chunk_epochs(grid, c) + cfg.retrain_epochs)
                        for c in chunks)
    part = f" (shard {shard.index}/{shard.count}: {len(mine)})" if shard else ""
    return (f"{len(grid)} runs{part} (variants {', '.join(cfg.variants)} x n_train {task.n_trains(cfg)} x "
            f"{cfg.seeds} seeds), {len(mine) - len(todo)} done, {len(todo)} to do in {len(chunks)} chunks; "
            f"{sample_epochs:.3g} padded sequence-epochs (>= {cfg.epochs} Adam + {cfg.retrain_epochs} SGD epochs per "
            f"run), padding waste {task.padding_waste(todo, chunks, devices) if chunks else 0:.0%}; estimated time "
            f"on this machine ({devices} {jax.default_backend()} device(s)): ~{sample_epochs * task.step_seconds():.0f} s "
            "(a rough model, within a factor of ~2-3)")


class _Sweep:
    """One process's part of a sweep: read what is done, plan, train its chunks, write its rows."""

    def __init__(self, cfg, path: Path, launch: cluster.Launch, shard: Shard | None, max_batch: int,
                 heartbeat: cluster.Heartbeat | None, rendezvous: cluster.Rendezvous | None, progress: bool):
        self.cfg, self.path, self.launch, self.shard, self.max_batch = cfg, path, launch, shard, max_batch
        self.heartbeat, self.rendezvous, self.progress = heartbeat, rendezvous, progress
        self.writer = workdir_lib.writer(path, launch.index, shard)
        self.fingerprint = checkpoint.fingerprint(cfg)
        self.speaks = launch.index == 0  # the process that prints the sweep's summary lines
        from attnsim import tasks

        self.task = tasks.of(cfg)

    def say(self, text: str) -> None:
        if self.speaks:
            print(f"attnsim: {text}", file=sys.stderr)

    def run(self) -> None:
        import jax

        from attnsim import sweep

        task, keys = self.task, self.task.KEY_COLUMNS
        grid = task.expand_grid(self.cfg)
        mine = self.shard.select(grid) if self.shard else grid
        todo = sweep.missing_runs(mine, sweep.read_results(self.path / workdir_lib.RESULTS, keys), keys)
        folders = [self.writer.checkpoints] if self.shard else workdir_lib.checkpoint_folders(self.path)
        resumable = checkpoint.find(folders, todo, keys, self.fingerprint) if len(todo) else []
        chunks = (task.sweep_plan(self.cfg, grid, todo, self.max_batch, jax.local_device_count(), resumable)
                  if len(todo) else [])
        if self.rendezvous:  # every process has read the workdir: from here on they may write
            self.rendezvous.close()
        what = f"shard {self.shard.index}/{self.shard.count} ({len(mine)} of {len(grid)} runs)" if self.shard else \
            f"all {len(grid)} runs"
        if todo.empty and self.speaks:
            print(f"attnsim: {what} already in {self.path}; nothing to do")
        else:
            self.say(f"{len(todo)} runs to do ({len(mine) - len(todo)} already done) in {len(chunks)} chunks "
                     f"on {jax.local_device_count()} {jax.default_backend()} device(s) per process in "
                     f"{self.launch.count} process(es), padding waste "
                     f"{task.padding_waste(todo, chunks, jax.local_device_count()):.0%}")
            self._train(todo, chunks[self.launch.index::self.launch.count],
                        {sweep.resumed_chunk(s): s for s in resumable})
        if self.heartbeat and self.launch.index:
            self.heartbeat.stop("done")  # only process 0 waits for the others, then merges
            return
        if self.heartbeat:
            self.heartbeat.wait_all_done()
        if self.shard:
            done = sweep.missing_runs(grid, sweep.read_results(self.path / workdir_lib.RESULTS, keys), keys)
            if not todo.empty:
                left = f"{len(done)} runs of other shards still to do" if len(done) else "every shard is done"
                print(f"attnsim: shard {self.shard.index}/{self.shard.count} done ({left}); "
                      f"`attnsim report --workdir {self.path}` reads every shard's results")
            return
        workdir_lib.merge(self.path, task)
        if self.heartbeat:
            self.heartbeat.stop("done")
        if not todo.empty:
            self._finish()

    def _train(self, todo: pd.DataFrame, chunks: list, resumable: dict) -> None:
        """Train this process's ``chunks`` of ``todo``, appending their rows to its results file."""
        if not chunks:
            print(f"attnsim: process {self.launch.index}: no chunk of this plan is mine", file=sys.stderr)
            return
        from tqdm import tqdm

        from attnsim import sweep

        engine = self.task.Engine(self.cfg)
        resumed = {}
        for chunk in chunks:
            if chunk in resumable:
                got = checkpoint.load(resumable[chunk], engine.state_template)
                if got is not None:
                    resumed[chunk] = got
                    print(f"attnsim: resuming a chunk of {len(chunk.rows)} runs from its checkpoint at step "
                          f"{got.steps_done} of {self.task.steps(self.cfg)}", file=sys.stderr)
        total = sum(len(c.rows) for c in chunks)
        ckpt = checkpoint.Checkpointer(self.writer.checkpoints, self.fingerprint, self.cfg.checkpoint_seconds)
        start = time.time()
        try:
            with tqdm(total=total, unit="run", disable=None if self.progress else True, file=sys.stderr,
                      bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}] {postfix}") as bar:
                for rows in self.task.iterate(self.cfg, todo, chunks=chunks, engine=engine, resumed=resumed,
                                              checkpointer=ckpt, progress=bar.update, status=bar.set_postfix_str,
                                              **self._extra_tables()):
                    sweep.append_results(self.writer.results, rows)
                    checkpoint.fault("chunk")
        finally:
            ckpt.close()  # waits for a save in flight
        print(f"attnsim: {total} runs in {time.time() - start:.1f} s -> {self.writer.results}", file=sys.stderr)

    def _extra_tables(self) -> dict:
        """The callbacks by which the task's iterate hands over its other tables (appended like the results)."""
        from attnsim import sweep

        append = lambda path: lambda table: sweep.append_results(path, table)  # noqa: E731
        if self.task is sweep:
            return dict(on_curves=append(self.writer.curves))
        return dict(on_attention=append(self.writer.table(workdir_lib.ATTENTION)))

    def _finish(self) -> None:
        from attnsim import plots, sweep

        results = sweep.read_results(self.path / workdir_lib.RESULTS, self.task.KEY_COLUMNS)
        n_div = int(results.diverged.sum())
        if n_div:
            print(f"attnsim: warning: {n_div} of {len(results)} runs diverged (diverged=True in results.csv)",
                  file=sys.stderr)
        figs = []
        if n_div < len(results):
            figs = (plots.plot_test_error(results, self.path / "test_error.png") if self.task is sweep else
                    plots.plot_histogram_accuracy(results, self.path / "histogram_accuracy.png"))
        print(f"attnsim: wrote {', '.join(str(f) for f in [self.path / workdir_lib.RESULTS, *figs])}")
