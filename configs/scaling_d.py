"""Finite-size scaling: alpha = 1.5, omega = 0.3, d from 10 to 500 (one sweep per d), 64 seeds: convergence towards the theory.

``ds`` runs one sweep per d into WORKDIR/d<d>; `attnsim report --workdir WORKDIR` reads them all and adds
scaling.png:

    attnsim run --config configs/scaling_d.py:small --workdir runs/scaling_d-small
    attnsim report --workdir runs/scaling_d-small

Argument `small`: d in (10, 20, 40, 80, 160), 16 seeds, 4000 test samples. `--config.ds='(10,20)'` picks
other d; `--config.ds='()' --config.d=D` runs a single d.
"""

from attnsim.config import experiment


def get_config(arg=None):
    return experiment(
        arg,
        full=dict(name="scaling_d", ds=(10, 20, 50, 100, 200, 500), d=500, omega=0.3, alphas=(1.5,), seeds=64,
                  inits=("random", "semantic")),
        small=dict(ds=(10, 20, 40, 80, 160), d=160, seeds=16, n_test=4000),
    )
