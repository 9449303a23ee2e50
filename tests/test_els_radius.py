"""ELS within a radius per step against its definition, its limits (LS, ELS) and its errors."""

import math

import pytest
import reference as ref
import torch

import elsmachine as em
from elsmachine.machines.els_radius import RadiusELSMachine


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["native", "fused", "explicit"])
@pytest.mark.parametrize("k,radius", [(3, 1), (3, 2), (5, 1)])
def test_els_radius_matches_its_definition(data, padding, backend, k, radius):
    Y, x = data(N=3, C=2, H=7, W=6, B=2, seed=radius + k)
    m = em.make_machine("els-radius", Y, patch_size=k, padding=padding, backend=backend, radii=radius)
    for t in (0.15, 0.7):
        expect = ref.patch_machine("els", x, t, Y, k, padding, radius=radius)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_radius_zero_is_ls_and_inf_is_els(data, padding):
    Y, x = data(N=4, C=1, H=6, W=6, B=2, seed=2)
    for k in (3, 5):
        ls = em.make_machine("ls", Y, patch_size=k, padding=padding).denoise(x, 0.3)
        els = em.make_machine("els", Y, patch_size=k, padding=padding).denoise(x, 0.3)
        r0 = em.make_machine("els-radius", Y, patch_size=k, padding=padding, radii=0)
        torch.testing.assert_close(r0.denoise(x, 0.3), ls, rtol=0, atol=1e-12)
        for wide in (math.inf, "inf", 5, 40):  # a radius as wide as the image is ELS too
            m = em.make_machine("els-radius", Y, patch_size=k, padding=padding, radii=wide)
            torch.testing.assert_close(m.denoise(x, 0.3), els, rtol=0, atol=1e-12)


def test_one_radius_per_step_is_looked_up_by_t_with_trace_and_classes(data):
    Y, x = data(N=6, C=1, H=6, W=5, B=3, seed=4)
    labels = torch.tensor([0, 1] * 3)
    q = torch.tensor([1, 0, 0])
    radii = [0, "inf", 1, 2]  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    m = em.make_machine("els-radius", Y, patch_size=[5, 3, 3, 3], radii=radii, labels=labels)
    tt = torch.tensor([1.0, 0.75, 0.5])  # one batch, three radii
    expect = torch.cat([ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y[labels == q[b]], k, "zeros", radius=r)
                        for b, (k, r) in enumerate([(5, 0), (3, math.inf), (3, 1)])])
    got, tr = m.denoise_traced(x, tt, q)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-12)
    _, top, _ = ref.patch_machine("els", x[2:3], 0.5, Y[labels == 0], 3, "zeros", return_trace=True, radius=1)
    assert torch.equal(tr.source_pixel[2], top[0, ..., 1])
    rows, cols = tr.source_pixel[2] // 5, tr.source_pixel[2] % 5  # every pixel's best patch lies within 1
    assert int((rows - torch.arange(6).view(-1, 1)).abs().max()) <= 1
    assert int((cols - torch.arange(5).view(1, -1)).abs().max()) <= 1
    for k, got in zip([3, 5], m.denoise_sizes(x, 0.25, [3, 5])):
        torch.testing.assert_close(got, ref.patch_machine("els", x, 0.25, Y, k, "zeros", radius=2), rtol=0, atol=1e-12)
    with pytest.warns(UserWarning, match="not a time of this per-step schedule"):
        m.denoise(x, 0.6)
    assert m.describe()["radii"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": [0, "inf", 1, 2]} and m.describe()["machine"] == "els-radius"


def test_els_radius_refuses_bad_radii_and_modes_it_has_no_meaning_for(data):
    Y, _ = data(N=3, C=1, H=5, W=5, B=1, seed=1)
    for bad in (-1, 1.5, True, "near", [], "1,,2", float("nan")):
        with pytest.raises(em.InputError, match="radii"):
            em.make_machine("els-radius", Y, patch_size=3, radii=bad)
    with pytest.raises(em.InputError, match="no approx_radius"):
        em.make_machine("els-radius", Y, patch_size=3, radii=1, approx_radius=1)
    with pytest.raises(em.InputError, match="els-radius machine has no approx_radius"):
        RadiusELSMachine(Y, patch_size=3, radii=1, approx_radius=1)
    with pytest.raises(em.InputError, match="no bound"):
        em.make_machine("els-radius", Y, patch_size=3, radii=1, subset=2)
    with pytest.raises(em.InputError, match="no triton backend"):
        em.make_machine("els-radius", Y, patch_size=3, radii=1, backend="triton")


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["auto", "fused"])
def test_wiener_els_radius_joins_the_wiener_filter_to_els_within_a_radius(data, padding, backend):
    Y, x = data(N=6, C=2, H=6, W=5, B=3, seed=9)
    labels = torch.tensor([0, 1] * 3)
    q = torch.tensor([1, 0, 1])
    lam, radii = [1.0, 0.3, 0.0, 0.6], [1, 1, 2, "inf"]  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    m = em.make_machine("wiener-els-radius", Y, patch_size=3, padding=padding, backend=backend, labels=labels,
                        wiener_weight=lam, radii=radii)
    tt = torch.tensor([0.75, 0.5, 0.25])  # one batch, three weights and radii
    expect = torch.cat([
        w * ref.wiener(x[b : b + 1], float(tt[b]), Y[labels == q[b]])
        + (1 - w) * ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y[labels == q[b]], 3, padding, radius=r)
        for b, (w, r) in enumerate([(0.3, 1), (0.0, 2), (0.6, math.inf)])])
    torch.testing.assert_close(m.denoise(x, tt, q), expect, rtol=0, atol=1e-10)
    for k, got in zip((5, 3), m.denoise_sizes(x, 0.75, [5, 3], q)):
        joined = torch.cat([0.3 * ref.wiener(x[b : b + 1], 0.75, Y[labels == q[b]]) + 0.7 * ref.patch_machine(
            "els", x[b : b + 1], 0.75, Y[labels == q[b]], k, padding, radius=1) for b in range(3)])
        torch.testing.assert_close(got, joined, rtol=0, atol=1e-10)
    torch.testing.assert_close(m.denoise(x, 1.0, q), em.make_machine("wiener", Y, labels=labels).denoise(x, 1.0, q),
                               rtol=0, atol=1e-12)
    plain = {"wiener-els": {"wiener_weight": 0.4}, "els-radius": {"radii": 1}}
    for name, opts in plain.items():  # inf radius is wiener-els, weight 0 els-radius
        both = em.make_machine("wiener-els-radius", Y, patch_size=3, padding=padding, **opts)
        torch.testing.assert_close(both.denoise(x, 0.5), em.make_machine(name, Y, patch_size=3, padding=padding,
                                                                          **opts).denoise(x, 0.5), rtol=0, atol=1e-12)
    assert m.describe()["radii"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": [1, 1, 2, "inf"]} and m.describe()["wiener_weight"]["values"] == lam
    with pytest.raises(em.InputError, match="radii"):
        em.make_machine("wiener-els-radius", Y, patch_size=3, radii=-2)
