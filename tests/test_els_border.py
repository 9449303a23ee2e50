"""ELS with a patch size of its own at the border against its definition and its errors."""

import pytest
import reference as ref
import torch

import elsmachine as em


def border_els(x, t, Y, k, kb):
    """Each pixel from the brute-force ELS at its own size: kb where its k window crosses the edge."""
    H, W = x.shape[2:]
    inner, outer = ref.patch_machine("els", x, t, Y, k, "zeros"), ref.patch_machine("els", x, t, Y, kb, "zeros")
    h = k // 2
    out = inner.clone()
    for i in range(H):
        for j in range(W):
            if min(i, j, H - 1 - i, W - 1 - j) < h:
                out[..., i, j] = outer[..., i, j]
    return out


@pytest.mark.parametrize("backend", ["auto", "fused"])
def test_els_border_matches_its_definition(data, backend):
    Y, x = data(N=4, C=2, H=6, W=5, B=2, seed=7)
    m = em.make_machine("els-border", Y, patch_size=3, border_patch_size=5, backend=backend)
    for t in (0.25, 0.8):
        expect = border_els(x, t, Y, 3, 5)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4
    got = m.denoise_sizes(x, 0.5, [5, 1])
    torch.testing.assert_close(got[0], border_els(x, 0.5, Y, 5, 5), rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], ref.patch_machine("els", x, 0.5, Y, 1, "zeros"), rtol=0, atol=1e-12)


def test_border_schedule_per_step_trace_and_classes(data):
    Y, x = data(N=6, C=1, H=5, W=5, B=3, seed=1)
    labels = torch.tensor([0, 1] * 3)
    q = torch.tensor([1, 1, 0])
    m = em.make_machine("els-border", Y, patch_size=[5, 3, 3, 3], border_patch_size=[3, 1, 5, 3], labels=labels)
    tt = torch.tensor([1.0, 0.75, 0.5])  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    expect = torch.cat([border_els(x[b : b + 1], float(tt[b]), Y[labels == q[b]], k, kb)
                        for b, (k, kb) in enumerate([(5, 3), (3, 1), (3, 5)])])
    got, tr = m.denoise_traced(x, tt, q)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-12)
    _, top5, _ = ref.patch_machine("els", x[2:3], 0.5, Y[labels == 0], 5, "zeros", return_trace=True)
    _, top3, _ = ref.patch_machine("els", x[2:3], 0.5, Y[labels == 0], 3, "zeros", return_trace=True)
    ring = torch.zeros(5, 5, dtype=torch.bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    top = torch.where(ring, top5[0, ..., 1], top3[0, ..., 1])
    assert torch.equal(tr.source_pixel[2], top)
    plain = em.make_machine("els", Y, patch_size=3).denoise(x, 0.5)
    torch.testing.assert_close(em.make_machine("els-border", Y, patch_size=3).denoise(x, 0.5), plain, rtol=0, atol=0)
    assert m.describe()["border_patch_size"]["sizes"] == [3, 1, 5, 3]


def test_els_border_refuses_bad_sizes_and_circular_padding(data):
    Y, _ = data(N=3, C=1, H=4, W=4, B=1, seed=2)
    for bad in (2, 0, "3,x", 1.5):
        with pytest.raises(em.InputError, match="border_patch_size"):
            em.make_machine("els-border", Y, patch_size=3, border_patch_size=bad)
    with pytest.raises(em.InputError, match="circular image has no border"):
        em.make_machine("els-border", Y, patch_size=3, padding="circular")
