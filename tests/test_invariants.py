"""Invariants the machines must satisfy whatever their implementation (STYLE.md, habit 8)."""

import pytest
import reference as ref
import torch
from conftest import machine_options

import elsmachine as em
from elsmachine.engines.attention import attend

# IS has no displacement form: it always runs on the attention engine.
ENGINES = [(n, b) for n in ("ideal", "ls", "els") for b in ("native", "fused", "explicit") if (n, b) != ("ideal", "native")]


@pytest.mark.parametrize("name,backend", ENGINES)
@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_chunking_does_not_change_the_result(name, backend, padding):
    """A budget so small that keys are streamed in many chunks gives the same answer."""
    ds = em.load_dataset("mnist5k", per_class=13)  # 130 images: three blocks of the kernel, many key chunks
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kw = machine_options(name, padding=padding, patch_size=5, backend=backend)
    big = em.make_machine(name, ds.images, **kw)
    small = em.make_machine(name, ds.images, memory_budget=1 << 20, **kw)
    for t in (0.1, 0.8):
        # Chunks are merged exactly through the log-sum-exp; only rounding may differ.
        torch.testing.assert_close(small.denoise(x, t), big.denoise(x, t), rtol=0, atol=1e-10)


def test_engine_streaming_equals_one_softmax():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 7, 5, generator=g, dtype=torch.float64) * 4
    keys = torch.randn(3, 50, 5, generator=g, dtype=torch.float64) * 4
    logits = q @ keys.transpose(1, 2)
    w = torch.softmax(logits, -1)
    expect = w @ keys[:, :, 1:3]
    for backend in ("fused", "explicit"):
        for cut in ([50], [1, 49], [7, 13, 30], [25, 25]):
            chunks = torch.split(keys, cut, dim=1)
            res = attend(q, chunks, slice(1, 3), backend=backend, tile_elems=64)
            torch.testing.assert_close(res.out, expect, rtol=0, atol=1e-12)
            torch.testing.assert_close(res.lse, torch.logsumexp(logits, -1), rtol=0, atol=1e-12)
    res = attend(q, torch.split(keys, [7, 13, 30], dim=1), slice(1, 3), trace=True, tile_elems=64)
    assert torch.equal(res.source, logits.argmax(-1))
    torch.testing.assert_close(res.weight, w.max(-1).values, rtol=0, atol=1e-12)
    entropy = -(w * w.log()).sum(-1)
    torch.testing.assert_close(res.effective.log(), entropy, rtol=0, atol=1e-10)


def test_far_query_does_not_poison_the_batch():
    """Each query has its own running max: a query far from everything stays finite."""
    ds = em.load_dataset("mnist5k", limit=20)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float32)
    x[1] = 1e4
    for m in (em.IdealMachine(ds.images), em.ELSMachine(ds.images, patch_size=3)):
        out = m.denoise(x, 0.05)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[:1], m.denoise(x[:1], 0.05))


@pytest.mark.parametrize("name", ["ideal", "ls", "els"])
def test_batch_composition_does_not_matter(name, data):
    Y, x = data(N=5, H=6, W=7, B=3)
    m = em.make_machine(name, Y, **machine_options(name, patch_size=3))
    together = m.denoise(x, 0.4)
    for b in range(x.shape[0]):
        torch.testing.assert_close(together[b : b + 1], m.denoise(x[b : b + 1], 0.4), rtol=0, atol=1e-12)


def test_ls_with_a_window_covering_the_image_equals_is(data):
    Y, x = data(N=5, H=5, W=4, B=3)
    k = 2 * max(5, 4) - 1
    for t in (0.05, 0.5, 1.0):
        ls = em.LocalMachine(Y, patch_size=k, padding="zeros").denoise(x, t)
        torch.testing.assert_close(ls, em.IdealMachine(Y).denoise(x, t), rtol=0, atol=1e-12)


def test_boundary_broken_els_with_a_huge_window_equals_ls(data):
    """When no two pixels share a footprint, every pixel sees only its own position."""
    Y, x = data(N=5, H=5, W=4, B=3)
    k = 2 * 5 + 1
    torch.testing.assert_close(
        em.ELSMachine(Y, patch_size=k).denoise(x, 0.3), em.LocalMachine(Y, patch_size=k).denoise(x, 0.3), rtol=0, atol=1e-12
    )


def test_circular_els_over_the_whole_odd_image_is_the_equivariant_score_machine(data):
    """ES = IS over every circular shift of the training set."""
    Y, x = data(N=3, H=5, W=5, B=3)
    shifts = torch.cat([torch.roll(Y, (i, j), dims=(2, 3)) for i in range(5) for j in range(5)])
    for t in (0.1, 0.6):
        els = em.ELSMachine(Y, patch_size=5, padding="circular").denoise(x, t)
        torch.testing.assert_close(els, em.IdealMachine(shifts).denoise(x, t), rtol=0, atol=1e-12)


def test_boundary_broken_els_equals_circular_els_in_the_interior_when_candidates_agree():
    """On images that are constant, every patch of image n is the constant c_n, so interior
    pixels of zero-padded ELS and all pixels of circular ELS weigh the same candidates."""
    g = torch.Generator().manual_seed(5)
    Y = (torch.rand(4, 1, 1, 1, generator=g, dtype=torch.float64) * 2 - 1).expand(4, 1, 7, 8).contiguous()
    x = torch.randn(2, 1, 7, 8, generator=g, dtype=torch.float64)
    k, h = 3, 1
    zeros = em.ELSMachine(Y, patch_size=k, padding="zeros").denoise(x, 0.2)
    circ = em.ELSMachine(Y, patch_size=k, padding="circular").denoise(x, 0.2)
    torch.testing.assert_close(zeros[:, :, h:-h, h:-h], circ[:, :, h:-h, h:-h], rtol=0, atol=1e-12)
    assert (zeros[:, :, 0, :] - circ[:, :, 0, :]).abs().max() > 1e-6  # the border does differ


@pytest.mark.parametrize("machine", ["ls", "els"])
def test_circular_machines_commute_with_circular_shifts(machine, data):
    Y, x = data(N=5, H=6, W=7, B=3)
    m = em.make_machine(machine, Y, patch_size=3, padding="circular")
    shifted = torch.roll(x, (2, -3), dims=(2, 3))
    out = m.denoise(shifted, 0.3)
    if machine == "els":
        torch.testing.assert_close(out, torch.roll(m.denoise(x, 0.3), (2, -3), dims=(2, 3)), rtol=0, atol=1e-12)
    else:
        # LS is local but not equivariant: shifting the training set along with x restores it.
        m2 = em.make_machine(machine, torch.roll(Y, (2, -3), dims=(2, 3)), patch_size=3, padding="circular")
        torch.testing.assert_close(m2.denoise(shifted, 0.3), torch.roll(m.denoise(x, 0.3), (2, -3), dims=(2, 3)))


def test_zero_padded_els_is_translation_equivariant_in_the_interior():
    """Moving the whole content of an image inside a zero frame moves the ELS output with it."""
    g = torch.Generator().manual_seed(1)
    Y = torch.zeros(3, 1, 12, 12, dtype=torch.float64)
    Y[:, :, 3:9, 3:9] = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[:, :, 3:7, 3:7] = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    m = em.ELSMachine(Y, patch_size=3)
    out = m.denoise(x, 0.3)
    out_shift = m.denoise(torch.roll(x, (2, 1), dims=(2, 3)), 0.3)
    torch.testing.assert_close(out_shift[:, :, 4:10, 3:10], out[:, :, 2:8, 2:9], rtol=0, atol=1e-12)


def test_els_with_one_pixel_windows_agrees_across_paddings(data):
    Y, x = data(N=5, H=6, W=7, B=3)
    z = em.ELSMachine(Y, patch_size=1, padding="zeros").denoise(x, 0.5)
    c = em.ELSMachine(Y, patch_size=1, padding="circular").denoise(x, 0.5)
    torch.testing.assert_close(z, c, rtol=0, atol=1e-12)


def test_denoise_of_a_clean_training_image_at_small_t_returns_it(data):
    Y, _ = data(N=5, H=6, W=7, B=3)
    a, s = ref.coefficients(0.02)
    x = a * Y[1:2]
    for m in (em.IdealMachine(Y), em.LocalMachine(Y, patch_size=3), em.ELSMachine(Y, patch_size=3)):
        torch.testing.assert_close(m.denoise(x, 0.02), Y[1:2], rtol=0, atol=1e-8)
