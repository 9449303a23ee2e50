"""The Wiener filter joined to ELS against its definition, its limits and its errors."""

import pytest
import reference as ref
import torch

import elsmachine as em


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["auto", "fused"])
def test_wiener_els_is_the_convex_combination_of_its_parts(data, padding, backend):
    Y, x = data(N=6, C=2, H=4, W=5, B=2, seed=3)
    m = em.make_machine("wiener-els", Y, patch_size=3, padding=padding, backend=backend, wiener_weight=0.3)
    for t in (0.2, 0.9):
        expect = 0.3 * ref.wiener(x, t, Y) + 0.7 * ref.patch_machine("els", x, t, Y, 3, padding)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-10)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4
        for k, got in zip((5, 3), m.denoise_sizes(x, t, [5, 3])):  # one pass over the sizes, joined once
            joined = 0.3 * ref.wiener(x, t, Y) + 0.7 * ref.patch_machine("els", x, t, Y, k, padding)
            torch.testing.assert_close(got, joined, rtol=0, atol=1e-10)


def test_weights_per_step_and_per_class_reach_both_limits(data):
    Y, x = data(N=8, C=1, H=4, W=4, B=3, seed=5)
    labels = torch.tensor([0, 1] * 4)
    q = torch.tensor([1, 0, 1])
    lam = [1.0, 0.5, 0.0, 0.25]  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    m = em.make_machine("wiener-els", Y, patch_size=3, labels=labels, wiener_weight=lam)
    tt = torch.tensor([1.0, 0.5, 0.25])
    expect = torch.cat([
        w * ref.wiener(x[b : b + 1], float(tt[b]), Y[labels == q[b]])
        + (1 - w) * ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y[labels == q[b]], 3, "zeros")
        for b, w in enumerate([1.0, 0.0, 0.25])])
    torch.testing.assert_close(m.denoise(x, tt, q), expect, rtol=0, atol=1e-10)
    for got, k in zip(m.denoise_sizes(x, tt, [3, 5], q), (3, 5)):
        torch.testing.assert_close(got, m.denoise(x, tt, q, patch_size=k), rtol=0, atol=1e-12)
    torch.testing.assert_close(em.make_machine("wiener-els", Y, patch_size=3, wiener_weight=1).denoise(x, 0.4),
                               em.make_machine("wiener", Y).denoise(x, 0.4), rtol=0, atol=1e-12)
    torch.testing.assert_close(em.make_machine("wiener-els", Y, patch_size=3).denoise(x, 0.4),
                               em.make_machine("els", Y, patch_size=3).denoise(x, 0.4), rtol=0, atol=0)
    assert m.describe()["wiener_weight"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": lam}
    assert not m.traceable and m.declaration.candidate


def test_wiener_els_refuses_weights_outside_the_unit_interval(data):
    Y, _ = data(N=3, C=1, H=4, W=4, B=1, seed=2)
    for bad in (-0.1, 1.5, float("nan"), True, "half", []):
        with pytest.raises(em.InputError, match="wiener_weight"):
            em.make_machine("wiener-els", Y, patch_size=3, wiener_weight=bad)
    with pytest.raises(em.InputError, match="cannot be traced"):
        em.make_machine("wiener-els", Y, patch_size=3).denoise_traced(Y[:1], 0.5)
