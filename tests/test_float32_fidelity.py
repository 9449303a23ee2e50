"""float32 machines against float64 where rounding is at its worst: noisy images midway between
two training images of a class, late in sampling (logits scale as 1 / s^2, and two candidates
share the weight, so a rounded logit moves the result). IS computes its logits by one matrix
product, an expanded square; its near-max candidates are recomputed in float64
(machines/ideal.py), so it matches a float64 softmax to 1e-5 given the same float32 inputs and
coefficients."""

import math

import pytest
import torch

import elsmachine as em

TIMES = (1.0, 0.5, 0.2, 0.05, 0.02, 0.005)


@pytest.fixture(scope="module")
def between():
    ds = em.load_dataset("mnist5k")
    keep = torch.cat([torch.nonzero(ds.labels == c).flatten()[:60] for c in range(4)])
    Y, labels = ds.images[keep].float(), ds.labels[keep]
    first = torch.tensor([60 * c for c in range(4)])
    return Y, labels, first, first + 1


def _query(Y, i, j, t, schedule, seed=0):
    a, s = (float(v) for v in schedule.coefficients(torch.tensor([t], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)))
    g = torch.Generator().manual_seed(seed)
    mid = 0.5 * (Y[i].double() + Y[j].double())
    return (a * mid + 0.01 * s * torch.randn(mid.shape, generator=g, dtype=torch.float64)).float()


def _ideal64(x, a, s, Y):
    """IS in float64 with the float32 coefficients the machine uses: a plain softmax."""
    d = ((x.double()[:, None] - a.double().view(-1, 1, 1, 1, 1) * Y.double()[None]) ** 2).flatten(2).sum(-1)
    w = torch.softmax(-d / (2 * s.double().view(-1, 1) ** 2), dim=1)
    return torch.einsum("bn,nchw->bchw", w, Y.double())


def test_ideal_in_float32_matches_a_float64_softmax_late_in_sampling(between):
    Y, labels, i, j = between
    sched = em.CosineSchedule()
    m = em.make_machine("ideal", Y, labels=labels)
    for t in TIMES:
        x = _query(Y, i, j, t, sched)
        a, s = sched.coefficients(torch.full((4,), t, dtype=torch.float64), x)
        out = m.denoise(x, t, labels[i])
        ref = torch.cat([_ideal64(x[b : b + 1], a[b : b + 1], s[b : b + 1], Y[labels == labels[i[b]]])
                         for b in range(4)])
        assert (out.double() - ref).abs().max() < 1e-5, t


def test_ideal_traces_the_same_image_as_float64(between):
    Y, labels, i, j = between
    sched = em.CosineSchedule()
    x = _query(Y, i, j, 0.02, sched, seed=1)
    m32, m64 = em.make_machine("ideal", Y, labels=labels), em.make_machine("ideal", Y.double(), labels=labels)
    _, t32 = m32.denoise_traced(x, 0.02, labels[i])
    _, t64 = m64.denoise_traced(x.double(), 0.02, labels[i])
    assert torch.equal(t32.source_image, t64.source_image)


@pytest.mark.parametrize("name", ["nearest", "wiener", "locality", "stationary"])
def test_matrix_product_machines_in_float32_match_float64(between, name):
    Y, labels, i, j = between
    sched = em.CosineSchedule()
    m32, m64 = em.make_machine(name, Y, labels=labels), em.make_machine(name, Y.double(), labels=labels)
    for t in TIMES:
        x = _query(Y, i, j, t, sched)
        diff = (m32.denoise(x, t, labels[i]).double() - m64.denoise(x.double(), t, labels[i])).abs().max()
        assert diff < 1e-5, (name, t, float(diff))
    assert math.isfinite(float(diff))
