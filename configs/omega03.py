"""The paper's omega = 0.3 curves (Fig. 2): d = 1000, 25 alphas in [0.01, 2], random and semantic inits.

Argument `small` (configs/omega03.py:small) gives a reduced variant for a CPU: 4 alphas, 4 seeds, still
d = 1000 (at d = 500 the simulations sit ~7% above the theory at alpha = 2, a finite-size bias ~1/d), and the
positional init too (at alpha <= 0.5 a random init sometimes ends in a worse minimum, |m| ~ 0.05, which
biases a 4-seed global minimum by several %).
"""

import ml_collections
import numpy as np


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "omega03"
    c.d = 1000
    c.omega = 0.3
    c.alphas = tuple(float(a) for a in np.round(np.linspace(0.01, 2.0, 25), 6))
    c.seeds = 4
    c.inits = ("random", "semantic")
    if arg == "small":
        c.name = "omega03-small"
        c.alphas = (0.5, 1.0, 1.5, 2.0)
        c.inits = ("random", "semantic", "positional")
    elif arg:
        raise ValueError(f"unknown argument {arg!r} (use 'small' or nothing)")
    return c
