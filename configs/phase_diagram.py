"""The paper's phase diagram: omega from 0.02 to 0.7 x 25 alphas in [0.01, 2], random and semantic inits, d = 1000.

Argument `small` (configs/phase_diagram.py:small): d = 200, 6 omegas x 6 alphas, 2 seeds, theory at quad_order 6.
"""

import ml_collections
import numpy as np


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "phase_diagram"
    c.d = 1000
    c.omegas = tuple(float(w) for w in np.round(np.linspace(0.02, 0.7, 18), 6))  # step 0.04
    c.alphas = tuple(float(a) for a in np.round(np.linspace(0.01, 2.0, 25), 6))
    c.seeds = 2
    c.inits = ("random", "semantic")
    if arg == "small":
        c.name = "phase_diagram-small"
        c.d = 200
        c.omegas = (0.02, 0.15, 0.3, 0.45, 0.6, 0.7)
        c.alphas = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
        c.seeds = 2
        c.n_test = 4000
        c.quad_order = 6
    elif arg:
        raise ValueError(f"unknown argument {arg!r} (use 'small' or nothing)")
    return c
