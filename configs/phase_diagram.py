"""The paper's phase diagram: omega from 0.02 to 0.7 x 25 alphas in [0.01, 2], random and semantic inits, d = 1000.

Argument `small` (configs/phase_diagram.py:small): d = 200, 6 omegas x 6 alphas, 2 seeds, theory at quad_order 6.
"""

import numpy as np

from attnsim.config import PAPER_ALPHAS, experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="phase_diagram", d=1000, omegas=tuple(float(w) for w in np.round(np.linspace(0.02, 0.7, 18), 6)),
                  alphas=PAPER_ALPHAS, seeds=2, inits=("random", "semantic")),  # omega step 0.04
        small=dict(d=200, omegas=(0.02, 0.15, 0.3, 0.45, 0.6, 0.7), alphas=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
                   n_test=4000, quad_order=6),
    )
