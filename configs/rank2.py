"""A rank-2 student (r = 2, teacher rank 1; paper's appendix) at omega = 0.3, d = 1000, against the generic theory.

Inits: random, semantic, and mixed (one column semantic, one positional: the theory's global minimum for r = 2,
docs/theory_general.md).

Argument `small` (configs/rank2.py:small): d = 200, 6 alphas, 2 seeds.
"""

from attnsim.config import PAPER_ALPHAS, SMALL_ALPHAS, experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="rank2", d=1000, r=2, omega=0.3, alphas=PAPER_ALPHAS, seeds=4, inits=("random", "semantic", "mixed")),
        small=dict(d=200, alphas=SMALL_ALPHAS, seeds=2, n_test=4000),
    )
