"""Tests of the generic (L, r, r_t) theory (attnsim/theory/general.py; derivation: docs/theory_general.md).

Tolerances come from the measured scatter of randomised quasi-Monte-Carlo (RQMC) estimates (docs/
theory_general.md, "Numerics"): at N = 2^14 scrambled-Sobol points, one scrambling's fixed point scatters by
~1e-3 (V), 5e-4 (q), 6e-4 (theta), 7e-4 (test_error), 1.3e-4 (train_loss), relative. About 2 minutes on one core.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnsim import theory
from attnsim.theory import general as G

OMEGA, SIGMA, LAM = 0.3, 0.5, 0.01
A2 = np.asarray(theory.STANDARD_A)
COLS = ("q", "m", "V", "theta", "test_error", "train_loss")


@functools.lru_cache(maxsize=None)
def specialised(branch: str, alpha: float, K: int) -> dict:
    """One row of the specialised L = 2, r = 1 solver at Gauss-Hermite order K."""
    df = theory.solve([OMEGA], [alpha], quad_order=K)
    row = df[df.branch == branch].iloc[0]
    assert row.converged
    return {c: float(row[c]) for c in COLS}


def generic(branch: str, alpha: float, n_samples=2**14, seed=0) -> dict:
    res = G.solve_point(2, 1, 1, OMEGA, SIGMA, LAM, alpha, A2, G.make_branch(branch, 2, 1, 1),
                        n_samples=n_samples, seed=seed)
    assert res["converged"] and res["residual"] < G.TOL
    x = res["x"]
    return dict(q=x["q"][0, 0], m=abs(x["m"][0, 0]), V=x["V"][0, 0], theta=abs(x["theta"][0, 0]),
                test_error=res["test_error"], train_loss=res["train_loss"])


def test_generic_path_reproduces_the_specialised_semantic_branch():
    """L = 2, r = 1 is an instance: semantic branch, omega = 0.3, alpha = 2, against the specialised solver
    at K = 16. 3e-3 relative (1e-3 on train_loss): one scrambling's scatter plus Gauss-Hermite's own error
    (K = 10 -> 16 moves these by <= 1.3e-3). Measured: q -3.4e-4, V +3.2e-4, theta -2.1e-4, test_error
    +3.4e-5, train_loss -1.8e-4."""
    ref, got = specialised("semantic", 2.0, 16), generic("semantic", 2.0)
    assert got["m"] == 0.0
    for c in ("q", "V", "theta", "test_error"):
        assert got[c] == pytest.approx(ref[c], rel=3e-3), c
    assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-3)


def test_generic_path_on_the_positional_branch_lies_between_the_tensor_rules():
    """Positional branch, alpha = 2: there Gauss-Hermite is not converged (K = 10 and K = 16 differ by
    5.7% in V, on opposite sides of quasi-Monte-Carlo: docs/theory.md), so the generic value must lie in
    the interval the two span, widened by 3e-3 (QMC scatter)."""
    r10, r16 = specialised("positional", 2.0, 10), specialised("positional", 2.0, 16)
    got = generic("positional", 2.0)
    assert got["theta"] == 0.0
    for c in ("q", "m", "V", "test_error", "train_loss"):
        lo, hi = min(r10[c], r16[c]), max(r10[c], r16[c])
        assert lo * (1 - 3e-3) <= got[c] <= hi * (1 + 3e-3), (c, got[c], lo, hi)


def _map_once(N: int, seed: int) -> dict:
    """One application of the map at fixed overlaps (semantic, alpha = 1.57, the K = 16 fixed point)."""
    x = dict(q=np.array([[0.097112]]), V=np.array([[15.491172]]), m=np.zeros((2, 1)), theta=np.array([[0.138417]]))
    xi, eta = G.qmc_samples(N, 2, 1, 1, seed)
    with jax.enable_x64(True):
        consts = tuple(jnp.asarray(c, jnp.float64) for c in (OMEGA, SIGMA, LAM, 1.57, A2, G.default_gram(2)))
        _, _, obs = G.fixed_point_map({k: jnp.asarray(v, jnp.float64) for k, v in x.items()}, jnp.zeros((N, 2, 1)),
                                      jnp.asarray(xi), jnp.asarray(eta), consts, jnp.ones(1), 2, 1, 1, True)
        obs = jax.device_get(obs)
    return dict(qh=float(obs["hats"]["qh"][0, 0]), Vh=float(obs["hats"]["Vh"][0, 0]),
                thh=float(obs["hats"]["thh"][0, 0]), test_error=float(obs["test_error"]),
                train_loss=float(obs["train_loss"]))


def test_quasi_monte_carlo_converges_faster_than_monte_carlo():
    """The relative spread over 8 scramblings of the hats, test_error and train_loss falls by at least 4x
    from N = 2^10 to 2^14, what plain Monte Carlo (1/sqrt N) gives; measured 8-36x (N^-0.75 .. N^-1.3: the
    integrands jump where h* switches basin). 4 leaves room for the ~25% uncertainty of an 8-sample std."""
    spread = {}
    for N in (2**10, 2**14):
        vals = [_map_once(N, s) for s in range(8)]
        spread[N] = {k: np.std([v[k] for v in vals], ddof=1) / abs(np.mean([v[k] for v in vals])) for k in vals[0]}
    for k in spread[2**10]:
        assert spread[2**10][k] / spread[2**14][k] >= 4.0, (k, spread)


@pytest.mark.parametrize("kind", ["semantic", "positional"])
def test_rank2_with_the_second_direction_pinned_to_zero_is_rank1(kind):
    """r = 2 with the second column of Q switched off reproduces r = 1 on the same points (the rank-1 run
    uses the first student coordinate of the rank-2 samples): round-off only (1e-9; measured ~1e-14), and the
    switched-off direction stays exactly 0."""
    xi, eta = G.qmc_samples(2**12, 2, 2, 1, 0)
    args = (OMEGA, SIGMA, LAM, 2.0, A2)
    o2 = G.solve_point(2, 2, 1, *args, G.make_branch(kind, 2, 2, 1, active=(1, 0)), samples=(xi, eta))
    o1 = G.solve_point(2, 1, 1, *args, G.make_branch(kind, 2, 1, 1), samples=(xi[..., :1], eta))
    assert o2["converged"] and o1["converged"]
    for k in ("q", "V"):
        np.testing.assert_allclose(o2["x"][k][0, 0], o1["x"][k][0, 0], rtol=1e-9)
    for k in ("m", "theta"):
        np.testing.assert_allclose(o2["x"][k][:, 0], o1["x"][k][:, 0], rtol=1e-9, atol=1e-14)
        assert np.all(np.asarray(o2["x"][k])[..., 1] == 0.0)
    assert np.all(np.asarray(o2["x"]["q"])[..., 1] == 0.0)
    assert o2["train_loss"] == pytest.approx(o1["train_loss"], rel=1e-9)
    assert o2["test_error"] == pytest.approx(o1["test_error"], rel=1e-9)


def test_linear_baseline_any_L_reduces_to_the_L2_quadrature():
    """The generic baseline (RQMC over L r_t Gaussians) against the 2-D Gauss-Hermite one (converged to
    1e-15) at L = 2: 1e-3 relative (measured RQMC scatter at 2^16 points ~1e-4)."""
    for om in (0.0, 0.3):
        assert G.linear_baseline_error(om, 2, 1, SIGMA) == pytest.approx(theory.linear_baseline_error(om, SIGMA),
                                                                           rel=1e-3)


def test_rank2_table_has_the_mixed_branch_as_global_minimum():
    """r = 2 at omega = 0.3, alpha = 2 (coarse: 2^11 points; the branches' train losses differ by >= 14%):
    the mixed branch (one direction semantic, one positional: both its per-direction theta_1 and m_2 clearly
    non-zero) exists and is the global minimum; the table has the simulator's overlap columns."""
    df = G.solve([OMEGA], [2.0], L=2, r=2, r_t=1, n_samples=2**11)
    assert set(df.branch) == {"semantic", "positional", "mixed"} and df.converged.all()
    best = df[df.global_min]
    assert list(best.branch) == ["mixed"]
    mixed = best.iloc[0]
    assert mixed.theta_1 > 0.1 and mixed.m_2 > 0.15 and mixed.m_1 < 1e-12 and mixed.theta_2 < 1e-12
    assert df.set_index("branch").train_loss.min() == mixed.train_loss
    assert (df.lin_test_error > 0).all()
