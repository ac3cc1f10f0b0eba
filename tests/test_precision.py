"""Float32 products at full precision on every backend: each engine program's lowered dots carry
precision HIGHEST (JAX's default lets GPUs use TF32 and TPUs bfloat16 passes)."""

import re
from pathlib import Path

import jax

from attnsim import sweep, training
from attnsim.config import load_config

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def _dot_precisions(lowered) -> list[str]:
    text = lowered.as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    return [m.group(1) if (m := re.search(r"precision = \[(\w+), \w+\]", line)) else "DEFAULT" for line in dots]


def test_every_engine_program_computes_products_at_full_precision():
    cfg = load_config(DEMO, ["d=8", "alphas=(1.0,)", "n_test=16", "test_chunk=8", "r=2"])
    engine = sweep.Engine(cfg)
    runs = sweep.expand_grid(cfg)
    chunk = sweep.plan_chunks(runs, 4)[0]
    prog = engine.programs(chunk.n_max)
    args = engine.inputs(runs, chunk)
    sd, state = prog.setup(*args)
    hp = args[-1]
    lowered = {"setup": prog.setup.lower(*args), "train": prog.train.lower(sd, hp, state, 3),
               "observe": prog.observe.lower(sd, hp, state), "finish": prog.finish.lower(sd, hp, state)}
    for name, low in lowered.items():
        precisions = _dot_precisions(low)
        assert precisions, f"{name}: no dot_general (the test would prove nothing)"
        assert set(precisions) == {"HIGHEST"}, (name, precisions)


def test_single_run_is_at_full_precision_too():
    st = training.Static(d=8, n_max=4, n_test=8, test_chunk=8)
    run = training.make_run(st, 3)
    low = jax.jit(run).lower(jax.random.key(0), training.hparams(n=4))
    precisions = _dot_precisions(low)
    assert precisions and set(precisions) == {"HIGHEST"}, precisions


def test_without_the_context_jax_would_not_pin_it():
    """The check above can fail: a plain jit of the same step has default-precision dots."""
    st = training.Static(d=8, n_max=4, n_test=8, test_chunk=8)
    sd = training.make_seed_data(st)(jax.random.key(0))
    hp = training.hparams(n=4)
    low = jax.jit(lambda sd, hp: training.train_steps(st, sd, hp, training.init_state(st, sd, hp), 2)).lower(sd, hp)
    assert "DEFAULT" in _dot_precisions(low)
