"""Bad input raises InputError naming the problem, before any tensor work."""

import numpy as np
import pytest
import torch

import elsmachine as em

Y = torch.rand(4, 1, 6, 6) * 2 - 1
LAB = torch.tensor([0, 0, 1, 1])
X = torch.randn(2, 1, 6, 6)


def raises(match):
    return pytest.raises(em.InputError, match=match)


@pytest.mark.parametrize("k", [0, -3, 2, 4, 3.0, "5", True])
def test_bad_patch_size(k):
    with raises("patch_size"):
        em.ELSMachine(Y, patch_size=k)
    with raises("patch_size"):
        em.LocalMachine(Y, patch_size=3).denoise(X, 0.5, patch_size=k)


def test_missing_patch_size():
    with raises("needs a patch size"):
        em.ELSMachine(Y).denoise(X, 0.5)


def test_patch_size_given_to_the_ideal_machine():
    with raises("no patch size"):
        em.IdealMachine(Y).denoise(X, 0.5, patch_size=3)


def test_unknown_padding_and_machine_and_backend():
    with raises("padding"):
        em.ELSMachine(Y, patch_size=3, padding="reflect")
    with raises("unknown machine"):
        em.make_machine("es", Y)
    with raises("backend"):
        em.ELSMachine(Y, patch_size=3, backend="gpu")


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(1, 6, 6), r"\[B, C, H, W\]"),
        (torch.randn(2, 1, 6, 5), r"training images are \(1, 6, 6\)"),
        (torch.randn(2, 3, 6, 6), r"training images are"),
        (torch.zeros(2, 1, 6, 6, dtype=torch.long), "floating point"),  # queries: float only
        (np.zeros((2, 1, 6, 6)), "torch tensor"),
    ],
)
def test_bad_x(x, match):
    with raises(match):
        em.ELSMachine(Y, patch_size=3).denoise(x, 0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values(bad):
    x = X.clone()
    x[0, 0, 1, 1] = bad
    with raises("NaN or inf"):
        em.IdealMachine(Y).denoise(x, 0.5)
    y = Y.clone()
    y[1, 0, 2, 2] = bad
    with raises("NaN or inf"):
        em.IdealMachine(y)


@pytest.mark.parametrize("t", [0.0, -0.1, 1.5, float("nan"), torch.tensor([0.5, 0.0]), torch.tensor([0.5, 0.5, 0.5]), "0.5"])
def test_bad_t(t):
    with pytest.raises(em.InputError, match="t must"):
        em.ELSMachine(Y, patch_size=3).denoise(X, t)


def test_bad_images():
    with raises(r"\[N, C, H, W\]"):
        em.IdealMachine(torch.rand(4, 6, 6))
    with raises("floating point in \\[-1, 1\\] or uint8 in 0..255, got dtype torch.int32"):
        em.IdealMachine(torch.zeros(4, 1, 6, 6, dtype=torch.int32))
    with raises("empty"):
        em.IdealMachine(torch.zeros(0, 1, 6, 6))


def test_bad_labels():
    with raises(r"training labels must have shape \[4\]"):
        em.IdealMachine(Y, labels=torch.tensor([0, 1]))
    with raises("integers"):
        em.IdealMachine(Y, labels=torch.tensor([0.0, 1.0, 0.0, 1.0]))
    m = em.ELSMachine(Y, patch_size=3, labels=LAB)
    with raises(r"labels must have shape \[2\]"):
        m.denoise(X, 0.5, labels=torch.tensor([0, 1, 1]))
    with raises("class 7 has no training images"):
        m.denoise(X, 0.5, labels=torch.tensor([0, 7]))
    with raises("built without training labels"):
        em.ELSMachine(Y, patch_size=3).denoise(X, 0.5, labels=torch.tensor([0, 1]))


def test_bad_sampler_arguments():
    m = em.ELSMachine(Y, patch_size=3)
    with raises("steps"):
        em.ddim_sample(m, X, steps=0)
    with raises("2 sizes but the grid has 3 steps"):
        em.ddim_sample(m, X, steps=3, patch_sizes=[3, 5])
    with raises("odd positive"):
        em.ddim_sample(m, X, steps=2, patch_sizes=[3, 4])
    with raises("end at 0.0"):
        em.ddim_sample(m, X, ts=[1.0, 0.5])
    with raises("descending"):
        em.ddim_sample(m, X, ts=[0.5, 0.7, 0.0])
    with raises("preset"):
        em.ddim_sample(m, X, patch_sizes="no-such-preset")
    with raises("noise must be"):
        em.ddim_sample(m, torch.randn(6, 6))


def test_bad_memory_budget():
    with raises("memory_budget"):
        em.ELSMachine(Y, patch_size=3, memory_budget=10)


def test_error_is_a_value_error():
    assert issubclass(em.InputError, ValueError)
