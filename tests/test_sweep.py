"""The sweep: grid expansion, chunking, and results that do not depend on how runs are batched."""

import jax
import numpy as np
import pandas as pd
import pytest

from attnsim import config as config_lib, sweep


def _cfg(**kw):
    c = config_lib.default_config()
    c.update(dict(d=16, alphas=(0.5, 1.0, 1.5, 2.0), seeds=2, steps=40, n_test=200, omegas=(0.2, 0.6)))
    c.update(kw)
    config_lib.validate(c)
    return c


def test_grid_has_one_row_per_run():
    runs = sweep.expand_grid(_cfg())
    assert len(runs) == 2 * 4 * 2 * 2
    assert set(runs.n) == {8, 16, 24, 32}
    assert runs.duplicated(sweep.KEY_COLUMNS).sum() == 0


def test_chunks_cover_runs_once_and_bound_padding():
    runs = sweep.expand_grid(_cfg(alphas=tuple(np.linspace(0.1, 2.0, 20)), d=400))
    chunks = sweep.plan_chunks(runs, max_batch=7)  # every n at its ladder value
    rows = [i for c in chunks for i in c.rows]
    assert sorted(rows) == list(runs.index)
    for c in chunks:
        assert len(c.rows) <= 7 and len({len(g) for g in c.groups}) == 1
        for seed, g in zip(c.seeds, c.groups):
            assert {runs.at[i, "seed"] for i in g} == {seed}
        assert all(c.n_max >= runs.at[i, "n"] >= c.n_max / 1.12 for i in c.rows)


def test_ladder_is_canonical_and_tight():
    values = [sweep.ladder(n) for n in range(1, 5000)]
    assert all(v >= n for n, v in zip(range(1, 5000), values)) and values[:16] == list(range(1, 17))
    assert max(v / n for n, v in zip(range(17, 5000), values[16:])) < 1.12
    assert len(set(values)) < 90 and sweep.ladder(2000) == sweep.ladder(1990) == 2048


def test_sample_levels_trade_padding_against_compilation():
    """Few steps at small d: padding is cheap, so every n shares one level (one compiled shape); the
    paper's 5000 steps at d = 1000 on a CPU: padding a level costs more than a compilation, so each n keeps
    its ladder value."""
    grid = sweep.expand_grid(_cfg(d=100, steps=20, alphas=tuple(np.linspace(0.1, 2.0, 20))))
    assert set(sweep.sample_levels(grid, _cfg(d=100, steps=20), backend="cpu").values()) == {sweep.ladder(200)}
    cfg = _cfg(d=1000, steps=5000, alphas=tuple(np.linspace(0.1, 2.0, 20)), omegas=tuple(np.linspace(0.05, 0.5, 10)))
    levels = sweep.sample_levels(sweep.expand_grid(cfg), cfg, backend="cpu")  # 40 runs per n
    assert levels == {n: sweep.ladder(n) for n in levels}
    levels = sweep.sample_levels(sweep.expand_grid(cfg), cfg, compile_seconds=1e9)
    assert set(levels.values()) == {sweep.ladder(2000)}


@pytest.mark.parametrize("max_batch", [3, 8, 64])
def test_plan_of_the_rest_is_the_rest_of_the_plan(max_batch):
    """A sweep resumed after its first k chunks finished plans the remaining runs into the same chunks
    (what makes a resumed sweep bit-identical: a run's bits depend on its chunk's composition)."""
    runs = sweep.expand_grid(_cfg(alphas=tuple(np.linspace(0.1, 2.0, 9)), seeds=3))
    chunks = sweep.plan_chunks(runs, max_batch)
    assert len(chunks) > 2
    for k in range(1, len(chunks)):
        done = [i for c in chunks[:k] for i in c.rows]
        assert set(sweep.plan_chunks(runs.drop(done), max_batch)) == set(chunks[k:])


def _results(cfg, max_batch):
    runs = sweep.expand_grid(cfg)
    out = pd.concat(list(sweep.iterate(cfg, runs, max_batch=max_batch)))
    return out.sort_values(sweep.KEY_COLUMNS).reset_index(drop=True)


def test_seeds_share_chunks():
    runs = sweep.expand_grid(_cfg(alphas=(1.5,), omegas=(), seeds=8))
    chunks = sweep.plan_chunks(runs, max_batch=8)
    assert [len(c.seeds) for c in chunks] == [4, 4]  # 2 inits per seed, 4 seeds per chunk


def test_results_do_not_depend_on_chunk_size():
    cfg = _cfg()
    one, many = _results(cfg, 1), _results(cfg, 64)
    for col in ("train_loss", "test_error", "m", "theta", "q", "lin_test_error", "lin_train_loss"):
        np.testing.assert_allclose(many[col], one[col], rtol=1e-5, atol=1e-7 if col in ("m", "theta") else 0,
                                   err_msg=col)


def test_global_minimum_picks_lowest_train_loss():
    df = pd.DataFrame(dict(omega=0.3, sigma=0.5, lam=0.01, alpha=[1.0, 1.0, 2.0, 2.0], seed=0,
                           init=["random", "semantic"] * 2, train_loss=[2.0, 1.0, 1.0, np.nan],
                           diverged=[False, False, False, True]))
    g = sweep.global_minimum(df)
    assert list(g.init) == ["semantic", "random"]
    two_d = pd.concat([df.assign(d=10), df.assign(d=20, train_loss=[1.0, 2.0, 1.0, np.nan])])
    assert list(sweep.global_minimum(two_d).init) == ["semantic", "random", "random", "random"]  # per d


def test_results_file_survives_a_line_cut_short(tmp_path):
    """A kill during a write leaves a partial last line: it is ignored on reading and overwritten by the
    next append; a partial header is rewritten whole."""
    path = tmp_path / "results.csv"
    rows = pd.DataFrame(dict(omega=[0.1, 0.2, 0.3], seed=[0, 1, 2]))
    sweep.append_results(path, rows.iloc[:1])
    with open(path, "a") as f:
        f.write("0.2,")  # cut short
    assert sweep.read_results(path).equals(rows.iloc[:1])
    sweep.append_results(path, rows.iloc[1:])
    assert sweep.read_results(path).equals(rows)
    path.write_text("ome")  # a header cut short
    assert sweep.read_results(path) is None
    sweep.append_results(path, rows)
    assert sweep.read_results(path).equals(rows)


def test_step_count_does_not_recompile_the_engine():
    """Configs that differ only in ``steps`` share the engine's compiled programs (the step count is a
    run-time argument), and the longer sweep passes through the shorter one's states bit for bit: resumed
    from the shorter one's final state, it ends with the bits of its uninterrupted run."""
    short, long = (_cfg(alphas=(1.0,), omegas=(), steps=s, checkpoint_every=10) for s in (20, 40))
    runs_short, runs_long = sweep.expand_grid(short), sweep.expand_grid(long)
    (chunk,) = sweep.plan_chunks(runs_short, max_batch=64)
    states = {}
    keep = lambda name: lambda state, done: states.__setitem__((name, done), jax.device_get(state))
    a = sweep.Engine(short).run_chunk(runs_short, chunk, after_segment=keep("short"))
    misses = sweep._compile.cache_info().misses
    b = sweep.Engine(long).run_chunk(runs_long, chunk, after_segment=keep("long"))
    assert sweep._compile.cache_info().misses == misses  # no new programs for steps=40
    assert sweep.Engine(long).programs(chunk.n_max) is sweep.Engine(short).programs(chunk.n_max)
    same = lambda x, y: all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))
    assert same(states["short", 10], states["long", 10]) and same(states["short", 20], states["long", 20])
    assert not np.array_equal(a, b)  # 40 steps are not 20
    resumed = sweep.Engine(long).run_chunk(runs_long, chunk, resume_state=states["short", 20], steps_done=20)
    assert np.array_equal(resumed, b)
