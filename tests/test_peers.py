"""The peers' machines against brute-force float64 implementations written from their
definitions, their invariants, their errors, and the network sensitivity behind PSPC flex."""

import pytest
import reference as ref
import torch

import elsmachine as em
from elsmachine.networks import NetworkDenoiser


def peer(name, Y, labels=None, **kw):
    return em.make_machine(name, Y, labels=labels, **kw)


SHAPES = [(1, 4, 5), (3, 4, 4)]  # C, H, W: one channel non-square, three channels


@pytest.mark.parametrize("C,H,W", SHAPES)
@pytest.mark.parametrize("t", [0.05, 0.5, 1.0])
def test_nearest_wiener_and_stationary_match_their_definitions(data, C, H, W, t):
    Y, x = data(N=5, C=C, H=H, W=W, B=3, seed=C + int(10 * t))
    torch.testing.assert_close(em.NearestMachine(Y).denoise(x, t), ref.nearest(x, t, Y), rtol=0, atol=0)
    torch.testing.assert_close(em.WienerMachine(Y).denoise(x, t), ref.wiener(x, t, Y), rtol=0, atol=1e-10)
    torch.testing.assert_close(em.StationaryMachine(Y).denoise(x, t), ref.stationary(x, t, Y), rtol=0, atol=1e-10)


@pytest.mark.parametrize("C,H,W", SHAPES)
@pytest.mark.parametrize("threshold,temperature", [(0.02, 1.0), (0.3, 1.0), (0.1, 0.5)])
def test_locality_matches_its_definition(data, C, H, W, threshold, temperature):
    Y, x = data(N=6, C=C, H=H, W=W, B=2, seed=7)
    m = em.LocalityMachine(Y, threshold=threshold, temperature=temperature)
    for t in (0.1, 0.6):
        expect = ref.locality(x, t, Y, threshold, temperature)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-10)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4


@pytest.mark.parametrize("C,H,W", [(1, 5, 6), (3, 5, 5)])
@pytest.mark.parametrize("k", [1, 3, 5])  # 5: as tall as the image (for 5 x 5, the whole image)
def test_pspc_square_matches_its_definition(data, C, H, W, k):
    Y, x = data(N=5, C=C, H=H, W=W, B=2, seed=k)
    m = em.PatchCompositeMachine(Y, k)
    for t in (0.1, 0.7):
        expect = ref.composite(x, t, Y, ref.square_windows(H, W, k))
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,kw", [("nearest", {}), ("wiener", {}), ("stationary", {}), ("locality", {}),
                                     ("pspc", {"patch_size": 3})])
def test_class_conditional_peers_use_their_class_only(data, name, kw):
    Y, x = data(N=8, C=1, H=4, W=5, B=3, seed=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    q = torch.tensor([2, 0, 1])
    out = peer(name, Y, labels, **kw).denoise(x, 0.3, labels=q)
    for b in range(3):
        alone = peer(name, Y[labels == q[b]], **kw).denoise(x[b : b + 1], 0.3)
        torch.testing.assert_close(out[b : b + 1], alone, rtol=0, atol=1e-12)


def test_the_invariants_of_the_peers(data):
    Y, x = data(N=5, C=1, H=5, W=5, B=2, seed=11)
    ideal = em.IdealMachine(Y)
    for t in (0.05, 0.4, 1.0):
        # PSPC whose window is the whole image is IS; locality with threshold 0 is IS.
        torch.testing.assert_close(em.PatchCompositeMachine(Y, 5).denoise(x, t), ideal.denoise(x, t), rtol=0, atol=1e-12)
        torch.testing.assert_close(em.LocalityMachine(Y, threshold=0.0).denoise(x, t), ideal.denoise(x, t), rtol=0,
                                   atol=1e-12)
    # The Wiener machine of one image is IS of that image: the image itself.
    torch.testing.assert_close(em.WienerMachine(Y[:1]).denoise(x, 0.3), Y[:1].expand_as(x), rtol=0, atol=1e-12)
    # The stationary machine commutes with circular shifts.
    st = em.StationaryMachine(Y)
    torch.testing.assert_close(st.denoise(torch.roll(x, (2, -1), dims=(2, 3)), 0.3),
                               torch.roll(st.denoise(x, 0.3), (2, -1), dims=(2, 3)), rtol=0, atol=1e-12)


def test_the_wiener_machine_on_a_set_with_given_moments_is_the_gaussian_posterior_mean():
    """mu plus and minus the scaled eigenvectors of a chosen covariance: mean mu, covariance
    exactly Sigma (1/N); the machine then equals the closed-form Gaussian posterior mean."""
    g = torch.Generator().manual_seed(0)
    C, H, W = 1, 3, 4
    D = C * H * W
    mu = torch.rand(D, generator=g, dtype=torch.float64) - 0.5
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    lam = torch.rand(D, generator=g, dtype=torch.float64) * 0.2
    cov = Q @ torch.diag(lam) @ Q.T
    Y = torch.cat([mu + (D * lam).sqrt()[:, None] * Q.T, mu - (D * lam).sqrt()[:, None] * Q.T]).reshape(2 * D, C, H, W)
    x = torch.randn(3, C, H, W, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        torch.testing.assert_close(em.WienerMachine(Y).denoise(x, t), ref.gaussian_posterior_mean(x, t, mu, cov),
                                   rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,kw", [("nearest", {}), ("locality", {}), ("pspc", {"patch_size": 3}), ("wiener", {})])
def test_peers_do_not_depend_on_chunks_or_batches(name, kw):
    ds = em.load_dataset("mnist5k", per_class=6)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    big = peer(name, ds.images, **kw)
    small = em.make_machine(name, ds.images, memory_budget=1 << 20, **kw)
    for t in (0.1, 0.7):
        together = big.denoise(x, t)
        torch.testing.assert_close(small.denoise(x, t), together, rtol=0, atol=1e-10)
        torch.testing.assert_close(big.denoise(x[1:2], t), together[1:2], rtol=0, atol=1e-12)


def test_pspc_flex_with_square_windows_is_pspc_square(data):
    Y, x = data(N=5, C=1, H=5, W=6, B=2, seed=4)
    grid = em.ddim_grid(3)
    ts = grid[:-1].tolist()
    windows = torch.zeros(3, (5 - 3 + 1) * (6 - 3 + 1), 30, dtype=torch.bool)
    for i, win in enumerate(ref.square_windows(5, 6, 3)):
        windows[:, i, win] = True
    sens = em.Sensitivity.from_windows(windows, ts, (5, 6), em.CosineSchedule().to_dict())
    flex = em.FlexCompositeMachine(Y, sens)
    square = em.PatchCompositeMachine(Y, 3)
    torch.testing.assert_close(em.ddim_sample(flex, x, steps=3), em.ddim_sample(square, x, steps=3), rtol=0, atol=1e-12)
    with pytest.raises(em.InputError, match="t = 0.5 is not among them"):
        flex.denoise(x, 0.5)


class Blur(torch.nn.Module):
    """eps_hat = conv(x) with a fixed 3 x 3 kernel and zero padding: D(x) = (x - s eps_hat)/a is
    linear, so its Jacobian row of pixel q is known: 1/a at q, -(s/a) kernel around it."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([[0.0, 0.1, 0.0], [0.2, 0.5, 0.3], [0.0, 0.4, 0.0]]).view(1, 1, 3, 3),
                                    requires_grad=False)

    def forward(self, x, t):
        return torch.nn.functional.conv2d(x, self.k.to(x.dtype), padding=1)


def test_the_sensitivity_of_a_known_network_and_its_windows(tmp_path):
    net = NetworkDenoiser(Blur())
    images = torch.rand(3, 1, 6, 6, dtype=torch.float64) * 2 - 1
    sens = em.measure_sensitivity(net, images, steps=2, inputs=2, share=0.5, rows=7)
    sched = em.CosineSchedule()
    for i, t in enumerate(sens.ts):
        a, s = sched.alpha(t), sched.sigma(t)
        q = 2 * 6 + 3  # an interior pixel: row q of the Jacobian is the kernel around it (a correlation)
        row = sens.heat[i, q].view(6, 6)
        expect = torch.zeros(6, 6, dtype=torch.float64)
        expect[1:4, 2:5] = (s / a) * Blur().k.view(3, 3).double()
        expect[2, 3] = abs(1 / a - (s / a) * 0.5)
        torch.testing.assert_close(row.double(), expect, rtol=1e-5, atol=1e-6)
    sens.save(tmp_path / "s.safetensors")
    back = em.Sensitivity.load(tmp_path / "s.safetensors")
    assert back.ts == sens.ts and back.share == (0.5, 0.5) and back.meta["inputs"] == 2
    win = back.windows_at(sens.ts[1])  # t = 0.5: the centre weighs most, and holds half the total
    assert bool(win[2 * 6 + 3, 2 * 6 + 3]) and int(win[2 * 6 + 3].sum()) <= 3
    m = em.FlexCompositeMachine(images, tmp_path / "s.safetensors")
    assert m.denoise(images[:1] * 0.5, sens.ts[0]).shape == (1, 1, 6, 6)


def test_bad_input_to_the_peers_is_named(tmp_path, data):
    Y, x = data(N=4, C=1, H=5, W=6)
    for bad in (-0.1, 1.5, "x", float("nan")):
        with pytest.raises(em.InputError, match="threshold"):
            em.LocalityMachine(Y, threshold=bad)
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(em.InputError, match="temperature"):
            em.LocalityMachine(Y, temperature=bad)
    with pytest.raises(em.InputError, match="PSPC window of 7 x 7 does not fit inside a 5x6 image"):
        em.PatchCompositeMachine(Y, 7).denoise(x, 0.5)
    with pytest.raises(em.InputError, match="class 5 has no training images"):
        em.WienerMachine(Y, torch.tensor([0, 0, 1, 1])).denoise(x, 0.5, labels=torch.tensor([5, 0]))
    with pytest.raises(em.InputError, match="cannot be traced|no candidates to trace"):
        em.PatchCompositeMachine(Y, 3).denoise_traced(x, 0.5)
    with pytest.raises(em.InputError, match="has no threshold"):
        em.make_machine("wiener", Y, threshold=0.1)
    with pytest.raises(em.InputError, match="needs a sensitivity"):
        em.make_machine("pspc-flex", Y)
    sens = em.measure_sensitivity(NetworkDenoiser(Blur()), Y[:, :, :, :5], steps=2, inputs=1)
    sens.save(tmp_path / "s.safetensors")
    with pytest.raises(em.InputError, match="5x5 images, the training images are 5x6"):
        em.FlexCompositeMachine(Y, tmp_path / "s.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(em.InputError, match="not a sensitivity file"):
        em.FlexCompositeMachine(Y, tmp_path / "junk.safetensors")


def test_nearest_and_locality_trace_like_the_others(data):
    Y, x = data(N=5, C=1, H=4, W=5, B=2, seed=6)
    x0, tr = em.NearestMachine(Y).denoise_traced(x, 0.2)
    near = ref.nearest(x, 0.2, Y)
    for b in range(2):
        n = int(tr.source_image[b, 0, 0])
        assert torch.equal(Y[n], near[b]) and (tr.weight[b] == 1).all()
    x0, tr = em.LocalityMachine(Y, threshold=0.0).denoise_traced(x, 0.2)
    _, w = ref.ideal(x, 0.2, Y, return_weights=True)  # threshold 0: every entry weighs images as IS does
    assert torch.equal(tr.source_image[:, 0, 0], w.argmax(1))
    torch.testing.assert_close(tr.weight[:, 1, 2], w.max(1).values, rtol=0, atol=1e-12)


def test_every_machine_from_the_command_line_against_a_tiny_network(tmp_path, tiny_network):
    import json

    from typer.testing import CliRunner

    from elsmachine.cli import app
    run = CliRunner()
    common = ["--per-class", "1", "--steps", "2"]
    res = run.invoke(app, ["sensitivity", "--model", str(tiny_network), *common, "--inputs", "1", "--rows", "512",
                           "-o", str(tmp_path / "s.safetensors")])
    assert res.exit_code == 0, res.output
    res = run.invoke(app, ["sample", "--machine", "pspc-flex", "--sensitivity", str(tmp_path / "s.safetensors"), *common,
                           "--num", "2", "-o", str(tmp_path / "flex.png")])
    assert res.exit_code == 0, res.output
    res = run.invoke(app, ["sample", "--machine", "pspc-flex", *common, "--num", "1", "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "needs --sensitivity" in res.output
    res = run.invoke(app, ["compare", "--model", str(tiny_network), *common, "--seeds", "2", "--machines", "all",
                           "--patch-schedule", "3", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert set(summary["machines"]) == {n for n, c in em.MACHINES.items() if not c.declaration.candidate}
    assert {"median_r", "median_r2", "median_R2", "median_mse", "beats_ideal"} <= set(summary["machines"]["pspc"])
    assert "beats_els" in summary["machines"]["locality"] and (tmp_path / "cmp" / "sensitivity.safetensors").exists()
    for f in ("results.csv", "montage.png", "boxplot.png"):
        assert (tmp_path / "cmp" / f).stat().st_size > 0
    cands = ["compare", "--model", str(tiny_network), *common, "--seeds", "1", "--machines",
             "els,els-soft,els-tempered,els-radius", "--patch-schedule", "3", "--out", str(tmp_path / "cand")]
    res = run.invoke(app, cands + ["--set", "els-soft.sigma=0.8", "--set", "els-tempered.temperatures=2,0.5",
                                   "--set", "els-radius.radii=1,inf"])
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "cand" / "settings.json").read_text())
    assert settings["machines"]["els-soft"]["sigma"] == [0.8]
    # a per-step list is stored with the times of this run's two steps
    tempered, radius = settings["machines"]["els-tempered"]["temperatures"], settings["machines"]["els-radius"]["radii"]
    assert tempered["values"] == [2.0, 0.5] and radius["values"] == [1, "inf"]
    assert tempered["ts"] == radius["ts"] and len(tempered["ts"]) == 2 and tempered["ts"][0] > tempered["ts"][1]
    border = ["compare", "--model", str(tiny_network), *common, "--seeds", "1", "--machines", "els-border",
              "--patch-schedule", "3", "--out", str(tmp_path / "border")]
    res = run.invoke(app, border + ["--set", "els-border.border_patch_size=5,3"])
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "border" / "settings.json").read_text())
    assert settings["machines"]["els-border"]["border_patch_size"]["sizes"] == [5, 3]
    res = run.invoke(app, border + ["--set", "els-border.border_patch_size=4"])
    assert res.exit_code == 2 and "border_patch_size" in res.output and "odd" in res.output, res.output
    for bad, says in (("els-soft.width=3", "has no option 'width'"), ("ls.padding=zeros", "not among the machines"),
                      ("els-soft", "MACHINE.OPTION=VALUE"), ("els-soft.sigma=-1", "sigma must be positive"),
                      ("els-radius.radii=1.5", "whole numbers")):
        res = run.invoke(app, cands + ["--set", bad])
        assert res.exit_code == 2 and says in res.output, (bad, res.output)
    res = run.invoke(app, ["calibrate", "--model", str(tiny_network), *common, "--machine", "pspc", "--sizes", "1,3",
                           "--seeds", "1", "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert em.PatchSchedule.load(tmp_path / "p.json").meta["machine"] == "pspc"
