"""The second teacher mixing matrix A = [[0.3, 0.7], [0.8, 0.2]] at omega = 0.3: positional and semantic inits, d = 1000.

Argument `small` (configs/second_A.py:small): d = 200, 6 alphas, 2 seeds.
"""

import ml_collections
import numpy as np


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "second_A"
    c.d = 1000
    c.A = "second"
    c.omega = 0.3
    c.alphas = tuple(float(a) for a in np.round(np.linspace(0.01, 2.0, 25), 6))
    c.seeds = 4
    c.inits = ("positional", "semantic")
    if arg == "small":
        c.name = "second_A-small"
        c.d = 200
        c.alphas = (0.25, 0.5, 1.0, 1.25, 1.5, 2.0)
        c.seeds = 2
        c.n_test = 4000
    elif arg:
        raise ValueError(f"unknown argument {arg!r} (use 'small' or nothing)")
    return c
