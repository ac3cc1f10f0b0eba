"""attnsim: tied low-rank dot-product attention, simulated and solved.

Glossary (meanings exactly as in the paper, Cui et al. NeurIPS 2024, and ``MODEL.md``):

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
