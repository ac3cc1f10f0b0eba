"""Adam instead of GD (the authors' variant: lr 0.01, 2500 steps) on the omega = 0.3 curves, d = 1000.

Argument `small` (configs/adam.py:small): d = 200, 6 alphas, 2 seeds.
"""

from attnsim.config import PAPER_ALPHAS, SMALL_ALPHAS, experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="adam", d=1000, omega=0.3, optimizer="adam", lr=0.01, steps=2500, alphas=PAPER_ALPHAS, seeds=4,
                  inits=("random", "semantic")),
        small=dict(d=200, alphas=SMALL_ALPHAS, seeds=2, n_test=4000),
    )
