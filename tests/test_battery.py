"""One contract battery for every declared machine, driven by the registry: a machine is tested
the moment it declares itself, with no edit here."""

import json

import pytest
import torch

import elsmachine as em

H = W = 6
TIMES = [0.8, 0.6, 0.5, 0.3, 1e-3, 1e-9]  # every time the battery calls a machine at


def _build(name, Y, labels=None, dtype_budget=None):
    decl = em.MACHINES[name].declaration
    opts = {}
    if decl.has_patch_size:
        opts["patch_size"] = 3
    if decl.bench_options is not None:  # what only a network gives, as els bench stands it in
        opts |= decl.bench_options([3] * len(TIMES), TIMES, H, W)
    return em.make_machine(name, Y, labels=labels, **opts)


@pytest.fixture(scope="module")
def bank():
    g = torch.Generator().manual_seed(3)
    Y = torch.rand(8, 1, H, W, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(3, 1, H, W, generator=g, dtype=torch.float64)
    return Y, x, torch.tensor([0, 1] * 4)


@pytest.mark.parametrize("name", list(em.MACHINES))
def test_every_machine_keeps_the_contract(name, bank):
    Y, x, labels = bank
    m = _build(name, Y)
    out = m.denoise(x, 0.6)
    assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()
    # batch independence: each row as it is alone
    for b in range(x.shape[0]):
        torch.testing.assert_close(m.denoise(x[b : b + 1], 0.6), out[b : b + 1], rtol=0, atol=1e-10)
    # float32 follows float64 (from the same query values, which seed a machine's own draws)
    x32 = x.float()
    m32 = _build(name, Y.float())
    assert (m32.denoise(x32, 0.6).double() - m.denoise(x32.double(), 0.6)).abs().max() < 1e-3
    # finite at the smallest times
    for t in (1e-9, 1e-3):
        assert torch.isfinite(m.denoise(x, t)).all(), t
    # class-conditional: each row against its own class
    mc = _build(name, Y, labels)
    q = torch.tensor([1, 0, 1])
    assert torch.isfinite(mc.denoise(x, 0.6, q)).all()
    # what describe() records is data: JSON, with the name and the training set's size
    d = json.loads(json.dumps(m.describe()))
    assert d["machine"] == name and d["n_train"] == Y.shape[0]


@pytest.mark.parametrize("name", [n for n, c in em.MACHINES.items() if c.declaration.reduces_to])
def test_every_candidate_is_the_machine_it_reduces_to_at_its_defaults(name, bank):
    Y, x, _ = bank
    other = em.MACHINES[name].declaration.reduces_to
    for t in (0.3, 0.8):
        torch.testing.assert_close(_build(name, Y).denoise(x, t), _build(other, Y).denoise(x, t), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", [n for n, c in em.MACHINES.items() if c.declaration.traceable])
def test_every_traceable_machine_traces_each_pixel(name, bank):
    Y, x, _ = bank
    out, tr = _build(name, Y).denoise_traced(x, 0.5)
    for f in ("source_image", "source_pixel", "weight", "effective"):
        assert getattr(tr, f).shape == (x.shape[0], H, W), f
    assert int(tr.source_image.min()) >= 0 and int(tr.source_image.max()) < Y.shape[0]
    assert int(tr.source_pixel.max()) < H * W and bool((tr.weight > 0).all() and (tr.weight <= 1 + 1e-12).all())


@pytest.mark.parametrize("name", [n for n, c in em.MACHINES.items() if not c.declaration.traceable])
def test_a_machine_that_cannot_be_traced_says_so(name, bank):
    Y, x, _ = bank
    with pytest.raises(em.InputError, match="cannot be traced"):
        _build(name, Y).denoise_traced(x, 0.5)
