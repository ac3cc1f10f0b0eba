"""The linear positional baseline f_B(x) = B x at its population optimum B = E[T]."""

from __future__ import annotations

import numpy as np

from attnsim.theory.domain import STANDARD_A, as_A


def linear_baseline_error(omega, sigma=0.5, A=STANDARD_A, quad_order=80):
    """Population test error of the optimal linear positional baseline B = E[T].

    test_error_lin = sigma^2 (E|T|_F^2 - |E T|_F^2) / 2 with t ~ N(0, rho I_2), rho = sigma^2. Only the
    variance of T enters, (1 - omega)^2 sum_ij Var s_ij(t), so A drops out (it is validated only).
    Computed with a 2-D Gauss-Hermite rule (the integrand is smooth; 80 nodes are converged to 1e-15).

    Args:
      omega: float or array (any shape). sigma: float or array broadcastable with omega.
    Returns: float, or float64 array of the broadcast shape.
    """
    as_A(A)
    om, sig = np.broadcast_arrays(np.asarray(omega, np.float64), np.asarray(sigma, np.float64))
    x_K, w_K = np.polynomial.hermite_e.hermegauss(quad_order)
    w_K = w_K / w_K.sum()
    t1_KK, t2_KK = np.meshgrid(x_K, x_K, indexing="ij")
    w_KK = np.outer(w_K, w_K)
    out = np.empty(om.shape)
    for idx in np.ndindex(om.shape):
        s = sig[idx]  # teacher field std = sqrt(rho) = sigma
        a1 = (s * t1_KK) * (s * t1_KK - s * t2_KK)
        s11 = 1.0 / (1.0 + np.exp(-a1))
        s22 = 1.0 / (1.0 + np.exp(a1 - (s * t1_KK - s * t2_KK) ** 2))  # a2 = t2 (t2 - t1) = (t1-t2)^2 - a1
        var = 0.0
        for s_ij in (s11, s22):  # rows sum to 1: each diagonal entry's variance appears twice
            mean = np.sum(w_KK * s_ij)
            var += 2.0 * np.sum(w_KK * (s_ij - mean) ** 2)
        out[idx] = s**2 * (1.0 - om[idx]) ** 2 * var / 2.0
    return float(out) if out.ndim == 0 else out
