"""ELS with a soft window against its definition, its invariants and its errors."""

import math

import pytest
import reference as ref
import torch

import elsmachine as em


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["fused", "explicit"])
@pytest.mark.parametrize("sigma", [0.6, 1.7])
def test_soft_els_matches_its_definition(data, padding, backend, sigma):
    Y, x = data(N=4, C=2, H=5, W=4, B=2, seed=6)
    m = em.make_machine("els-soft", Y, patch_size=3, padding=padding, backend=backend, sigma=sigma)
    for t in (0.15, 0.7):
        expect = ref.patch_machine("els", x, t, Y, 3, padding, sigma=sigma)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4
    k5 = m.denoise(x, 0.4, patch_size=5)  # the window follows the size of the call
    torch.testing.assert_close(k5, ref.patch_machine("els", x, 0.4, Y, 5, padding, sigma=sigma), rtol=0, atol=1e-12)


def test_one_sigma_per_step_infinity_is_els_and_the_trace_is_its_own(data):
    Y, x = data(N=5, C=1, H=5, W=5, B=3, seed=9)
    labels = torch.tensor([0, 1, 0, 1, 1])
    for cond in (None, labels):
        q = None if cond is None else torch.tensor([1, 0, 1])
        torch.testing.assert_close(
            em.make_machine("els-soft", Y, patch_size=5, labels=cond, sigma="inf").denoise(x, 0.5, q),
            em.make_machine("els", Y, patch_size=5, labels=cond).denoise(x, 0.5, q), rtol=0, atol=1e-12)
    sig = [0.5, 1.0, math.inf, 2.0]  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    m = em.make_machine("els-soft", Y, patch_size=3, sigma=sig)
    tt = torch.tensor([1.0, 0.5, 0.25])
    expect = torch.cat([ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y, 3, "zeros", sigma=v)
                        for b, v in enumerate([0.5, math.inf, 2.0])])
    got, tr = m.denoise_traced(x, tt)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-12)
    for b, v in enumerate([0.5, math.inf, 2.0]):
        _, top, ent = ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y, 3, "zeros", return_trace=True, sigma=v)
        assert torch.equal(tr.source_image[b], top[0, ..., 0]) and torch.equal(tr.source_pixel[b], top[0, ..., 1])
        torch.testing.assert_close(tr.effective[b].log(), ent[0], rtol=0, atol=1e-9)
    assert m.describe()["sigma"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": [0.5, 1.0, "inf", 2.0]}
    again = em.make_machine("els-soft", Y, patch_size=3, sigma=m.describe()["sigma"])  # a record builds it again
    torch.testing.assert_close(again.denoise(x, tt), expect, rtol=0, atol=1e-12)
    with pytest.warns(UserWarning, match="not a time of this per-step schedule"):
        m.denoise(x, 0.6)


def test_soft_els_refuses_bad_sigmas_and_box_only_backends(data):
    Y, _ = data(N=3, C=1, H=4, W=4, B=1, seed=2)
    for bad in (0, -1.0, float("nan"), True, "wide", [], "1,,2"):
        with pytest.raises(em.InputError, match="sigma"):
            em.make_machine("els-soft", Y, patch_size=3, sigma=bad)
    for backend in ("native", "triton"):
        with pytest.raises(em.InputError, match="no .* backend"):
            em.make_machine("els-soft", Y, patch_size=3, sigma=1.0, backend=backend)
    with pytest.raises(em.InputError, match="approx_radius"):
        em.make_machine("els-soft", Y, patch_size=3, sigma=1.0, approx_radius=1)
