"""The one denoiser contract: machines and networks behind denoise(x, t, labels), the sampler as
a pure function of (denoiser, noise, grid), patch sizes owned by machines, dtype and device
following the tensors, one rule for seeds and classes, and one statement of candidates."""

import copy
import json
import warnings

import numpy as np
import pytest
import reference as ref
import torch
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app
from elsmachine.experiments.calibrate import calibrate
from elsmachine.experiments.compare import compare
from elsmachine.machines.candidates import pixel_classes, rectangles
from elsmachine.networks import NetConfig, NetworkDenoiser, build_network
from elsmachine.files import load_samples


class Linear(torch.nn.Module):
    """eps_hat = c x, a network whose DDIM trajectory has a closed form per step."""

    def __init__(self, c=0.25):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, x, t):
        return self.c * x


def test_a_network_is_sampled_through_ddim_sample_like_a_naive_loop():
    net = NetworkDenoiser(Linear())
    noise = torch.randn(2, 1, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = [1.0, 0.6, 0.3, 0.0]
    out = em.ddim_sample(net, noise, ts=ts)

    def x0(x, t):
        a, s = ref.coefficients(t)
        return (x - s * 0.25 * x) / a

    torch.testing.assert_close(out, ref.ddim(x0, noise, ts), rtol=0, atol=1e-12)


def test_patch_sizes_for_a_denoiser_without_a_patch_size_name_it():
    net = NetworkDenoiser(Linear(), meta={"source": "linear-net"})
    with pytest.raises(em.InputError, match="linear-net.*has no patch size"):
        em.ddim_sample(net, torch.zeros(1, 1, 4, 4), steps=2, patch_sizes=3)
    Y = torch.rand(3, 1, 4, 4) * 2 - 1
    with pytest.raises(em.InputError, match="IdealMachine.*has no patch size"):
        em.ddim_sample(em.IdealMachine(Y), torch.zeros(1, 1, 4, 4), steps=2, patch_sizes=3)
    with pytest.raises(em.InputError, match="ideal machine .*has no patch_size"):
        em.make_machine("ideal", Y, patch_size=3)


def test_a_float64_input_runs_the_network_in_float64():
    torch.manual_seed(0)
    net = build_network(NetConfig(arch="resnet", width=4, depth=1, emb_dim=8))
    den = NetworkDenoiser(net)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    out64 = den.denoise(x, 0.4)
    assert out64.dtype == torch.float64 and next(net.parameters()).dtype == torch.float64
    reference = copy.deepcopy(net).double()
    a, s = em.CosineSchedule().alpha(0.4), em.CosineSchedule().sigma(0.4)
    with torch.no_grad():
        expect = (x - s * reference(x, torch.full((2,), 0.4, dtype=torch.float64))) / a
    torch.testing.assert_close(out64, expect, rtol=0, atol=1e-14)
    out32 = den.denoise(x.float(), 0.4)  # the weights follow back to float32, exactly
    assert out32.dtype == torch.float32 and (out32.double() - out64).abs().max() > 1e-9


def test_the_sampler_updates_in_float64_and_the_callback_sees_both_states():
    Y = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    m = em.ELSMachine(Y, patch_size=3)
    noise = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    seen = []
    out = em.ddim_sample(m, noise, steps=3, callback=seen.append)
    assert out.dtype == torch.float32 and [s["i"] for s in seen] == [0, 1, 2]
    assert torch.equal(seen[0]["x"], noise)
    for before, after in zip(seen, seen[1:]):
        assert torch.equal(before["x_next"], after["x"])  # the state after a step is the next input
    assert torch.equal(seen[-1]["x_next"], out) and torch.equal(out, seen[-1]["x0_hat"])
    # The update in float64 of a float32 denoiser's outputs:
    x = noise.double()
    for s in seen:
        x0 = s["x0_hat"].double()
        a, sg = ref.coefficients(s["t"])
        x = x0 if s["t_next"] == 0 else ref.coefficients(s["t_next"])[0] * x0 + ref.coefficients(s["t_next"])[1] * (x - a * x0) / sg
        torch.testing.assert_close(s["x_next"], x.float(), rtol=0, atol=0)


def test_a_machine_owns_its_patch_schedule_and_looks_it_up_by_t():
    ds = em.load_dataset("mnist5k", per_class=2)
    noise = em.seed_noise([0], (1, 32, 32), dtype=torch.float64)
    lab = torch.tensor([4])
    own = em.ddim_sample(em.ELSMachine(ds.images, labels=ds.labels, patch_size="mnist-resnet-zeros"), noise, steps=4,
                         labels=lab)
    override = em.ddim_sample(em.ELSMachine(ds.images, labels=ds.labels), noise, steps=4, labels=lab,
                              patch_sizes="mnist-resnet-zeros")
    listed = em.ddim_sample(em.ELSMachine(ds.images, labels=ds.labels, patch_size=[15, 13, 9, 5]), noise, steps=4,
                            labels=lab)
    assert torch.equal(own, override) and torch.equal(own, listed)  # the preset at t = 1, .75, .5, .25
    m = em.ELSMachine(ds.images, patch_size=[9, 3])
    assert [m.patch_size_at(t) for t in (1.0, 0.5)] == [9, 3]
    with pytest.warns(UserWarning, match="not a time of this patch schedule.*nearest"):
        assert m.patch_size_at(0.7) == 3
    m = em.ELSMachine(ds.images[:3], patch_size=1001)
    with pytest.warns(UserWarning, match="patch size 1001 is larger.*using 63"):
        torch.testing.assert_close(m.denoise(noise, 0.5), m.denoise(noise, 0.5, patch_size=63), rtol=0, atol=0)


def test_the_trace_is_a_wrapper_and_the_sample_is_unchanged_by_it():
    Y = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    m = em.ELSMachine(Y, patch_size=[5, 3, 3])
    noise = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    traced = em.Traced(m)
    x = em.ddim_sample(traced, noise, steps=3)
    assert torch.equal(x, em.ddim_sample(m, noise, steps=3))
    tr = traced.sample_trace()
    assert tr.patch_sizes.tolist() == [5, 3, 3] and tr.ts.tolist() == [1.0, 2 / 3, 1 / 3]
    assert torch.equal(tr.x0_hat[-1], x.float())


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("kind", ["ls", "els"])
@pytest.mark.parametrize("H,W,k", [(5, 6, 3), (7, 7, 5), (4, 9, 7), (6, 5, 13)])
def test_pixel_classes_from_the_rectangles_are_the_definition(kind, padding, H, W, k):
    """The kernel's rectangles, read as classes of pixels, say what the reference says: each
    pixel sees exactly its candidates, and a class's pixels see the same ones."""
    for queries, cands in pixel_classes(kind, padding, H, W, k):
        for q in queries.tolist():
            expect = sorted(r * W + c for r, c in ref.candidates(kind, q // W, q % W, H, W, k, padding))
            assert cands.tolist() == expect
    covered = torch.cat([q for q, _ in pixel_classes(kind, padding, H, W, k)]).sort().values
    assert torch.equal(covered, torch.arange(H * W))
    if kind == "els" and padding == "zeros":
        assert rectangles(kind, padding, H, W, k).shape[0] <= 9


def test_the_kernel_arguments_are_read_from_their_one_declaration():
    from elsmachine.engines import native

    fields = [name for name, _ in native.args_type()._fields_]
    assert len(fields) == 30 and fields[0] == "x" and fields[-1] == "gk"
    assert native.block_size() == 64 and native.max_sizes() == 128


def test_the_same_seed_and_class_give_the_same_image_in_every_command(tmp_path, tiny_network):
    run = CliRunner()
    common = ["--per-class", "3", "--steps", "3", "--seed", "3"]
    res = run.invoke(app, ["sample", *common, "--num", "1", "-k", "5,3,3", "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    sampled = load_samples(tmp_path / "s.npz")
    assert sampled["labels"].tolist() == [3]  # seed 3 draws class 3 of 0..9
    res = run.invoke(app, ["mosaic", *common, "-k", "5,3,3", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    drawn = load_samples(tmp_path / "m" / "sample.npz")
    assert drawn["labels"].tolist() == [3]
    np.testing.assert_array_equal(drawn["images"], sampled["images"])
    res = run.invoke(app, ["compare", "--model", str(tiny_network), *common, "--seeds", "1", "--machines", "els",
                           "--patch-schedule", "5,3,3", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "cmp" / "seeds" / "000003.npz") as rec:
        assert int(rec["label"]) == 3
        np.testing.assert_array_equal(rec["img_els"], sampled["images"][0])
    res = run.invoke(app, ["novelty", *common, "--seeds", "1", "--machines", "els", "-k", "5,3,3",
                           "--out", str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "n.json").read_text())["labels"] == [3]
    assert em.class_of_seed(13, range(10)) == 3 and em.class_of_seed(3, [2, 5]) == 5


class Shifted:
    """A network stand-in on another noise schedule."""

    def __init__(self, m):
        self.m, self.schedule = m, em.CosineSchedule(offset=0.0)

    def denoise(self, x, t, labels=None):
        return self.m.denoise(x, t, labels=labels)


def test_a_machine_on_another_noise_schedule_than_the_network_is_refused(tmp_path):
    ds = em.load_dataset("mnist5k", per_class=1)
    m = em.ELSMachine(ds.images, patch_size=3)
    net = Shifted(m)
    with pytest.raises(em.InputError, match="noise schedule"):
        compare(net, {"els": m}, ds.images, [0], tmp_path / "c", steps=2)
    with pytest.raises(em.InputError, match="noise schedule"):
        calibrate(net, m, [3, 5], [0], steps=2)
    with pytest.raises(em.InputError, match="noise schedule"):
        em.ddim_sample(m, torch.zeros(1, 1, 32, 32), steps=2, schedule=em.CosineSchedule(offset=0.0))
    assert not (tmp_path / "c").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        em.ddim_sample(m, torch.zeros(1, 1, 32, 32), steps=2, schedule=em.CosineSchedule())  # the same one is fine
