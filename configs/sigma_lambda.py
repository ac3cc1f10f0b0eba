"""Noise and regularisation: sigma in {0.3, 0.5, 0.7, 1.0} x lambda in {0.001, 0.01, 0.1} at omega = 0.3, d = 1000.

Argument `small` (configs/sigma_lambda.py:small): d = 200, 4 alphas, 2 seeds, theory at quad_order 6.
"""

from attnsim.config import PAPER_ALPHAS, experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="sigma_lambda", d=1000, omega=0.3, sigmas=(0.3, 0.5, 0.7, 1.0), lams=(0.001, 0.01, 0.1),
                  alphas=PAPER_ALPHAS, seeds=2, inits=("random", "semantic")),
        small=dict(d=200, alphas=(0.5, 1.0, 1.5, 2.0), n_test=4000, quad_order=6),
    )
