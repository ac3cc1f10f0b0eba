import os

import jax
import pytest

# In-process `attnsim` commands keep no compiled programs on disk (the user's cache stays untouched).
os.environ.setdefault("ATTNSIM_COMPILATION_CACHE", "0")

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _no_x64_leak():
    """Every test must leave the process in float32 (x64 only under scoped jax.enable_x64)."""
    yield
    assert jax.numpy.zeros(1).dtype == jax.numpy.float32
