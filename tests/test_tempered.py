"""The tempered ideal machine against its definition, its invariants and its errors."""

import pytest
import reference as ref
import torch

import elsmachine as em


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("t", [0.1, 0.6])
def test_tempered_matches_its_definition(data, temperature, t):
    Y, x = data(N=6, C=2, H=4, W=5, B=3, seed=11)
    m = em.make_machine("tempered", Y, temperature=temperature)
    expect = ref.tempered(x, t, Y, temperature)
    torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
    assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4


def test_temperature_one_is_the_ideal_machine_and_a_low_one_the_nearest_image(data):
    Y, x = data(N=7, C=1, H=5, W=5, B=4, seed=2)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 1])
    q = torch.tensor([1, 0, 0, 1])
    for cond in (None, labels):
        ql = None if cond is None else q
        torch.testing.assert_close(em.make_machine("tempered", Y, labels=cond).denoise(x, 0.4, labels=ql),
                                   em.make_machine("ideal", Y, labels=cond).denoise(x, 0.4, labels=ql), rtol=0, atol=0)
    cold = em.make_machine("tempered", Y, temperature=1e-6).denoise(x, 0.9)
    torch.testing.assert_close(cold, em.make_machine("nearest", Y).denoise(x, 0.9), rtol=0, atol=1e-12)


def test_tempered_is_declared_traced_and_refuses_bad_temperatures(data):
    Y, x = data(N=5, C=1, H=4, W=4, B=2, seed=3)
    assert "tempered" in em.MACHINES and em.MACHINES["tempered"].declaration.options[0].name == "temperature"
    _, tr = em.make_machine("tempered", Y, temperature=0.5).denoise_traced(x, 0.3)
    _, want = em.make_machine("ideal", Y).denoise_traced(x, 0.3)
    assert torch.equal(tr.source_image, want.source_image)  # the best image does not depend on T
    assert em.make_machine("tempered", Y, temperature=2.0).describe()["temperature"] == 2.0
    for bad in (0, -1.0, float("inf"), True, "hot"):
        with pytest.raises(em.InputError, match="temperature must be a positive number"):
            em.make_machine("tempered", Y, temperature=bad)
    with pytest.raises(em.InputError, match="tempered machine .*has no patch_size"):
        em.make_machine("tempered", Y, patch_size=3)
