"""The noise level at times so small that 1 - abar(t) rounds to 0 in float64: s(t) stays positive
and exact, and every softmax machine still denoises there."""

import math

import pytest
import torch

import elsmachine as em
from conftest import machine_options


def test_cosine_noise_level_is_exact_where_one_minus_abar_rounds_to_zero():
    sched = em.CosineSchedule()
    t = 1e-9
    assert 1.0 - sched.alpha_bar(t) == 0.0  # the cancellation the noise level must not go through
    theta = t / 1.008 * math.pi / 2
    # sin(theta) = theta (1 - theta^2 / 6 + ...), and theta^2 / 6 is far below float64's epsilon here
    assert sched.sigma(t) > 0 and abs(sched.sigma(t) - theta) <= 1e-15 * theta
    assert abs(sched.sigma_ve(t) - theta) <= 1e-15 * theta  # tan(theta) = theta to the same order
    assert sched.alpha(t) == 1.0
    tt = torch.tensor([t, 0.5, 1.0], dtype=torch.float64)
    expect = torch.sin(tt / 1.008 * math.pi / 2)
    torch.testing.assert_close(sched.sigma(tt), expect, rtol=1e-15, atol=0)
    torch.testing.assert_close(sched.alpha(tt) ** 2 + sched.sigma(tt) ** 2, torch.ones(3, dtype=torch.float64),
                               rtol=0, atol=2e-16)
    assert sched.sigma(0.0) == 0.0 and float(sched.sigma(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    a, s = sched.coefficients(torch.tensor([t]), torch.zeros(1))  # float32, as a float32 machine sees them
    assert float(s) > 0 and float(a) == 1.0


def test_discrete_noise_level_is_exact_at_small_t():
    sched = em.DiscreteSchedule.from_betas("linear")
    ab0 = float(sched.alphas_cumprod[0])  # timestep 0, at t = 1 / T
    T = sched.T
    for t in (1e-9, 1e-14, 0.3 / T):
        # between abar(0) = 1 and timestep 0, log abar is linear in t: 1 - abar = -expm1(t T log ab0)
        expect = math.sqrt(-math.expm1(t * T * math.log(ab0)))
        assert sched.sigma(t) > 0 and abs(sched.sigma(t) - expect) <= 4e-16 * expect, t
        assert abs(sched.sigma_ve(t) - expect / math.sqrt(sched.alpha_bar(t))) <= 4e-16 * expect
    assert sched.sigma(0.0) == 0.0
    assert sched.sigma(1 / T) == math.sqrt(1 - ab0)  # a timestep's own noise level


@pytest.mark.parametrize("name", ["ideal", "els", "ls", "nearest"])
def test_every_softmax_machine_denoises_at_t_1e_9(name):
    g = torch.Generator().manual_seed(0)
    Y = torch.rand(6, 1, 5, 5, generator=g) * 2 - 1
    x = torch.randn(2, 1, 5, 5, generator=g)
    out = em.make_machine(name, Y, **machine_options(name, patch_size=3)).denoise(x, 1e-9)
    assert out.shape == x.shape and bool(torch.isfinite(out).all()), name
