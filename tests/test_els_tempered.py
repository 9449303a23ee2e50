"""ELS at a temperature per step against its definition, its invariants and its errors."""

import pytest
import reference as ref
import torch

import elsmachine as em


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["native", "fused", "explicit"])
@pytest.mark.parametrize("temperature", [0.3, 2.5])
def test_tempered_els_matches_its_definition(data, padding, backend, temperature):
    Y, x = data(N=4, C=2, H=5, W=4, B=2, seed=5)
    m = em.make_machine("els-tempered", Y, patch_size=3, padding=padding, backend=backend, temperatures=temperature)
    for t in (0.15, 0.7):
        expect = ref.patch_machine("els", x, t, Y, 3, padding, temperature=temperature)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4


def test_one_per_step_is_looked_up_by_t_and_one_is_els(data):
    Y, x = data(N=5, C=1, H=5, W=5, B=3, seed=8)
    Ts = [4.0, 2.0, 1.0, 0.5]  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    m = em.make_machine("els-tempered", Y, patch_size=3, temperatures=Ts)
    tt = torch.tensor([1.0, 0.5, 0.25])
    expect = torch.cat([ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y, 3, "zeros", temperature=T)
                        for b, T in enumerate([4.0, 1.0, 0.5])])
    torch.testing.assert_close(m.denoise(x, tt), expect, rtol=0, atol=1e-12)
    sizes = m.denoise_sizes(x, 0.75, [3, 5])  # the several-size pass is tempered too
    for k, got in zip([3, 5], sizes):
        torch.testing.assert_close(got, ref.patch_machine("els", x, 0.75, Y, k, "zeros", temperature=2.0),
                                   rtol=0, atol=1e-12)
    with pytest.warns(UserWarning, match="not a time of this per-step schedule"):
        m.denoise(x, 0.6)
    labels = torch.tensor([0, 1, 0, 1, 1])
    for cond in (None, labels):
        q = None if cond is None else torch.tensor([1, 0, 1])
        torch.testing.assert_close(
            em.make_machine("els-tempered", Y, patch_size=3, labels=cond, temperatures="1,1").denoise(x, 0.5, q),
            em.make_machine("els", Y, patch_size=3, labels=cond).denoise(x, 0.5, q), rtol=0, atol=0)
    assert m.describe()["temperatures"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": Ts} and m.describe()["machine"] == "els-tempered"


def test_tempered_els_is_traced_and_refuses_bad_temperatures(data):
    Y, x = data(N=4, C=1, H=4, W=4, B=2, seed=3)
    _, tr = em.make_machine("els-tempered", Y, patch_size=3, temperatures=0.5).denoise_traced(x, 0.3)
    _, want = em.make_machine("els", Y, patch_size=3).denoise_traced(x, 0.3)
    assert torch.equal(tr.source_image, want.source_image) and torch.equal(tr.source_pixel, want.source_pixel)
    for bad in (0, -1.0, float("inf"), True, "hot", [], "1,,2"):
        with pytest.raises(em.InputError, match="temperatures"):
            em.make_machine("els-tempered", Y, patch_size=3, temperatures=bad)
