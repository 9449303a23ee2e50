"""Smoothed closed-form diffusion against its definition, its limits and its determinism."""

import pytest
import reference as ref
import torch

import elsmachine as em


def smoothed(m, x, t, Y, k=None):
    """The mean over the machine's own draws of IS (or IS over the k nearest) at x + std z, in float64."""
    a, s = ref.coefficients(t)
    out = []
    for b in range(x.shape[0]):
        xs = x[b : b + 1].double() + m.smoothing_std * m.perturbations(x[b], t)
        if k is None:
            out.append(ref.ideal(xs, t, Y).mean(0, keepdim=True))
            continue
        rows = []
        for q in xs:
            d = torch.tensor([float(((q - a * Y[n].double()) ** 2).sum()) for n in range(Y.shape[0])],
                             dtype=torch.float64)
            near = sorted(range(Y.shape[0]), key=lambda n: (float(d[n]), n))[:k]
            w = torch.softmax(torch.tensor([-float(d[n]) / (2 * s * s) for n in near], dtype=torch.float64), 0)
            rows.append(sum(w[i] * Y[n].double() for i, n in enumerate(near)))
        out.append(torch.stack(rows).mean(0, keepdim=True))
    return torch.cat(out)


@pytest.mark.parametrize("neighbours", [None, 3])
def test_smoothed_matches_its_definition(data, neighbours):
    Y, x = data(N=7, C=2, H=4, W=4, B=2, seed=3)
    x = x.float().double()  # a query its float32 copy equals: the same draws
    m = em.make_machine("smoothed", Y, smoothing_std=0.3, num_noise=4, neighbours=neighbours, seed=1)
    for t in (0.2, 0.8):
        expect = smoothed(m, x, t, Y, neighbours)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-10)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4


def test_zero_smoothing_is_is_and_draws_do_not_depend_on_the_batch_or_chunks(data):
    Y, x = data(N=9, C=1, H=4, W=4, B=3, seed=4)
    torch.testing.assert_close(em.make_machine("smoothed", Y, smoothing_std=0).denoise(x, 0.5),
                               em.make_machine("ideal", Y).denoise(x, 0.5), rtol=0, atol=0)
    labels = torch.tensor([0, 1, 2] * 3)
    q = torch.tensor([1, 1, 0])
    m = em.make_machine("smoothed", Y, labels=labels, smoothing_std=0.2, num_noise=5, seed=2)
    whole = m.denoise(x, 0.6, q)
    for b in range(3):
        torch.testing.assert_close(m.denoise(x[b : b + 1], 0.6, q[b : b + 1]), whole[b : b + 1], rtol=0, atol=1e-12)
    Yb, xb = data(N=100, C=1, H=32, W=32, B=2, seed=5)  # 1 MiB holds keys of 32 such images at a time
    for k in (None, 4):
        big = em.make_machine("smoothed", Yb, smoothing_std=0.2, num_noise=3, neighbours=k).denoise(xb, 0.6)
        tiny = em.make_machine("smoothed", Yb, smoothing_std=0.2, num_noise=3, neighbours=k, memory_budget=1 << 20)
        torch.testing.assert_close(tiny.denoise(xb, 0.6), big, rtol=0, atol=1e-12)
    other = em.make_machine("smoothed", Y, labels=labels, smoothing_std=0.2, num_noise=5, seed=3)
    assert not torch.equal(other.denoise(x, 0.6, q), whole)
    assert m.describe()["smoothing_std"] == 0.2 and m.describe()["num_noise"] == 5


def test_smoothed_refuses_bad_options(data):
    Y, _ = data(N=4, C=1, H=4, W=4, B=1, seed=1)
    for bad in ({"smoothing_std": -0.1}, {"smoothing_std": float("nan")}, {"num_noise": 0}, {"neighbours": 0},
                {"seed": -2}):
        with pytest.raises(em.InputError):
            em.make_machine("smoothed", Y, **bad)
    with pytest.raises(em.InputError, match="cannot be traced"):
        em.make_machine("smoothed", Y).denoise_traced(Y[:1], 0.5)
