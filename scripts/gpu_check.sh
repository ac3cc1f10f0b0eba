#!/usr/bin/env bash
# The GPU check of issue #15: one prepared script for the device tool (one command runs at most 600 s there;
# the session has ~15 minutes of device time in all, start-up included). From the repository root:
#
#   bash scripts/gpu_check.sh                                    # on the GPU machine ($OUT set by the tool)
#   GPU_CHECK_TINY=1 JAX_PLATFORMS=cpu OUT=/tmp/gc bash scripts/gpu_check.sh   # the dry run here, tiny sizes
#
# The device image has jax with CUDA, flax, optax, orbax, pandas, matplotlib, tqdm, filelock and python3 but
# not ml_collections, and no package registry: the wheels in the git-ignored folder .whl/ travel with the
# call (carry: [".whl"]) and are installed with pip --no-index --no-deps --target. Fetch them here once:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl ml_collections==1.1.0
#
# It measures, within ~480 s, into at most 3 files under $OUT (workdirs and caches stay in /tmp):
#   1. the card's read bandwidth, and the engine at d = 1000, n = 2000: per-run step cost for chunks of 1, 64
#      and 512 runs of one seed, and each chunk's bytes per step against that bandwidth (scripts/bench_sweep.py);
#   2. the paper's full phase-diagram sweep (27 omegas x 25 alphas x random and semantic inits, d = 1000, 5000
#      GD steps, 1 seed) cold (empty compilation cache) and warm (the cache the cold run filled, a fresh
#      workdir), each with its wall time, XLA compile count and compile seconds.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
export PYTHONUNBUFFERED=1
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  D=100; STEPS=5; BATCHES="1 4"; LIMIT_BENCH=120; LIMIT_SWEEP=120; STREAM="--stream-gb 0.05"
else
  D=1000; STEPS=5000; BATCHES="1 64 512"; LIMIT_BENCH=150; LIMIT_SWEEP=150; STREAM="--stream-gb 50"
fi
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/attnsim-site \
    .whl/*.whl || { echo "could not install .whl/*.whl" | tee -a "$LOG"; exit 3; }
fi
export PYTHONPATH=$PWD:/tmp/attnsim-site${PYTHONPATH:+:$PYTHONPATH}
{
  echo "# scripts/gpu_check.sh, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv 2>/dev/null || echo "no nvidia-smi"
  timeout 60 python3 -c "import jax, ml_collections, pandas, orbax.checkpoint; print('jax', jax.__version__, jax.devices())" \
    || { echo "preflight failed: a dependency is missing"; exit 3; }
} 2>&1 | tee -a "$LOG" || exit 3

echo "== 1. bandwidth and engine roofline (bench_sweep.py)" | tee -a "$LOG"
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then BENCH_D="--dims $D --skip-authors"; else BENCH_D="--dims 1000"; fi
timeout $LIMIT_BENCH python3 scripts/bench_sweep.py $BENCH_D --batches $BATCHES --roofline $BATCHES --skip-whole-run $STREAM \
  2>&1 | tee -a "$LOG" || echo "bench_sweep: exit or timeout (limit $LIMIT_BENCH s)" | tee -a "$LOG"

echo "== 2. the full phase-diagram sweep: cold, then warm" | tee -a "$LOG"
OMEGAS=$(python3 -c "import numpy as np; print(tuple(float(w) for w in np.round(np.linspace(0, 0.52, 27), 4)))")
rm -rf /tmp/gpu_check_cache /tmp/gpu_check_cold /tmp/gpu_check_warm
for pass in cold warm; do
  ATTNSIM_COMPILATION_CACHE=/tmp/gpu_check_cache timeout $LIMIT_SWEEP python3 -c "
import sys
sys.path.insert(0, 'scripts')
from bench_compile import PROBE
exec(PROBE)" run --config configs/phase_diagram.py --config.omegas="$OMEGAS" --config.seeds=1 --config.d=$D \
    --config.steps=$STEPS --workdir /tmp/gpu_check_$pass 2>&1 | grep -v "it/s\|run/s" | tail -n 5 | sed "s/^/[$pass] /" \
    | tee -a "$LOG"
done
cp /tmp/gpu_check_cold/results.csv "$OUT/phase_results.csv" 2>/dev/null || true
echo "== done" | tee -a "$LOG"
