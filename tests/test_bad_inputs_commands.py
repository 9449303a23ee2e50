"""Bad input to the model commands (train, sensitivity, bench) is refused as one line naming it,
before any work, and leaves what is on disk untouched."""

import pytest
import torch

import elsmachine as em
from elsmachine.datasets import Dataset
from elsmachine.networks.checkpoints import check_data_fits
from elsmachine.noise import CosineSchedule, DiscreteSchedule
from helpers import cli, error_line

TINY_TRAIN = ["train", "--per-class", "2", "--width", "8", "--depth", "2", "--batch-size", "10", "--device", "cpu"]
SENSITIVITY = ["sensitivity", "--model", "mnist5k-resnet", "--per-class", "2", "--steps", "2", "--inputs", "1"]


# ----------------------------------------------------------------------------- els train
def test_resume_with_fewer_epochs_than_trained_is_refused_and_writes_nothing(tmp_path):
    out = tmp_path / "net"
    assert cli(*TINY_TRAIN, "--epochs", "3", "--out", out).exit_code == 0
    files = ("config.json", "model.safetensors", "state.safetensors")
    before = {f: (out / f).read_bytes() for f in files}
    res = cli(*TINY_TRAIN, "--epochs", "2", "--resume", "--out", out)
    line = error_line(res)
    assert res.exit_code == 2 and "--epochs 2" in line and "3 epochs" in line and "--epochs 3" in line, line
    assert {f: (out / f).read_bytes() for f in files} == before


@pytest.mark.parametrize("content", [b"not json", bytes(range(128, 256)), b"5", b"null",
                                     b'{"kind": "cosine", "offset": "x"}',
                                     b'{"kind": "discrete", "alphas_cumprod": "abc"}',
                                     b'{"kind": "discrete", "alphas_cumprod": [0.5, 2.0]}',
                                     b'{"num_train_timesteps": "many"}'])
def test_a_noise_schedule_file_that_is_not_one_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "schedule.json"
    path.write_bytes(content)
    res = cli(*TINY_TRAIN, "--epochs", "1", "--noise-schedule", path, "--out", tmp_path / "net")
    assert res.exit_code == 2 and str(path) in error_line(res)
    assert not (tmp_path / "net" / "config.json").exists()


# ----------------------------------------------------------------------------- els sensitivity
@pytest.fixture
def no_work(monkeypatch):
    """Loading the network or data is work: a refused command must not get there."""

    def refuse(*args, **kwargs):
        raise AssertionError("the command loaded the network before checking its options")

    monkeypatch.setattr("elsmachine.cli.sensitivity.load_model_and_data", refuse)


@pytest.mark.parametrize("args, named", [
    (["--rows", "0"], "--rows"),
    (["--rows", "-4"], "--rows"),
    (["--inputs", "0"], "--inputs"),
    (["--share", "1.5"], "--share"),
    (["--share", "0"], "--share"),
    (["--share", "0.9,1.5"], "1.5"),
    (["--share", "0.9,0.9,0.9"], "--share"),
    (["--share", ","], "--share"),
])
def test_sensitivity_options_are_refused_before_any_work(tmp_path, no_work, args, named):
    res = cli(*SENSITIVITY, *args, "--out", tmp_path / "s.safetensors")
    assert res.exit_code == 2 and named in error_line(res)
    assert "measuring" not in res.output  # no progress bar was drawn


# ----------------------------------------------------------------------------- data against network
def _data(channels=1, size=32, classes=10):
    labels = torch.arange(20) % classes
    return Dataset(images=torch.zeros(20, channels, size, size), labels=labels, name="made-up")


def test_data_that_does_not_fit_the_network_is_refused_naming_both():
    net = em.load_network("mnist5k-resnet")  # 1x32x32, 10 classes
    check_data_fits(net, _data())
    with pytest.raises(em.InputError, match=r"made-up .*3x32x32.*mnist5k-resnet.*1x32x32"):
        check_data_fits(net, _data(channels=3))
    with pytest.raises(em.InputError, match=r"made-up .*1x28x28.*mnist5k-resnet.*1x32x32"):
        check_data_fits(net, _data(size=28))
    with pytest.raises(em.InputError, match=r"made-up .*classes up to 11.*mnist5k-resnet.*10 classes"):
        check_data_fits(net, _data(classes=12))
    unlabelled = Dataset(images=torch.zeros(4, 1, 32, 32), labels=None, name="made-up")
    with pytest.raises(em.InputError, match=r"mnist5k-resnet is class-conditional.*made-up has no labels"):
        check_data_fits(net, unlabelled)


def test_data_is_checked_against_the_shape_a_trained_checkpoint_records(tmp_path):
    data = Dataset(images=torch.zeros(4, 3, 16, 16), labels=None, name="rgb16")
    res = cli("train", "--dataset", "mnist5k", "--limit", "4", "--width", "8", "--depth", "2", "--epochs", "1",
              "--batch-size", "4", "--device", "cpu", "--out", tmp_path / "net")
    assert res.exit_code == 0, res.output
    net = em.load_network(tmp_path / "net")
    with pytest.raises(em.InputError, match=r"rgb16 .*3x16x16.*1x32x32"):
        check_data_fits(net, data)


# ----------------------------------------------------------------------------- els bench
@pytest.fixture
def no_benchmark(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark ran before its options were checked")

    monkeypatch.setattr("elsmachine.bench.run_benchmark", refuse)


@pytest.mark.parametrize("args, named", [
    (["--backend", "triton"], "the triton backend needs a CUDA device; give --device cuda"),
    (["--backend", "native,triton", "--device", "cpu"], "--device cuda"),
    (["--baseline", "foo:1:1"], "'foo:1:1'"),
    (["--baseline", "ls:500:1"], "els-zeros, els-circular, locality"),
    (["--baseline", "els-zeros:500"], "machine:n:batch"),
    (["--baseline", "els-zeros:500:one"], "machine:n:batch"),
    (["--skip", "nonsense"], "'nonsense'"),
    (["--skip", "els-zero:500:1"], "unknown machine 'els-zero'"),
    (["--skip", "els-zeros:0:1"], "machine:n:batch"),
])
def test_bench_options_are_refused_before_any_row_runs(tmp_path, no_benchmark, args, named):
    res = cli("bench", *args, "--out", tmp_path / "bench.json")
    line = error_line(res)
    assert res.exit_code == 2 and named in line, line


def test_bench_baseline_and_skip_refusals_say_what_is_accepted(tmp_path, no_benchmark):
    line = error_line(cli("bench", "--baseline", "foo:1:1", "--out", tmp_path / "b.json"))
    assert "--baseline" in line and "machine:n:batch" in line and "els-zeros" in line and "locality" in line
    line = error_line(cli("bench", "--skip", "nonsense", "--out", tmp_path / "b.json"))
    assert "--skip" in line and "machine:n:batch" in line


# ----------------------------------------------------------------------------- sensitivity schedules
def test_a_schedule_mismatch_names_the_schedules_briefly():
    linear = DiscreteSchedule.from_betas("linear").to_dict()
    cosine = CosineSchedule().to_dict()
    sens = em.Sensitivity.from_windows(torch.ones(1, 1, 16, dtype=torch.bool), [0.5], (4, 4), linear)
    sens.check_schedule(linear)
    sens.check_schedule(DiscreteSchedule.from_betas("linear"))
    with pytest.raises(em.InputError) as e:
        sens.check_schedule(cosine)
    msg = str(e.value)
    assert len(msg) < 300 and "\n" not in msg and "discrete linear" in msg and "cosine" in msg, msg
    other = em.Sensitivity.from_windows(torch.ones(1, 1, 16, dtype=torch.bool), [0.5], (4, 4), cosine)
    with pytest.raises(em.InputError) as e:
        other.check_schedule(DiscreteSchedule.from_betas("scaled_linear"))
    assert len(str(e.value)) < 300 and "scaled_linear" in str(e.value)
    # The same kind and name, other values: told apart by their digests.
    shifted = {**linear, "final_alpha_cumprod": 0.5}
    with pytest.raises(em.InputError) as e:
        sens.check_schedule(shifted)
    assert len(str(e.value)) < 300
    digests = [part[:8] for part in str(e.value).split("sha256 ")[1:]]
    assert len(digests) == 2 and digests[0] != digests[1], str(e.value)
