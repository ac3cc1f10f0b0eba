"""attnsim: tied low-rank dot-product attention, simulated and solved.

Glossary (meanings exactly as in the paper, Cui et al. NeurIPS 2024, and docs/model.md):

- ``d``: token dimension; ``L``: tokens per sequence; ``r`` / ``r_t``: student / teacher rank.
- ``alpha`` = n / d: sample complexity (n training sequences).
- ``omega``: weight of the positional part ``A`` of the teacher (0 = purely semantic).
- ``sigma``: std of the token noise z; tokens are x = p + z with positional embeddings p.
- ``lam``: l2 strength of the attention student (``lambda`` is a keyword); ``lam_lin``: of the baseline.
- ``Q`` (d x r): tied query/key matrix of the student; ``Q_star`` (d x r_t): the teacher's.
- ``B`` (L x L): the linear positional baseline f_B(x) = B x.
- ``m``, ``theta``, ``q``: overlaps of Q with the positional direction, with the teacher, with itself:
  m = p_1^T Q / sqrt(d), theta = sigma^2 Q_star^T Q / d, q = sigma^2 Q^T Q / d.
- ``train_loss`` = R / d (R summed over samples, incl. lam/2 |Q|^2); ``test_error`` = E|y - f(x)|^2 / (2d).
"""

__version__ = "0.1.0"


def run(cfg, workdir=None):
    """Run the sweep of ``cfg`` (a ConfigDict from ``attnsim.config.load_config``) and return its rows as a
    pandas DataFrame, the rows and numbers ``attnsim run`` writes to results.csv. With a ``workdir`` it
    resumes exactly like the command (a second call recomputes nothing); without, it runs in a temporary
    folder. Invalid input raises ``attnsim.config.ConfigError`` (one line) before anything is written."""
    from attnsim import runner

    return runner.run(cfg, workdir)


def _deterministic_gpu_reductions() -> None:
    """Ask XLA's GPU backend for deterministic reductions (``--xla_gpu_deterministic_ops``), so that a
    resumed chunk ends with the same bits as an uninterrupted one there too (atomics otherwise add in any
    order). Other backends ignore the flag. Skipped when XLA_FLAGS already sets it, or with
    ATTNSIM_KEEP_XLA_FLAGS=1."""
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" in flags or os.environ.get("ATTNSIM_KEEP_XLA_FLAGS"):
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()


def _tune_xla_cpu() -> None:
    """Keep XLA's CPU backend from handing the step's small reductions and dots to YNNPACK fusions: with
    jaxlib 0.10 their call overhead made training steps several times slower (scripts/bench_sweep.py; the
    README's performance section has the numbers). Takes effect when
    attnsim is imported before JAX's first computation; an XLA_FLAGS that already sets the option, or
    ATTNSIM_KEEP_XLA_FLAGS=1, is left alone."""
    import os
    from importlib import metadata

    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags or os.environ.get("ATTNSIM_KEEP_XLA_FLAGS"):
        return
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    if jaxlib_version.startswith("0.10."):  # the flag is known to exist there (an unknown flag aborts XLA)
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_experimental_ynn_fusion_type=".strip()


_tune_xla_cpu()
_deterministic_gpu_reductions()
