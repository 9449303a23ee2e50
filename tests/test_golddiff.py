"""GoldDiff against its definition: the subset chosen coarse to fine, the locality softmax over it,
its limit at the whole set, and its determinism."""

import pytest
import reference as ref
import torch

import elsmachine as em


def test_golddiff_over_the_whole_set_is_the_locality_machine(data):
    Y, x = data(N=12, C=1, H=4, W=4, B=3, seed=2)
    g = em.make_machine("golddiff", Y, k_min=12, k_max=12, low_res=2)
    for t in (0.15, 0.6, 1.0):
        assert g.sizes(12, em.CosineSchedule().sigma(t)) == (12, 12, 12)  # no pre-sampling, no screen
        torch.testing.assert_close(g.denoise(x, t), ref.locality(x, t, Y), rtol=0, atol=1e-10)
    torch.testing.assert_close(g.denoise(x, 0.4), em.make_machine("locality", Y).denoise(x, 0.4), rtol=0, atol=1e-12)


def test_the_subset_is_chosen_coarse_to_fine_and_the_softmax_runs_over_it(data):
    Y, x = data(N=40, C=2, H=4, W=4, B=2, seed=5)
    g = em.make_machine("golddiff", Y, k_min=4, k_max=10, low_res=2)
    sched = em.CosineSchedule()
    for t in (0.3, 0.9):
        m, k_max, k = g.sizes(40, sched.sigma(t))
        loc = 1 - sched.sigma(t)
        assert (m, k_max, k) == (round(10 + 30 * loc), 10, max(4, round(10 - 6 * loc)))
        for b in range(2):
            sub = g.chosen(x[b], t)
            gen = g._generator(x[b], t, None)
            pre = torch.randperm(40, generator=gen)[:m].tolist()
            assert sub.tolist() == ref.golddiff_subset(x[b], t, Y, pre, k_max, k, factor=2)
            expect = ref.locality(x[b : b + 1], t, Y[sub], mask_from=Y)
            torch.testing.assert_close(g.denoise(x[b : b + 1], t), expect, rtol=0, atol=1e-10)


def test_golddiff_is_a_function_of_its_query_seed_and_class(data):
    Y, x = data(N=30, C=1, H=4, W=4, B=3, seed=7)
    labels = torch.tensor([0, 1, 2] * 10)
    g = em.make_machine("golddiff", Y, labels=labels, low_res=2, seed=3)
    q = torch.tensor([2, 0, 2])
    whole = g.denoise(x, 0.5, q)
    for b in range(3):  # alone, or in another batch: the same subset and the same answer
        torch.testing.assert_close(g.denoise(x[b : b + 1], 0.5, q[b : b + 1]), whole[b : b + 1], rtol=0, atol=0)
    assert torch.equal(g.chosen(x[0].float(), 0.5, 2), g.chosen(x[0], 0.5, 2))
    assert torch.equal(em.make_machine("golddiff", Y, labels=labels, low_res=2, seed=3).denoise(x, 0.5, q), whole)
    other = em.make_machine("golddiff", Y, labels=labels, low_res=2, k_min=1, k_max=2, seed=4)
    assert not torch.equal(other.denoise(x, 0.9, q), whole)
    _, tr = g.denoise_traced(x, 0.5, q)
    members = set(torch.nonzero(labels == 2).flatten().tolist())
    assert set(tr.source_image[0].flatten().tolist()) <= members
    assert g.describe()["k_min"] is None and g.describe()["seed"] == 3


def test_golddiff_refuses_bad_sizes_and_sharding(data):
    Y, _ = data(N=10, C=1, H=4, W=4, B=1, seed=1)
    for bad in ({"k_min": 0}, {"k_max": -1}, {"k_min": 5, "k_max": 3}, {"low_res": 0}, {"seed": -1},
                {"threshold": 2.0}):
        with pytest.raises(em.InputError):
            em.make_machine("golddiff", Y, **bad)
    with pytest.raises(em.InputError, match="shard"):
        em.make_machine("golddiff", Y, distributed=True)
