"""The chunk memory model (sweep.chunk_bytes) against the memory a chunk really uses when it runs, on CPU (#15).

For each chunk shape below, in a fresh subprocess (so that the measurements do not mix):

1. build the config's grid and its one chunk (sweep.plan_chunks(runs, 64)), and run it once through
   Engine.run_chunk: a warm-up that compiles setup, train and finish, so that compilation memory is not counted;
2. ``gc.collect()``, then read the process RSS (/proc/self/statm, resident pages x page size) just before the
   chunk's inputs are created: the baseline;
3. run the chunk again, program by program as Engine.run_chunk does (inputs, hp to the device, setup,
   ``steps`` training steps, finish, metrics to the host), waiting for each (block_until_ready / device_get),
   while a background thread reads RSS every ~1 ms (at each phase boundary, once RSS has not changed for 30 ms:
   a program's temporaries are freed a few ms after its outputs are ready); the kernel's own peak (VmHWM of /proc/self/status,
   reset by writing 5 to /proc/self/clear_refs at each phase boundary) is read too, so a transient peak
   between two samples is not missed. A jax.monitoring listener checks that nothing is compiled in this run;
4. afterwards, XLA's buffer assignment of the three compiled programs exactly as tests/test_memory.py
   computes it (arguments + outputs + temporaries - aliased, the largest of setup, train and finish).

Printed per shape: chunk_bytes (the model), the XLA peak, the measured peak RSS increase over the baseline
(VmHWM; the 1 ms sampler's figure beside it), the ratios model/measured and XLA/measured, and per program
(setup / train / finish) the model's term, XLA's figure and the measured peak.

glibc: by default, after the first large free, blocks up to 32 MiB are no longer mmapped but carved from
malloc's heap, and freed heap memory is not always given back: a program can then reuse pages an earlier one
(or the warm-up) left resident, and its RSS understates its use, or a fragmented heap overstates it. Every
shape is therefore run twice: ``malloc=mmap`` sets MALLOC_MMAP_THRESHOLD_=65536 and MALLOC_TRIM_THRESHOLD_=131072 in the
subprocess (fixed thresholds: every block of 64 KiB or more is mmapped and unmapped when freed, so each
run's buffers are fresh pages that leave RSS when freed: the figure to compare with), ``malloc=default``
leaves glibc's defaults (shown for the pollution). "kept" is RSS after the run's arrays are deleted minus
the baseline.

    taskset -c 1 .venv/bin/python scripts/bench_memory.py            # all shapes, both malloc settings
    taskset -c 1 .venv/bin/python scripts/bench_memory.py --shapes d1000_64runs --malloc mmap
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")
RANK2 = str(ROOT / "configs" / "rank2.py")
OMEGAS_32 = "(" + ",".join(f"{0.01 * k:.2f}" for k in range(32)) + ")"  # x 2 inits = 64 runs

# name -> (config, overrides). steps: the measured run trains this many steps (one segment).
SHAPES = {
    # the two configs of tests/test_memory.py
    "test_16runs": (DEMO, ["d=300", "alphas=(2.0,)", "seeds=1", "omegas=(0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8)",
                           "test_chunk=1000"]),
    "test_rank2_4x2": (DEMO, ["d=200", "alphas=(1.0,)", "seeds=4", "r=2", "n_test=600", "test_chunk=300"]),
    # configs/demo.py at d = 1000: 64 runs of one seed at alpha = 2 (n_max = 2048), small test set
    "d1000_64runs": (DEMO, ["d=1000", "alphas=(2.0,)", "seeds=1", f"omegas={OMEGAS_32}", "n_test=1000"]),
    # configs/rank2.py (r = 2, d = 1000) at alpha = 1: 4 seeds x 2 runs (n_max = 1024)
    "rank2_d1000_4x2": (RANK2, ["alphas=(1.0,)", "seeds=4", "n_test=1000"]),
}
STEPS = 5
MALLOC = {"mmap": {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}, "default": {}}
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1e6


def _rss(fd) -> int:
    return int(os.pread(fd, 128, 0).split()[1]) * PAGE


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _settle(fd, quiet: float = 0.03, timeout: float = 1.0) -> None:
    """Wait until RSS has not changed for ``quiet`` seconds (reads every 2 ms), at most ``timeout`` seconds."""
    last, end = _rss(fd), time.perf_counter() + timeout
    since = time.perf_counter()
    while time.perf_counter() < end and time.perf_counter() - since < quiet:
        time.sleep(0.002)
        now = _rss(fd)
        if now != last:
            last, since = now, time.perf_counter()


class Sampler(threading.Thread):
    """Reads RSS every ~1 ms; keeps the largest per phase (the phase is set by the main thread)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.phase, self.peak, self.samples = None, {}, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            phase = self.phase
            rss = _rss(self.fd)  # releases the GIL: the main thread may switch phases meanwhile
            if phase is not None and phase == self.phase:  # a sample that straddles a switch is dropped
                self.peak[phase] = max(self.peak.get(phase, 0), rss)
                self.samples += 1
            time.sleep(0.001)


def child(name: str) -> dict:
    import jax
    from jax import monitoring
    from jax._src import dispatch

    from attnsim import sweep
    from attnsim.config import load_config

    path, overrides = SHAPES[name]
    cfg = load_config(path, overrides + [f"steps={STEPS}"])
    runs = sweep.expand_grid(cfg)
    engine = sweep.Engine(cfg)
    (chunk,) = sweep.plan_chunks(runs, 64)
    seeds, per_seed = engine.padded_shape(chunk)
    model = sweep.chunk_bytes(cfg, chunk.n_max, seeds * per_seed, seeds)
    model_parts = [seeds * s + seeds * per_seed * r for s, r in sweep._program_bytes(cfg, chunk.n_max)]

    engine.run_chunk(runs, chunk)  # warm-up: compiles the programs
    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(duration) if event == dispatch.BACKEND_COMPILE_EVENT else None)

    sampler = Sampler()
    sampler.start()
    gc.collect()
    time.sleep(0.05)
    base = _rss(sampler.fd)  # just before the chunk's inputs are created
    hwm = {}

    def phase(label):
        if sampler.phase is not None:
            hwm[sampler.phase] = _hwm()
        _settle(sampler.fd)  # the previous program's temporaries are freed after its outputs are ready
        _reset_hwm()
        sampler.phase = label

    start = time.perf_counter()
    phase("setup")
    prog = engine.programs(chunk.n_max)
    base_seed, seed_ids, hp = engine.inputs(runs, chunk)
    hp = jax.device_put(hp, prog.runs)
    sd, state = jax.block_until_ready(prog.setup(base_seed, seed_ids, hp))
    phase("train")
    state = jax.block_until_ready(prog.train(sd, hp, state, cfg.steps))
    phase("finish")
    metrics = jax.device_get(prog.finish(sd, hp, state))
    phase(None)
    wall = time.perf_counter() - start
    del sd, state, hp, metrics
    gc.collect()
    time.sleep(0.05)
    kept = _rss(sampler.fd) - base
    sampler.stop.set()
    sampler.join()
    during_compiles = len(compiles)

    # XLA's buffer assignment, as tests/test_memory.py computes it
    args = engine.inputs(runs, chunk)
    sd, state = prog.setup(*args)
    xla = {}
    for label, low in (("setup", prog.setup.lower(*args)), ("train", prog.train.lower(sd, args[-1], state, 3)),
                       ("finish", prog.finish.lower(sd, args[-1], state))):
        m = low.compile().memory_analysis()
        xla[label] = dict(args=m.argument_size_in_bytes, out=m.output_size_in_bytes, temp=m.temp_size_in_bytes,
                          alias=m.alias_size_in_bytes)
    labels = ("setup", "train", "finish")
    return dict(
        name=name, d=cfg.d, r=cfg.r, n_max=chunk.n_max, seeds=seeds, runs=seeds * per_seed,
        n_test=cfg.n_test, test_chunk=min(cfg.test_chunk, cfg.n_test), steps=cfg.steps,
        model=model, model_parts=dict(zip(labels, model_parts)),
        xla={k: v["args"] + v["out"] + v["temp"] - v["alias"] for k, v in xla.items()}, xla_parts=xla,
        hwm={k: hwm[k] - base for k in labels}, sampled={k: sampler.peak[k] - base for k in labels},
        samples=sampler.samples, base=base, kept=kept, wall=wall, compiles_in_measured_run=during_compiles,
        malloc={k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--malloc", nargs="+", default=["mmap", "default"], choices=list(MALLOC))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="also print each shape's raw figures as JSON")
    a = parser.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child)))
        return
    results = []
    for malloc in a.malloc:
        for name in a.shapes:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            env.update(MALLOC[malloc], JAX_PLATFORMS="cpu")
            proc = subprocess.run([sys.executable, __file__, "--child", name], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{name} ({malloc}) failed:\n{proc.stdout}\n{proc.stderr}")
            r = json.loads(line[0][7:])
            r["malloc_mode"] = malloc
            results.append(r)
            report(r)
            if a.json:
                print("  " + json.dumps(r))
            sys.stdout.flush()
    print()
    print("summary (MB = 1e6 bytes; measured = peak RSS increase over the baseline, VmHWM; within 25%: "
          "|model/measured - 1| <= 0.25)")
    print(f"{'shape':>17} {'malloc':>7} {'model':>8} {'XLA':>8} {'measured':>8} {'model/meas':>10} "
          f"{'XLA/meas':>8}  within 25%")
    for r in results:
        meas = max(r["hwm"].values())
        ok = abs(r["model"] / meas - 1) <= 0.25
        print(f"{r['name']:>17} {r['malloc_mode']:>7} {r['model'] / MB:8.2f} {max(r['xla'].values()) / MB:8.2f} "
              f"{meas / MB:8.2f} {r['model'] / meas:10.2f} {max(r['xla'].values()) / meas:8.2f}  "
              f"{'yes' if ok else 'no'}")


def report(r: dict) -> None:
    meas, sampled = max(r["hwm"].values()), max(r["sampled"].values())
    xla = max(r["xla"].values())
    print(f"\n{r['name']} (malloc={r['malloc_mode']} {r['malloc'] or ''}): d={r['d']} r={r['r']} n_max={r['n_max']} "
          f"seeds={r['seeds']} runs={r['runs']} test_chunk={r['test_chunk']} steps={r['steps']}; baseline RSS "
          f"{r['base'] / MB:.1f} MB, measured run {r['wall']:.2f} s, {r['samples']} samples, "
          f"{r['compiles_in_measured_run']} compilations in it, kept after it {r['kept'] / MB:+.2f} MB")
    print(f"  chunk_bytes {r['model'] / MB:.2f} MB, XLA peak {xla / MB:.2f} MB, measured peak increase "
          f"{meas / MB:.2f} MB (1 ms sampler {sampled / MB:.2f} MB); model/measured {r['model'] / meas:.2f}, "
          f"XLA/measured {xla / meas:.2f}")
    print(f"  {'program':>8} {'model':>8} {'XLA':>8} {'(args':>8} {'out':>8} {'temp)':>8} {'measured':>8} "
          f"{'sampled':>8} {'model/meas':>10}")
    for k in ("setup", "train", "finish"):
        x = r["xla_parts"][k]
        print(f"  {k:>8} {r['model_parts'][k] / MB:8.2f} {r['xla'][k] / MB:8.2f} {x['args'] / MB:8.2f} "
              f"{x['out'] / MB:8.2f} {x['temp'] / MB:8.2f} {r['hwm'][k] / MB:8.2f} {r['sampled'][k] / MB:8.2f} "
              f"{r['model_parts'][k] / r['hwm'][k]:10.2f}")


if __name__ == "__main__":
    main()
