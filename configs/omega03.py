"""The paper's omega = 0.3 curves (Fig. 2): d = 1000, 25 alphas in [0.01, 2], random and semantic inits.

Argument `small` (configs/omega03.py:small) gives a reduced variant for a CPU: 4 alphas, 4 seeds, still
d = 1000 (at d = 500 the simulations sit ~7% above the theory at alpha = 2, a finite-size bias ~1/d), and the
positional init too (at alpha <= 0.5 a random init sometimes ends in a worse minimum, |m| ~ 0.05, which
biases a 4-seed global minimum by several %).
"""

from attnsim.config import PAPER_ALPHAS, experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="omega03", d=1000, omega=0.3, alphas=PAPER_ALPHAS, seeds=4, inits=("random", "semantic")),
        small=dict(alphas=(0.5, 1.0, 1.5, 2.0), inits=("random", "semantic", "positional")),
    )
