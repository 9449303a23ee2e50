"""EDM's Heun sampler: its levels, its fixed points, its agreement with DDIM on the same ODE and
its order."""

import math
import warnings

import numpy as np
import pytest
import torch

import elsmachine as em
from elsmachine.sampling import edm_sigmas
from helpers import FixedSize


def test_edm_levels_follow_karras_eq_5():
    s = edm_sigmas(18)
    assert s.numel() == 19 and s[-1] == 0 and abs(s[0] - 80) < 1e-12 and abs(s[-2] - 0.002) < 1e-15
    i = 5
    expect = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert abs(float(s[i]) - expect) < 1e-12 * expect


def test_is_on_one_image_returns_it_and_every_result_is_float64_inside(data):
    Y, x = data(N=1, C=2, H=4, W=4, B=3, seed=1)
    got = em.heun_sample(em.make_machine("ideal", Y), x)
    torch.testing.assert_close(got, Y.expand_as(got), rtol=0, atol=1e-12)
    seen = []
    em.heun_sample(em.make_machine("ideal", Y), x.float(), steps=4, callback=seen.append)
    assert [c["i"] for c in seen] == [0, 1, 2, 3] and seen[-1]["sigma_next"] == 0 and seen[0]["x"].dtype == torch.float32


def test_heun_and_ddim_end_on_the_same_image_and_heuns_error_falls_with_the_square_of_the_step(data):
    Y, x = data(N=20, C=1, H=5, W=5, B=2, seed=3)
    w = em.make_machine("wiener", Y)
    top = em.CosineSchedule().sigma_ve(1.0)
    s1 = em.CosineSchedule().sigma(1.0)
    # both start at x_t(1) = s(1) * noise: DDIM takes x_t as given, Heun x_VE = sigma_max * noise
    ddim = em.ddim_sample(w, s1 * x, steps=4000)
    heun = lambda n: em.heun_sample(w, x, steps=n, sigma_max=top, sigma_min=1e-4)  # noqa: E731
    fine = heun(640)
    assert (fine - ddim).abs().max() < 2e-3
    errs = [float((heun(n) - fine).abs().max()) for n in (10, 20, 40)]
    for coarse, finer in zip(errs, errs[1:]):
        assert 3.0 < coarse / finer < 5.5  # second order: half the step, a quarter of the error
    d40, d80 = (float((em.ddim_sample(w, s1 * x, steps=n) - ddim).abs().max()) for n in (40, 80))
    assert 1.6 < d40 / d80 < 2.6  # DDIM, Euler on the same ODE: first order


def test_a_patch_schedule_is_looked_up_by_noise_level_with_one_warning(data):
    Y, x = data(N=6, C=1, H=5, W=5, B=1, seed=4)
    m = em.make_machine("els", Y, patch_size=[5, 5, 3, 3, 1])  # a 5-step grid
    calls = []
    inner = m.denoise
    m.denoise = lambda x, t, labels=None, patch_size=None: calls.append((t, patch_size)) or inner(x, t, labels,
                                                                                                  patch_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        em.heun_sample(m, x, steps=6)
    assert len([c for c in caught if "nearest noise level" in str(c.message)]) == 1
    grid = em.ddim_grid(5)[:-1].tolist()
    levels = [math.log(em.CosineSchedule().sigma_ve(t)) for t in grid]
    for t, k in calls:
        j = min(range(5), key=lambda j: abs(levels[j] - math.log(em.CosineSchedule().sigma_ve(t))))
        assert k == [5, 5, 3, 3, 1][j]


def test_heun_refuses_bad_levels(data):
    Y, x = data(N=2, C=1, H=4, W=4, B=1, seed=2)
    m = em.make_machine("ideal", Y)
    for bad in ({"steps": 0}, {"sigma_min": 0}, {"sigma_max": float("inf")}, {"rho": -1},
                {"sigma_min": 5.0, "sigma_max": 1.0}):
        with pytest.raises(em.InputError):
            em.heun_sample(m, x, **bad)
    with pytest.raises(em.InputError, match="largest level"):
        em.heun_sample(m, x, sigma_max=500.0)


# ----------------------------------------------------------------------------- Heun in the commands

def test_calibration_on_heun_finds_the_size_at_heuns_times_and_heun_uses_it_exactly():
    from elsmachine.experiments.calibrate import calibrate

    ds = em.load_dataset("mnist5k", per_class=3)
    m = em.ELSMachine(ds.images, labels=ds.labels)
    heun = em.Sampler("heun")
    sched, best, _ = calibrate(FixedSize(m, 5), m, [3, 5, 7], [0, 1], steps=4, labels=torch.tensor([3, 8]),
                               dtype=torch.float64, sampler="heun")
    assert list(sched.sizes) == [5] * 4 and (best == 5).all() and sched.meta["sampler"] == heun.to_dict()
    assert sched.ts == tuple(heun.grid(m.schedule, 4)[:-1].tolist())
    calls = []

    class Rec:
        schedule = m.schedule
        patch_size, has_patch_size = sched, True

        def denoise(self, x, t, labels=None, patch_size=None):
            calls.append((t, patch_size))
            return m.denoise(x, t, patch_size=patch_size, labels=labels)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Heun's times are the schedule's own: no nearest-level warning
        em.heun_sample(Rec(), em.seed_noise([0], (1, 32, 32)), steps=4, labels=torch.tensor([3]))
    assert len(calls) == 7 and all(k == 5 for _, k in calls)
    assert [t for t, _ in calls[::2]] == list(sched.ts)  # each step's first call at its own time


def test_a_comparison_records_its_sampler_and_refuses_another(tmp_path):
    from elsmachine.experiments.compare import compare

    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)
    machines = {"ideal": em.IdealMachine(ds.images, labels=ds.labels), "els": m}
    summary = compare(FixedSize(m, 3), machines, ds.images, [0, 1], tmp_path, steps=3, classes=ds.classes,
                      sampler="heun")
    assert summary["settings"]["common"]["sampler"]["name"] == "heun"
    assert abs(summary["machines"]["els"]["median_r"] - 1) < 1e-6  # ELS at k = 3 is the "network"
    rec = em.heun_sample(FixedSize(m, 3), em.seed_noise([1], (1, 32, 32)), steps=3, labels=torch.tensor([1]))
    from elsmachine.results import SeedRecord, seed_path

    assert np.array_equal(SeedRecord.load(seed_path(tmp_path, 1)).network, rec[0].numpy())
    with pytest.raises(em.InputError, match="sampler"):
        compare(FixedSize(m, 3), machines, ds.images, [0, 1], tmp_path, steps=3, classes=ds.classes)


def test_a_comparison_made_before_samplers_were_recorded_resumes_as_ddim(tmp_path):
    import json

    from elsmachine.experiments.compare import compare

    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)
    machines = {"els": m}
    compare(FixedSize(m, 3), machines, ds.images, [0], tmp_path, steps=3, classes=ds.classes)
    path = tmp_path / "settings.json"
    old = json.loads(path.read_text())
    assert old["common"].pop("sampler") == {"name": "ddim"}
    path.write_text(json.dumps(old))
    seen = []
    compare(FixedSize(m, 3), machines, ds.images, [0], tmp_path, steps=3, classes=ds.classes, on_seed=seen.append)
    assert seen == [{"seed": 0, "resumed": True}]
    with pytest.raises(em.InputError, match="sampler"):
        compare(FixedSize(m, 3), machines, ds.images, [0], tmp_path, steps=3, classes=ds.classes, sampler="heun")


def test_els_sample_on_heun_records_its_sampler_and_the_sizes_it_used(tmp_path):
    from typer.testing import CliRunner

    from elsmachine.cli import app
    from elsmachine.experiments import SampleSpec, run_samples
    from elsmachine.files import load_samples

    res = CliRunner().invoke(app, ["sample", "--per-class", "2", "--steps", "3", "--sampler", "heun", "--num", "2",
                                   "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    saved = load_samples(tmp_path / "s.npz")
    assert saved["meta"]["sampler"] == em.Sampler("heun").to_dict()
    ds = em.load_dataset("mnist5k", per_class=2)
    got = run_samples(SampleSpec(data=ds, seeds=[0, 1], machine="els", sampler="heun", steps=3,
                                 options={"patch_size": "mnist-resnet-zeros", "padding": "zeros"}))
    np.testing.assert_array_equal(saved["images"], got.images.numpy())
    # the recorded sizes are those of the nearest noise level of the preset's 20 times
    preset = em.preset("mnist-resnet-zeros")
    levels = [math.log(em.CosineSchedule().sigma_ve(t)) for t in preset.ts]
    want = [preset.sizes[min(range(20), key=lambda j: abs(levels[j] - math.log(em.CosineSchedule().sigma_ve(t))))]
            for t in em.Sampler("heun").grid(em.CosineSchedule(), 3)[:-1].tolist()]
    assert got.patch_sizes == want == saved["meta"]["patch_sizes_used"]
    res = CliRunner().invoke(app, ["sample", "--per-class", "2", "--steps", "3", "--sampler", "euler",
                                   "--out", str(tmp_path / "e.png")])
    assert res.exit_code != 0 and "euler" in res.output


def test_a_sampler_is_one_of_the_two_with_good_levels():
    with pytest.raises(em.InputError, match="unknown sampler"):
        em.Sampler("euler")
    with pytest.raises(em.InputError, match="sigma_min"):
        em.Sampler("heun", sigma_min=-1.0)
    assert em.Sampler().to_dict() == {"name": "ddim"}
    grid = em.Sampler("heun").grid(em.CosineSchedule(), 5)
    assert grid.shape == (6,) and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())
    torch.testing.assert_close(torch.tensor([em.CosineSchedule().sigma_ve(t) for t in grid[:-1].tolist()],
                                            dtype=torch.float64), edm_sigmas(5)[:-1], rtol=1e-10, atol=0)
