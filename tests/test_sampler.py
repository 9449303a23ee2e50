"""The DDIM sampler: grid, per-step patch sizes, callback, seeds, and agreement with a naive loop."""

import pytest
import reference as ref
import torch
from conftest import machine_options

import elsmachine as em


class Recorder:
    """A denoiser that records how it was called and returns zeros."""

    def __init__(self):
        self.calls = []

    def denoise(self, x, t, labels=None, patch_size=None):
        self.calls.append((t, patch_size, None if labels is None else labels.tolist()))
        return torch.zeros_like(x)


def test_is_on_a_one_image_training_set_returns_that_image():
    Y = torch.rand(1, 1, 6, 5, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 1, 6, 5, dtype=torch.float64)
    out = em.ddim_sample(em.IdealMachine(Y), noise, steps=10)
    torch.testing.assert_close(out, Y.expand(3, -1, -1, -1), rtol=0, atol=1e-12)


def test_default_grid_and_per_step_sizes_are_honoured():
    r = Recorder()
    em.ddim_sample(r, torch.randn(1, 1, 4, 4), steps=4, patch_sizes=[9, 7, 5, 3])
    assert [c[0] for c in r.calls] == [1.0, 0.75, 0.5, 0.25]
    assert [c[1] for c in r.calls] == [9, 7, 5, 3]


def test_custom_grid_overrides_steps():
    r = Recorder()
    em.ddim_sample(r, torch.randn(1, 1, 4, 4), ts=[0.9, 0.6, 0.2, 0.0], patch_sizes=3)
    assert [c[0] for c in r.calls] == [0.9, 0.6, 0.2]
    assert [c[1] for c in r.calls] == [3, 3, 3]


def test_preset_is_read_highest_t_first_with_no_offset():
    r = Recorder()
    em.ddim_sample(r, torch.randn(1, 1, 4, 4), steps=20, patch_sizes="mnist-resnet-zeros")
    sizes = [c[1] for c in r.calls]
    assert sizes == list(reversed(em.PRESETS["mnist-resnet-zeros"]))
    assert r.calls[0][0] == 1.0 and sizes[0] == 15 and r.calls[-1][0] == 0.05 and sizes[-1] == 3


def test_schedule_file_round_trips(tmp_path):
    s = em.PatchSchedule(ts=(0.25, 0.5, 0.75, 1.0), sizes=(3, 5, 7, 9), meta={"criterion": "cosine"})
    s.save(tmp_path / "s.json")
    back = em.PatchSchedule.load(tmp_path / "s.json")
    assert back == s and back.meta == {"criterion": "cosine"}
    r = Recorder()
    em.ddim_sample(r, torch.randn(1, 1, 4, 4), steps=4, patch_sizes=str(tmp_path / "s.json"))
    assert [c[1] for c in r.calls] == [9, 7, 5, 3]


def test_labels_and_callback_reach_every_step():
    r = Recorder()
    seen = []
    em.ddim_sample(r, torch.randn(2, 1, 4, 4), steps=3, labels=torch.tensor([1, 2]), callback=seen.append)
    assert [c[2] for c in r.calls] == [[1, 2]] * 3
    assert [s["i"] for s in seen] == [0, 1, 2] and seen[-1]["t_next"] == 0.0
    assert set(seen[0]) >= {"x", "t", "x0_hat", "i"}


@pytest.mark.parametrize("name", ["ideal", "ls", "els"])
def test_sampler_matches_a_naive_ddim_loop(name):
    g = torch.Generator().manual_seed(0)
    Y = torch.rand(3, 1, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)
    m = em.make_machine(name, Y, **machine_options(name, patch_size=3))
    ts = [1.0, 0.7, 0.4, 0.1, 0.0]
    out = em.ddim_sample(m, noise, ts=ts)
    if name == "ideal":
        expect = ref.ddim(lambda x, t: ref.ideal(x, t, Y), noise, ts)
    else:
        expect = ref.ddim(lambda x, t: ref.patch_machine(name, x, t, Y, 3, "zeros"), noise, ts)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-10)


def test_seed_noise_is_per_image():
    a = em.seed_noise([3, 4, 5], (1, 4, 4))
    b = em.seed_noise([5], (1, 4, 4))
    assert torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])


def test_float32_sample_is_close_to_float64():
    ds = em.load_dataset("mnist5k", per_class=20)
    m = em.ELSMachine(ds.images, labels=ds.labels)
    noise = em.seed_noise([0, 1], (1, 32, 32), dtype=torch.float64)
    lab = torch.tensor([3, 7])
    hi = em.ddim_sample(m, noise, steps=10, patch_sizes=[11, 9, 9, 7, 7, 5, 5, 3, 3, 3], labels=lab)
    lo = em.ddim_sample(m, noise.float(), steps=10, patch_sizes=[11, 9, 9, 7, 7, 5, 5, 3, 3, 3], labels=lab)
    assert (lo.double() - hi).abs().max() < 1e-4
