"""The memory model that sizes chunks (sweep.chunk_bytes) agrees within 25% with XLA's buffer assignment of
the compiled programs (arguments + outputs + temporaries, the largest of setup, train and finish)."""

from pathlib import Path

import numpy as np
import pytest

from attnsim import sweep
from attnsim.config import load_config

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def _peak(engine, runs, chunk) -> int:
    prog = engine.programs(chunk.n_max)
    args = engine.inputs(runs, chunk)
    sd, state = prog.setup(*args)
    hp = args[-1]
    peak = 0
    for low in (prog.setup.lower(*args), prog.train.lower(sd, hp, state, 3), prog.finish.lower(sd, hp, state)):
        m = low.compile().memory_analysis()
        peak = max(peak, m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    return peak


@pytest.mark.parametrize("overrides", [
    ["d=300", "alphas=(2.0,)", "seeds=1", "omegas=(0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8)", "test_chunk=1000"],  # 16 runs
    ["d=200", "alphas=(1.0,)", "seeds=4", "r=2", "n_test=600", "test_chunk=300"],  # 4 seeds x 2 runs, rank 2
])
def test_chunk_bytes_matches_the_compiled_programs(overrides):
    cfg = load_config(DEMO, overrides)
    runs = sweep.expand_grid(cfg)
    engine = sweep.Engine(cfg)
    (chunk,) = sweep.plan_chunks(runs, 64)
    seeds, per_seed = engine.padded_shape(chunk)
    model = sweep.chunk_bytes(cfg, chunk.n_max, seeds * per_seed, seeds)
    assert model == pytest.approx(_peak(engine, runs, chunk), rel=0.25)
