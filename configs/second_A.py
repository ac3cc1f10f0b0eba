"""The second teacher mixing matrix A = [[0.3, 0.7], [0.8, 0.2]] at omega = 0.3: positional and semantic inits, d = 1000.

Argument `small` (configs/second_A.py:small): d = 200, 6 alphas, 2 seeds.
"""

from attnsim.config import PAPER_ALPHAS, SMALL_ALPHAS, experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="second_A", d=1000, A="second", omega=0.3, alphas=PAPER_ALPHAS, seeds=4,
                  inits=("positional", "semantic")),
        small=dict(d=200, alphas=SMALL_ALPHAS, seeds=2, n_test=4000),
    )
