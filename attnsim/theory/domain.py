"""What the L = 2, rank-1 theory covers, and the positional matrices A it accepts."""

from __future__ import annotations

import numpy as np

from attnsim.config import NAMED_A

STANDARD_A = NAMED_A["standard"]
SECOND_A = NAMED_A["second"]

COVERS = "the theory covers L = 2, r = r_t = 1, sigma > 0, a row-stochastic 2x2 A, alpha > 0"


def check_supported(L, r, r_t, sigma, A, alphas) -> None:
    """Raise ``ValueError`` (one line) unless the point is inside what this solver covers."""
    problem = f"L={L}" if L != 2 else f"r={r}, r_t={r_t}" if r != 1 or r_t != 1 else point_problem(2, sigma, A, alphas)
    if problem:
        raise ValueError(f"{problem} is not supported: {COVERS}")


def point_problem(L: int, sigma, A, alphas) -> str | None:
    """What is wrong with (sigma, A, alphas) for L tokens (sigma > 0, A an L x L row-stochastic matrix, every
    alpha > 0), as "field=value", or None."""
    sig = np.atleast_1d(np.asarray(sigma, dtype=float))
    A_arr = np.asarray(A, dtype=float)
    al = np.atleast_1d(np.asarray(alphas, dtype=float))
    if not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        return f"sigma={sigma}"
    if A_arr.shape != (L, L) or np.any(A_arr < 0) or not np.allclose(A_arr.sum(1), 1.0, atol=1e-9):
        return f"A={A_arr.tolist()}"
    if al.size == 0 or not np.all(np.isfinite(al)) or np.any(al <= 0):
        return f"alphas={al.tolist()}"
    return None


def as_A(A) -> np.ndarray:
    """A as a float64 2x2 array; ValueError (one line) for another shape."""
    A_2x2 = np.asarray(A, dtype=np.float64)
    if A_2x2.shape != (2, 2):
        raise ValueError(f"A={A_2x2.tolist()} must be 2x2: {COVERS}")
    return A_2x2


def swap_symmetric(A_2x2) -> bool:
    """Whether the problem is symmetric under swapping the two tokens (A_11 = A_22)."""
    return bool(A_2x2[0, 0] == A_2x2[1, 1])
