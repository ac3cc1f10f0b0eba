"""Fixed-point (replica) theory of tied rank-1 dot-product attention, L = 2 (spec: docs/theory.md).

Synopsis::

    from attnsim import theory
    df = theory.solve(omegas=[0.3], alphas=np.linspace(0.1, 2, 20))       # one row per (omega, alpha, branch)
    lines = theory.critical_lines(omegas=np.arange(0, 0.46, 0.05))         # alpha_c, alpha_l, spinodals
    theory.linear_baseline_error(0.3)                                       # ~0.00197

Notation (docs/theory.md; defined once here). Per quadrature node of four standard Gaussians
(xi_1, xi_2, y_1, y_2):

- ``x = (q, m, V, theta)``: the overlaps. q = sigma^2 |Q|^2/d, m = 1^T Q / d, theta = sigma^2 Q*^T Q / d,
  V = response; ``hats = (qh, mh, Vh, thh)`` their conjugates; rho = sigma^2 (teacher field variance).
- ``w = (m + sqrt(q) xi_1, -m + sqrt(q) xi_2)``: the student's fields without the data term.
- ``t = V* y + (theta / sqrt(q)) xi``, V* = sqrt(rho - theta^2/q): the teacher's fields.
- ``M(h) = |h - w|^2 / V + loss(h)``, loss(h) = sigma^2 |s(h) - T(t)|_F^2 with T = (1 - omega) s(t) +
  omega A (the full M, teacher term included); h* = argmin M (global), f = (h* - w) / V.

The modules, in the order the computation uses them:

- ``domain``: what the solver covers (``check_supported``), the named A matrices;
- ``branches``: the branches as data (start point, pinned overlaps, signature overlap);
- ``quadrature``: the rules (Gauss-Hermite folded by each problem's symmetries, turned by 45 degrees for
  the check; the authors' cubature; any fixed rule) and ``resolve(quad_order)``, called once per public call;
- ``inner``: the inner problem, h* at every node by a multi-start batched Newton method;
- ``saddle``: the fixed-point map overlaps -> hats -> overlaps and its Anderson-accelerated iteration;
- ``continuation``: problems followed along alpha, one compiled step for everything;
- ``check``: the quadrature check (a fixed point counts only if the turned rule has it too);
- ``fixed_points``: ``solve`` over grids, ``theory_at`` for simulated points;
- ``critical``: ``critical_lines`` (alpha_c, alpha_l, spinodals as separate functions);
- ``baseline``: the linear positional baseline; ``pool``: the process pool of ``critical_lines``;
- ``general``: the generic (L, r, r_t) theory (matrix order parameters, quasi-Monte-Carlo expectations,
  branches including the mixed one of r >= 2; docs/theory_general.md): ``solve_general``,
  ``critical_lines_general``. L = 2, r = 1 is an instance of it (tests/test_theory_general.py).

Everything runs in float64 inside ``with jax.enable_x64(True):``; public functions return numpy /
pandas float64, so a float32 caller is unaffected.
"""

from attnsim.theory.baseline import linear_baseline_error
from attnsim.theory.branches import NAMES as BRANCHES
from attnsim.theory.critical import critical_lines
from attnsim.theory.domain import SECOND_A, STANDARD_A, check_supported
from attnsim.theory.fixed_points import solve, theory_at
from attnsim.theory.general import critical_lines as critical_lines_general, solve as solve_general
from attnsim.theory.pool import auto_workers
from attnsim.theory.quadrature import (AUTHORS, DEFAULT_QUAD_ORDER, Authors, Fixed, GaussHermite, Quad, Rule,
                                       quad_rule, quad_rule_authors, quad_rule_folded, quad_rule_sym)
from attnsim.theory.saddle import ACCEPT_TOL

__all__ = ["ACCEPT_TOL", "AUTHORS", "Authors", "BRANCHES", "DEFAULT_QUAD_ORDER", "Fixed", "GaussHermite", "Quad",
           "Rule", "SECOND_A", "STANDARD_A", "auto_workers", "check_supported", "critical_lines", "critical_lines_general",
           "linear_baseline_error", "quad_rule", "quad_rule_authors", "quad_rule_folded", "quad_rule_sym", "solve",
           "solve_general", "theory_at"]
