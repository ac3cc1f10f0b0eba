"""Speed of the sweep engine, measured in one run on one machine.

Prints, for d in --dims (n = 2d, one seed, runs that differ in omega and init):
  (a) the engine: a chunk of R runs sharing the seed's data, per-run cost per step, for several chunk
      sizes R, and the size the engine picks by default;
  (b) a Python loop of single jitted runs (R = 1);
  (c) the authors' algorithm re-expressed in JAX: full autograd through the L x d attention output, one
      run at a time, steps under lax.scan (no per-step Python, so a lower bound on their cost);
  (d) the roofline at d = 1000, n = 2000: a step must read the training inputs (n L d float32) at least
      twice (forward h = x Q and the gradient x^T g). Bytes per step / time per step is compared with the
      machine's streaming read bandwidth, measured by summing a float32 array far larger than the
      last-level cache.
Also the wall time of one whole run at d = 1000, alpha = 2 (training, test error, baseline).

Per-step costs are the difference between runs of two step counts, so set-up and evaluation cancel.

    python scripts/bench_sweep.py                 # ~5 min on a 2-core CPU
    python scripts/bench_sweep.py --dims 100 1000 --batches 1 8 32
    python scripts/bench_sweep.py --dims 1000 --batches 1 64 256 --own-data 16 64 256   # a GPU: gpu_check.sh
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from attnsim import config as config_lib, data, sweep, training


def _timed(fn, *args) -> float:
    """Best wall time of three calls after a first one that compiles."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


STREAM_BYTES = 1e11  # what the longer of the two timed step counts streams (--stream-gb)


def engine_step_cost(d: int, n: int, batch: int, own_data: bool = False) -> float:
    """Seconds per run per step of the engine on a chunk of ``batch`` runs of one seed (different omegas),
    or with ``own_data`` of ``batch`` seeds (one run each, each reading its own training inputs): the
    difference between two step counts, the larger one chosen so that the extra steps stream ~100 GB of
    training inputs (enough to drown dispatch and set-up noise)."""
    steps = (50, 50 + max(200, int(STREAM_BYTES / (batch * n * 2 * d * 4 * 2))))
    times = []
    for s in steps:
        cfg = config_lib.default_config()
        grid = dict(seeds=batch, omegas=(0.3,)) if own_data else dict(omegas=tuple(np.linspace(0.1, 0.5, batch)))
        cfg.update(dict(d=d, alphas=(n / d,), inits=("random",), steps=s, n_test=1, test_chunk=1,
                        checkpoint_every=s, **grid))
        runs = sweep.expand_grid(cfg)
        engine, (chunk,) = sweep.Engine(cfg), sweep.plan_chunks(runs, batch)
        times.append(_timed(engine.run_chunk, runs, chunk))
    return (times[1] - times[0]) / (steps[1] - steps[0]) / batch


def authors_step_cost(d: int, n: int, steps=(50, 250)) -> float:
    """Seconds per step of the authors' algorithm: materialised x, y (n x L x d) and autograd through
    f(x) = softmax(x Q Q^T x^T / d) x."""
    key = data.seed_key(0, 0)
    eps = data.train_noise(key, n, 2, d)
    p = data.positional_embeddings(d, 2)
    x, y = data.tokens_and_targets(eps, p, data.teacher(key, d, 1), 0.5, 0.3, jnp.array(config_lib.NAMED_A["standard"]))

    def loss(Q):
        h = jnp.einsum("nld,dr->nlr", x, Q) / jnp.sqrt(d)
        f = jnp.einsum("nlk,nkd->nld", training.attention(h), x)
        return jnp.sum((y - f) ** 2) / (2 * d)

    def train(Q, num):
        def step(Q, _):
            return Q - 0.15 * (jax.grad(loss)(Q) + 0.01 * Q), None
        return jax.lax.scan(step, Q, length=num)[0]

    Q0 = 0.1 * jax.random.normal(key, (d, 1))
    times = [_timed(jax.jit(lambda Q, s=s: train(Q, s)), Q0) for s in steps]
    return (times[1] - times[0]) / (steps[1] - steps[0])


def read_bandwidth(gib: float = 2.0) -> float:
    """Bytes per second of a streaming read of a float32 array of ``gib`` GiB (best of 5): numpy's sum on a
    CPU (larger than the last-level cache), a jitted sum in the accelerator's memory otherwise."""
    if jax.default_backend() == "cpu":
        a = np.ones(int(gib * 2**30 // 4), np.float32)
        total = a.sum
    else:
        a = jnp.ones(int(gib * 2**30 // 4), jnp.float32)
        summed = jax.jit(jnp.sum)
        total = lambda: summed(a).block_until_ready()
    total()
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        total()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def whole_run_seconds(d: int = 1000, alpha: float = 2.0) -> float:
    """Wall time of one run through the engine (5000 steps in segments of 500, 10,000 test samples,
    the baseline), compiled beforehand."""
    cfg = config_lib.default_config()
    cfg.update(dict(d=d, alphas=(alpha,), inits=("semantic",)))
    runs = sweep.expand_grid(cfg)
    engine, (chunk,) = sweep.Engine(cfg), sweep.plan_chunks(runs, 1)
    return _timed(engine.run_chunk, runs, chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[30, 100, 300, 1000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--skip-whole-run", action="store_true")
    ap.add_argument("--skip-authors", action="store_true", help="(c): skip timing the authors' algorithm")
    ap.add_argument("--own-data", type=int, nargs="*", default=[],
                    help="(e): chunks of this many seeds at d = 1000, each run reading its own training inputs")
    ap.add_argument("--roofline", type=int, nargs="*", default=[],
                    help="(f): chunks of this many runs of one seed at d = 1000: the chunk's step against the bytes "
                    "it must read (the seed's training inputs, twice) and the measured read bandwidth")
    ap.add_argument("--stream-gb", type=float, default=100.0,
                    help="training inputs the longer timed step count streams (less: faster, noisier)")
    args = ap.parse_args()
    global STREAM_BYTES
    STREAM_BYTES = args.stream_gb * 1e9
    print(f"backend: {jax.default_backend()}, {jax.device_count()} device(s): {jax.devices()[0].device_kind}")

    print("\n(a, b) per-run cost per step [microseconds], one seed, n = 2d; batch 1 = a loop of single runs")
    header = f"{'d':>6} " + " ".join(f"{'R=' + str(b):>9}" for b in args.batches) + f" {'default R':>10} {'best/def':>9}"
    print(header)
    for d in args.dims:
        n = 2 * d
        cost = {b: engine_step_cost(d, n, b) for b in args.batches}
        cfg = config_lib.default_config()
        cfg.update(dict(d=d, alphas=(2.0,)))
        default = sweep.padded_count(sweep.default_max_batch(cfg), 1)
        if default not in cost:
            cost[default] = engine_step_cost(d, n, default)
        best = min(cost.values())
        print(f"{d:>6} " + " ".join(f"{cost[b] * 1e6:>9.1f}" for b in args.batches)
              + f" {default:>10} {best / cost[default]:>9.2f}")

    d, n = 1000, 2000
    ours = engine_step_cost(d, n, 1)
    bw = read_bandwidth()
    step_bytes = 2 * n * 2 * d * 4
    if not args.skip_authors:
        theirs = authors_step_cost(d, n)
        print(f"\n(c) d = {d}, n = {n}, one run: our step {ours * 1e3:.2f} ms, the authors' algorithm "
              f"{theirs * 1e3:.2f} ms -> {theirs / ours:.1f}x")
    print(f"(d) roofline: {step_bytes / 1e6:.0f} MB of training inputs per step (2 passes) -> "
          f"{step_bytes / ours / 1e9:.1f} GB/s; measured streaming read {bw / 1e9:.1f} GB/s (2 GiB array) "
          f"-> {step_bytes / ours / bw:.0%} of it")
    for R in args.own_data:
        t = engine_step_cost(d, n, R, own_data=True)
        print(f"(e) {R} runs with their own data, d = {d}: {t * 1e6:.1f} us per run per step -> "
              f"{step_bytes / t / 1e9:.1f} GB/s of training inputs = {step_bytes / t / bw:.0%} of the "
              "measured read")
    for R in args.roofline:
        t = engine_step_cost(d, n, R) * R  # one step of the whole chunk
        print(f"(f) a chunk of {R} runs of one seed, d = {d}: {t * 1e3:.3f} ms per step for {step_bytes / 1e6:.0f} MB "
              f"of training inputs -> {step_bytes / t / 1e9:.1f} GB/s = {step_bytes / t / bw:.0%} of the measured read",
              flush=True)
    if not args.skip_whole_run:
        print(f"whole run d = 1000, alpha = 2 (5000 GD steps, 10000 test samples, baseline): {whole_run_seconds():.1f} s")


if __name__ == "__main__":
    main()
