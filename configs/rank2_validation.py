"""Rank-2 student (r = 2, teacher rank 1) against the generic theory: omega in {0.1, 0.3}, alpha in {1, 2, 3, 4},
d = 1000, 4 seeds, random, semantic, positional and mixed (one column semantic, one positional) inits.

Argument `small` (configs/rank2_validation.py:small): d = 200, 2 seeds, n_test = 4000.
"""

from attnsim.config import experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="rank2_validation", d=1000, r=2, omegas=(0.1, 0.3), alphas=(1.0, 2.0, 3.0, 4.0), seeds=4,
                  inits=("random", "semantic", "positional", "mixed")),
        small=dict(d=200, seeds=2, n_test=4000),
    )
