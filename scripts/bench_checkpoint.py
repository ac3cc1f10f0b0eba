"""Cost of checkpointing a sweep, measured in one run on one machine.

A d = 1000 sweep (by default 32 runs: 8 omegas x 2 alphas x 2 inits, n up to 2000, one chunk) is trained
three ways, alternating, after a warm-up that compiles everything:
  plain      one training segment, no checkpoint (what a sweep costs without checkpointing);
  segmented  segments of --every steps, no save (the segmentation alone: the engine waits for every
             segment's result before it looks at the clock, so the segments no longer overlap);
  saved      segments of --every steps and an Orbax save after each (checkpoint_seconds = 0, the worst
             case; the default of 60 s saves far less often).
It prints the best wall time of each and the overheads, and, less noisy, the time the sweep spent blocked in
saves (Checkpointer.maybe_save and the final wait) relative to the plain sweep; the three give bit-identical
results (checked).

    python scripts/bench_checkpoint.py                    # ~4 min on one core
    python scripts/bench_checkpoint.py --steps 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from attnsim import checkpoint, config as config_lib, sweep


class TimedCheckpointer(checkpoint.Checkpointer):
    """A Checkpointer that adds up the seconds the caller is blocked in it."""

    blocked = 0.0

    def maybe_save(self, record, state, steps_done):
        start = time.perf_counter()  # the engine has waited for the segment: what follows is the save's
        saved = super().maybe_save(record, state, steps_done)
        self.blocked += time.perf_counter() - start
        return saved

    def close(self):
        start = time.perf_counter()
        super().close()
        self.blocked += time.perf_counter() - start


def sweep_seconds(cfg, saved: bool) -> tuple[float, float, pd.DataFrame]:
    """Wall time of the whole sweep of ``cfg`` (a checkpointer that saves after every segment if
    ``saved``), the seconds blocked in saves, and the results."""
    runs = sweep.expand_grid(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = TimedCheckpointer(Path(tmp) / "checkpoints", {}, 0.0) if saved else None
        start = time.perf_counter()
        rows = list(sweep.iterate(cfg, runs, checkpointer=ckpt))
        if ckpt:
            ckpt.close()
        seconds = time.perf_counter() - start
    return seconds, ckpt.blocked if ckpt else 0.0, pd.concat(rows).sort_values(sweep.KEY_COLUMNS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=500, help="steps per segment (and per save)")
    ap.add_argument("--n-omega", type=int, default=8, help="omegas in (0.1, 0.5): 4 runs each")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    base = config_lib.default_config()
    base.update(dict(d=args.d, steps=args.steps, alphas=(1.5, 2.0), n_test=2000,
                     omegas=tuple(float(w) for w in np.linspace(0.1, 0.5, args.n_omega))))
    variants = {
        "plain": (dict(checkpoint_every=args.steps), False),
        "segmented": (dict(checkpoint_every=args.every), False),
        "saved": (dict(checkpoint_every=args.every), True),
    }
    cfgs = {}
    for name, (fields, _) in variants.items():
        cfgs[name] = config_lib.default_config()
        cfgs[name].update(base.to_dict())
        cfgs[name].update(fields)
        config_lib.validate(cfgs[name])
    print(f"d = {args.d}, {len(sweep.expand_grid(base))} runs, {args.steps} steps, segments of {args.every}")
    sweep_seconds(cfgs["saved"], True)  # compile (the programs are shared by the three variants)
    best, results, blocked = {}, {}, []
    for _ in range(args.repeats):
        for name, (_, saved) in variants.items():
            seconds, in_saves, results[name] = sweep_seconds(cfgs[name], saved)
            best[name] = min(best.get(name, math.inf), seconds)
            if saved:
                blocked.append(in_saves)
    for name in variants:
        print(f"{name:>10}: {best[name]:7.2f} s  ({best[name] / best['plain'] - 1:+.1%} vs plain)")
    metrics = ["train_loss", "test_error", "m", "theta", "q"]
    same = all(np.array_equal(results[n][metrics].to_numpy(), results["plain"][metrics].to_numpy()) for n in variants)
    print(f"bit-identical results across the three: {same}")
    saves = -(-args.steps // args.every) - 1  # none after the last segment
    print(f"blocked in saves: {min(blocked):.3f} s per sweep ({saves} saves, {min(blocked) / saves * 1e3:.0f} ms each)"
          f" = {min(blocked) / best['plain']:.1%} of the plain sweep")


if __name__ == "__main__":
    main()
