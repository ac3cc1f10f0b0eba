"""The branches of fixed points, as data: where each starts, which overlaps it pins, what signs it.

theta = 0 and m = 0 are invariant subspaces of the fixed-point map (t -> -t; (h, xi, y) -> -(h, xi, y) at
m = 0, any A): an overlap pinned at 0 stays there exactly, round-off cannot grow along an unstable
direction, and the quadrature folds by the symmetry (``quadrature.quad_rule_folded``). The semantic branch
has m = 0 at its fixed points (docs/theory.md), so m is pinned there.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


class Branch(NamedTuple):
    """One branch of fixed points of the L = 2, rank-1 system.

    start: (q, m, V, theta) at the largest alpha of a continuation (docs/theory.md, "Branches").
    free: 1.0 where the iteration may move the overlap, 0.0 where it is pinned at its start value (0).
    signature: the overlap whose size defines the branch ("theta", "m" or "q"); the branch has collapsed
      where it vanishes (``saddle.signature_ok``), and the quadrature check compares it (``check``).
    """

    name: str
    start: tuple[float, float, float, float]
    free: tuple[float, float, float, float]
    signature: str


BRANCHES: dict[str, Branch] = {b.name: b for b in (
    Branch("semantic", (0.9068, 0.0, 14.575, 0.3472), (1.0, 0.0, 1.0, 1.0), "theta"),
    Branch("positional", (0.02068, 0.2, 14.575, 0.0), (1.0, 1.0, 1.0, 0.0), "m"),
    Branch("trivial", (0.02068, 0.0, 14.575, 0.0), (1.0, 0.0, 1.0, 0.0), "q"),
)}
NAMES = tuple(BRANCHES)


def get(name: str) -> Branch:
    """The branch called ``name``; ValueError (one line) for an unknown one."""
    if name not in BRANCHES:
        raise ValueError(f"branch={name!r} must be one of {NAMES}")
    return BRANCHES[name]


def starts(names) -> np.ndarray:
    """(P, 4) start points (q, m, V, theta) of the named branches."""
    return np.array([BRANCHES[b].start for b in names], np.float64).reshape(-1, 4)


def free_masks(names) -> np.ndarray:
    """(P, 4) free-overlap masks of the named branches."""
    return np.array([BRANCHES[b].free for b in names], np.float64).reshape(-1, 4)


def signature(df: pd.DataFrame) -> np.ndarray:
    """The overlap that defines each row's branch: theta (semantic), |m| (positional), q (trivial)."""
    col = df.branch.map(lambda b: BRANCHES[b].signature).to_numpy()
    return np.where(col == "theta", df.theta.abs(), np.where(col == "m", df.m.abs(), df.q))
