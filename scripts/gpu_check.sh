#!/usr/bin/env bash
# The GPU measurements of issue #4, as one prepared script for a session that has a device (the `device`
# tool: ~15 minutes of device time in all, start-up included). Run from the repository root:
#
#   OUT=$OUT bash scripts/gpu_check.sh          # (the device tool sets $OUT; files written there come back)
#
# It measures, in one go:
#   1. scripts/bench_sweep.py at d = 100 and 1000 on the accelerator: per-run step cost for chunk sizes up
#      to 256, the engine's default chunk, and the roofline: the training inputs read per step against the
#      card's memory bandwidth (a jitted sum over a 2 GiB array), for one run and for chunks of runs that
#      each read their own data (--own-data);
#   2. the paper's full phase-diagram sweep: 27 omegas x 25 alphas x (random, semantic) inits, d = 1000,
#      5000 GD steps, 1 seed, through `attnsim run`, wall time including compilation (target: < 2 min).
# Preflight: the image must have attnsim's dependencies (jax with CUDA, flax, optax, orbax, chex are there;
# ml_collections, pandas, tqdm, matplotlib, scipy may not be: the script lists what is missing and stops).
# Not yet run on a GPU (no session so far had one): expect to fix small things on the first try.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} ATTNSIM_COMPILATION_CACHE=0
{
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv || true
  python -c "import jax; print(jax.__version__, jax.devices())"
} > "$OUT/device.txt" 2>&1
missing=$(python - <<'PY'
import importlib
names = ["jax", "flax", "optax", "orbax.checkpoint", "chex", "ml_collections", "pandas", "tqdm", "matplotlib", "scipy"]
print(" ".join(n for n in names if importlib.util.find_spec(n.split(".")[0]) is None))
PY
)
if [ -n "$missing" ]; then echo "missing on this machine: $missing" | tee -a "$OUT/device.txt"; exit 3; fi

# 1. engine speed and roofline (~3 min)
timeout 300 python scripts/bench_sweep.py --dims 100 1000 --batches 1 16 64 256 --own-data 16 64 256 \
  > "$OUT/bench_sweep.txt" 2>&1 || echo "bench_sweep exit $?" >> "$OUT/bench_sweep.txt"

# 2. the full phase-diagram sweep (27 omegas in [0, 0.52], the paper's 25 alphas, both inits, 1 seed)
OMEGAS=$(python -c "import numpy as np; print(tuple(float(w) for w in np.round(np.linspace(0, 0.52, 27), 4)))")
start=$(date +%s.%N)
timeout 420 python -m attnsim.cli run --config configs/phase_diagram.py --config.omegas="$OMEGAS" \
  --config.seeds=1 --workdir "$OUT/phase" --overwrite > "$OUT/phase_run.txt" 2>&1
rc=$?
end=$(date +%s.%N)
echo "phase-diagram sweep: exit $rc, $(python -c "print(f'{$end - $start:.1f}')") s wall incl. compilation" | tee -a "$OUT/phase_run.txt"
cp "$OUT/phase/results.csv" "$OUT/phase_results.csv" 2>/dev/null || true
