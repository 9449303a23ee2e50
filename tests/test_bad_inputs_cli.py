"""Command-line input that was once dropped or taken silently, each now one line naming it."""

import warnings

import numpy as np
import pytest

import elsmachine as em
from helpers import cli, error_line

SMALL = ["--per-class", "2", "--steps", "2", "-n", "1"]


def test_a_machine_and_a_model_together_are_refused(tmp_path):
    line = error_line(cli("sample", *SMALL, "--machine", "ideal", "--model", "mnist5k-resnet", "-o", tmp_path / "x.png"))
    assert "--machine ideal and --model" in line
    assert not (tmp_path / "x.npz").exists()


def test_a_zero_memory_budget_and_an_empty_seed_are_refused(tmp_path):
    assert "--memory-budget must be at least one byte" in error_line(
        cli("sample", *SMALL, "--memory-budget", "0", "-o", tmp_path / "x.png"))
    assert "--seeds has an empty item in '1,,2'" in error_line(
        cli("sample", *SMALL, "--seeds", "1,,2", "-o", tmp_path / "x.png"))


def test_num_classes_against_a_checkpoint_that_records_its_own_is_refused(tmp_path):
    line = error_line(cli("sample", *SMALL, "--model", "mnist5k-resnet", "--num-classes", "3", "-o", tmp_path / "x.png"))
    assert "--num-classes 3" in line and "records 10 classes" in line
    res = cli("sample", *SMALL, "--model", "mnist5k-resnet", "--num-classes", "10", "-o", tmp_path / "x.png")
    assert res.exit_code == 0, res.output


def test_an_empty_output_name_is_one_line():
    assert "give a file name ending in .png" in error_line(cli("sample", *SMALL, "-o", ""))


def test_images_a_png_cannot_hold_are_refused_before_sampling_and_npz_writes_them_raw(tmp_path):
    path = tmp_path / "four.npz"
    np.savez(path, images=np.random.default_rng(0).uniform(-1, 1, (6, 4, 8, 8)).astype(np.float32),
             labels=np.arange(6) % 2)
    data = ["--dataset", path, "--layout", "nchw"]  # 4 channels: either axis could be them
    line = error_line(cli("sample", *data, "--steps", "2", "-n", "1", "-k", "3", "-o", tmp_path / "s.png"))
    assert "4 channels" in line and "-o NAME.npz" in line and "%" not in line  # refused before any progress
    res = cli("sample", *data, "--steps", "2", "-n", "2", "-k", "3", "-o", tmp_path / "raw.npz")
    assert res.exit_code == 0, res.output
    saved = em.files.load_samples(tmp_path / "raw.npz")
    assert saved["images"].shape == (2, 4, 8, 8) and not (tmp_path / "raw.png").exists()


def test_value_range_on_the_command_line(tmp_path):
    path = tmp_path / "unit.npz"
    imgs = np.random.default_rng(1).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    np.savez(path, images=imgs, labels=np.arange(6) % 2)
    res = cli("sample", "--dataset", path, "--steps", "2", "-n", "1", "-k", "3", "-o", tmp_path / "a.png")
    assert res.exit_code == 0 and "lie in [0, 1]" in res.output
    res = cli("sample", "--dataset", path, "--value-range", "0,1", "--steps", "2", "-n", "1", "-k", "3",
              "-o", tmp_path / "b.png")
    assert res.exit_code == 0 and "lie in [0, 1]" not in res.output, res.output
    assert em.files.load_samples(tmp_path / "b.npz")["meta"]["data"]["value_range"] == [0.0, 1.0]
    assert "value_range" in error_line(cli("sample", "--dataset", path, "--value-range", "1,0", "-o", tmp_path / "c.png"))
    assert "--value-range takes two numbers" in error_line(
        cli("sample", "--dataset", path, "--value-range", "0", "-o", tmp_path / "c.png"))


def test_a_patch_schedule_from_another_noise_schedule_is_refused_naming_both():
    from elsmachine.noise import noise_schedule

    linear = noise_schedule("linear")
    ps = em.PatchSchedule((1.0, 0.5), (5, 3), {"schedule": linear.to_dict()})
    images = em.load_dataset("mnist5k", per_class=1).images
    with pytest.raises(em.InputError, match="calibrated on the noise schedule DiscreteSchedule.*runs on CosineSchedule"):
        em.ELSMachine(images, patch_size=ps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert em.ELSMachine(images, patch_size=ps, schedule=linear).patch_size is ps  # its own schedule: taken


def test_compare_refuses_a_comma_list_that_is_not_one_size_per_step(tmp_path):
    line = error_line(cli("compare", "--model", "mnist5k-resnet", "--per-class", "1", "--seeds", "1", "--steps", "3",
                          "--machines", "els", "--patch-schedule", "3,5", "--out", tmp_path / "c"))
    assert "2 sizes but the grid has 3 steps" in line


def test_compare_refuses_machine_options_no_machine_run_takes(tmp_path):
    base = ["compare", "--model", "mnist5k-resnet", "--per-class", "1", "--seeds", "1", "--steps", "2",
            "--machines", "ideal,els", "--patch-schedule", "3", "--out", tmp_path / "c"]
    assert "--threshold does not apply to the machines ideal, els: it is an option of locality, golddiff" in \
        error_line(cli(*base, "--threshold", "0.1"))
    assert "--temperature does not apply" in error_line(cli(*base, "--temperature", "2"))
    assert "--sensitivity does not apply" in error_line(cli(*base, "--sensitivity", tmp_path / "s.safetensors"))
    assert not (tmp_path / "c").exists()


def test_a_class_is_named_by_its_folder_on_the_command_line(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for cls in ("cats", "dogs"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "set" / cls / f"{i}.png")
    base = ["sample", "--dataset", tmp_path / "set", "--steps", "2", "-n", "2", "-k", "3"]
    res = cli(*base, "--class", "dogs", "-o", tmp_path / "d.png")
    assert res.exit_code == 0, res.output
    assert em.files.load_samples(tmp_path / "d.npz")["labels"].tolist() == [1, 1]
    assert "'birds' is not a class: the classes are 0 'cats', 1 'dogs'" in \
        error_line(cli(*base, "--class", "birds", "-o", tmp_path / "b.png"))


def test_missing_dataset_files_name_the_command_line_options(tmp_path):
    line = error_line(cli("sample", "--dataset", "mnist", "--root", tmp_path, "-o", tmp_path / "x.png"))
    assert "--root" in line and "--download" in line


def test_machines_all_takes_candidates_beside_it():
    from elsmachine.cli.common import parse_machines
    from elsmachine.errors import InputError
    from elsmachine.machines.registry import declaration_of

    names = parse_machines("all,wiener-els,els", allow_all=True)
    assert names[-1] == "wiener-els" and names.count("els") == 1
    assert all(not declaration_of(n).candidate for n in names[:-1])
    with pytest.raises(InputError, match="unknown machine 'all'"):
        parse_machines("all,els")
    with pytest.raises(InputError, match="unknown machine 'nope'"):
        parse_machines("all,nope", allow_all=True)
