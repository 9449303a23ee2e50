"""Shared test helpers: small random training sets and queries, and the bundled data."""

import os

# The GPU kernel's tests run it in Triton's interpreter on CPU tensors; Triton reads this when it
# is first imported, which other libraries (torch's compiler, diffusers) may do first.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def random_data(N=4, C=1, H=5, W=6, B=2, seed=0):
    """Training images Y [N, C, H, W] uniform in [-1, 1] and queries x [B, C, H, W] ~ N(0, 1),
    float64, from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.rand(N, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    return Y, x


def machine_options(name, **kw):
    """Keep, of ``kw``, the options machine ``name`` has (IS has no padding or patch size)."""
    from elsmachine.machines import options_of

    return {k: v for k, v in kw.items() if k in options_of(name)}


@pytest.fixture
def data():
    """:func:`random_data`, as a fixture."""
    return random_data


@pytest.fixture(scope="session")
def mnist():
    """The bundled 5,000 digits, loaded once per session."""
    import elsmachine as em

    return em.load_dataset("mnist5k")
