"""Datasets in their standard formats, training with exact resume, network adapters,
calibration and comparison, each on tiny data and checked where the answer is known."""

import gzip
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app
from elsmachine.networks import BUNDLED_MODELS
from elsmachine.experiments.calibrate import calibrate
from elsmachine.experiments.compare import compare
from elsmachine.networks import NetConfig, build_network, load_network
from elsmachine.networks.training import TrainConfig, train
from helpers import FixedSize


# ----------------------------------------------------------------------------- datasets
def write_idx(path, arr, gz):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = head + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labs = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", imgs, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", labs, gz)
    ds = em.load_dataset("mnist", root=tmp_path)
    assert ds.images.shape == (6, 1, 32, 32) and ds.labels.tolist() == labs.tolist()
    torch.testing.assert_close(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(imgs).float() / 127.5 - 1)
    assert (ds.images[:, :, :2] == -1).all()
    bil = em.load_dataset("fashion-mnist", root=tmp_path, resize="bilinear", per_class=1)
    assert bil.images.shape == (3, 1, 32, 32) and bil.labels.tolist() == [0, 1, 2]
    assert em.load_dataset("mnist", root=tmp_path, keep_labels=False).labels is None


def test_idx_errors_name_the_file(tmp_path):
    with pytest.raises(em.InputError, match="train-images-idx3-ubyte"):
        em.load_dataset("mnist", root=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"xx")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5), False)
    with pytest.raises(em.InputError, match="train-images-idx3-ubyte is truncated"):
        em.load_dataset("mnist", root=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(em.InputError, match="not an IDX file"):
        em.load_dataset("mnist", root=tmp_path)


def test_cifar10_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": data, b"labels": [i % 10, (i + 1) % 10]}, f)
    ds = em.load_dataset("cifar10", root=tmp_path)
    assert ds.images.shape == (10, 3, 32, 32) and ds.labels.tolist()[:2] == [1, 2]
    with open(folder / "data_batch_1", "rb") as f:
        d = pickle.load(f)
    expect = torch.from_numpy(d[b"data"][0].reshape(3, 32, 32)).float() / 127.5 - 1
    torch.testing.assert_close(ds.images[0], expect)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(em.InputError, match="data_batch_3"):
        em.load_dataset("cifar10", root=tmp_path)


def test_image_folder_with_and_without_classes(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("cats", "dogs"):
        (tmp_path / "lab" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "lab" / cls / f"{i}.png")
    ds = em.load_dataset(tmp_path / "lab")
    assert ds.images.shape == (4, 3, 32, 32) and ds.labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "flat").mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 48), dtype=np.uint8)).save(tmp_path / "flat" / "a.jpg")
    celeba = em.load_dataset("celeba", root=tmp_path / "flat")
    assert celeba.images.shape == (1, 3, 32, 32) and celeba.labels is None
    (tmp_path / "flat" / "b.png").write_bytes(b"not an image")
    with pytest.raises(em.InputError, match="b.png"):
        em.load_dataset(tmp_path / "flat")


# ----------------------------------------------------------------------------- training
TINY = NetConfig(arch="resnet", width=8, depth=2, num_classes=10, emb_dim=16)


def test_resume_continues_exactly(tmp_path):
    data = em.load_dataset("mnist5k", per_class=3)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, checkpoint_every=2)
    train(TINY, cfg, data, tmp_path / "straight")
    # Stop after 1 epoch (mid-way through the schedule), then resume to 3 epochs.
    train(TINY, TrainConfig(epochs=1, batch_size=8, lr=1e-3, checkpoint_every=2), data, tmp_path / "split")
    train(TINY, cfg, data, tmp_path / "split", resume=True)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = json.loads((tmp_path / "straight" / "config.json").read_text())["progress"]["epoch_losses"]
    lb = json.loads((tmp_path / "split" / "config.json").read_text())["progress"]["epoch_losses"]
    assert la == lb and len(la) == 3


def test_resume_from_a_mid_epoch_checkpoint(tmp_path):
    data = em.load_dataset("mnist5k", per_class=3)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, checkpoint_every=1)
    train(TINY, cfg, data, tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_at_5(info):
        if info["step"] == 5:
            raise Stop

    with pytest.raises(Stop):
        train(TINY, cfg, data, tmp_path / "b", on_step=stop_at_5)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["progress"]["step"] == 4
    train(TINY, cfg, data, tmp_path / "b", resume=True)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_moving_average_is_exact_and_the_checkpoint_holds_the_average(tmp_path):
    data = em.load_dataset("mnist5k", per_class=3)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, ema=0.9)
    train(TINY, cfg, data, tmp_path / "a")
    train(TINY, TrainConfig(epochs=1, batch_size=8, lr=1e-3, ema=0.9), data, tmp_path / "b")
    train(TINY, cfg, data, tmp_path / "b", resume=True)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = load_file(str(tmp_path / "a" / "state.safetensors"))
    assert all(torch.equal(a[k], state[f"ema.{k}"]) for k in a)  # the checkpoint is the average ...
    assert any(not torch.equal(a[k], state[f"model.{k}"]) for k in a)  # ... not the last step's weights
    # A new run can start from those weights; its config records where they came from.
    train(TINY, TrainConfig(epochs=1, batch_size=8), data, tmp_path / "c", init_from=tmp_path / "a")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["init_from"]["source"] == str(tmp_path / "a")
    with pytest.raises(em.InputError, match="differs from this one"):
        train(NetConfig(arch="resnet", width=4, depth=2, num_classes=10, emb_dim=16), TrainConfig(epochs=1), data,
              tmp_path / "d", init_from=tmp_path / "a")


def test_training_refuses_to_overwrite_and_checks_settings(tmp_path):
    data = em.load_dataset("mnist5k", per_class=1)
    train(TINY, TrainConfig(epochs=1, batch_size=8), data, tmp_path)
    with pytest.raises(em.InputError, match="--resume"):
        train(TINY, TrainConfig(epochs=1, batch_size=8), data, tmp_path)
    with pytest.raises(em.InputError, match="settings differ"):
        train(TINY, TrainConfig(epochs=2, batch_size=4), data, tmp_path, resume=True)


def test_both_architectures_and_paddings_run():
    for cfg in (NetConfig(arch="resnet", width=4, depth=1, padding="circular"),
                NetConfig(arch="unet", widths=(4, 8, 8), padding="zeros", num_classes=3)):
        net = build_network(cfg)
        y = torch.tensor([0, 2]) if cfg.num_classes else None
        assert net(torch.randn(2, 1, 32, 32), torch.rand(2), y).shape == (2, 1, 32, 32)


# ----------------------------------------------------------------------------- adapters
def test_adapter_turns_noise_prediction_into_x0(tmp_path):
    data = em.load_dataset("mnist5k", per_class=1)
    train(TINY, TrainConfig(epochs=1, batch_size=8), data, tmp_path)
    net = load_network(tmp_path)
    assert net.takes_labels and net.padding == "zeros" and net.num_classes == 10
    x = torch.randn(2, 1, 32, 32)
    lab = torch.tensor([1, 2])
    eps = net.eps(x, 0.5, lab)
    a, s = em.CosineSchedule().alpha(0.5), em.CosineSchedule().sigma(0.5)
    torch.testing.assert_close(net.denoise(x, 0.5, lab), (x - s * eps) / a)
    with pytest.raises(em.InputError, match="labels are required"):
        net.denoise(x, 0.5)
    with pytest.raises(em.InputError, match="labels must lie in"):
        net.denoise(x, 0.5, torch.tensor([1, 10]))


def test_torchscript_networks_load(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, x, t):
            return x * t.view(-1, 1, 1, 1)

    class Three(torch.nn.Module):
        def forward(self, x, t, labels):
            return x * 0 + labels.view(-1, 1, 1, 1).float()

    torch.jit.script(Two()).save(str(tmp_path / "two.pt"))
    torch.jit.script(Three()).save(str(tmp_path / "three.pt"))
    two = load_network(tmp_path / "two.pt", padding="circular")
    three = load_network(tmp_path / "three.pt")
    x = torch.ones(2, 1, 4, 4)
    assert not two.takes_labels and three.takes_labels and two.padding == "circular"
    torch.testing.assert_close(two.eps(x, torch.tensor([0.5, 0.25])), x * torch.tensor([0.5, 0.25]).view(-1, 1, 1, 1))
    torch.testing.assert_close(three.eps(x, 0.5, torch.tensor([3, 4])), torch.tensor([3.0, 4.0]).view(-1, 1, 1, 1).expand_as(x))
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(em.InputError, match="bad.pt"):
        load_network(tmp_path / "bad.pt")


# ----------------------------------------------------------------------------- calibration

def test_calibrating_a_machine_against_itself_finds_its_size():
    ds = em.load_dataset("mnist5k", per_class=4)
    m = em.ELSMachine(ds.images, labels=ds.labels)
    sched, best, sim = calibrate(FixedSize(m, 5), m, [3, 5, 7], [0, 1], steps=5, labels=torch.tensor([3, 8]),
                                 dtype=torch.float64)
    assert list(sched.sizes) == [5] * 5 and (best == 5).all()
    assert sched.ts == (1.0, 0.8, 0.6, 0.4, 0.2)
    torch.testing.assert_close(sim[:, 1], torch.ones(5, 2, dtype=torch.float64))
    r = []

    class Rec:
        schedule = m.schedule

        def denoise(self, x, t, labels=None, patch_size=None):
            r.append((t, patch_size))
            return m.denoise(x, t, patch_size=patch_size, labels=labels)

    em.ddim_sample(Rec(), em.seed_noise([0], (1, 32, 32)), steps=5, patch_sizes=sched, labels=torch.tensor([3]))
    assert r == [(1.0, 5), (0.8, 5), (0.6, 5), (0.4, 5), (0.2, 5)]


def test_calibration_in_one_pass_gives_the_schedule_of_size_by_size():
    """The machine's one pass over the candidates for every size (denoise_sizes) against the
    same calibration with the sizes run one at a time: same best sizes, same similarities.
    (Both paddings' one pass is checked against the reference in test_machines.)"""
    ds = em.load_dataset("mnist5k", per_class=4)
    m = em.ELSMachine(ds.images, labels=ds.labels)

    class OneAtATime:  # the machine without denoise_sizes
        schedule, image_shape, has_patch_size = m.schedule, m.image_shape, True

        def denoise(self, x, t, labels=None, patch_size=None):
            return m.denoise(x, t, labels=labels, patch_size=patch_size)

    net = FixedSize(m, 7)
    lab = torch.tensor([3, 8])
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        one = calibrate(net, m, [3, 5, 7, 9], [0, 1], steps=4, labels=lab, dtype=dtype)
        each = calibrate(net, OneAtATime(), [3, 5, 7, 9], [0, 1], steps=4, labels=lab, dtype=dtype)
        assert one[0].sizes == each[0].sizes and torch.equal(one[1], each[1])
        torch.testing.assert_close(one[2], each[2], rtol=0, atol=tol)


def test_l2_criterion_and_bad_arguments():
    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images)
    sched, _, _ = calibrate(FixedSize(m, 3), m, [3, 7], [0], steps=3, criterion="l2", dtype=torch.float64)
    assert list(sched.sizes) == [3, 3, 3]
    with pytest.raises(em.InputError, match="criterion"):
        calibrate(FixedSize(m, 3), m, [3], [0], steps=2, criterion="dot")
    with pytest.raises(em.InputError, match="odd"):
        calibrate(FixedSize(m, 3), m, [4], [0], steps=2)


# ----------------------------------------------------------------------------- comparison
def test_compare_resumes_without_losing_or_repeating_seeds(tmp_path):
    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)
    net = FixedSize(m, 3)  # the "network" is ELS at k = 3, so ELS at k = 3 must match it exactly
    machines = {"ideal": em.IdealMachine(ds.images, labels=ds.labels), "els": m}
    seen = []
    compare(net, machines, ds.images, [0, 1], tmp_path, steps=4, classes=ds.classes, on_seed=seen.append)
    summary = compare(net, machines, ds.images, [0, 1, 2], tmp_path, steps=4, classes=ds.classes, on_seed=seen.append)
    assert [s["resumed"] for s in seen] == [False, False, True, True, False]
    rows = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert summary["seeds"] == 3 and abs(summary["machines"]["els"]["median_r"] - 1) < 1e-6
    assert summary["els_beats_is"] == 1.0
    from elsmachine.output.plots import comparison_plots  # the library compares; its caller draws

    comparison_plots(tmp_path, summary, ds.images)
    for f in ("summary.json", "scatter.png", "montage.png", "boxplot.png"):
        assert (tmp_path / f).stat().st_size > 0


def test_pipeline_cli_end_to_end(tmp_path):
    """train -> calibrate -> compare -> sample with the schedule, on tiny settings."""
    run = CliRunner()
    common = ["--per-class", "2"]
    res = run.invoke(app, ["train", *common, "--width", "8", "--depth", "2", "--epochs", "1", "--batch-size", "10",
                           "--cond", "--out", str(tmp_path / "net")])
    assert res.exit_code == 0, res.output
    res = run.invoke(app, ["calibrate", "--model", str(tmp_path / "net"), *common, "--sizes", "3,5", "--seeds", "2",
                           "--steps", "3", "--out", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    sched = em.PatchSchedule.load(tmp_path / "s.json")
    assert len(sched.sizes) == 3 and sched.meta["criterion"] == "cosine" and sched.meta["data"]["name"] == "mnist5k"
    res = run.invoke(app, ["compare", "--model", str(tmp_path / "net"), *common, "--schedule", str(tmp_path / "s.json"),
                           "--seeds", "2", "--steps", "3", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cmp" / "summary.json").read_text())["seeds"] == 2
    res = run.invoke(app, ["sample", *common, "--num", "2", "--steps", "3", "-k", str(tmp_path / "s.json"),
                           "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- benchmark
def test_benchmark_runs_and_its_baseline_agrees():
    from elsmachine.bench import BenchConfig, run_benchmark
    from elsmachine.bench.baseline import baseline_denoise
    from elsmachine.bench.work import pairs_for

    report = run_benchmark([BenchConfig("els-zeros", 16, 1, steps=2, baseline=True), BenchConfig("ideal", 16, 2, steps=2),
                            BenchConfig("els-zeros", 16, 2, steps=2, radius=2)])
    a, b, c = report["results"]
    assert report["matmul_gflops"] > 0 and report["idle_peak_mb"] > 0
    ks = em.preset("mnist-resnet-zeros").sizes_for(em.ddim_grid(2))
    assert ks == [15, 9]
    assert a["backend"] == "native" and a["pairs"] == sum(pairs_for("els-zeros", k, 16) for k in ks)
    assert a["speedup"] > 0 and a["baseline_max_diff"] < 1e-4 and a["peak_mb"] > 0
    assert a["fidelity_max_abs"] < 1e-4 and a["fidelity_min_r2"] > 0.99999
    assert b["backend"] == "attention" and b["pairs_per_s"] > 0
    # The approximate mode with near candidates only: fewer pairs, compared with exact.
    assert c["pairs"] == 2 * sum(pairs_for("els-zeros", k, 16, radius=2) for k in ks) < 2 * a["pairs"]
    assert c["approx_speedup"] > 0 and 0 <= c["approx_min_r2"] <= c["approx_median_r2"] <= 1
    # The baseline is the same math: it matches the float64 reference.
    Y = torch.rand(3, 1, 5, 6, dtype=torch.float64) * 2 - 1
    x = torch.randn(1, 1, 5, 6, dtype=torch.float64)
    for pad in ("zeros", "circular"):
        import reference as ref

        torch.testing.assert_close(baseline_denoise(x, 0.4, Y, 3, pad), ref.patch_machine("els", x, 0.4, Y, 3, pad),
                                   rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- shipped network
def test_shipped_network_reproduces_its_published_comparison(tmp_path):
    """The bundled ResNet and its calibrated schedule give, for seed 0, the r in docs/compare."""
    import csv
    from pathlib import Path

    from elsmachine.networks.checkpoints import patch_schedule_beside

    net = load_network("mnist5k-resnet")
    assert net.takes_labels and net.padding == "zeros" and net.num_classes == 10
    sched = em.PatchSchedule.load(patch_schedule_beside("mnist5k-resnet"))
    assert len(sched.sizes) == 20 and sched.meta["criterion"] == "cosine"
    ds = em.load_dataset("mnist5k")
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=sched)
    summary = compare(net, {"els": m}, ds.images, [0], tmp_path, steps=20, classes=ds.classes)
    rows = list(csv.DictReader(open(Path(__file__).parents[1] / "docs" / "compare" / "results.csv")))
    published = float(next(r for r in rows if r["seed"] == "0")["r_els"])
    assert abs(summary["machines"]["els"]["median_r"] - published) < 1e-4


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_every_shipped_network_is_finished_calibrated_and_denoises(name):
    """Each bundled network finished its training, carries a schedule calibrated against it on the
    default grid, and denoises an image of digits toward digits (x0_hat nearer the clean image
    than x_t's rescaling is)."""
    import json

    from elsmachine.networks.checkpoints import bundled_model_path, patch_schedule_beside

    cfg = json.loads((bundled_model_path(name) / "config.json").read_text())
    assert cfg["progress"]["done"] and cfg["progress"]["epoch"] == cfg["train"]["epochs"]
    sched = em.PatchSchedule.load(patch_schedule_beside(name))
    assert len(sched.sizes) == 20 and all(k % 2 == 1 for k in sched.sizes)
    net = load_network(name)
    assert net.takes_labels and net.padding == "zeros"
    ds = em.load_dataset("mnist5k")
    x0, y = ds.images[:4], ds.labels[:4]
    a, s = net.schedule.alpha(0.3), net.schedule.sigma(0.3)
    xt = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (net.denoise(xt, 0.3, labels=y) - x0).square().mean()
    assert err < 0.5 * (xt / a - x0).square().mean()


def test_attention_unet_attends_globally_and_starts_as_the_unet():
    cfg = NetConfig(arch="attn-unet", widths=(4, 8, 8), num_classes=3, heads=2, image_size=64)
    net = build_network(cfg)
    plain = build_network(NetConfig(arch="unet", widths=(4, 8, 8), num_classes=3, image_size=64))
    assert sorted({k.split(".")[0] for k in net.state_dict()} - {k.split(".")[0] for k in plain.state_dict()}) == \
        ["down_attn", "mid_attn", "up_attn"]
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "attn" not in k})
    x, t, y = torch.randn(2, 1, 64, 64), torch.rand(2), torch.tensor([0, 2])
    torch.testing.assert_close(net(x, t, y), plain(x, t, y))  # zero-initialised output projections
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=0.3)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "attn" not in k})
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    far = (slice(None), slice(None), -1, -1)
    assert torch.equal(plain(x2, t, y)[far], plain(x, t, y)[far])  # the corner lies outside the UNet's field ...
    assert (net(x2, t, y) - net(x, t, y))[far].abs().min() > 0  # ... and attention reaches it
    assert NetConfig.from_dict(cfg.to_dict()) == cfg
    old = NetConfig(arch="unet").to_dict()  # a config written before the attention fields existed
    assert NetConfig.from_dict({k: v for k, v in old.items() if k not in ("attention", "heads")}) == NetConfig(arch="unet")
    with pytest.raises(em.InputError, match="heads=3"):
        NetConfig(arch="attn-unet", widths=(4, 8, 8), heads=3)
    with pytest.raises(em.InputError, match="attention must name"):
        NetConfig(arch="attn-unet", widths=(4, 8, 8), attention=4)
