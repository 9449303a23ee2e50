"""ELS with centred patches against its float64 definition, its limits and its errors."""

import pytest
import reference as ref
import torch

import elsmachine as em


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["fused", "explicit"])
@pytest.mark.parametrize("c", [0.5, 1.0])
def test_centred_els_matches_its_definition(data, padding, backend, c):
    Y, x = data(N=4, C=2, H=5, W=4, B=2, seed=11)
    m = em.make_machine("els-centred", Y, patch_size=3, padding=padding, backend=backend, centring=c)
    for t in (0.2, 0.8):
        expect = ref.patch_machine("els", x, t, Y, 3, padding, centring=c)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4
    torch.testing.assert_close(m.denoise(x, 0.4, patch_size=5),
                               ref.patch_machine("els", x, 0.4, Y, 5, padding, centring=c), rtol=0, atol=1e-12)


def test_one_centring_per_step_zero_is_els_and_the_trace_is_its_own(data):
    Y, x = data(N=5, C=1, H=5, W=5, B=3, seed=12)
    cs = [1.0, 0.0, 0.5, 0.25]  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    m = em.make_machine("els-centred", Y, patch_size=3, centring=cs)
    tt = torch.tensor([1.0, 0.75, 0.5])
    expect = torch.cat([ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y, 3, "zeros", centring=c)
                        for b, c in enumerate(cs[:3])])
    torch.testing.assert_close(m.denoise(x, tt), expect, rtol=0, atol=1e-12)
    assert m.describe()["centring"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": cs}
    zero = em.make_machine("els-centred", Y, patch_size=3)  # its default is ELS
    torch.testing.assert_close(zero.denoise(x, 0.5), em.ELSMachine(Y, patch_size=3).denoise(x, 0.5), rtol=0,
                               atol=1e-12)
    _, top, _ = ref.patch_machine("els", x, 0.5, Y, 3, "zeros", return_trace=True, centring=0.5)
    _, tr = em.make_machine("els-centred", Y, patch_size=3, centring=0.5).denoise_traced(x, 0.5)
    assert torch.equal(tr.source_image, top[..., 0]) and torch.equal(tr.source_pixel, top[..., 1])


def test_centring_refuses_what_it_cannot_mean(data):
    Y, _ = data(N=4, C=1, H=4, W=4, B=1)
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(em.InputError, match="centring"):
            em.make_machine("els-centred", Y, patch_size=3, centring=bad)
    with pytest.raises(em.InputError, match="no native backend"):
        em.make_machine("els-centred", Y, patch_size=3, backend="native")
    with pytest.raises(em.InputError, match="els-centred sets centring, so it has no bound"):
        em.make_machine("els-centred", Y, patch_size=3, subset=2)
