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


def _folder_digest(folder):
    """Every file under ``folder`` with its bytes' SHA-256, to see that no test changed a shared folder."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_network(tmp_path_factory):
    """A checkpoint folder written by ``train``: the smallest class-conditional ResNet (width 4,
    depth 1, 10 classes, embedding 8), one epoch of batch 10 on one bundled digit per class. Trained
    once per session for the tests that hand a network to a command (``--model``); they read it and
    write elsewhere, which the teardown checks."""
    import elsmachine as em
    from elsmachine.networks import NetConfig
    from elsmachine.networks.training import TrainConfig, train

    folder = tmp_path_factory.mktemp("tiny-network") / "net"
    train(NetConfig(arch="resnet", width=4, depth=1, num_classes=10, emb_dim=8), TrainConfig(epochs=1, batch_size=10),
          em.load_dataset("mnist5k", per_class=1), folder)
    before = _folder_digest(folder)
    yield folder
    assert _folder_digest(folder) == before, "a test wrote into the shared tiny network's folder"
