"""Noise and regularisation: sigma in {0.3, 0.5, 0.7, 1.0} x lambda in {0.001, 0.01, 0.1} at omega = 0.3, d = 1000.

Argument `small` (configs/sigma_lambda.py:small): d = 200, 4 alphas, 2 seeds, theory at quad_order 6.
"""

import ml_collections
import numpy as np


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "sigma_lambda"
    c.d = 1000
    c.omega = 0.3
    c.sigmas = (0.3, 0.5, 0.7, 1.0)
    c.lams = (0.001, 0.01, 0.1)
    c.alphas = tuple(float(a) for a in np.round(np.linspace(0.01, 2.0, 25), 6))
    c.seeds = 2
    c.inits = ("random", "semantic")
    if arg == "small":
        c.name = "sigma_lambda-small"
        c.d = 200
        c.alphas = (0.5, 1.0, 1.5, 2.0)
        c.seeds = 2
        c.n_test = 4000
        c.quad_order = 6
    elif arg:
        raise ValueError(f"unknown argument {arg!r} (use 'small' or nothing)")
    return c
