"""EDM's Heun sampler (Karras et al. 2022, Algorithm 1) on a diffusers UNet, against the two
public implementations of it: diffusers' ``HeunDiscreteScheduler`` with Karras sigmas, and
k-diffusion's ``sample_heun`` with ``get_sigmas_karras``.

Both are Algorithm 1 exactly, as ``heun_sample`` is: the levels sigma_i = (sigma_max^(1/7) +
i/(n-1) (sigma_min^(1/7) - sigma_max^(1/7)))^7 then 0, a Heun step between two nonzero levels
and an Euler step alone to 0 (2n - 1 model calls), the model called on x_VE / sqrt(1 + sigma^2)
at the fractional timestep that interpolates log sigma between the schedule's training
timesteps (diffusers' ``_sigma_to_t``, k-diffusion's ``DiscreteSchedule.sigma_to_t``).

What differs is rounding only: diffusers rounds its levels to float32 and both keep their state
in float32 (``heun_sample`` keeps it in float64), and diffusers' Karras levels run between the
schedule's own smallest and largest sigma as its float32 table holds them. ``heun_sample``
refuses a sigma_max above the float64 sigma of the last training timestep by more than 1e-9
relative, and the float32 table can round that level up by up to 6e-8, so the tests pass the
smaller of the two: a difference of float32 rounding in the first level.
"""

import pytest
import torch

import elsmachine as em
from helpers import tiny_unet

diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'elsmachine[diffusers]'")


def sigma_range(scheduler, den):
    """The smallest and largest sigma of the scheduler's float32 table (what its Karras levels
    span), the largest no higher than the float64 schedule's own."""
    ab = scheduler.alphas_cumprod
    table = ((1 - ab) / ab) ** 0.5
    return float(table[0]), min(float(table[-1]), den.schedule.sigma_ve(1.0))


def recording(unet):
    """Record each call's model input and timestep (one per image)."""
    calls = []

    def hook(module, args, kwargs):
        x, k = args[0], torch.as_tensor(args[1])
        calls.append((x.detach().clone(), k.to(torch.float64).reshape(-1).expand(x.shape[0]).clone()))

    return calls, unet.register_forward_pre_hook(hook, with_kwargs=True)


def diffusers_heun(unet, scheduler, noise, steps, labels=None):
    """diffusers' own Heun loop, as its pipelines run it."""
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    with torch.no_grad():
        for k in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, k), k, class_labels=labels).sample
            x = scheduler.step(out, k, x).prev_sample
    return x


@pytest.mark.parametrize("beta", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_heun_sample_reproduces_diffusers_heun_discrete_scheduler_with_karras_sigmas(beta):
    steps = 10
    for conditional, prediction, clip in ((False, "epsilon", False), (True, "v_prediction", False),
                                          (False, "sample", False), (False, "epsilon", True)):
        unet = tiny_unet(conditional)
        make = lambda: diffusers.HeunDiscreteScheduler(beta_schedule=beta, use_karras_sigmas=True,  # noqa: E731
                                                       prediction_type=prediction, clip_sample=clip)
        noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        labels = torch.tensor([0, 2]) if conditional else None
        theirs, handle = recording(unet)
        expect = diffusers_heun(unet, make(), noise, steps, labels)
        handle.remove()
        den = em.from_diffusers(unet, make())
        sigma_min, sigma_max = sigma_range(make(), den)
        ours, handle = recording(unet)
        got = em.heun_sample(den, noise, steps=steps, sigma_min=sigma_min, sigma_max=sigma_max, labels=labels)
        handle.remove()
        case = (beta, conditional, prediction, clip)
        assert len(ours) == len(theirs) == 2 * steps - 1, case
        for i, ((x_ours, k_ours), (x_theirs, k_theirs)) in enumerate(zip(ours, theirs)):
            # the same fractional timestep, to float32's spacing near 1000 (6.1e-5)
            assert float((k_ours - k_theirs).abs().max()) < 1.3e-4, (case, i, k_ours, k_theirs)
            assert float((x_ours - x_theirs).norm() / x_theirs.norm()) < 2e-5, (case, i)
        assert float((got - expect).norm() / expect.norm()) < 2e-5, case


def test_the_schedule_maps_karras_levels_to_diffusers_fractional_timesteps():
    for beta in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        scheduler = diffusers.HeunDiscreteScheduler(beta_schedule=beta, use_karras_sigmas=True)
        scheduler.set_timesteps(25)
        sched = em.schedule_of(scheduler)
        levels = scheduler.sigmas[::2].double()  # each level once: s_0, s_1, s_1, s_2, s_2, ..., 0
        k = sched.timestep(sched.t_of_sigma_ve(levels))
        assert float((k - scheduler.timesteps[::2].double()).abs().max()) < 1.3e-4, beta
        assert float((k - k.round()).abs().max()) > 0.1  # between training timesteps, not on them
        inner = levels[1:-1]  # the ends are the table's float32 ends: a timestep's own time, by snapping
        torch.testing.assert_close(sched.sigma_ve(sched.t_of_sigma_ve(inner)), inner, rtol=1e-12, atol=0)


def test_heun_sample_reproduces_k_diffusion_sample_heun():
    k_sampling = pytest.importorskip("k_diffusion.sampling", reason="k-diffusion is not installed")
    k_external = pytest.importorskip("k_diffusion.external", reason="k-diffusion is not installed")
    steps = 10
    unet = tiny_unet()
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False)
    den = em.from_diffusers(unet, scheduler)
    sigma_min, sigma_max = sigma_range(scheduler, den)
    model = k_external.DiscreteEpsDDPMDenoiser(lambda x, t: unet(x, t).sample, scheduler.alphas_cumprod,
                                               quantize=False)
    sigmas = k_sampling.get_sigmas_karras(steps, sigma_min, sigma_max, rho=7.0)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs, handle = recording(unet)
    with torch.no_grad():
        expect = k_sampling.sample_heun(model, noise * sigmas[0], sigmas, disable=True)
    handle.remove()
    ours, handle = recording(unet)
    got = em.heun_sample(den, noise, steps=steps, sigma_min=sigma_min, sigma_max=sigma_max)
    handle.remove()
    assert len(ours) == len(theirs) == 2 * steps - 1
    for i, ((x_ours, k_ours), (x_theirs, k_theirs)) in enumerate(zip(ours, theirs)):
        # k-diffusion takes its levels and their log-sigma interpolation in float32 (off by up to
        # 2e-4 timesteps); log abar interpolation instead would be off by 1e-2
        assert float((k_ours - k_theirs).abs().max()) < 1e-3, (i, k_ours, k_theirs)
        assert float((x_ours - x_theirs).norm() / x_theirs.norm()) < 2e-5, i
    assert float((got - expect).norm() / expect.norm()) < 2e-5
