"""Quadrature rules over the four standard Gaussians (xi_1, xi_2, y_1, y_2) of the L = 2, rank-1 theory.

Three families, each a ``Rule``; ``resolve(quad_order)`` turns the public ``quad_order`` argument into one,
once, at the public API:

- ``GaussHermite(K)`` (``quad_order=K``): the K^4-node tensor Gauss-Hermite rule, folded per problem by
  the problem's symmetries, and checked on the same rule turned by 45 degrees (``check``).
- ``Authors()`` (``quad_order="authors"``): the 144-node cubature behind the authors' published solutions;
  not checked, observables re-integrated at Gauss-Hermite order ``AUTHORS_OBS_ORDER``.
- ``Fixed(quad)``: any given rule (e.g. quasi-Monte-Carlo points), used as it is; not checked.

Why the check: the inner minimiser h* jumps between basins, so the integrands are discontinuous and tensor
rules converge slowly and erratically; the plain tensor rule puts sum(w_i^2) (27% at K = 10) of its weight
on the diagonal xi_1 = xi_2, a measure-zero set where w_1 = w_2 on the semantic branch, and there it has
fixed points the theory does not (docs/theory.md, "Numerics").
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from attnsim.theory.domain import swap_symmetric

# Gauss-Hermite nodes per Gaussian dimension (K^4 nodes); accuracy: docs/theory.md, "Numerics".
DEFAULT_QUAD_ORDER = 10
AUTHORS = "authors"  # quad_order value: the authors' cubature (quad_rule_authors), to reproduce their files
AUTHORS_OBS_ORDER = 16  # Gauss-Hermite order of test_error and E[M] under quad_order="authors"


class Quad(NamedTuple):
    """A rule over (xi_1, xi_2, y_1, y_2): xi_Nx2, y_Nx2, wt_N (sum 1); hat_mask_4 zeroes the hats
    (qh, mh, Vh, thh) that vanish by a symmetry the rule was folded with."""

    xi_Nx2: np.ndarray
    y_Nx2: np.ndarray
    wt_N: np.ndarray
    hat_mask_4: np.ndarray = np.ones(4)


@functools.lru_cache(maxsize=None)
def quad_rule(K: int, rotated: bool = False) -> Quad:
    """The K^4-node tensor Gauss-Hermite rule for four independent standard Gaussians (numpy).

    ``rotated``: the same rule turned by 45 degrees in the (xi_1, xi_2) and in the (y_1, y_2) plane, node
    (a, b) of a plane at (a - b, a + b) / sqrt 2: as exact on polynomials (the Gaussian weight is rotation
    invariant) but with no node on the diagonals xi_1 = +-xi_2 for even K (for odd K the middle row lands
    there), where the plain rule puts sum(w^2) of the weight on the measure-zero set w_1 = w_2 of the
    semantic branch. The check rule (``GaussHermite.check_order``).
    """
    x_K, w_K = np.polynomial.hermite_e.hermegauss(K)
    x_K = (x_K - x_K[::-1]) / 2.0  # exactly symmetric nodes: keeps theta = 0 invariant to round-off
    w_K = (w_K + w_K[::-1]) / 2.0
    w_K = w_K / w_K.sum()
    g = np.meshgrid(x_K, x_K, x_K, x_K, indexing="ij")
    wg = np.meshgrid(w_K, w_K, w_K, w_K, indexing="ij")
    pts_Nx4 = np.stack([a.ravel() for a in g], axis=1)
    if rotated:  # elementwise (not a matrix product): the rotated nodes stay exactly symmetric
        c = np.sqrt(0.5)
        a, b, u, v = pts_Nx4.T
        pts_Nx4 = np.stack([c * (a - b), c * (a + b), c * (u - v), c * (u + v)], axis=1)
    wt_N = np.prod(np.stack([a.ravel() for a in wg], axis=1), axis=1)
    return Quad(pts_Nx4[:, :2].copy(), pts_Nx4[:, 2:].copy(), wt_N)


@functools.lru_cache(maxsize=None)
def quad_rule_folded(K: int, swap: bool = False, negate: bool = False, flip_y: bool = False,
                     rotated: bool = False) -> Quad:
    """quad_rule(K, rotated) folded by node symmetries of the problem: one node per orbit, with the orbit's
    weight.

    The tensor rule is exactly invariant under each map (nodes antisymmetrised), so the folded rule gives
    the same integrals for every integrand invariant under them:

    - ``swap`` (needs A_11 = A_22): (xi_1, xi_2, y_1, y_2) -> -(xi_2, xi_1, y_2, y_1) mirrors the problem,
      w -> -(w_2, w_1), t -> -(t_2, t_1), T_11 <-> T_22, h* -> -(h*_2, h*_1), f -> -(f_2, f_1): every
      integrand (f_1^2 + f_2^2, f_1 - f_2, f.y, f.xi, M, loss) is unchanged.
    - ``negate`` (needs m = 0): (xi, y) -> -(xi, y) gives w -> -w, t -> -t, T unchanged (s(-t) = s(t)),
      h* -> -h*, f -> -f: all integrands unchanged except f_1 - f_2, whose mean is 0 (mh = 0, masked).
    - ``flip_y`` (needs theta = 0): y -> -y leaves w and T (t = V* y) unchanged, so h* and f too: only
      f.y flips, thh = 0 (masked).
    Sizes: ~K^4 / 2 per symmetry, ~K^4 / 4 for two of them. On the rotated rule the swap is the map
    (a, b) -> (-a, b) of each plane's unrotated node.
    """
    full = quad_rule(K, rotated)
    i = np.arange(K**4).reshape(K, K, K, K)
    swap_map = i[::-1, :, ::-1, :] if rotated else i[::-1, ::-1, ::-1, ::-1].transpose(1, 0, 3, 2)
    gens = [g.ravel() for g, use in ((swap_map, swap), (i[::-1, ::-1, ::-1, ::-1], negate),
                                     (i[:, :, ::-1, ::-1], flip_y)) if use]
    rep = np.arange(K**4)  # orbit representative: the smallest index in the orbit
    while True:
        new = functools.reduce(lambda r, g: np.minimum(r, r[g]), gens, rep)
        if np.array_equal(new, rep):
            break
        rep = new
    wt = np.bincount(rep, weights=full.wt_N, minlength=K**4)
    keep = rep == np.arange(K**4)
    mask = np.array([1.0, 0.0 if negate else 1.0, 1.0, 0.0 if flip_y else 1.0])
    return Quad(full.xi_Nx2[keep].copy(), full.y_Nx2[keep].copy(), wt[keep].copy(), mask)


def quad_rule_sym(K: int) -> Quad:
    """quad_rule(K) folded by the token-swap-and-sign symmetry alone (A_11 = A_22; (K^4 + K^2) / 2 nodes)."""
    return quad_rule_folded(K, swap=True)


@functools.lru_cache(maxsize=None)
def quad_rule_authors() -> Quad:
    """The cubature behind the authors' published fixed points (docs/theory.md, "Numerics"): 144 nodes.

    Their notebook integrates the hat updates with ``quadpy.e2r2.get_good_scheme(7)``, once over
    (xi_1, xi_2) and once over (y_1, y_2): the 12-point fully symmetric degree-7 rule for the weight
    exp(-|u|^2) in the plane (of the kind tabulated by Stroud, *Approximate calculation of multiple
    integrals*, 1971; this one: (+-r, 0), (0, +-r) with r^2 = 3; (+-s, +-s), (+-t, +-t) with
    s^2, t^2 = (9 -+ 3 sqrt 5) / 8; weights pi/36, pi (5 +- 2 sqrt 5) / 45), scaled by sqrt 2 to standard
    Gaussians. It is exact for polynomials of degree 7 in each pair (tests/test_theory.py) and invariant
    under every symmetry quad_rule_folded uses.
    """
    s5 = np.sqrt(5.0)
    r, s, t = np.sqrt(3.0), np.sqrt((9 - 3 * s5) / 8), np.sqrt((9 + 3 * s5) / 8)
    signs = np.array([(1, 1), (1, -1), (-1, 1), (-1, -1)], np.float64)
    pts_12x2 = np.sqrt(2.0) * np.concatenate([np.array([(r, 0), (0, r), (-r, 0), (0, -r)]), s * signs, t * signs])
    w_12 = np.repeat([1 / 36, (5 + 2 * s5) / 45, (5 - 2 * s5) / 45], 4)
    return Quad(np.repeat(pts_12x2, 12, axis=0), np.tile(pts_12x2, (12, 1)), np.repeat(w_12, 12) * np.tile(w_12, 12))


def pinned_hat_mask(free_4) -> np.ndarray:
    """Hats that vanish by the symmetry of a pinned overlap: mh where m is pinned, thh where theta is."""
    return np.array([1.0, 0.0 if free_4[1] == 0 else 1.0, 1.0, 0.0 if free_4[3] == 0 else 1.0])


class Rule:
    """How one quad_order integrates every problem.

    ``problem_quad(A_2x2, free_4, turned)`` is the rule for one problem (its hat mask set by the pinned
    overlaps ``free_4``), padded with zero-weight nodes to ``n_nodes(swap)`` so that every problem, plain
    or turned, shares one compiled shape; ``turned`` asks for the check rule (only where ``checked``).
    ``observables_order``: where not None, test_error and E[M] are re-integrated at that Gauss-Hermite
    order (``fixed_points.accurate_observables``).
    """

    name: str
    checked: bool = False
    observables_order: int | None = None

    def problem_quad(self, A_2x2, free_4, turned: bool = False) -> Quad:
        raise NotImplementedError

    def n_nodes(self, swap: bool) -> int:
        raise NotImplementedError


class GaussHermite(Rule):
    """The K^4-node tensor Gauss-Hermite rule, folded by every symmetry of each problem
    (``quad_rule_folded``): swap when A_11 = A_22, negate when m is pinned (at 0), flip_y when theta is
    pinned (at 0). Its check rule is the same rule turned by 45 degrees, of order ``check_order``."""

    checked = True

    def __init__(self, K: int):
        self.K = int(K)
        self.name = str(self.K)

    @property
    def check_order(self) -> int:
        """K, or K + 1 for odd K (turned by 45 degrees, an odd rule's middle node row lands on the
        diagonals xi_1 = +-xi_2 with more weight than the plain rule has there)."""
        return self.K + self.K % 2

    def problem_quad(self, A_2x2, free_4, turned: bool = False) -> Quad:
        swap = swap_symmetric(A_2x2)
        q = quad_rule_folded(self.check_order if turned else self.K, swap, bool(free_4[1] == 0),
                             bool(free_4[3] == 0), turned)
        return _pad(q, self.n_nodes(swap))

    def n_nodes(self, swap: bool) -> int:
        """Nodes of the largest folded rule of the semantic and positional branches, plain or turned."""
        return max(len(quad_rule_folded(k, swap, neg, not neg, rot).wt_N)
                   for neg in (False, True) for k, rot in ((self.K, False), (self.check_order, True)))


class Authors(Rule):
    """The authors' 144-node cubature (``quad_rule_authors``), unfolded, with the pinned hats masked."""

    name = AUTHORS
    observables_order = AUTHORS_OBS_ORDER

    def problem_quad(self, A_2x2, free_4, turned: bool = False) -> Quad:
        return quad_rule_authors()._replace(hat_mask_4=pinned_hat_mask(free_4))

    def n_nodes(self, swap: bool) -> int:
        return len(quad_rule_authors().wt_N)


class Fixed(Rule):
    """A given rule (e.g. scrambled Sobol points mapped to Gaussians), used as it is, with the pinned hats
    masked: it should be invariant under (xi, y) -> -(xi, y) (antithetic pairs) so that pinned overlaps
    stay exactly 0."""

    def __init__(self, quad: Quad, name: str = "fixed"):
        self.quad = Quad(*(np.asarray(a, np.float64) for a in quad[:3]))
        self.name = name

    def problem_quad(self, A_2x2, free_4, turned: bool = False) -> Quad:
        return self.quad._replace(hat_mask_4=pinned_hat_mask(free_4))

    def n_nodes(self, swap: bool) -> int:
        return len(self.quad.wt_N)


def resolve(quad_order) -> Rule:
    """The Rule of a public ``quad_order``: an int K (Gauss-Hermite), "authors", or a Rule."""
    if isinstance(quad_order, Rule):
        return quad_order
    if quad_order == AUTHORS:
        return Authors()
    if isinstance(quad_order, bool) or not isinstance(quad_order, (int, np.integer)) or quad_order < 2:
        raise ValueError(f"quad_order={quad_order!r} must be an integer >= 2 (Gauss-Hermite nodes per dimension), "
                         f"{AUTHORS!r} or a quadrature.Rule")
    return GaussHermite(int(quad_order))


def _pad(q: Quad, n: int) -> Quad:
    pad = n - len(q.wt_N)
    return Quad(np.pad(q.xi_Nx2, ((0, pad), (0, 0))), np.pad(q.y_Nx2, ((0, pad), (0, 0))), np.pad(q.wt_N, (0, pad)),
                q.hat_mask_4)
