"""Three tokens (L = 3), rank-1 student and teacher, against the generic theory: omega in {0.3, 0.6}, alpha in
{0.5, 1.5, 3}, d = 1000, 4 seeds, random, semantic and positional inits.

A is row-stochastic and 3 x 3: tokens 1 and 2 mix as the paper's standard A does (and leak 0.1 to token 3),
token 3 averages all three. Positional embeddings: p_1 = -p_2 = 1/sqrt(d), p_3 a random sign vector / sqrt(d)
(attnsim.data), so the positional student's fields are (m, -m, ~0) and its third attention row is uniform.
Argument `small` (configs/L3.py:small): d = 200, 2 seeds, n_test = 4000.
"""

from attnsim.config import experiment

A3 = ((0.6, 0.3, 0.1), (0.3, 0.6, 0.1), (1 / 3, 1 / 3, 1 / 3))


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="L3", d=1000, L=3, A=A3, omegas=(0.3, 0.6), alphas=(0.5, 1.5, 3.0), seeds=4,
                  inits=("random", "semantic", "positional")),
        small=dict(d=200, seeds=2, n_test=4000),
    )
