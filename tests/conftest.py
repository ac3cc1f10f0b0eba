import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _no_x64_leak():
    """Every test must leave the process in float32 (x64 only under scoped jax.enable_x64)."""
    yield
    assert jax.numpy.zeros(1).dtype == jax.numpy.float32
