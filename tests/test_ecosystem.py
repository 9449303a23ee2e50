"""Networks, schedules and data from the ecosystem: diffusers models and pipelines both ways, any
VP schedule, EDM-style sigma denoisers both ways, and training sets held in memory."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import elsmachine as em
from helpers import tiny_unet

diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'elsmachine[diffusers]'")


def diffusers_ddim(unet, scheduler, noise, steps, labels=None):
    """diffusers' own deterministic DDIM loop."""
    scheduler.set_timesteps(steps)
    x = noise
    with torch.no_grad():
        for k in scheduler.timesteps:
            x = scheduler.step(unet(x, k, class_labels=labels).sample, k, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize("beta", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("dtype,bound", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_ddim_sample_reproduces_diffusers_own_ddim_loop(beta, offset, dtype, bound):
    for conditional in (False, True):
        for prediction in ("epsilon", "v_prediction", "sample"):
            unet = tiny_unet(conditional).to(dtype)
            scheduler = diffusers.DDIMScheduler(beta_schedule=beta, steps_offset=offset, prediction_type=prediction,
                                                clip_sample=False)
            if dtype == torch.float64:  # diffusers' float64 loop needs its coefficients in float64 too
                scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
                scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
            noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
            labels = torch.tensor([0, 2]) if conditional else None
            expect = diffusers_ddim(unet, scheduler, noise, 10, labels)
            den = em.from_diffusers(unet, scheduler)
            assert float(den.schedule.grid(10)[0]) == (int(scheduler.timesteps[0]) + 1) / 1000
            got = em.ddim_sample(den, noise, steps=10, labels=labels)
            assert got.dtype == dtype
            assert float((got - expect).norm() / expect.norm()) < bound, (conditional, prediction)


@pytest.mark.parametrize("schedule", [em.CosineSchedule(), em.DiscreteSchedule.from_betas("linear"),
                                      em.DiscreteSchedule.from_betas("scaled_linear", steps_offset=1),
                                      em.DiscreteSchedule.from_betas("squaredcos_cap_v2", timestep_spacing="trailing")])
def test_is_on_a_one_image_set_returns_it_on_every_schedule(schedule):
    Y = torch.rand(1, 1, 5, 6, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 1, 5, 6, dtype=torch.float64)
    out = em.ddim_sample(em.IdealMachine(Y, schedule=schedule), noise, steps=7)
    torch.testing.assert_close(out, Y.expand(3, -1, -1, -1), rtol=0, atol=1e-12)


def test_a_discrete_schedule_sits_each_timestep_at_its_time():
    sched = em.DiscreteSchedule.from_betas("linear")
    ab = sched.alphas_cumprod
    assert sched.alpha_bar(1.0) == float(ab[-1]) and sched.alpha_bar(0.0) == 1.0
    assert sched.alpha_bar((500 + 1) / 1000) == float(ab[500])
    assert float(sched.timestep(torch.tensor(0.981))) == 980.0
    grid = sched.grid(50)
    assert grid[0] == 0.981 and grid[-2] == 0.001 and grid[-1] == 0.0  # leading spacing, 1000 // 50 apart
    back = sched.t_of_sigma_ve(sched.sigma_ve(0.3))  # within the snap to timestep 299, same abar
    assert abs(back - 0.3) < 1e-6 and sched.alpha_bar(back) == sched.alpha_bar(0.3)
    assert abs(em.CosineSchedule().t_of_sigma_ve(em.CosineSchedule().sigma_ve(0.3)) - 0.3) < 1e-12


def test_a_machine_wrapped_for_diffusers_runs_in_its_ddim_pipeline():
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False)
    Y = torch.rand(4, 1, 8, 8) * 2 - 1
    m = em.ELSMachine(Y, patch_size=3, schedule=em.schedule_of(scheduler))
    pipe = diffusers.DDIMPipeline(unet=em.as_diffusers_model(m), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, eta=0.0,
                  output_type="np").images
    noise = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    ours = (em.ddim_sample(m, noise, steps=10) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(images - ours).max() < 1e-4  # diffusers keeps its state in float32


def test_a_gaussian_denoiser_in_the_sigma_convention_is_the_wiener_machine(data):
    Y, x = data(N=6, C=1, H=3, W=4, B=3, seed=2)
    N, D = Y.shape[0], 12
    flat = Y.reshape(N, D)
    mu = flat.mean(0)
    cov = (flat - mu).T @ (flat - mu) / N

    def edm_gaussian(x_ve, sigma):  # D(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)
        out = []
        for b in range(x_ve.shape[0]):
            A = cov + float(sigma[b]) ** 2 * torch.eye(D, dtype=torch.float64)
            out.append(mu + cov @ torch.linalg.solve(A, x_ve[b].reshape(D) - mu))
        return torch.stack(out).reshape(x_ve.shape)

    for schedule in (em.CosineSchedule(), em.DiscreteSchedule.from_betas("linear")):
        den = em.from_sigma_denoiser(edm_gaussian, schedule)
        wiener = em.WienerMachine(Y, schedule=schedule)
        for t in (0.1, 0.5, 0.9):
            torch.testing.assert_close(den.denoise(x, t), wiener.denoise(x, t), rtol=0, atol=1e-10)
        # ... and the way back: the machine as a sigma denoiser is that same D.
        model = em.as_sigma_denoiser(wiener)
        x_ve, sigma = x * 3, torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
        torch.testing.assert_close(model(x_ve, sigma), edm_gaussian(x_ve, sigma), rtol=0, atol=1e-8)


def test_noise_schedules_round_trip_through_every_artifact(tmp_path):
    from elsmachine.experiments.calibrate import calibrate
    from elsmachine.experiments.compare import compare
    from elsmachine.networks import NetConfig
    from elsmachine.networks.training import TrainConfig, train

    sched = em.DiscreteSchedule.from_betas("scaled_linear", steps_offset=1)
    sched.save(tmp_path / "s.json")
    assert em.noise_schedule(tmp_path / "s.json") == sched and em.noise_schedule("scaled_linear") != sched
    ds = em.load_dataset("mnist5k", per_class=1)
    train(NetConfig(arch="resnet", width=4, depth=1, emb_dim=8), TrainConfig(epochs=1, batch_size=10), ds,
          tmp_path / "net", schedule=sched)
    net = em.load_network(tmp_path / "net")
    assert net.schedule == sched  # the checkpoint
    m = em.ELSMachine(ds.images, patch_size=3, schedule=sched)
    ps, _, _ = calibrate(net, m, [1, 3], [0], steps=2)
    assert em.noise_schedule(json.loads(json.dumps(ps.to_dict()))["meta"]["schedule"]) == sched  # the patch schedule
    summary = compare(net, {"els": m}, ds.images, [0], tmp_path / "c", steps=2)
    for record in (summary["settings"]["common"]["network"]["schedule"], summary["settings"]["machines"]["els"]["schedule"]):
        assert em.noise_schedule(record) == sched  # the comparison
    sens = em.measure_sensitivity(net, ds.images, steps=2, inputs=1)
    sens.save(tmp_path / "sens.safetensors")
    assert em.Sensitivity.load(tmp_path / "sens.safetensors").schedule == sched.to_dict()
    with pytest.raises(em.InputError, match="noise schedule"):  # a machine on the cosine against this network
        compare(net, {"els": em.ELSMachine(ds.images, patch_size=3)}, ds.images, [0], tmp_path / "d", steps=2)
    with pytest.raises(em.InputError, match="noise schedule"):
        em.FlexCompositeMachine(ds.images, tmp_path / "sens.safetensors")


def test_compare_and_sample_run_on_a_saved_diffusers_folder(tmp_path):
    from elsmachine.cli import app

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", images=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8))
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False)
    diffusers.DDIMPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    run = CliRunner()
    common = ["--dataset", str(tmp_path / "data.npz"), "--steps", "3"]
    res = run.invoke(app, ["compare", "--model", str(tmp_path / "pipe"), *common, "--seeds", "2",
                           "--machines", "ideal,els,wiener", "--patch-schedule", "3", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["settings"]["common"]["network"]["schedule"]["kind"] == "discrete" and summary["seeds"] == 2
    res = run.invoke(app, ["sample", "--model", str(tmp_path / "pipe" / "unet"), *common, "--num", "2",
                           "-o", str(tmp_path / "s.png")])
    assert res.exit_code == 2 and "--noise-schedule" in res.output  # a bare UNet needs its schedule
    res = run.invoke(app, ["sample", "--model", str(tmp_path / "pipe" / "unet"), "--noise-schedule",
                           str(tmp_path / "pipe" / "scheduler"), *common, "--num", "2", "-o", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output


def test_training_sets_from_memory_read_as_files_are(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (6, 7, 5), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=u8, labels=np.arange(6) % 3)
    from_file = em.load_dataset(tmp_path / "d.npz")
    from_array = em.load_dataset(u8, labels=np.arange(6) % 3)
    assert torch.equal(from_file.images, from_array.images) and torch.equal(from_file.labels, from_array.labels)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.from_numpy(u8[i]).float()[None] / 255, i % 3  # as torchvision's ToTensor gives

    pairs = em.load_dataset(Pairs(), value_range=(0, 1))
    torch.testing.assert_close(pairs.images, from_file.images, rtol=0, atol=1e-6)
    assert torch.equal(pairs.labels, from_file.labels) and pairs.fingerprint() == from_file.fingerprint()  # same data
    with pytest.warns(UserWarning, match="value_range=\\(0, 1\\)"):
        em.load_dataset(Pairs())
    hf = pytest.importorskip("datasets")
    from PIL import Image

    table = hf.Dataset.from_dict({"image": [Image.fromarray(a) for a in u8], "label": list(np.arange(6) % 3)},
                                 features=hf.Features({"image": hf.Image(), "label": hf.ClassLabel(num_classes=3)}))
    from_hf = em.load_dataset(table, per_class=1)
    assert torch.equal(from_hf.images, from_file.images[:3]) and from_hf.labels.tolist() == [0, 1, 2]
    with pytest.raises(em.InputError, match="item 1 .*cannot read an image"):
        em.load_dataset([u8[0], "not an image"])


def test_without_diffusers_its_functions_say_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if it were not installed
    with pytest.raises(em.InputError, match=r"pip install 'elsmachine\[diffusers\]'"):
        em.from_diffusers(object(), object())

