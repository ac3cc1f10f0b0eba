"""The ``attnsim`` command line: run, theory, phase, report.

Invalid input (config fields, arguments, paths) exits with status 2 and one line on standard error;
nothing is written before the input has been validated.
"""

from __future__ import annotations

import argparse
import os
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
    from attnsim import __version__

    p.add_argument("--version", action="version", version=f"attnsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="the empirical sweep: writes WORKDIR/results.csv and test_error.png",
                         description="Train every run of the config's grid (omega x sigma x lam x alpha x seed x "
                         "init; for the histogram task, configs/histogram.py: variant x n_train x seed) and write "
                         "one row per run to WORKDIR/results.csv, plus a figure. Re-running the same command "
                         "skips finished runs.")
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
    run.add_argument("--dry-run", action="store_true",
                     help="print the runs, chunks, compiled shapes and an estimate of the time; write nothing")
    run.add_argument("--shard", metavar="I/N",
                     help="run only the I-th of N disjoint parts of the grid (0 <= I < N), e.g. one per task of a "
                     "SLURM job array (--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); shards may share "
                     "the workdir, each resumes on its own, and `attnsim report` reads them all")
    multi = run.add_argument_group(
        "multi-process", "run one `attnsim run` per process with the same config and workdir (a shared file "
        "system); the chunks are split between processes, each writes and checkpoints its own files, and "
        "process 0 merges them into results.csv at the end. If a process is lost, the others exit with "
        "status 75: re-run the same command, with any process count, to resume")
    multi.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() with the cluster's auto-detection (TPU pods, SLURM, ...)")
    multi.add_argument("--coordinator", help="coordinator address HOST:PORT (explicit set-up, with the two below)")
    multi.add_argument("--num-processes", type=int, help="number of processes")
    multi.add_argument("--process-id", type=int, help="this process's index, 0 .. num-processes - 1")
    rep = sub.add_parser("report", help="figures and tables from what is in WORKDIR",
                         description="Read WORKDIR/results.csv (or WORKDIR/*/results.csv, e.g. one folder per d) and "
                         "theory.csv, phase.csv; solve the theory where they lack a simulated point (the generic "
                         "solver for L != 2 or rank > 1) and write them; write test_error, overlaps, phase_diagram (several omegas) and "
                         "scaling (several d) as .png and .pdf, summary.csv and summary.md (simulation mean +- std "
                         "per init and for the empirical global minimum next to the theory, alpha_c and alpha_l of "
                         "the theory and of the simulations).")
    rep.add_argument("--workdir", required=True, help="folder of an earlier `attnsim run` (or of several)")
    return p


def _enable_compilation_cache() -> None:
    from attnsim import runner

    runner.enable_compilation_cache()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
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
        interrupted = {"run": "finished runs and the latest checkpoints are kept in the workdir; re-run the "
                       "same command to resume"}.get(getattr(args, "command", None), "nothing was written")
        print(f"attnsim: interrupted; {interrupted}", file=sys.stderr)
        return 130


def _run(args, overrides) -> int:
    from attnsim import config as config_lib, runner, workdir

    cfg = config_lib.load_config(args.config, overrides)
    shard = workdir.Shard.parse(args.shard) if args.shard is not None else None
    explicit = (args.coordinator, args.num_processes, args.process_id)
    multi = args.distributed or any(v is not None for v in explicit)
    if multi and not args.distributed:
        if any(v is None for v in explicit):
            raise _BadInput("attnsim run: --coordinator, --num-processes and --process-id go together")
        if not 0 <= args.process_id < args.num_processes:
            raise _BadInput(f"attnsim run: --process-id={args.process_id} must lie in [0, --num-processes)")
    if shard is not None and (multi or args.overwrite):
        raise _BadInput("attnsim run: --shard cannot be combined with " + (
            "several processes (run one process per shard)" if multi else
            "--overwrite (shards share the workdir: delete it instead)"))
    if args.dry_run:
        print(runner.describe(cfg, args.workdir, shard))
        return 0
    rendezvous = None
    previous = signal.signal(signal.SIGTERM, _terminated)  # a pre-empted job exits like Ctrl-C: saves waited for
    try:
        if multi:
            from attnsim import cluster

            try:
                rendezvous = cluster.Rendezvous(*((None,) * 3 if args.distributed else explicit))
            except cluster.ClusterError as e:
                print(f"attnsim: error: {e}", file=sys.stderr)
                return 1
        runner.run(cfg, args.workdir, overwrite=args.overwrite, shard=shard, rendezvous=rendezvous)
        return 0
    except Exception as e:
        from attnsim import cluster

        if isinstance(e, cluster.ClusterError):
            print(f"attnsim: error: {e}; re-run the same command (every process) to resume", file=sys.stderr)
            return cluster.EXIT_PEER_LOST
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if rendezvous is not None:
            rendezvous.abort()


def _terminated(signum, frame):
    raise KeyboardInterrupt


def _theory_config(args, overrides):
    """The config of `theory` / `phase`, checked to be covered by the theory, and the prepared workdir."""
    from attnsim import config as config_lib, report, workdir as workdir_lib

    cfg = config_lib.load_config(args.config, overrides)
    if cfg.task != "attention":
        raise ConfigError(f"--config {args.config}: the {cfg.task} task has no theory (`attnsim {args.command}` "
                          "solves the tied-attention model)")
    report.check_theory_covers(cfg)
    return cfg, workdir_lib.prepare(args.workdir)


def _theory(args, overrides) -> int:
    from attnsim import report

    cfg, workdir = _theory_config(args, overrides)
    start, path = time.time(), workdir / "theory.csv"
    table = report.theory_table(cfg)
    table.to_csv(path, index=False)
    bad = int((~table.converged.astype(bool)).sum())
    print(f"attnsim: {len(table)} fixed points ({bad} not converged / not existing) in {time.time() - start:.1f} s "
          f"-> {path}")
    return 0


def _phase(args, overrides) -> int:
    from attnsim import report

    cfg, workdir = _theory_config(args, overrides)
    start, path = time.time(), workdir / "phase.csv"
    table = report.phase_table(cfg)
    table.to_csv(path, index=False)
    print(f"attnsim: critical lines for {len(table)} (omega, sigma, lam) in {time.time() - start:.1f} s -> {path}")
    return 0


def _report(args, overrides) -> int:
    from attnsim import report

    _enable_compilation_cache()  # the report may solve the theory
    files = report.write_all(Path(args.workdir))
    print(f"attnsim: wrote {', '.join(str(f) for f in files)}")
    return 0


_COMMANDS = {"run": _run, "theory": _theory, "phase": _phase, "report": _report}

def entry() -> None:
    """The console command: ``main``, and after an interruption (Ctrl-C, SIGTERM) an immediate exit. By then
    saves in flight have been waited for and every row is flushed to disk; skipping the interpreter's
    teardown avoids a crash there (seen as SIGSEGV in about one of five SIGTERMs of a multi-process run,
    with JAX's runtime threads still up)."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
