"""Tests of the replica-theory solver (attnsim/theory/), sized for a 2-core CPU (~70 s on one core).

Quad orders are kept small here (K = 8: 4096 nodes, folded to 1056; within ~2e-3 of K = 16 at alpha =
1.57 on the semantic branch); the full comparison with both reference files at the default order is
scripts/theory_convergence.py. The reference files are checked twice:
- on the authors' own cubature (quad_order="authors": 144 nodes), every row alpha >= 0.1 of both
  branches (test_reference_reproduced_on_the_authors_rule): the equations and conventions are theirs;
- on converged Gauss-Hermite, the rows alpha >= 1.25 (test_reference_rows). At smaller alpha the
  reference's semantic theta is an artefact of its cubature (the same 144-node rule rotated by 45 degrees
  gives 2-9x smaller theta; quasi-Monte-Carlo rules give a semantic branch that collapses onto theta = 0
  below alpha ~ 0.75), and the reference's mse is off by ~3.5% at alpha = 1.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from attnsim import theory
from attnsim.theory import branches, check, critical, inner, quadrature, saddle

REF = Path(__file__).resolve().parent / "data" / "reference"  # the authors' numbers (see its README)
K = 8
REF_ALPHAS = (2.0, 1.7857142857142856, 1.5714285714285714, 1.3571428571428572, 1.25, 1.0163636363636364)


def load_reference(branch):
    ref = pd.read_csv(REF / f"theory_omega0.3_{branch}.csv", index_col=0)
    ref["test_error"] = ref.mse / 2
    ref["train_loss"] = -ref.Phi
    return ref.sort_values("alpha").reset_index(drop=True)


@pytest.fixture(scope="module")
def omega03():
    """Both branches at omega = 0.3 along REF_ALPHAS (continuation), K = 8."""
    return theory.solve([0.3], REF_ALPHAS, quad_order=K)


def _row(df, branch, alpha):
    r = df[(df.branch == branch) & np.isclose(df.alpha, alpha)]
    assert len(r) == 1
    return r.iloc[0]


def test_converged_point_of_theory_md(omega03):
    r = _row(omega03, "semantic", 1.5714285714285714)
    expected = dict(q=0.09706, theta=0.13843, test_error=0.003737 / 2, train_loss=0.0031404)
    for col, val in expected.items():
        assert abs(r[col] / val - 1) < 3e-3, (col, r[col], val)
    assert abs(r.m) < 1e-6 and r.converged


@pytest.mark.parametrize("branch", ["semantic", "positional"])
def test_reference_rows(omega03, branch):
    ref = load_reference(branch)
    ours = omega03[omega03.branch == branch].sort_values("alpha").reset_index(drop=True)
    ours = ours[ours.alpha >= 1.2].reset_index(drop=True)
    ref = ref[ref.alpha.apply(lambda a: np.isclose(ours.alpha, a).any())].reset_index(drop=True)
    assert len(ref) == len(ours) == 5 and ours.converged.all()
    rel = lambda col: np.abs(ours[col].abs().to_numpy() / ref[col].abs().to_numpy() - 1)
    # The authors' mse is low by ~1.5% at alpha = 1.6 (docs/theory.md) and by ~3.5% at alpha = 1 (our K = 16:
    # 0.002773 vs their 0.002676 at alpha = 1.016), theta by up to 4% there: only alpha >= 1.25 is held
    # to the brief's 2.5% / 1%.
    assert rel("test_error").max() <= 0.025
    assert rel("q").max() <= 0.01
    assert rel("train_loss").max() <= 0.01
    if branch == "semantic":
        assert rel("theta").max() <= 0.025
        assert np.abs(ours.m).max() < 1e-6
    else:
        assert rel("m").max() <= 0.01
        assert np.abs(ours.theta).max() < 1e-12


def test_residual_and_columns(omega03):
    cols = {"omega", "sigma", "lam", "alpha", "branch", "q", "m", "V", "theta", "test_error", "train_loss",
            "converged", "iterations", "residual", "lin_test_error", "global_min"}
    assert cols <= set(omega03.columns)
    assert omega03.converged.all()
    assert (omega03.residual <= theory.ACCEPT_TOL).all()
    assert (omega03.residual <= 1e-8).mean() > 0.9
    # exactly one global minimum per alpha; semantic wins at alpha = 2, positional at alpha = 1.0164
    assert (omega03.groupby("alpha").global_min.sum() == 1).all()
    assert _row(omega03, "semantic", 2.0).global_min
    assert _row(omega03, "positional", 1.0163636363636364).global_min


def test_alpha_c_brackets(omega03):
    """train_loss_semantic - train_loss_positional changes sign between 1.25 and 1.357, root in [1.22, 1.30]."""
    d = {a: _row(omega03, "semantic", a).train_loss - _row(omega03, "positional", a).train_loss
         for a in (1.25, 1.3571428571428572)}
    assert d[1.25] > 0 > d[1.3571428571428572]
    root = 1.25 + d[1.25] * (1.3571428571428572 - 1.25) / (d[1.25] - d[1.3571428571428572])
    assert 1.22 < root < 1.30


def test_critical_lines_alpha_c():
    lines = theory.critical_lines([0.3], quad_order=6, alpha_max=2.0, n_grid=8, n_refine=3)
    assert 1.22 < lines.alpha_c.iloc[0] < 1.30
    assert lines.alpha_c.iloc[0] < lines.alpha_l.iloc[0] < 2.0
    assert {"alpha_sp_semantic", "alpha_sp_positional"} <= set(lines.columns)


def test_linear_baseline():
    assert abs(theory.linear_baseline_error(0.3, 0.5, theory.STANDARD_A) - 0.00197) < 1e-5
    assert theory.linear_baseline_error(1.0) == pytest.approx(0.0, abs=1e-15)  # T = A is constant
    # Monte Carlo of sigma^2 (E|T|^2 - |E T|^2) / 2, t ~ N(0, sigma^2 I_2)
    rng = np.random.default_rng(0)
    t = 0.5 * rng.standard_normal((400_000, 2))
    A = np.asarray(theory.STANDARD_A)
    s11 = 1 / (1 + np.exp(-t[:, 0] * (t[:, 0] - t[:, 1])))
    s22 = 1 / (1 + np.exp(-t[:, 1] * (t[:, 1] - t[:, 0])))
    T = np.stack([0.7 * s11 + 0.3 * A[0, 0], 0.7 * (1 - s11) + 0.3 * A[0, 1],
                  0.7 * (1 - s22) + 0.3 * A[1, 0], 0.7 * s22 + 0.3 * A[1, 1]], axis=1)
    mc = 0.25 * (np.sum(T**2, 1).mean() - np.sum(T.mean(0) ** 2)) / 2
    assert theory.linear_baseline_error(0.3) == pytest.approx(mc, rel=1e-2)
    out = theory.linear_baseline_error(np.array([0.0, 0.3, 1.0]))
    assert out.shape == (3,) and out[0] > out[1] > out[2]


def test_nonexistent_branches_are_flagged():
    """omega = 1: the teacher T = A ignores t, so theta -> 0 (the semantic branch collapses onto the
    positional one) and is reported converged=False. (m = 0 is invariant for ANY A, by the symmetry
    (h, xi, y) -> -(h, xi, y) at m = 0, so the trivial branch exists for the second A too.)"""
    df = theory.solve([1.0], [1.0], quad_order=6, branches=("semantic", "positional"))
    assert not _row(df, "semantic", 1.0).converged
    assert _row(df, "positional", 1.0).converged and _row(df, "positional", 1.0).global_min
    df = theory.solve([0.3], [1.0], quad_order=6, A=theory.SECOND_A, branches=("trivial",))
    assert df.converged.iloc[0] and df.m.iloc[0] == 0 and df.theta.iloc[0] == 0


@pytest.mark.parametrize("kwargs", [
    dict(L=3), dict(r=2), dict(r_t=2), dict(sigma=0.0), dict(sigma=-1.0),
    dict(A=((0.6, 0.6), (0.4, 0.6))), dict(A=((1.2, -0.2), (0.4, 0.6))), dict(alphas=[0.5, 0.0]),
])
def test_check_supported_raises(kwargs):
    args = dict(L=2, r=1, r_t=1, sigma=0.5, A=theory.STANDARD_A, alphas=[0.5, 1.0])
    theory.check_supported(**args)
    args.update(kwargs)
    with pytest.raises(ValueError, match="the theory covers L = 2") as e:
        theory.check_supported(**args)
    assert "\n" not in str(e.value)


def test_float64_is_scoped(omega03):
    assert omega03.q.dtype == np.float64
    assert jnp.zeros(1).dtype == jnp.float32
    assert not jax.config.jax_enable_x64


def test_theory_at_joins():
    res = pd.DataFrame(dict(omega=[0.3, 0.3, 0.3], sigma=0.5, lam=0.01, alpha=[1.0, 1.0, 2.0], seed=[0, 1, 0]))
    out = theory.theory_at(res, quad_order=6)
    assert len(out) == 3 and (out.seed == res.seed).all()
    for col in ("th_semantic_test_error", "th_positional_test_error", "th_global_test_error",
                "th_semantic_train_loss", "th_lin_test_error"):
        assert out[col].notna().all(), col
    assert (out.th_global_branch == ["positional", "positional", "semantic"]).all()


def test_folded_quadrature_rule():
    """quad_rule_sym keeps one node per mirror pair (xi, y) <-> -(swapped xi, y), twice weighted: it
    integrates every mirror-symmetric function exactly as the full tensor rule does."""
    for K in (6, 7):
        full, fold = theory.quad_rule(K), theory.quad_rule_sym(K)
        assert len(fold.wt_N) == (K**4 + K**2) // 2  # K^2 nodes are their own mirror
        assert fold.wt_N.sum() == pytest.approx(1.0, abs=1e-13)
        g = lambda xi, y: np.exp(0.3 * xi[:, 0] - 0.2 * xi[:, 1] + 0.1 * y[:, 0]) * (1 + xi[:, 0] * y[:, 1])
        sym = lambda xi, y: 0.5 * (g(xi, y) + g(-xi[:, ::-1], -y[:, ::-1]))
        assert np.sum(fold.wt_N * sym(fold.xi_Nx2, fold.y_Nx2)) == pytest.approx(
            np.sum(full.wt_N * sym(full.xi_Nx2, full.y_Nx2)), rel=1e-13)


@pytest.mark.parametrize("symmetries, pinned", [((True, True, False), 1), ((True, False, True), 3),
                                                 ((False, True, False), 1), ((False, False, True), 3)])
def test_folded_rules_for_pinned_overlaps(symmetries, pinned):
    """negate (m = 0) and flip_y (theta = 0) folds integrate functions invariant under their maps exactly,
    and zero the hat that vanishes by the symmetry."""
    K = 6
    full, fold = theory.quad_rule(K), theory.quad_rule_folded(K, *symmetries)
    assert fold.wt_N.sum() == pytest.approx(1.0, abs=1e-13) and fold.hat_mask_4[pinned] == 0
    swap, negate, flip_y = symmetries
    g = lambda xi, y: np.exp(0.3 * xi[:, 0] - 0.2 * xi[:, 1] + 0.1 * y[:, 0]) * (1 + xi[:, 0] * y[:, 1])
    maps = [lambda xi, y: (xi, y)]
    for use, m in ((swap, lambda xi, y: (-xi[:, ::-1], -y[:, ::-1])), (negate, lambda xi, y: (-xi, -y)),
                   (flip_y, lambda xi, y: (xi, -y))):
        if use:
            maps += [lambda xi, y, m=m, f=f: m(*f(xi, y)) for f in maps]
    sym = lambda xi, y: np.mean([g(*f(xi, y)) for f in maps], axis=0)
    assert np.sum(fold.wt_N * sym(fold.xi_Nx2, fold.y_Nx2)) == pytest.approx(
        np.sum(full.wt_N * sym(full.xi_Nx2, full.y_Nx2)), rel=1e-13)
    assert len(fold.wt_N) < len(full.wt_N) / (2 ** sum(symmetries)) + K**3


def _brute_force_min_M(nd, V, s2, side=151):
    """min M per node: a side x side grid over the disc |h - w|^2 <= V loss(w) (it contains h*), its best
    point polished by Newton."""
    N = nd.w1.shape[0]
    R = jnp.sqrt(V * inner.loss(nd.w1, nd.w2, nd.T11, nd.T22, s2))
    u = jnp.linspace(-1, 1, side)
    g1 = jnp.broadcast_to(nd.w1[None, None] + R[None, None] * u[:, None, None], (side, side, N)).reshape(-1, N)
    g2 = jnp.broadcast_to(nd.w2[None, None] + R[None, None] * u[None, :, None], (side, side, N)).reshape(-1, N)
    M_grid = inner.M(g1, g2, inner.Node(*(a[None] for a in nd)), V, s2)
    i = jnp.argmin(M_grid, axis=0)[None]
    b1, b2 = jnp.take_along_axis(g1, i, 0)[0], jnp.take_along_axis(g2, i, 0)[0]
    return jnp.minimum(inner.M(*inner.newton(b1, b2, nd, V, s2, 30), nd, V, s2), M_grid.min(0))


def test_inner_search_is_global():
    """inner_full (Newton from w, +-h0 and the warm start) finds the global minimum of M at every node:
    a brute-force grid search is never lower."""
    A = np.asarray(theory.STANDARD_A)
    with jax.enable_x64(True):
        quad = theory.Quad(*(jnp.asarray(a) for a in theory.quad_rule(4)))
        found = jax.jit(lambda nd, V: inner.M(*inner.inner_full(nd, V, 0.25, jnp.zeros((2, 256))), nd, V, 0.25))
        brute = jax.jit(lambda nd, V: _brute_force_min_M(nd, V, 0.25))
        for x, om in (((0.043, 0.0, 30.8, 0.017), 0.3), ((0.05, 0.26, 12.9, 0.0), 0.3), ((0.03, 0.2, 20.0, 0.0), 0.0)):
            pb = saddle.Problem(*(jnp.asarray(v, jnp.float64) for v in (om, 0.5, 0.01, 1.0, A[0, 0], A[1, 1])))
            nd, _, _ = saddle.nodes(jnp.asarray(x), pb, quad)
            V = jnp.asarray(x[2])
            assert float(jnp.max(found(nd, V) - brute(nd, V))) < 1e-12


def test_folded_rule_same_fixed_point(monkeypatch):
    """Both branches are solved on folded rules (swap for A_11 = A_22, and negate / flip_y for the pinned
    m / theta); the full tensor rule gives the same fixed points."""
    folded = theory.solve([0.3], [2.0], quad_order=6)
    monkeypatch.setattr(quadrature, "quad_rule_folded", lambda K, *symmetries: theory.quad_rule(K))
    unfolded = theory.solve([0.3], [2.0], quad_order=6)
    assert folded.converged.all() and unfolded.converged.all()
    for col in ("q", "V", "theta", "test_error", "train_loss"):
        np.testing.assert_allclose(folded[col], unfolded[col], rtol=1e-6, atol=1e-12, err_msg=col)


def test_critical_line_is_the_last_crossing():
    """alpha_c is where the semantic branch becomes the global minimum for good: a sign change of the
    train-loss difference at tiny alpha (branches barely distinct there) must not be taken."""
    alpha = np.linspace(0.02, 2.0, 12)
    diff = np.array([1e-9, -1e-9, 2e-6, 3e-6, 2e-6, 1e-6, 5e-7, -2e-7, -1e-6, -2e-6, -3e-6, -4e-6])
    assert critical.last_crossing(alpha, diff) == 6
    assert critical.last_crossing(alpha, np.abs(diff)) == -1


def test_spinodal_edge_ignores_a_single_failed_point():
    T, F = True, False
    assert critical.persistent_edge([T, T, F, T, T, T]) == -1  # one limit-cycle point is not an edge
    assert critical.persistent_edge([T, T, F, F, F]) == 1
    assert critical.persistent_edge([F, F, T, T]) == 1
    assert critical.persistent_edge([T, T, T]) == -1


def test_quad_rule_authors_is_degree_7_per_pair():
    """quad_rule_authors: 12 x 12 nodes, exact for every monomial of degree <= 7 in (xi_1, xi_2) times
    one in (y_1, y_2) (standard Gaussian moments), not for degree 8 (so the degree claimed is the degree)."""
    rule = theory.quad_rule_authors()
    assert len(rule.wt_N) == 144 and rule.wt_N.min() > 0
    moment = lambda k: 0.0 if k % 2 else float(np.prod(np.arange(k - 1, 0, -2)))  # E[u^k]
    for i, j, k, l in [(i, j, k, l) for i in range(8) for j in range(8 - i) for k in range(4) for l in range(4 - k)]:
        xi, y = rule.xi_Nx2, rule.y_Nx2
        got = np.sum(rule.wt_N * xi[:, 0]**i * xi[:, 1]**j * y[:, 0]**k * y[:, 1]**l)
        assert got == pytest.approx(moment(i) * moment(j) * moment(k) * moment(l), abs=1e-11), (i, j, k, l)
    assert np.sum(rule.wt_N * rule.xi_Nx2[:, 0]**8) != pytest.approx(105.0, rel=1e-3)


@pytest.fixture(scope="module")
def authors_rule_rows():
    """Every reference alpha >= 0.1, both branches, on the authors' cubature, each alpha a cold start from
    the docs/theory.md starting point (as the authors computed them; continuation can land on another of the
    coarse rule's fixed points at a few alphas)."""
    alphas = load_reference("semantic").alpha
    return pd.concat([theory.solve([0.3], [a], quad_order=theory.AUTHORS) for a in alphas[alphas >= 0.1]])


@pytest.mark.parametrize("branch", ["semantic", "positional"])
def test_reference_reproduced_on_the_authors_rule(authors_rule_rows, branch):
    """Our equations on the authors' cubature reproduce their files on every row alpha >= 0.1, the small-
    alpha semantic rows included (where the converged theory has no semantic fixed point): measured max
    deviations q 0.9%, |m| 0.12%, theta 0.9%, test_error 1.1%, train_loss 2.3% (their Phi used a 28-node
    degree-11 rule with local minimisation, not reproduced here; test_error and E[M] are integrated at
    Gauss-Hermite order 16). The brief's bounds: 1% on q, |m|; 2.5% on theta, test_error; train_loss
    2.5% instead of 1% for the reason above."""
    ref = load_reference(branch)
    ref = ref[ref.alpha >= 0.1].reset_index(drop=True)
    ours = authors_rule_rows[authors_rule_rows.branch == branch].sort_values("alpha").reset_index(drop=True)
    np.testing.assert_allclose(ours.alpha, ref.alpha)
    assert len(ours) == 19 and ours.converged.all()
    rel = lambda col: np.abs(ours[col].abs().to_numpy() / ref[col].abs().to_numpy() - 1).max()
    assert rel("q") <= 0.01 and rel("test_error") <= 0.025 and rel("train_loss") <= 0.025
    if branch == "semantic":
        assert rel("theta") <= 0.025 and ours.m.abs().max() < 1e-12
    else:
        assert rel("m") <= 0.01 and ours.theta.abs().max() < 1e-12


def test_rotated_rule_exact_and_off_the_diagonals():
    """quad_rule(K, rotated=True) integrates polynomials of total degree <= 2K - 1 in each plane as the
    plain rule does (both exact), and puts no node on xi_1 = +-xi_2 for even K."""
    K = 6
    plain, turned = theory.quad_rule(K), theory.quad_rule(K, rotated=True)
    assert turned.wt_N.sum() == pytest.approx(1.0, abs=1e-13)
    for i, j, k in [(i, j, k) for i in range(2 * K) for j in range(2 * K - i) for k in (0, 2, 3)]:
        f = lambda r: r.xi_Nx2[:, 0]**i * r.xi_Nx2[:, 1]**j * r.y_Nx2[:, 0]**k
        assert np.sum(turned.wt_N * f(turned)) == pytest.approx(np.sum(plain.wt_N * f(plain)), abs=1e-9), (i, j, k)
    assert np.min(np.abs(np.abs(turned.xi_Nx2[:, 0]) - np.abs(turned.xi_Nx2[:, 1]))) > 1e-3
    assert np.sum(plain.wt_N[plain.xi_Nx2[:, 0] == plain.xi_Nx2[:, 1]]) > 0.1  # what the turned rule avoids


@pytest.mark.parametrize("symmetries", [(True, True, False), (True, False, True), (False, True, False)])
def test_rotated_folded_rules(symmetries):
    """Folding the turned rule keeps the integrals of functions invariant under the folded maps."""
    K = 6
    full, fold = theory.quad_rule(K, rotated=True), theory.quad_rule_folded(K, *symmetries, rotated=True)
    g = lambda xi, y: np.exp(0.3 * xi[:, 0] - 0.2 * xi[:, 1] + 0.1 * y[:, 0]) * (1 + xi[:, 0] * y[:, 1])
    maps = [lambda xi, y: (xi, y)]
    for use, m in zip(symmetries, (lambda xi, y: (-xi[:, ::-1], -y[:, ::-1]), lambda xi, y: (-xi, -y),
                                   lambda xi, y: (xi, -y))):
        if use:
            maps += [lambda xi, y, m=m, f=f: m(*f(xi, y)) for f in maps]
    sym = lambda xi, y: np.mean([g(*f(xi, y)) for f in maps], axis=0)
    assert np.sum(fold.wt_N * sym(fold.xi_Nx2, fold.y_Nx2)) == pytest.approx(
        np.sum(full.wt_N * sym(full.xi_Nx2, full.y_Nx2)), rel=1e-12)
    assert len(fold.wt_N) < len(full.wt_N) / 2 + K**3


def test_quadrature_check_removes_artefact_branches():
    """The plain K = 8 rule has a semantic fixed point at omega = 0.3, alpha = 0.5 (theta ~ 0.013) and a
    positional one at omega = 0, alpha = 2 (|m| ~ 0.06); on quasi-Monte-Carlo rules (2 x 2^15 and 2 x 2^16
    points, two scrambles; scripts/theory_convergence.py) both collapse (theta < 0.0015, |m| < 0.003).
    solve's check marks them not converged and keeps the branches where both exist (spread < 5%)."""
    checked = theory.solve([0.0, 0.3], [0.5, 0.9, 2.0], quad_order=K)
    plain = theory.solve([0.0, 0.3], [0.5, 0.9, 2.0], quad_order=K, check=False)
    assert plain.converged.all() and plain.quad_spread.isna().all()
    key = lambda df, om, a, b: df[np.isclose(df.omega, om) & np.isclose(df.alpha, a) & (df.branch == b)].iloc[0]
    for om, a, b in ((0.3, 0.5, "semantic"), (0.0, 2.0, "positional")):
        assert key(plain, om, a, b).converged and not key(checked, om, a, b).converged
    for om, a, b in ((0.3, 0.9, "semantic"), (0.3, 2.0, "semantic"), (0.3, 0.5, "positional"), (0.0, 2.0, "semantic")):
        r = key(checked, om, a, b)
        assert r.converged and r.quad_spread < 0.05, (om, a, b, r.quad_spread)
    assert checked.global_min.groupby([checked.omega, checked.alpha]).sum().max() == 1


def test_critical_lines_in_processes_and_the_semantic_spinodal():
    """workers=2 (two spawned processes) gives the same table as one process; with the quadrature check
    the semantic branch at omega = 0.3 ends at a spinodal (quasi-Monte-Carlo: it collapses onto theta = 0
    between alpha = 0.7 and 0.8; K = 8 puts it at 0.69, K = 10 at 0.76), which the plain rule missed."""
    kw = dict(quad_order=K, n_grid=20)
    one = theory.critical_lines([0.3, 0.2], **kw)
    two = theory.critical_lines([0.3, 0.2], workers=2, **kw)
    pd.testing.assert_frame_equal(one, two)  # the same rows, in the callers' order
    sp = one.alpha_sp_semantic.to_numpy()
    assert 0.55 < sp[1] < sp[0] < 0.85, sp
    assert np.isnan(theory.critical_lines([0.3], check=False, **kw).alpha_sp_semantic.iloc[0])


def test_quadrature_check_covers_the_ends_of_a_branch():
    """Where the plain rule loses a branch at the end of the alpha range (here: made not converged at the
    smallest alpha), the rows next to it are still checked: the sparse check's verdicts equal checking
    every row."""
    A = np.asarray(theory.STANDARD_A)
    plain = theory.solve([0.3], np.round(np.linspace(0.3, 1.0, 12), 4), quad_order=6, branches=("semantic",),
                         check=False)
    plain.loc[plain.alpha == plain.alpha.min(), "converged"] = False
    sparse = check.quad_check_branches(plain, theory.GaussHermite(6), A)
    every = check.quad_check(plain[plain.converged], theory.GaussHermite(6), A)
    np.testing.assert_array_equal(sparse.converged[plain.converged].to_numpy(), every.converged.to_numpy())
    assert not every.converged.all() and every.converged.any()  # the case has both verdicts


def test_check_rule_of_odd_orders_is_even():
    """For odd K the check rule is the turned rule of order K + 1: no node on the diagonals."""
    q = theory.GaussHermite(7).problem_quad(np.asarray(theory.STANDARD_A), branches.BRANCHES["semantic"].free, turned=True)
    real = q.wt_N > 0
    assert np.min(np.abs(np.abs(q.xi_Nx2[real, 0]) - np.abs(q.xi_Nx2[real, 1]))) > 1e-3


def test_a_fixed_rule_is_used_as_given():
    """quad_order may be any quadrature.Rule: the unfolded tensor rule passed as theory.Fixed gives the fixed
    points of the folded Gauss-Hermite rule of the same order (same integrals; rtol 1e-6 allows the
    different summation order and the solver's stopping tolerance), and is not checked."""
    folded = theory.solve([0.3], [2.0, 1.8], quad_order=6, check=False)
    fixed = theory.solve([0.3], [2.0, 1.8], quad_order=theory.Fixed(theory.quad_rule(6)))
    assert folded.converged.all() and fixed.converged.all() and fixed.quad_spread.isna().all()
    for col in ("q", "V", "theta", "test_error", "train_loss"):
        np.testing.assert_allclose(fixed[col], folded[col], rtol=1e-6, atol=1e-12, err_msg=col)


@pytest.mark.parametrize("bad", ["ten", 1, 2.5, True])
def test_a_bad_quad_order_is_one_line(bad):
    with pytest.raises(ValueError, match="quad_order=.* must be an integer >= 2") as e:
        theory.solve([0.3], [1.0], quad_order=bad)
    assert "\n" not in str(e.value)
