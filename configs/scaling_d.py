"""Finite-size scaling: alpha = 1.5, omega = 0.3, d from 10 to 500 (one workdir per d), 64 seeds: convergence towards the theory.

d is fixed within a sweep, so the sweep over d is one `attnsim run` per d, in WORKDIR/d<d>. One command runs
them all and then `attnsim report --workdir WORKDIR` (which reads every WORKDIR/*/results.csv, adds scaling.png):

    python configs/scaling_d.py runs/scaling_d [small] [--ds=10,20] [--config.FIELD=VALUE ...]

`attnsim run --config configs/scaling_d.py[:small] --config.d=D` runs a single d. Argument `small`:
d in (10, 20, 40, 80, 160), 16 seeds.
"""

import sys

import ml_collections

D_VALUES = (10, 20, 50, 100, 200, 500)
D_VALUES_SMALL = (10, 20, 40, 80, 160)


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "scaling_d"
    c.d = D_VALUES[-1]
    c.omega = 0.3
    c.alphas = (1.5,)
    c.seeds = 64
    c.inits = ("random", "semantic")
    if arg == "small":
        c.name = "scaling_d-small"
        c.d = D_VALUES_SMALL[-1]
        c.seeds = 16
        c.n_test = 4000
    elif arg:
        raise ValueError(f"unknown argument {arg!r} (use 'small' or nothing)")
    return c


def main(argv) -> int:
    """WORKDIR [small] [--ds=D1,D2,...] [--config.FIELD=VALUE ...]: `attnsim run` per d, then `attnsim report`."""
    from attnsim import cli

    if not argv or argv[0].startswith("-"):
        print("usage: python configs/scaling_d.py WORKDIR [small] [--ds=10,20,...] [--config.FIELD=VALUE ...]",
              file=sys.stderr)
        return 2
    workdir, rest = argv[0], argv[1:]
    arg = "small" if "small" in rest else None
    ds = D_VALUES_SMALL if arg else D_VALUES
    for item in rest:
        if item.startswith("--ds="):
            ds = tuple(int(v) for v in item[len("--ds="):].split(","))
    overrides = [a for a in rest if a.startswith("--config.")]
    config = f"{__file__}:{arg}" if arg else __file__
    for d in ds:
        code = cli.main(["run", "--config", config, "--workdir", f"{workdir}/d{d}", *overrides, f"--config.d={d}"])
        if code:
            return code
    return cli.main(["report", "--workdir", workdir])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
