"""diffusers' schedulers that clip (``clip_sample``, DDIMScheduler's default) or dynamically
threshold (``thresholding``) their x0 estimate: the denoiser from ``from_diffusers`` holds x0_hat
the same way, records it, and ``ddim_sample`` on it reproduces diffusers' own DDIM loop, with the
network's own noise estimate in the step (diffusers' default, ``DDIMPipeline``'s) or the one
re-derived from the clipped x0 (``use_clipped_model_output=True``)."""

import pytest
import torch

import elsmachine as em
from helpers import tiny_unet

diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'elsmachine[diffusers]'")


def diffusers_ddim(unet, scheduler, noise, steps, labels=None, use_clipped_model_output=True):
    """diffusers' own deterministic DDIM loop."""
    scheduler.set_timesteps(steps)
    x = noise
    with torch.no_grad():
        for k in scheduler.timesteps:
            out = unet(x, k, class_labels=labels).sample
            x = scheduler.step(out, k, x, eta=0.0, use_clipped_model_output=use_clipped_model_output).prev_sample
    return x


def in_float64(scheduler):
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    return scheduler


HOLDS = {"clip": {"clip_sample": True},  # DDIMScheduler's default
         "clip 0.5": {"clip_sample": True, "clip_sample_range": 0.5},
         "threshold": {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}}


@pytest.mark.parametrize("clipped_eps", [False, True])
@pytest.mark.parametrize("hold", sorted(HOLDS))
@pytest.mark.parametrize("dtype,bound", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_ddim_sample_reproduces_diffusers_ddim_loop_with_x0_clipped(hold, dtype, bound, clipped_eps):
    for conditional, prediction, beta in ((False, "epsilon", "linear"), (True, "v_prediction", "scaled_linear"),
                                          (False, "sample", "squaredcos_cap_v2")):
        unet = tiny_unet(conditional).to(dtype)
        noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
        labels = torch.tensor([0, 2]) if conditional else None

        def scheduler(**kw):
            s = diffusers.DDIMScheduler(beta_schedule=beta, prediction_type=prediction, **kw)
            return in_float64(s) if dtype == torch.float64 else s

        hold_kw = HOLDS[hold]
        expect = diffusers_ddim(unet, scheduler(**hold_kw), noise, 10, labels, use_clipped_model_output=clipped_eps)
        den = em.from_diffusers(unet, scheduler(**HOLDS[hold]), use_clipped_model_output=clipped_eps)
        got = em.ddim_sample(den, noise, steps=10, labels=labels)
        assert got.dtype == dtype
        assert float((got - expect).norm() / expect.norm()) < bound, (conditional, prediction)
        free = diffusers_ddim(unet, scheduler(clip_sample=False), noise, 10, labels)
        assert float((free - expect).norm() / expect.norm()) > 1e-2  # the clipping did act
        other = diffusers_ddim(unet, scheduler(**hold_kw), noise, 10, labels, use_clipped_model_output=not clipped_eps)
        if prediction != "sample":  # a sample-predicting network has no noise estimate of its own
            assert float((other - expect).norm() / expect.norm()) > 1e-3  # the two steps differ


def test_the_default_ddim_scheduler_gives_a_clipping_denoiser_that_records_it():
    unet = tiny_unet()
    den = em.from_diffusers(unet, diffusers.DDIMScheduler())
    assert den.describe()["x0_clip"] == {"clip_sample_range": 1.0}
    free = em.from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False))
    assert "x0_clip" not in free.describe()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in (0.9, 0.05):
        raw = free.denoise(x, t)
        assert raw.abs().max() > 1 and torch.equal(den.denoise(x, t), raw.clamp(-1, 1))
        a, s = den.schedule.alpha(t), den.schedule.sigma(t)
        torch.testing.assert_close(den.eps(x, t), (x - a * raw.clamp(-1, 1)) / s)  # eps follows the clipped x0
    # thresholding replaces clipping, as in diffusers' step
    th = em.from_diffusers(unet, diffusers.DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=0.8,
                                                         sample_max_value=2.0))
    assert th.describe()["x0_clip"] == {"dynamic_thresholding_ratio": 0.8, "sample_max_value": 2.0}
    raw = free.denoise(x, 0.9)
    expect = diffusers.DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=0.8,
                                     sample_max_value=2.0)._threshold_sample(raw)
    assert torch.equal(th.denoise(x, 0.9), expect)


def test_clipping_settings_are_checked():
    from elsmachine.networks.adapter import NetworkDenoiser

    net = torch.nn.Identity()
    for bad, match in (({"clip_sample_range": 0.0}, "positive"), ({"clip_sample_range": float("nan")}, "finite"),
                       ({"thresholding": (1.5, 1.0)}, "quantile"), ({"thresholding": (0.9,)}, "ratio, sample_max"),
                       ({"thresholding": (0.9, 0.0)}, "sample_max_value"),
                       ({"clip_sample_range": 1.0, "thresholding": (0.9, 1.0)}, "not both")):
        with pytest.raises(em.InputError, match=match):
            NetworkDenoiser(net, **bad)


def test_a_saved_pipeline_and_its_bare_unet_with_the_scheduler_config_clip_alike(tmp_path):
    unet = tiny_unet()
    diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(clip_sample_range=0.7)).save_pretrained(
        tmp_path / "pipe")
    from elsmachine.networks.diffusers import load_diffusers

    whole = load_diffusers(tmp_path / "pipe")
    bare = load_diffusers(tmp_path / "pipe" / "unet", noise_schedule_spec=tmp_path / "pipe" / "scheduler")
    assert whole.describe()["x0_clip"] == bare.describe()["x0_clip"] == {"clip_sample_range": 0.7}
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(whole.denoise(x, 0.9), bare.denoise(x, 0.9)) and whole.denoise(x, 0.9).abs().max() == 0.7
    named = load_diffusers(tmp_path / "pipe" / "unet", noise_schedule_spec="linear")  # a name: nothing to clip by
    assert "x0_clip" not in named.describe()
