"""The model, the fast Gram-matrix loss, the baseline and the run function, on tiny sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnsim import data, models, training

STANDARD_A = ((0.6, 0.4), (0.4, 0.6))


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_student_forward_matches_numpy():
    d, r = 12, 2
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5, 2, d)))
    Q = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (d, r)))
    out = models.TiedAttention(d=d, r=r).apply({"params": {"Q": jnp.asarray(Q)}}, jnp.asarray(x))
    expected = np.stack([_softmax(xi @ Q @ Q.T @ xi.T / d) @ xi for xi in x])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=2e-5, atol=2e-6)


def test_baseline_module_mixes_tokens_by_position():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 7))
    B = jnp.array([[0.2, 0.8], [1.5, -0.5]])
    out = models.LinearPositional(L=2).apply({"params": {"B": B}}, x)
    np.testing.assert_allclose(np.asarray(out[:, 0]), np.asarray(0.2 * x[:, 0] + 0.8 * x[:, 1]), rtol=1e-6)


def test_teacher_at_omega_one_is_A_z():
    d = 10
    eps = jax.random.normal(jax.random.PRNGKey(3), (4, 2, d))
    A = jnp.array(STANDARD_A)
    p = data.positional_embeddings(d, 2)
    x, y = data.tokens_and_targets(eps, p, data.teacher(jax.random.PRNGKey(4), d, 1), 0.5, 1.0, A)
    np.testing.assert_allclose(np.asarray(y), np.asarray(jnp.einsum("lk,nkd->nld", A, 0.5 * eps)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(x), np.asarray(p[None] + 0.5 * eps), rtol=1e-6)


def test_positional_embeddings_default():
    p = np.asarray(data.positional_embeddings(9, 3))
    np.testing.assert_allclose(p[0], np.ones(9) / 3, rtol=1e-6)
    np.testing.assert_allclose(p[1], -np.ones(9) / 3, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-6)


def _problem(d=16, n=8, r=1, sigma=0.5, omega=0.3, key=0, dtype=jnp.float32):
    k = data.seed_key(key, 0)
    p = data.positional_embeddings(d, 2).astype(dtype)
    Q_star = data.teacher(k, d, 1).astype(dtype)
    eps = data.train_noise(k, n, 2, d).astype(dtype)
    hp = training.hparams(omega=omega, sigma=sigma, n=n)
    hp = hp._replace(sigma=jnp.asarray(sigma, dtype), omega=jnp.asarray(omega, dtype), A=hp.A.astype(dtype))
    pr = training.problem(eps, data.seed_stats(eps, p, Q_star), hp, jnp.ones(n, dtype))
    x, y = data.tokens_and_targets(eps, p, Q_star, sigma, omega, hp.A)
    return p, Q_star, pr, x, y, hp


def test_gram_loss_equals_module_risk_and_gradient():
    d, r = 16, 2
    p, Q_star, pr, x, y, hp = _problem(d=d)
    Q = 0.7 * jax.random.normal(jax.random.PRNGKey(5), (d, r))
    G_pp = p @ p.T / d
    module = models.TiedAttention(d=d, r=r)
    risk = lambda Q: models.empirical_risk(module.apply({"params": {"Q": Q}}, x), y, 0.0, 0.0)
    fast = lambda Q: training.data_loss(Q, pr, p, hp.sigma, G_pp)
    np.testing.assert_allclose(float(fast(Q)), float(risk(Q)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.grad(fast)(Q)), np.asarray(jax.grad(risk)(Q)), rtol=1e-4, atol=1e-6)


def test_loss_gradient_matches_finite_differences():
    d = 10
    with jax.enable_x64(True):
        p, Q_star, pr, x, y, hp = _problem(d=d, dtype=jnp.float64)
        G_pp = p @ p.T / d
        Q = jax.random.normal(jax.random.PRNGKey(6), (d, 1), dtype=jnp.float64)
        f = lambda Q: training.data_loss(Q, pr, p, hp.sigma, G_pp)
        g = np.asarray(jax.grad(f)(Q))
        h = 1e-6
        for i in range(d):
            e = jnp.zeros_like(Q).at[i, 0].set(h)
            fd = (float(f(Q + e)) - float(f(Q - e))) / (2 * h)
            assert abs(fd - g[i, 0]) <= 1e-6 * max(1.0, abs(fd)), (i, fd, g[i, 0])


def test_closed_form_baseline_matches_optax_training():
    d, n = 16, 64
    p, Q_star, pr, x, y, hp = _problem(d=d, n=n)
    G_pp = p @ p.T / d
    lam_lin = 1e-2
    B = training.ridge_baseline(pr, G_pp, lam_lin, "x")
    module = models.LinearPositional(L=2)
    loss = lambda B: models.empirical_risk(module.apply({"params": {"B": B}}, x), y, jnp.sum(B * B), lam_lin)
    opt = optax.adam(0.02)
    Bt = jnp.zeros((2, 2))
    state = opt.init(Bt)

    @jax.jit
    def step(Bt, state):
        updates, state = opt.update(jax.grad(loss)(Bt), state)
        return optax.apply_updates(Bt, updates), state

    for _ in range(3000):
        Bt, state = step(Bt, state)
    np.testing.assert_allclose(np.asarray(Bt), np.asarray(B), atol=2e-4)
    # and the Gram form of its error equals the explicit one
    per_sample = training.baseline_error(B, pr, G_pp, "x")
    explicit = models.empirical_risk(module.apply({"params": {"B": B}}, x), y, 0.0, 0.0)
    np.testing.assert_allclose(float(per_sample.sum()), float(explicit), rtol=1e-5)


SMALL = training.Static(d=24, n_max=48, n_test=300, test_chunk=128)
SMALL_STEPS = 60


@pytest.fixture(scope="module")
def small_run():
    return jax.jit(training.make_run(SMALL, SMALL_STEPS))


def test_inits_give_their_overlaps():
    d = 400
    st = training.Static(d=d, n_max=1, n_test=1)
    key = data.seed_key(0, 0)
    Q_star = data.teacher(key, d, 1)
    p = data.positional_embeddings(d, 2)
    ov = lambda init: training.overlaps(training.initial_Q(st, key, Q_star, p, training.INIT_IDS[init]), Q_star, p, 0.5)
    pos, sem, rnd = ov("positional"), ov("semantic"), ov("random")
    # positional: Q = 1/sqrt(d) (docs/model.md and the authors' code), so m = p_1^T Q / sqrt(d) = 1/sqrt(d)
    assert abs(float(pos["m"]) - 1 / np.sqrt(d)) < 1e-6 and float(pos["theta"]) < 0.01 / np.sqrt(d)
    assert abs(float(sem["theta"]) - 0.25) < 0.05 and float(sem["m"]) < 0.15  # sigma^2 |Q*|^2/d ~ sigma^2
    assert float(rnd["q"]) == pytest.approx(0.25 * 0.01, rel=0.2)  # sigma^2 * 0.1^2


def test_mixed_init_has_one_semantic_and_one_positional_column():
    """mixed (r = 2): column 1 is Q*, column 2 is p_1 (per-column overlaps: theta ~ sigma^2 on the first,
    m = 1/sqrt(d) on the second, each ~0 on the other column up to the random overlap ~1/sqrt(d))."""
    d = 400
    st = training.Static(d=d, r=2, n_max=1, n_test=1)
    key = data.seed_key(0, 0)
    Q_star = data.teacher(key, d, 1)
    p = data.positional_embeddings(d, 2)
    Q = training.initial_Q(st, key, Q_star, p, training.INIT_IDS["mixed"])
    col = lambda j: training.overlaps(Q[:, j:j + 1], Q_star, p, 0.5)
    sem, pos = col(0), col(1)
    assert abs(float(sem["theta"]) - 0.25) < 0.05 and float(sem["m"]) < 0.15
    assert abs(float(pos["m"]) - 1 / np.sqrt(d)) < 1e-6 and float(pos["theta"]) < 0.05 * 0.25
    assert np.array_equal(np.asarray(Q[:, 1]), np.asarray(p[0]))


def test_same_key_same_results(small_run):
    hp = training.hparams(n=40, init="random")
    a = small_run(data.seed_key(0, 1), hp)[1]
    b = small_run(data.seed_key(0, 1), hp)[1]
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True), k
    c = small_run(data.seed_key(0, 2), hp)[1]
    assert float(c["test_error"]) != float(a["test_error"])


def test_vmap_over_seeds_equals_separate_runs(small_run):
    keys = jnp.stack([data.seed_key(0, s) for s in range(4)])
    hp = training.hparams(n=40, init="semantic")
    batched = jax.jit(jax.vmap(training.make_run(SMALL, SMALL_STEPS), in_axes=(0, None)))(keys, hp)[1]
    for s in range(4):
        single = small_run(keys[s], hp)[1]
        for k in ("train_loss", "test_error", "m", "theta", "q", "lin_test_error"):
            np.testing.assert_allclose(float(batched[k][s]), float(single[k]), rtol=1e-5, atol=1e-7, err_msg=k)


def test_padding_is_masked_out():
    hp = training.hparams(n=30, init="random")
    key = data.seed_key(0, 0)
    exact = jax.jit(training.make_run(training.Static(d=24, n_max=30, n_test=300), 60))(key, hp)[1]
    padded = jax.jit(training.make_run(training.Static(d=24, n_max=48, n_test=300), 60))(key, hp)[1]
    for k in ("train_loss", "test_error", "m", "theta", "q", "lin_test_error", "lin_train_loss"):
        np.testing.assert_allclose(float(padded[k]), float(exact[k]), rtol=1e-5, atol=1e-7, err_msg=k)


def test_test_error_streaming_equals_explicit_samples():
    """The streamed Gram-form test error equals the modules' error on the same explicit test samples."""
    st = training.Static(d=20, n_max=40, n_test=250, test_chunk=64)  # 4 chunks, last one partial
    key = data.seed_key(3, 0)
    hp = training.hparams(n=40, init="semantic")
    Q, m = jax.jit(training.make_run(st, 30))(key, hp)
    one_chunk = jax.jit(training.make_run(st.__class__(**{**st.__dict__, "test_chunk": 250}), 30))(key, hp)[1]
    np.testing.assert_allclose(float(m["test_error"]), float(one_chunk["test_error"]), rtol=1e-5)
    p = data.positional_embeddings(20, 2)
    Q_star = data.teacher(key, 20, 1)
    eps = data.noise(data.test_stream(key), 0, 250, 2, 20)
    x, y = data.tokens_and_targets(eps, p, Q_star, 0.5, 0.3, hp.A)
    f = models.TiedAttention(d=20).apply({"params": {"Q": Q}}, x)
    np.testing.assert_allclose(float(m["test_error"]), float(models.empirical_risk(f, y, 0.0, 0.0)) / 250, rtol=1e-5)


def test_divergence_is_recorded_not_raised():
    st = training.Static(d=24, n_max=48, n_test=100)
    run = jax.jit(jax.vmap(training.make_run(st, 200), in_axes=(None, 0)))
    hp = jax.tree.map(lambda a, b: jnp.stack([a, b]), training.hparams(n=48, lr=1e6, init="semantic"),
                      training.hparams(n=48, lr=0.15, init="semantic"))
    m = run(data.seed_key(0, 0), hp)[1]
    assert bool(m["diverged"][0]) and np.isnan(float(m["test_error"][0]))
    assert not bool(m["diverged"][1]) and np.isfinite(float(m["test_error"][1]))
    run_one = jax.jit(training.make_run(st, 200))
    single = run_one(data.seed_key(0, 0), training.hparams(n=48, lr=0.15, init="semantic"))[1]
    np.testing.assert_allclose(float(m["test_error"][1]), float(single["test_error"]), rtol=1e-5)


def test_adam_runs_and_learns():
    st = training.Static(d=24, n_max=96, n_test=500, optimizer="adam")
    m = jax.jit(training.make_run(st, 300))(data.seed_key(0, 0), training.hparams(n=96, lr=0.01, init="random"))[1]
    assert not bool(m["diverged"])
    assert float(m["train_loss"]) < 0.02


def test_segmented_training():
    """Training in segments of any lengths gives the bits of one uninterrupted call when the step count
    is a run-time argument (what checkpointing relies on), and equals the single-run program (steps
    fixed at compile time) up to float32 rounding."""
    st = training.Static(d=24, n_max=48, n_test=100)
    hp = training.hparams(n=40, init="random")
    sd = training.make_seed_data(st)(data.seed_key(0, 0))
    train = jax.jit(training.train_steps, static_argnums=0)
    s0 = training.init_state(st, sd, hp)
    a = train(st, sd, hp, s0, 60)
    b = s0
    for k in (7, 20, 33):  # "killed" and resumed twice, at uneven places
        b = train(st, sd, hp, b, k)
    assert int(b.step) == 60
    assert np.array_equal(np.asarray(a.Q), np.asarray(b.Q))
    Q_run = jax.jit(training.make_run(st, 60))(data.seed_key(0, 0), hp)[0]
    np.testing.assert_allclose(np.asarray(a.Q), np.asarray(Q_run), rtol=1e-5, atol=1e-7)
