"""Nothing silently wrong: results that match their settings, one-line errors before any work,
no half-written files, and runs that resume after being killed."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import elsmachine as em
from elsmachine.cli import app
from elsmachine.experiments.calibrate import calibrate
from elsmachine.experiments.compare import compare
from elsmachine.experiments.novelty import novelty
from elsmachine.files import load_samples
from helpers import FixedSize, cli, error_line


# ----------------------------------------------------------------------------- 1. comparison settings
def test_compare_resumed_with_other_settings_recomputes_or_refuses_and_never_mixes(tmp_path):
    ds = em.load_dataset("mnist5k", per_class=2)
    net = FixedSize(em.ELSMachine(ds.images, labels=ds.labels), 5)
    ideal = em.IdealMachine(ds.images, labels=ds.labels)
    seen = []
    args = dict(steps=3, classes=ds.classes, on_seed=seen.append)
    first = compare(net, {"ideal": ideal, "els": em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)},
                    ds.images, [0, 1], tmp_path, **args)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "seeds").iterdir()}
    # Another patch schedule for ELS: ELS is recomputed for every seed, IS is not.
    again = compare(net, {"ideal": ideal, "els": em.ELSMachine(ds.images, labels=ds.labels, patch_size=5)},
                    ds.images, [0, 1], tmp_path, **args)
    assert [s.get("computed") for s in seen[2:]] == [["els"], ["els"]]
    assert again["settings"]["machines"]["els"]["patch_size"] == 5
    assert abs(again["machines"]["els"]["median_r"] - 1) < 1e-6 < abs(first["machines"]["els"]["median_r"] - 1)
    assert again["machines"]["ideal"] == first["machines"]["ideal"]
    # A machine added later is computed for the seeds already there (no KeyError).
    more = compare(net, {"ideal": ideal, "ls": em.LocalMachine(ds.images, labels=ds.labels, patch_size=3),
                         "els": em.ELSMachine(ds.images, labels=ds.labels, patch_size=5)}, ds.images, [0, 1], tmp_path,
                   **args)
    assert set(more["machines"]) == {"ideal", "ls", "els"}
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert {"r_ls", "R2_ls", "mse_ls", "settings"} <= set(header)
    # Settings every seed shares (here the steps) cannot change: refused, naming the difference.
    with pytest.raises(em.InputError, match="steps: saved 3, now 4"):
        compare(net, {"ideal": ideal}, ds.images, [0, 1], tmp_path, steps=4, classes=ds.classes)
    assert all((tmp_path / "seeds" / n).stat().st_mtime_ns >= t for n, t in before.items())


def test_compare_cli_with_another_patch_schedule_reports_the_new_one(tmp_path, tiny_network):
    common = ["--model", tiny_network, "--per-class", "1", "--seeds", "2", "--steps", "2", "--machines", "els",
              "--out", tmp_path / "c"]
    assert cli("compare", *common, "--patch-schedule", "3").exit_code == 0
    res = cli("compare", *common, "--patch-schedule", "5")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["settings"]["machines"]["els"]["patch_size"] == 5
    res = cli("compare", *[a if a != "2" else "3" for a in common], "--patch-schedule", "5")  # 3 steps, not 2
    assert res.exit_code == 2 and "steps: saved 2, now 3" in error_line(res)
    assert "comparing" not in res.output  # refused before any work


# ----------------------------------------------------------------------------- 2. conditional TorchScript
class Conditional(torch.nn.Module):
    def forward(self, x, t, labels):
        return 0.1 * x + 0.01 * labels.view(-1, 1, 1, 1).to(x.dtype)


def test_class_conditional_torchscript_networks_work_from_the_command_line(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Conditional()).save(str(tmp_path / "cond.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # loading says nothing about torch.jit itself
        assert em.load_network(tmp_path / "cond.pt", num_classes=10).takes_labels
    res = cli("sample", "--model", tmp_path / "cond.pt", "--num", "2", "--steps", "2", "--out", tmp_path / "s.png")
    assert res.exit_code == 2 and "--num-classes" in error_line(res)
    res = cli("compare", "--model", tmp_path / "cond.pt", "--per-class", "1", "--seeds", "1", "--steps", "2",
              "--machines", "els", "--patch-schedule", "3", "--out", tmp_path / "never")
    assert res.exit_code == 2 and not (tmp_path / "never").exists()  # a failing command leaves no folder
    res = cli("sample", "--model", tmp_path / "cond.pt", "--num-classes", "10", "--num", "2", "--seed", "4",
              "--steps", "2", "--out", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    assert load_samples(tmp_path / "s.npz")["labels"].tolist() == [4, 5]
    for cmd in (["compare", "--machines", "els", "--patch-schedule", "3", "--seeds", "1", "--out", tmp_path / "c"],
                ["calibrate", "--sizes", "3,5", "--seeds", "1", "--out", tmp_path / "p.json"]):
        res = cli(*cmd[:1], "--model", tmp_path / "cond.pt", "--num-classes", "10", "--per-class", "1", "--steps", "2",
                  *cmd[1:])
        assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- 3. samples and their data
def test_a_samples_file_is_drawn_against_the_data_it_was_made_from(tmp_path):
    res = cli("sample", "--per-class", "20", "--num", "2", "--steps", "3", "-k", "5,3,3", "--trace",
              "--out", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    meta = load_samples(tmp_path / "s.npz")["meta"]
    assert meta["patch_sizes_used"] == [5, 3, 3]
    assert meta["data"]["per_class"] == 20 and meta["data"]["n"] == 200 and len(meta["data"]["sha256"]) == 16
    res = cli("mosaic", "--samples", tmp_path / "s.npz", "--index", "1", "--out", tmp_path / "m")
    assert res.exit_code == 0, res.output  # the recorded selection, loaded again
    rows = [ln for ln in res.output.splitlines() if ln.count("│") == 10]
    assert int(rows[0].split("│")[3]) < 200  # the nearest training image is one of the 200
    res = cli("mosaic", "--samples", tmp_path / "s.npz", "--per-class", "30", "--out", tmp_path / "m2")
    assert res.exit_code == 2 and "was made from mnist5k (200 images" in error_line(res)


# ----------------------------------------------------------------------------- 4. non-finite networks
class NaNAfterOne(torch.nn.Module):
    def forward(self, x, t):
        return torch.where(t.view(-1, 1, 1, 1) < 0.9, torch.full_like(x, float("nan")), 0.1 * x)


def test_a_network_that_returns_nan_is_an_error_naming_it_and_the_step(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(NaNAfterOne()).save(str(tmp_path / "nan.pt"))
    net = em.load_network(tmp_path / "nan.pt")
    with pytest.raises(em.RunError, match=r"nan.pt.*NaN or inf at step 1"):
        em.ddim_sample(net, em.seed_noise([0], (1, 32, 32)), steps=4)
    res = cli("compare", "--model", tmp_path / "nan.pt", "--per-class", "1", "--seeds", "1", "--steps", "4",
              "--machines", "ideal", "--out", tmp_path / "c")
    assert res.exit_code == 1 and "NaN or inf at step 1" in error_line(res)
    assert not (tmp_path / "c" / "results.csv").exists()


# ----------------------------------------------------------------------------- the smaller silent ones
def test_patch_schedules_refuse_fractional_sizes_and_limit_keeps_classes_balanced(tmp_path):
    (tmp_path / "frac.json").write_text(json.dumps({"ts": [0.5, 1.0], "sizes": [3, 5.5]}))
    with pytest.raises(em.InputError, match="odd positive integer, got 5.5"):
        em.PatchSchedule.load(tmp_path / "frac.json")
    (tmp_path / "whole.json").write_text(json.dumps({"ts": [0.5, 1.0], "sizes": [3, 5.0]}))
    assert em.PatchSchedule.load(tmp_path / "whole.json").sizes == (3, 5)
    ds = em.load_dataset("mnist5k", limit=20)  # the file is sorted by class
    assert torch.bincount(ds.labels).tolist() == [2] * 10
    with pytest.raises(em.InputError, match="give at least one seed"):
        em.seed_noise([], (1, 4, 4))


def test_comparing_against_other_data_than_the_network_saw_warns(tmp_path):
    res = cli("compare", "--model", "mnist5k-resnet", "--per-class", "1", "--seeds", "1", "--steps", "2",
              "--machines", "ideal", "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    assert "warning: the network was trained on mnist5k (5000 images), but the machines use mnist5k (10" in res.output


def test_calibration_warns_when_it_picks_the_largest_size_tried():
    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images)
    with pytest.warns(UserWarning, match="largest size tried \\(5\\)"):
        calibrate(FixedSize(m, 7), m, [3, 5], [0], steps=2, dtype=torch.float64)


# ----------------------------------------------------------------------------- one line per bad input
EMPTY = "EMPTY_DIR"


@pytest.mark.parametrize("args,code,phrase", [
    (["sample", "-o", "/etc/passwd/x.png"], 2, "/etc/passwd is not a folder"),
    (["sample", "-o", "OUT/x.pdf"], 2, "cannot write an image as 'x.pdf'"),
    (["sample", "--dataset", EMPTY], 2, "no images"),
    (["sample", "--num", "0"], 2, "--num must be >= 1"),
    (["sample", "--steps", "0", "-k", "3"], 2, "steps must be a positive integer"),
    (["sample", "--steps", "abc"], 2, "'--steps'"),
    (["sample", "--device", "cuda"], 2, "cuda"),
    (["sample", "--device", "cuda:7"], 2, "cuda:7"),
    (["sample", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["sample", "--bogus"], 2, "No such option: --bogus"),
    (["sample", "--class", "12"], 2, "class 12 has no training images"),
    (["sample", "--model", "mnist5k-resnet", "--trace"], 2, "--trace needs a machine"),
    (["compare", "--model", "mnist5k-resnet", "--seeds", "0", "--out", "OUT/c"], 2, "--seeds must be >= 1"),
    (["compare", "--model", "mnist5k-resnet", "--seeds", "x", "--out", "OUT/c"], 2, "'--seeds'"),
    (["compare", "--model", "mnist5k-resnet", "--machines", "es", "--out", "OUT/c"], 2, "unknown machine 'es'"),
    (["compare", "--model", "OUT/none", "--out", "OUT/c"], 2, "does not exist"),
    (["calibrate", "--model", "mnist5k-resnet", "--machine", "ideal"], 2, "'--machine'"),
    (["calibrate", "--model", "mnist5k-resnet", "--sizes", "3:x"], 2, "--sizes"),
    (["train", "--epochs", "0", "--out", "OUT/t"], 2, "epochs must be >= 1"),
    (["train", "--batch-size", "0", "--out", "OUT/t"], 2, "batch size must be >= 1"),
    (["mosaic", "--max-shift", "-1"], 2, "--max-shift must be >= 0"),
    (["mosaic", "--samples", "OUT/none.npz"], 2, "does not exist"),
    (["novelty", "--seeds", "0"], 2, "--seeds must be >= 1"),
    (["bench", "--n", "0"], 2, "positive integers"),
    (["bench", "--approx", "64", "--n", "64"], 2, "nothing to approximate"),
    (["bench", "--machines", "els-reflect"], 2, "unknown machine 'els-reflect'"),
    (["bench", "--backend", "cuda"], 2, "unknown engine backend 'cuda'"),
    (["bench", "--device", "cuda"], 2, "device 'cuda' was asked for"),
    (["compare", "--model", "mnist5k-resnet", "--parallel", "ranks", "--out", "OUT/c"], 2, "'--parallel'"),
])
def test_every_bad_input_is_one_line_before_any_work(tmp_path, args, code, phrase):
    (tmp_path / EMPTY).mkdir()
    args = [a.replace("OUT", str(tmp_path)).replace(EMPTY, str(tmp_path / EMPTY)) for a in args]
    if args[0] == "sample" and "-o" not in args:
        args += ["-o", str(tmp_path / "s.png")]
    t0 = time.perf_counter()
    res = cli(*args)
    assert res.exit_code == code, res.output
    assert phrase in error_line(res)
    assert "sampling" not in res.output  # no progress bar before the error
    assert time.perf_counter() - t0 < 30
    assert [p.name for p in tmp_path.iterdir()] == [EMPTY]  # nothing written, no folder made


def test_a_network_whose_forward_raises_is_a_failure_of_one_line(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x, t):
            return x[:, :, :3]  # the wrong shape: the network itself fails downstream

    class Raises(torch.nn.Module):
        def forward(self, x, t):
            raise ValueError("inner layer exploded")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Raises()).save(str(tmp_path / "raises.pt"))
    res = cli("sample", "--model", tmp_path / "raises.pt", "--num", "1", "--steps", "2", "-o", tmp_path / "s.png")
    assert res.exit_code == 1 and "failed on input of shape (1, 1, 32, 32)" in error_line(res)


def test_outputs_are_created_where_missing_and_written_in_the_format_asked(tmp_path, tiny_network):
    res = cli("calibrate", "--model", tiny_network, "--per-class", "1", "--sizes", "3,5", "--seeds", "1", "--steps", "2",
              "-o", tmp_path / "new" / "dir" / "x.json")
    assert res.exit_code == 0, res.output
    assert em.PatchSchedule.load(tmp_path / "new" / "dir" / "x.json").sizes
    assert not (tmp_path / "new" / "dir" / "x.json.parts").exists()  # the finished seeds are gone once written
    res = cli("sample", "--per-class", "1", "--num", "1", "--steps", "1", "-k", "1001", "-o", tmp_path / "g.jpg")
    assert res.exit_code == 0, res.output
    assert "warning: patch size 1001 is larger than a 32x32 image needs; using 63" in res.output
    assert (tmp_path / "g.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG, as asked
    assert (tmp_path / "g.npz").exists()


def test_a_temporary_file_left_by_a_killed_process_is_cleared_by_the_next_write(tmp_path):
    from elsmachine.files import write_json

    gone = tmp_path / ".x.json.999999999.tmp"  # no process has this id
    gone.write_bytes(b"half")
    mine = tmp_path / f".x.json.{os.getppid()}.tmp"  # a live process's: left alone
    mine.write_bytes(b"busy")
    write_json(tmp_path / "x.json", {"a": 1})
    assert not gone.exists() and mine.exists() and json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_every_option_has_help_and_flags_show_no_value():
    import typer

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        for p in cmd.params:
            if p.param_type_name == "option":
                assert p.help, f"els {name} {p.opts[0]} has no help"
    res = cli("sample", "--help")
    trace_line = next(ln for ln in res.output.splitlines() if "--trace" in ln)
    assert "bool" not in trace_line.lower()


def test_legend_colours_are_far_apart_and_large_shifts_are_clamped():
    from elsmachine.output.plots import source_colour

    legend = [11, 12, 13, 14, 15, 16]  # neighbouring indices, the hard case
    cols = np.array([source_colour(n, legend) for n in legend])
    dist = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + np.eye(len(legend)) * 9
    assert dist.min() > 0.25
    ds = em.load_dataset("mnist5k", limit=10)
    with pytest.warns(UserWarning, match="using 16"):
        nov = novelty(ds.images[:1], ds.images, max_shift=1000)
    assert nov.verdict == ["memorised"]


# ----------------------------------------------------------------------------- a full disk
def _limited(limit_bytes):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG

    return pre


def els(args, *, limit=None, cwd=None):
    """Run els in a child process, optionally with file sizes limited as on a full disk."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", ELSMACHINE_NATIVE="0", COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "elsmachine.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            preexec_fn=None if limit is None else _limited(limit))


@pytest.mark.parametrize("cmd,out", [
    (["sample", "--per-class", "1", "--num", "2", "--steps", "2", "-k", "3", "-o", "{d}/s.png"], "{d}"),
    (["compare", "--model", "mnist5k-resnet", "--per-class", "1", "--seeds", "2", "--steps", "2", "--machines", "ideal",
      "--out", "{d}/c"], "{d}/c"),
    (["calibrate", "--model", "mnist5k-resnet", "--per-class", "1", "--sizes", "3,5", "--seeds", "2", "--steps", "2",
      "-o", "{d}/p.json"], "{d}"),
    (["train", "--per-class", "1", "--width", "4", "--depth", "1", "--epochs", "1", "--batch-size", "10",
      "--out", "{d}/t"], "{d}/t"),
])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, cmd, out):
    proc = els([c.format(d=tmp_path) for c in cmd], limit=200)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in err, err
    left = [p for p in Path(out.format(d=tmp_path)).rglob("*") if p.is_file()] if Path(out.format(d=tmp_path)).exists() else []
    assert not [p for p in left if p.name.endswith(".tmp") or p.stat().st_size == 0], left
    if cmd[0] == "sample":
        assert not (tmp_path / "s.png").exists()  # no picture without its raw samples


# ----------------------------------------------------------------------------- kill -9, then rerun
def _kill_when(proc, ready, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)


def test_compare_killed_then_rerun_loses_and_repeats_nothing(tmp_path):
    args = ["compare", "--model", "mnist5k-resnet", "--per-class", "2", "--seeds", "5", "--steps", "3",
            "--machines", "ideal,ls", "--patch-schedule", "3", "--out", tmp_path / "c"]
    seeds = tmp_path / "c" / "seeds"
    _kill_when(els(args), lambda: seeds.is_dir() and len(list(seeds.glob("*.npz"))) >= 2)
    done = {p.name: p.stat().st_mtime_ns for p in seeds.glob("*.npz")}
    assert done
    proc = els(args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not list((tmp_path / "c").rglob("*.tmp"))  # a write the kill cut short is cleared by the rerun
    assert {p.name: p.stat().st_mtime_ns for p in seeds.glob("*.npz") if p.name in done} == done  # not repeated
    rows = (tmp_path / "c" / "results.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["0", "1", "2", "3", "4"]  # nothing lost


def test_calibrate_killed_then_rerun_loses_and_repeats_nothing(tmp_path):
    args = ["calibrate", "--model", "mnist5k-resnet", "--per-class", "2", "--sizes", "3,5", "--seeds", "5",
            "--steps", "3", "-o", tmp_path / "p.json"]
    parts = tmp_path / "p.json.parts"
    _kill_when(els(args), lambda: parts.is_dir() and len(list(parts.glob("*.npz"))) >= 2)
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.npz")}
    assert done and not (tmp_path / "p.json").exists()
    proc = els(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    killed_then_rerun = em.PatchSchedule.load(tmp_path / "p.json")
    assert not parts.exists()
    proc = els(args[:-1] + [tmp_path / "straight.json"])
    proc.communicate(timeout=300)
    straight = em.PatchSchedule.load(tmp_path / "straight.json")
    assert killed_then_rerun.sizes == straight.sizes and killed_then_rerun.meta["per_seed"] == straight.meta["per_seed"]


def test_training_killed_then_resumed_ends_with_the_weights_of_a_straight_run(tmp_path):
    common = ["--per-class", "2", "--width", "4", "--depth", "1", "--epochs", "3", "--batch-size", "4",
              "--checkpoint-every", "2", "--cond"]
    proc = els(["train", *common, "--out", tmp_path / "straight"])
    proc.communicate(timeout=300)
    state = tmp_path / "killed" / "state.safetensors"
    _kill_when(els(["train", *common, "--out", tmp_path / "killed"]), lambda: state.exists())
    proc = els(["train", *common, "--resume", "--out", tmp_path / "killed"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.rglob("*.tmp"))
