"""The trace of where each pixel comes from, novelty, and els mosaic, where the answer is known."""

import json

import pytest
import reference as ref
import torch
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app
from elsmachine.experiments.novelty import novelty
from elsmachine.files import load_samples
from elsmachine.output.plots import render_mosaic


def traced_sample(machine, noise, **kw):
    """Sample through the tracing wrapper: (images, SampleTrace)."""
    traced = em.Traced(machine)
    x = em.ddim_sample(traced, noise, **kw)
    return x, traced.sample_trace()


@pytest.mark.parametrize("kind", ["ls", "els"])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["native", "explicit"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_trace_matches_brute_force_argmax_and_entropy(kind, padding, backend, k, data):
    Y, x = data()
    m = em.make_machine(kind, Y, padding=padding, patch_size=k, backend=backend)
    for t in (0.2, 0.8):
        x0, tr = m.denoise_traced(x, t)
        out, top, ent = ref.patch_machine(kind, x, t, Y, k, padding, return_trace=True)
        torch.testing.assert_close(x0, out, rtol=0, atol=1e-12)
        assert torch.equal(tr.source_image, top[..., 0])
        assert torch.equal(tr.source_pixel, top[..., 1])
        torch.testing.assert_close(tr.effective.log(), ent, rtol=0, atol=1e-9)
        assert torch.equal(m.denoise(x, t), x0)  # tracing does not change the result


def test_ideal_trace_names_the_nearest_weighted_image(data):
    Y, x = data(N=4)
    x0, tr = em.IdealMachine(Y).denoise_traced(x, 0.3)
    _, w = ref.ideal(x, 0.3, Y, return_weights=True)
    for b in range(2):
        assert (tr.source_image[b] == int(w[b].argmax())).all()
        torch.testing.assert_close(tr.weight[b], torch.full_like(tr.weight[b], float(w[b].max())))
    assert torch.equal(tr.source_pixel[0].flatten(), torch.arange(30))


def test_one_image_training_set(data):
    Y, _ = data(N=1, H=6, W=6)
    noise = em.seed_noise([0, 1], (1, 6, 6), dtype=torch.float64)
    _, tr = traced_sample(em.LocalMachine(Y, patch_size=3), noise, steps=4)
    assert (tr.source_image == 0).all()
    assert (tr.source_pixel == torch.arange(36).view(6, 6)).all()  # LS: always its own position
    assert torch.allclose(tr.weight, torch.ones_like(tr.weight))
    _, tr = traced_sample(em.ELSMachine(Y, patch_size=3, padding="circular"), noise, steps=4)
    assert (tr.source_image == 0).all()
    assert ((tr.source_pixel >= 0) & (tr.source_pixel < 36)).all()


def test_distinct_constant_images_supply_their_own_value():
    """Every patch of image n is the constant c_n. A query near a c_j takes every pixel from
    image j; the patches of one image tie, so an interior pixel's top patch holds 1/36 of the
    weight (6 x 6 interior pixels of an 8 x 8 image at k = 3) and a corner's holds all of it."""
    consts = torch.tensor([-0.8, -0.2, 0.3, 0.9], dtype=torch.float64)
    Y = consts.view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    m = em.ELSMachine(Y, patch_size=3)
    a, s = ref.coefficients(0.1)
    g = torch.Generator().manual_seed(0)
    for j in range(4):
        x = a * Y[j : j + 1] + 0.2 * s * torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64)
        x0, tr = m.denoise_traced(x, 0.1)
        assert (tr.source_image == j).all()
        torch.testing.assert_close(x0, Y[j : j + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(tr.weight[0, 3, 3].item(), 1 / 36, rtol=1e-6, atol=0)
        torch.testing.assert_close(tr.effective[0, 3, 3].item(), 36.0, rtol=1e-6, atol=0)
        torch.testing.assert_close(tr.weight[0, 0, 0].item(), 1.0, rtol=1e-6, atol=0)


def test_ideal_machine_on_a_tiny_set_is_flagged_memorised_and_els_is_not():
    ds = em.load_dataset("mnist5k", per_class=5)
    noise = em.seed_noise([0, 1, 2], (1, 32, 32))
    lab = torch.tensor([1, 4, 7])
    x, tr = traced_sample(em.IdealMachine(ds.images, labels=ds.labels), noise, labels=lab)
    nov = novelty(x, ds.images, trace=tr)
    assert nov.verdict == ["memorised"] * 3 and (nov.rms < 1e-3).all()
    assert nov.distinct_sources.tolist() == [1, 1, 1]
    assert torch.equal(nov.nearest_index, tr.source_image[-1, :, 0, 0])
    ls = em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)
    x, tr = traced_sample(ls, noise, steps=10, labels=lab)
    nov = novelty(x, ds.images, trace=tr, max_shift=1)
    assert nov.verdict == ["new"] * 3 and (nov.distinct_sources > 3).all()


def test_novelty_up_to_translation_finds_a_shifted_copy():
    ds = em.load_dataset("mnist5k", limit=20)
    shifted = torch.roll(ds.images[7:8], (1, -2), dims=(2, 3))
    plain = novelty(shifted, ds.images)
    moved = novelty(shifted, ds.images, max_shift=2)
    assert plain.verdict == ["new"] and moved.verdict == ["memorised"]
    assert int(moved.nearest_index[0]) == 7 and moved.shift[0] == (-1, 2)


def test_trace_is_saved_and_drawn(tmp_path):
    ds = em.load_dataset("mnist5k", per_class=3)
    runner = CliRunner()
    res = runner.invoke(app, ["sample", "--per-class", "3", "--num", "2", "--steps", "3", "-k", "5,3,3", "--trace",
                              "--novelty", "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.count("│") == 10]  # the two rows of the table
    assert [r.split("│")[9].strip() for r in rows] == ["new", "new"]
    d = load_samples(tmp_path / "s.npz")
    tr = em.SampleTrace.from_arrays(d)
    assert tr.source_image.shape == (3, 2, 32, 32) and tr.patch_sizes.tolist() == [5, 3, 3]
    paths = render_mosaic(tr.select(1), ds.images, tmp_path / "m")
    assert all(p.stat().st_size > 1000 for p in paths)
    res = runner.invoke(app, ["mosaic", "--samples", str(tmp_path / "s.npz"), "--index", "1", "--per-class", "3",
                              "--out", str(tmp_path / "m2")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["mosaic", "--seed", "4", "--per-class", "3", "--steps", "3", "-k", "5,3,3",
                              "--out", str(tmp_path / "m3")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m3" / "strip.png").exists()
    res = runner.invoke(app, ["novelty", "--per-class", "3", "--seeds", "2", "--steps", "3", "-k", "5,3,3",
                              "--out", str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["summary"]["ideal"]["memorised"] == 1.0  # IS returns training digits
    assert report["summary"]["els"]["memorised"] == 0.0 and report["summary"]["ls"]["memorised"] == 0.0
    assert [r["verdict"] for r in report["per_seed"]["ideal"]] == ["memorised", "memorised"]


def test_mosaic_errors():
    runner = CliRunner()
    res = runner.invoke(app, ["mosaic", "--samples", "/nonexistent.npz"])
    assert res.exit_code == 2 and "does not exist" in res.output
    with pytest.raises(em.InputError, match="cannot be traced"):
        class Net:
            def denoise(self, x, t, labels=None):
                return x

        em.Traced(Net())


def test_travel_is_the_plain_distance_for_zeros_and_around_the_torus_for_circular():
    """A source one pixel across the border is 7 pixels away in an 8-pixel image with zero
    padding, and 1 away on the torus of circular padding."""
    S, B, H, W = 1, 1, 8, 8
    src_pix = torch.full((S, B, H, W), 0, dtype=torch.long)
    src_pix[0, 0, 0, 7] = 0 * W + 0  # output (0, 7) took its patch from (0, 0)
    src_pix[0, 0, 7, 7] = 0 * W + 7  # output (7, 7) from (0, 7)
    z = torch.zeros(S, B, 1, H, W)
    fields = dict(ts=torch.tensor([0.5]), patch_sizes=torch.tensor([3]), x_t=z, x0_hat=z, source_image=src_pix * 0,
                  source_pixel=src_pix, weight=torch.ones(S, B, H, W), effective=torch.ones(S, B, H, W))
    flat = em.SampleTrace(**fields, padding="zeros").travel()[0, 0]
    torus = em.SampleTrace(**fields, padding="circular").travel()[0, 0]
    assert float(flat[0, 7]) == 7.0 and float(torus[0, 7]) == 1.0
    assert float(flat[7, 7]) == 7.0 and float(torus[7, 7]) == 1.0
    assert float(torus[3, 3]) == pytest.approx(float(flat[3, 3]))  # (3, 3) from (0, 0): 3 and 3 either way
