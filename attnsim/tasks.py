"""The tasks a sweep can train, and the one place that picks a config's.

A task is a module with the same names: ``KEY_COLUMNS`` (what identifies a run), ``RUN_COLUMNS`` and
``METRIC_COLUMNS`` (results.csv), ``expand_grid(cfg)``, ``steps(cfg)`` (a run's steps, the unit of progress
and checkpoints), ``default_max_batch``, ``sweep_plan``, ``padding_waste``, ``Engine`` (``run_chunk``,
``state_template``) and ``iterate``. ``attnsim.sweep`` is the tied-attention task (config.task =
"attention"), ``attnsim.histogram_sweep`` the histogram transformer of the paper's Section 2 ("histogram").
``attnsim.runner`` runs either the same way: resume, checkpoints, processes, shards.
"""

from __future__ import annotations

from types import ModuleType


def of(cfg) -> ModuleType:
    """The task module of a config (or of a config.json's ``config`` dict)."""
    if cfg.get("task", "attention") == "histogram":
        from attnsim import histogram_sweep

        return histogram_sweep
    from attnsim import sweep

    return sweep
