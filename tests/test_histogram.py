"""The histogram task (attnsim.histogram, attnsim.histogram_sweep): the transformer against a plain numpy
forward pass, the variants' masking, the data, and a run's independence of what it is batched with."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from attnsim import histogram, histogram_sweep
from attnsim.config import ConfigError, load_config

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "histogram.py")
SHAPE = histogram.Shape(length=6, alphabet=5, width=8, hidden=12, batch=4, n_max=40)
TINY = ["draws=400", "width=8", "hidden=12", "length=6", "alphabet=5", "batch=8", "epochs=3", "retrain_epochs=2",
        "checkpoint_every=2", "seeds=2", "variants=('positional','semantic','free')"]


def _numpy_forward(p, tokens, variant):
    """The transformer of attnsim.histogram written out in numpy (float64)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    w = p["query"].shape[0]
    first = (np.arange(w) < w // 2).astype(float)
    token_mask, position_mask = (first, 1 - first) if variant != "free" else (np.ones(w), np.ones(w))
    qk = {"semantic": first, "positional": 1 - first, "free": np.ones(w)}[variant]
    x = p["token_embedding"][tokens] * token_mask + p["position_embedding"] * position_mask
    q, k, v = (x * qk) @ p["query"], (x * qk) @ p["key"], x @ p["value"]
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(w)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    h = a @ v
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-5) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
    h = np.maximum(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], a


@pytest.mark.parametrize("variant", histogram.VARIANTS)
def test_forward_pass_matches_numpy(variant):
    params = histogram.init_params(SHAPE, np.random.default_rng(3))
    tokens = np.random.default_rng(0).integers(0, SHAPE.alphabet, (7, SHAPE.length))
    logits, attention = histogram.model(SHAPE).apply({"params": params}, jnp.asarray(tokens),
                                                      jnp.int32(histogram.VARIANT_IDS[variant]))
    ref_logits, ref_attention = _numpy_forward(params, tokens, variant)
    # float32 against float64 through a softmax and a LayerNorm of O(1) values: ~1e-6 relative.
    np.testing.assert_allclose(logits, ref_logits, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(attention, ref_attention, rtol=2e-5, atol=1e-6)


def _attention(params, tokens, variant):
    return np.asarray(histogram.model(SHAPE).apply({"params": params}, jnp.asarray(tokens),
                                                   jnp.int32(histogram.VARIANT_IDS[variant]))[1])


def test_variants_see_what_they_should():
    """Positional: the attention does not depend on the tokens. Semantic: it does not depend on the positions
    (permuting the sequence permutes the map). Free: it depends on both."""
    params = histogram.init_params(SHAPE, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, SHAPE.alphabet, (2, SHAPE.length))
    perm = rng.permutation(SHAPE.length)
    pos = _attention(params, np.stack([a, b]), "positional")
    np.testing.assert_allclose(pos[0], pos[1], atol=1e-7)
    sem = _attention(params, np.stack([a, a[perm]]), "semantic")
    np.testing.assert_allclose(sem[1], sem[0][np.ix_(perm, perm)], atol=1e-6)
    free = _attention(params, np.stack([a, b, a[perm]]), "free")
    assert np.abs(free[0] - free[1]).max() > 1e-3
    assert np.abs(free[2] - free[0][np.ix_(perm, perm)]).max() > 1e-3


def test_restricted_variants_leave_the_other_halves_untrained():
    """The masked halves of the embeddings get no gradient; the value's weights do."""
    params = histogram.init_params(SHAPE, np.random.default_rng(2))
    x = np.random.default_rng(2).integers(0, SHAPE.alphabet, (5, SHAPE.length))
    g = jax.grad(histogram.cross_entropy)(params, SHAPE, jnp.int32(histogram.VARIANT_IDS["semantic"]), jnp.asarray(x),
                                          jnp.asarray(histogram.counts(x)), jnp.ones(5))
    half = SHAPE.width // 2
    assert np.all(np.asarray(g["token_embedding"])[:, half:] == 0)
    assert np.all(np.asarray(g["position_embedding"])[:, :half] == 0)
    assert np.abs(np.asarray(g["token_embedding"])[:, :half]).max() > 0


def test_counts_and_dataset():
    np.testing.assert_array_equal(histogram.counts(np.array([[3, 1, 3, 3, 0]])), [[3, 1, 3, 3, 1]])
    ds = histogram.make_dataset(0, 500, 6, 3, 0.7)
    both = np.concatenate([ds.train_x, ds.val_x])
    assert len(np.unique(both, axis=0)) == len(both)  # duplicates removed, no sequence in both splits
    assert len(ds.train_x) == int(0.7 * len(both))
    np.testing.assert_array_equal(histogram.make_dataset(0, 500, 6, 3, 0.7).train_x, ds.train_x)


def test_epoch_order_visits_a_runs_own_sequences_first_whatever_the_padding():
    key = jax.random.PRNGKey(5)
    small = np.asarray(histogram.epoch_order(key, jnp.int32(2), jnp.int32(13), 16))
    large = np.asarray(histogram.epoch_order(key, jnp.int32(2), jnp.int32(13), 40))
    np.testing.assert_array_equal(np.sort(small[:13]), np.arange(13))
    np.testing.assert_array_equal(small[:13], large[:13])


def test_a_run_does_not_depend_on_its_chunk():
    """A run trained alone and the same run in a chunk with runs of other variants and sizes (padded to a
    larger n_max) end with the same metrics (float32 reduction order aside)."""
    cfg = load_config(CONFIG, TINY + ["n_trains=(90, 100)"])
    runs = histogram_sweep.expand_grid(cfg)
    engine = histogram_sweep.Engine(cfg)
    together = histogram_sweep.Chunk((0,), 100, (tuple(runs.index),))
    target = int(runs.index[(runs.variant == "semantic") & (runs.n_train == 90) & (runs.seed == 1)][0])
    alone = histogram_sweep.Chunk((0,), 90, ((target,),))
    table_all, maps_all = engine.run_chunk(runs, together)
    table_one, maps_one = engine.run_chunk(runs, alone)
    row = list(together.rows).index(target)
    np.testing.assert_allclose(table_all[row, 1:], table_one[0, 1:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps_all[row], maps_one[0], atol=1e-6)
    assert not table_all[:, -1].any()  # none diverged


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match=r"config.n_trains=\(100000,\): the training split holds 35000"):
        load_config(CONFIG, ["n_trains=(100000,)"])
    with pytest.raises(ConfigError, match="config.variants"):
        load_config(CONFIG, ["variants=('sideways',)"])
    with pytest.raises(ConfigError, match="config.width=7: must be even"):
        load_config(CONFIG, ["width=7"])
    with pytest.raises(ConfigError, match="config.d: unknown field"):
        load_config(CONFIG, ["d=100"])


def test_the_free_view_keeps_the_function():
    """The reparametrised restricted model (noise 0) computes the same logits as the free model."""
    params = histogram.init_params(SHAPE, np.random.default_rng(4))
    x = jnp.asarray(np.random.default_rng(4).integers(0, SHAPE.alphabet, (5, SHAPE.length)))
    for variant in ("positional", "semantic"):
        vid = jnp.int32(histogram.VARIANT_IDS[variant])
        free = histogram.free_view(params, vid, SHAPE.width, histogram.perturbation(SHAPE, np.random.default_rng(0), 0.0))
        a = histogram.model(SHAPE).apply({"params": params}, x, vid)[0]
        b = histogram.model(SHAPE).apply({"params": free}, x, jnp.int32(histogram.VARIANT_IDS["free"]))[0]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_host_initialisation_has_the_modules_tree():
    """init_params (numpy) gives the tree, shapes and dtypes of the Flax module's own init, and its scales."""
    ours = histogram.init_params(SHAPE, np.random.default_rng(0))
    flax_init = histogram.model(SHAPE).init(jax.random.PRNGKey(0), jnp.zeros((1, SHAPE.length), jnp.int32), jnp.int32(0))
    shapes = lambda t: jax.tree.map(lambda a: (a.shape, str(a.dtype)), t)  # noqa: E731
    assert shapes(ours) == shapes(dict(flax_init["params"]))
    big = histogram.init_params(histogram.Shape(width=64, hidden=128), np.random.default_rng(1))
    assert np.std(big["token_embedding"]) == pytest.approx(1.0, rel=0.1)
    assert np.abs(big["query"]).max() <= 1 / 8 and np.abs(big["query"]).max() > 0.12


def _cli(workdir: Path, fault: str = "", extra=()) -> "subprocess.CompletedProcess":
    import os
    import subprocess
    import sys

    args = [f"--config.{a}" for a in TINY + ["n_trains=(60,200)", "checkpoint_seconds=0"]]
    env = dict(os.environ, ATTNSIM_FAULT=fault, ATTNSIM_COMPILATION_CACHE=str(workdir.parent / "jax_cache"))
    return subprocess.run([sys.executable, "-m", "attnsim.cli", "run", "--config", CONFIG, "--workdir", str(workdir),
                           *args, *extra], env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[1])


def test_killed_and_resumed_run_ends_with_the_same_rows_and_reports(tmp_path):
    """`attnsim run` of the histogram task SIGKILLed after its 5th training segment (each chunk has 3: 2 + 1
    Adam epochs, then 2 SGD epochs of the free model; so in the second chunk, just after the retraining's
    start was taken and saved) and re-run gives the rows of an uninterrupted run, bit for bit; `attnsim
    report` then writes its figures and tables."""
    import signal

    from attnsim import cli

    reference = _cli(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    killed = _cli(tmp_path / "killed", fault="segment:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rows = pd.read_csv(tmp_path / "killed" / "results.csv")
    assert len(rows) == 6  # the first chunk (n_train 200) is done, the second was in training
    resumed = _cli(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming a chunk of 6 runs from its checkpoint at step 3 of 5" in resumed.stderr
    lines = lambda w: sorted((w / "results.csv").read_text().splitlines())  # noqa: E731
    assert lines(tmp_path / "killed") == lines(tmp_path / "reference")
    attention = pd.read_csv(tmp_path / "killed" / "attention.csv")
    assert len(attention) == 12 * histogram_sweep.EXAMPLES * 6 * 6
    assert cli.main(["report", "--workdir", str(tmp_path / "killed")]) == 0
    for name in ("histogram_accuracy.png", "attention_maps.png", "summary.csv", "summary.md"):
        assert (tmp_path / "killed" / name).is_file()
    summary = pd.read_csv(tmp_path / "killed" / "summary.csv")
    assert set(summary.variant) == set(histogram.VARIANTS) and (summary.seeds == 2).all()


def test_theory_refuses_the_histogram_task_in_one_line(tmp_path, capsys):
    from attnsim import cli

    assert cli.main(["phase", "--config", CONFIG, "--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"attnsim: error: --config {CONFIG}: the histogram task has no theory "
                                               "(`attnsim phase` solves the tied-attention model)")
