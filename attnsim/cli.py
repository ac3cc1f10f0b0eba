"""The ``attnsim`` command line: run, theory, phase, report.

Invalid input (config fields, arguments, paths) exits with status 2 and one line on standard error;
nothing is written before the input has been validated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from attnsim.config import ConfigError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        raise _BadInput(f"{self.prog}: {message}")


class _BadInput(Exception):
    pass


CONFIG_HELP = ("config file defining get_config() (e.g. configs/demo.py; an argument may follow a colon, "
               "configs/omega03.py:small). Override any field with --config.FIELD=VALUE, e.g. "
               "--config.d=200 --config.alphas='(0.5,1.0,2.0)' --config.A=second")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnsim", description="Simulate and solve tied low-rank dot-product attention "
                "(Cui, Behrens, Krzakala, Zdeborova, NeurIPS 2024).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="the empirical sweep: writes WORKDIR/results.csv and test_error.png",
                         description="Train every run of the config's grid (omega x sigma x lam x alpha x seed x "
                         "init) and write one row per run to WORKDIR/results.csv, plus WORKDIR/test_error.png. "
                         "Re-running the same command skips finished runs.")
    for name, helptext in (("theory", "fixed points of every branch: writes WORKDIR/theory.csv"),
                           ("phase", "critical lines alpha_c(omega), alpha_l(omega): writes WORKDIR/phase.csv")):
        sp = sub.add_parser(name, help=helptext, description=helptext)
        sp.add_argument("--config", required=True, help=CONFIG_HELP)
        sp.add_argument("--workdir", required=True, help="output folder (created if missing)")
    run.add_argument("--config", required=True, help=CONFIG_HELP)
    run.add_argument("--workdir", required=True, help="output folder (created if missing)")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh: delete WORKDIR's results.csv and checkpoints (needed to reuse a "
                     "workdir that holds another config's results)")
    multi = run.add_argument_group(
        "multi-host", "run one `attnsim run` per process with the same config and workdir (a shared file system); "
        "the grid is split between processes and process 0 writes results.csv")
    multi.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() with the cluster's auto-detection (TPU pods, SLURM, ...)")
    multi.add_argument("--coordinator", help="coordinator address HOST:PORT (explicit set-up, with the two below)")
    multi.add_argument("--num-processes", type=int, help="number of processes")
    multi.add_argument("--process-id", type=int, help="this process's index, 0 .. num-processes - 1")
    rep = sub.add_parser("report", help="figures and tables from what is in WORKDIR",
                         description="Read WORKDIR/results.csv (or WORKDIR/*/results.csv, e.g. one folder per d) and "
                         "theory.csv, phase.csv; solve the theory where they lack a simulated point (L = 2, r = 1 "
                         "only) and write them; write test_error, overlaps, phase_diagram (several omegas) and "
                         "scaling (several d) as .png and .pdf, summary.csv and summary.md (simulation mean +- std "
                         "per init and for the empirical global minimum next to the theory, alpha_c and alpha_l of "
                         "the theory and of the simulations).")
    rep.add_argument("--workdir", required=True, help="folder of an earlier `attnsim run` (or of several)")
    return p


COMPILATION_CACHE_BYTES = 2 * 2**30  # JAX evicts the least recently used programs beyond this


def _enable_compilation_cache() -> None:
    """Keep compiled programs on disk (JAX's persistent cache, at most COMPILATION_CACHE_BYTES) so that
    re-running or resuming a sweep skips compilation. ATTNSIM_COMPILATION_CACHE=DIR moves it, =0 turns
    it off. (The size bound keeps an access-time file per entry: a folder filled without it, like the
    earlier default ~/.cache/attnsim/jax, makes JAX warn on every write.)"""
    where = os.environ.get("ATTNSIM_COMPILATION_CACHE",
                           os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                        "attnsim", "jax-lru"))
    if where in ("", "0"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = _parser().parse_known_args(argv)
        if args.command in ("run", "theory", "phase"):
            _enable_compilation_cache()
        overrides = []
        for item in extra:
            if not item.startswith("--config."):
                raise _BadInput(f"attnsim {args.command}: unrecognized argument {item}")
            overrides.append(item[len("--config."):])
        if overrides and not hasattr(args, "config"):
            raise _BadInput(f"attnsim {args.command}: takes no --config overrides")
        return _COMMANDS[args.command](args, overrides)
    except (_BadInput, ConfigError) as e:
        print(f"attnsim: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("attnsim: interrupted; finished runs are in results.csv", file=sys.stderr)
        return 130


def _prepare_workdir(path: str) -> Path:
    workdir = Path(path)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".attnsim_write_test.{os.getpid()}"  # per process: several may share a workdir
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--workdir {path}: not writable ({e.strerror or e})") from None
    return workdir


CHECKPOINTS = "checkpoints"  # the folder of a workdir that attnsim.checkpoint writes

# Fields that change what a finished run's numbers mean: a workdir's results are only reused under the same.
FINGERPRINT_FIELDS = ("d", "L", "r", "r_t", "A", "lam_lin", "lin_input", "seed", "optimizer", "lr", "steps", "n_test",
                      "test_chunk")


def _run(args, overrides) -> int:
    from attnsim import config as config_lib

    cfg = config_lib.load_config(args.config, overrides)
    _init_distributed(args)
    import jax

    from attnsim import sweep

    max_batch = sweep.default_max_batch(cfg, jax.local_device_count())  # checks the memory budget
    workdir = _prepare_workdir(args.workdir)
    results_path, ckpt_dir = workdir / "results.csv", workdir / CHECKPOINTS
    fingerprint = json.loads(json.dumps({f: cfg[f] for f in FINGERPRINT_FIELDS}))  # as stored: tuples -> lists
    fp_path = workdir / "config.json"
    if fp_path.exists() and (results_path.exists() or ckpt_dir.exists()) and not args.overwrite:
        old = json.loads(fp_path.read_text()).get("fingerprint", {})
        diff = [f for f in FINGERPRINT_FIELDS if old.get(f) != fingerprint.get(f)]
        if diff:
            f = diff[0]
            raise config_lib.ConfigError(
                f"--workdir {workdir}: holds results of a different config "
                f"({f}={old.get(f)!r}, now {fingerprint.get(f)!r}); "
                "use another workdir or --overwrite")
    if jax.process_index() == 0:
        if args.overwrite:
            results_path.unlink(missing_ok=True)
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        tmp = fp_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "config": cfg.to_dict()}, indent=1, default=str))
        tmp.replace(fp_path)
    if jax.process_count() > 1:  # the others read the workdir only once process 0 has prepared it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("attnsim: workdir prepared")
    previous = signal.signal(signal.SIGTERM, _terminated)  # a pre-empted job exits like Ctrl-C: saves waited for
    try:
        return _sweep(cfg, workdir, fingerprint, max_batch)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise KeyboardInterrupt


def _init_distributed(args) -> None:
    """jax.distributed set-up for a multi-process sweep (before any other JAX call)."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(v is None for v in explicit):
        return
    import jax

    if not args.distributed:
        if any(v is None for v in explicit):
            raise _BadInput("attnsim run: --coordinator, --num-processes and --process-id go together")
        if not 0 <= args.process_id < args.num_processes:
            raise _BadInput(f"attnsim run: --process-id={args.process_id} must lie in [0, --num-processes)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk through gloo
    if args.distributed:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _sweep(cfg, workdir: Path, fingerprint: dict, max_batch: int) -> int:
    import jax

    from attnsim import plots, sweep

    results_path = workdir / "results.csv"
    runs = sweep.expand_grid(cfg)
    todo = sweep.missing_runs(runs, sweep.read_results(results_path))
    lead = jax.process_index() == 0
    if todo.empty:
        if lead:
            shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)  # left by a kill after the last rows
        print(f"attnsim: all {len(runs)} runs already in {results_path}; nothing to do")
        return 0
    _train(cfg, workdir, fingerprint, max_batch, todo, done=len(runs) - len(todo))
    if not lead:
        return 0
    shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)  # every run is in results.csv
    results = sweep.read_results(results_path)
    figs = plots.plot_test_error(results, workdir / "test_error.png")
    n_div = int(results.diverged.sum())
    if n_div:
        print(f"attnsim: warning: {n_div} runs diverged (diverged=True in results.csv)", file=sys.stderr)
    print(f"attnsim: wrote {results_path} and {', '.join(str(f) for f in figs)}")
    return 0


def _train(cfg, workdir: Path, fingerprint: dict, max_batch: int, todo, done: int) -> None:
    """Train the runs ``todo`` (resuming a checkpointed chunk) and append their rows to results.csv."""
    import jax
    from tqdm import tqdm

    from attnsim import checkpoint, sweep

    results_path = workdir / "results.csv"
    lead = jax.process_index() == 0
    # Checkpoints are per process: with several processes only finished chunks are kept (results.csv).
    ckpt = (checkpoint.Checkpointer(workdir / CHECKPOINTS, fingerprint, cfg.checkpoint_seconds)
            if jax.process_count() == 1 else None)
    engine = sweep.Engine(cfg)
    resumed = ckpt.restore(todo, sweep.KEY_COLUMNS, engine.state_template) if ckpt else None
    chunks = sweep.plan(todo, max_batch, resumed)
    if lead:
        print(f"attnsim: {len(todo)} runs to do ({done} already done) in {len(chunks)} chunks "
              f"on {jax.device_count()} {jax.default_backend()} device(s) in {jax.process_count()} process(es), "
              f"padding waste {sweep.padding_waste(todo, chunks):.0%}", file=sys.stderr)
        if resumed:
            print(f"attnsim: resuming a chunk of {len(chunks[0].rows)} runs from its checkpoint at step "
                  f"{resumed.steps_done} of {cfg.steps}", file=sys.stderr)
    start = time.time()
    try:
        with tqdm(total=len(todo), unit="run", disable=None if lead else True, file=sys.stderr,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}, {rate_fmt}]") as bar:
            for rows in sweep.iterate(cfg, todo, chunks=chunks, engine=engine, resumed=resumed,
                                      checkpointer=ckpt, progress=bar.update):
                if lead:
                    sweep.append_results(results_path, rows)
                    checkpoint.fault("chunk")
    finally:
        if ckpt:
            ckpt.close()  # waits for a save in flight
    if lead:
        print(f"attnsim: {len(todo)} runs in {time.time() - start:.1f} s -> {results_path}", file=sys.stderr)


def _theory_setup(args, overrides):
    """Config, workdir and the theory's arguments, after checking that the theory covers the config."""
    from attnsim import config as config_lib, theory

    cfg = config_lib.load_config(args.config, overrides)
    A = config_lib.teacher_A(cfg)
    for sigma in config_lib.sweep_values(cfg, "sigma"):
        try:
            theory.check_supported(cfg.L, cfg.r, cfg.r_t, sigma, A, cfg.alphas)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return cfg, A, _prepare_workdir(args.workdir)


def _per_sigma_lam(cfg, fn):
    """Concatenate fn(sigma, lam) over the config's sigma x lam grid."""
    import itertools

    import pandas as pd

    from attnsim import config as config_lib

    return pd.concat([fn(s, l) for s, l in itertools.product(config_lib.sweep_values(cfg, "sigma"),
                                                             config_lib.sweep_values(cfg, "lam"))], ignore_index=True)


def _theory_command(args, overrides, name: str, compute):
    """Shared body of `theory` and `phase`: compute(theory, cfg, A, omegas, sigma, lam) -> table per
    (sigma, lam), concatenated and written to WORKDIR/NAME."""
    from attnsim import config as config_lib, theory

    cfg, A, workdir = _theory_setup(args, overrides)
    omegas = config_lib.sweep_values(cfg, "omega")
    start = time.time()
    table = _per_sigma_lam(cfg, lambda s, l: compute(theory, cfg, A, omegas, s, l))
    path = workdir / name
    table.to_csv(path, index=False)
    return table, path, time.time() - start


def _theory(args, overrides) -> int:
    table, path, seconds = _theory_command(args, overrides, "theory.csv", lambda th, cfg, A, om, s, l: th.solve(
        om, cfg.alphas, sigma=s, lam=l, A=A, quad_order=cfg.quad_order))
    bad = int((~table.converged.astype(bool)).sum())
    print(f"attnsim: {len(table)} fixed points ({bad} not converged / not existing) in {seconds:.1f} s -> {path}")
    return 0


def _phase(args, overrides) -> int:
    table, path, seconds = _theory_command(args, overrides, "phase.csv", lambda th, cfg, A, om, s, l: th.critical_lines(
        om, sigma=s, lam=l, A=A, quad_order=cfg.quad_order, alpha_max=max(cfg.alphas), workers=th.auto_workers(om)))
    print(f"attnsim: critical lines for {len(table)} (omega, sigma, lam) in {seconds:.1f} s -> {path}")
    return 0


def _report(args, overrides) -> int:
    """Figures and summary of WORKDIR; the theory (theory.csv, phase.csv) is computed where missing and
    covered (L = 2, r = r_t = 1), and written next to the results."""
    import pandas as pd

    from attnsim import plots, report

    _enable_compilation_cache()  # the report may solve the theory
    workdir = Path(args.workdir)
    results, cfg = report.read_workdir(workdir)
    if results is None:
        raise _BadInput(f"--workdir {workdir}: no results.csv (run `attnsim run` first)")
    read = lambda name: pd.read_csv(workdir / name) if (workdir / name).is_file() else None  # noqa: E731
    theory, phase = read("theory.csv"), read("phase.csv")
    completed, note = report.complete_theory(results, theory, cfg)
    notes = [note]
    if completed is not theory:
        theory = completed
        theory.to_csv(workdir / "theory.csv", index=False)
    if phase is None:
        phase, note = report.compute_phase(results, cfg)
        notes.append(note)
        if phase is not None:
            phase.to_csv(workdir / "phase.csv", index=False)
    print("attnsim report: " + "; ".join(notes), file=sys.stderr)
    empirical = report.empirical_lines(results)
    table = report.summary(results, theory)
    files = plots.plot_test_error(results, workdir / "test_error.png", theory=theory, phase=phase)
    files += plots.plot_overlaps(results, workdir / "overlaps.png", theory=theory)
    if results.omega.nunique() > 1:
        files += plots.plot_phase_diagram(results, workdir / "phase_diagram.png", phase, empirical)
    if results.d.nunique() > 1 and "theory_test_error" in table:
        files += plots.plot_scaling(table, workdir / "scaling.png")
    table.to_csv(workdir / "summary.csv", index=False)
    files += [workdir / "summary.csv", report.write_summary(table, workdir / "summary.md", phase, empirical, notes)]
    print(f"attnsim: wrote {', '.join(str(f) for f in files)}")
    return 0


_COMMANDS = {"run": _run, "theory": _theory, "phase": _phase, "report": _report}

if __name__ == "__main__":
    sys.exit(main())
