"""Demo: the positional -> semantic switch of the global minimum at omega = 0.3, small d (CPU, ~1 min)."""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "demo"
    c.d = 250
    c.omega = 0.3
    c.alphas = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    c.seeds = 4
    c.inits = ("random", "semantic")
    c.n_test = 4000
    return c
