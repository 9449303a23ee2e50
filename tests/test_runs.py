"""One sampling run for every command (``run_samples``), the one patch-schedule grammar
(``PatchSchedule.parse``), and the command-line options both are declared by."""

import json

import numpy as np
import pytest
import torch

import elsmachine as em
from elsmachine.cli import app
from elsmachine.cli.common import parse_patch_schedule
from elsmachine.experiments import SampleSpec, run_samples
from elsmachine.files import load_samples
from elsmachine.machines import MACHINES
from elsmachine.noise import CosineSchedule, ddim_grid
from elsmachine.patch_schedule import PRESETS, as_patch_schedule, resolve_patch_sizes
from helpers import cli, error_line

SMALL = ["--per-class", "2", "--steps", "3"]  # 20 training images, 3 steps: each run well under a second


@pytest.fixture(scope="module")
def small():
    return em.load_dataset("mnist5k", per_class=2)


# ----------------------------------------------------------------------------- the grammar
def test_every_form_of_a_patch_schedule_reads_the_same_way():
    grid = ddim_grid(3)
    assert em.PatchSchedule.parse(5, grid) == 5 and em.PatchSchedule.parse(" 5 ", grid) == 5
    listed = em.PatchSchedule.parse("5, 3,3", grid)
    assert listed == em.PatchSchedule.parse([5, 3, 3], grid) == em.PatchSchedule.parse((5, 3, 3), grid)
    assert listed.ts == tuple(grid[:-1].tolist()) and listed.sizes == (5, 3, 3)
    assert listed.sizes_for(grid) == [5, 3, 3]
    assert em.PatchSchedule.parse(listed, None) is listed  # a schedule is itself
    preset = em.PatchSchedule.parse("mnist-resnet-zeros", grid)
    assert preset.sizes == tuple(PRESETS["mnist-resnet-zeros"]) and len(preset.ts) == 20
    default = em.PatchSchedule.parse(list(range(3, 43, 2)), None)  # no grid: the 20-step cosine one
    assert default.ts == tuple(ddim_grid(20)[:-1].tolist())


def test_a_schedule_file_and_a_discrete_grid(tmp_path):
    em.PatchSchedule((0.5, 1.0), (3, 5)).save(tmp_path / "s.json")
    assert em.PatchSchedule.parse(str(tmp_path / "s.json"), None).sizes == (3, 5)
    assert em.PatchSchedule.parse(tmp_path / "s.json", None).ts == (0.5, 1.0)
    disc = em.DiscreteSchedule.from_betas("linear")
    on = em.PatchSchedule.parse([3, 5, 7, 9], disc.grid(4))
    assert on.ts == tuple(disc.grid(4)[:-1].tolist())


def test_a_list_of_another_length_than_the_grid_is_refused_naming_both():
    with pytest.raises(em.InputError, match="has 2 sizes but the grid has 3 steps"):
        em.PatchSchedule.parse("5,3", ddim_grid(3))
    with pytest.raises(em.InputError, match="has 3 sizes but the grid has 20 steps"):
        em.PatchSchedule.parse([5, 3, 3], None)
    with pytest.raises(em.InputError, match="odd positive integer, got 4"):
        em.PatchSchedule.parse("3,4,5", ddim_grid(3))
    with pytest.raises(em.InputError, match="preset"):
        em.PatchSchedule.parse("no-such-preset", None)
    with pytest.raises(em.InputError, match="at least one size"):
        em.PatchSchedule.parse([], None)


def test_the_old_readers_are_calls_of_the_grammar():
    grid = ddim_grid(3)
    # A machine's list is placed on the grid of as many steps as it has sizes, of its own schedule.
    assert as_patch_schedule([5, 3, 3]) == em.PatchSchedule.parse([5, 3, 3], grid)
    with pytest.raises(em.InputError, match="patch_size '5,3,3' is text"):  # in code, sizes are numbers
        as_patch_schedule("5,3,3")
    offset = CosineSchedule(offset=0.0)
    assert as_patch_schedule([5, 3], schedule=offset).ts == tuple(offset.grid(2)[:-1].tolist())
    assert as_patch_schedule(None) is None and as_patch_schedule(7) == 7
    assert resolve_patch_sizes([5, 3, 3], grid) == [5, 3, 3]
    assert resolve_patch_sizes("mnist-resnet-zeros", ddim_grid(20)) == PRESETS["mnist-resnet-zeros"][::-1]
    assert resolve_patch_sizes(5, grid) == [5, 5, 5] and resolve_patch_sizes(None, grid) is None
    with pytest.raises(em.InputError, match="patch_sizes has 2 sizes but the grid has 3 steps"):
        resolve_patch_sizes([5, 3], grid)
    # The command line: with the run's grid a schedule on it; without, the list for the machine to place.
    assert parse_patch_schedule("5,3,3", grid) == em.PatchSchedule.parse([5, 3, 3], grid)
    assert parse_patch_schedule("5,3,3") == [5, 3, 3] and parse_patch_schedule("5") == 5
    assert parse_patch_schedule(None) is None
    assert parse_patch_schedule("mnist-unet-zeros").sizes == tuple(PRESETS["mnist-unet-zeros"])


# ----------------------------------------------------------------------------- the one run
def test_run_samples_gives_the_images_els_sample_gives(tmp_path, small):
    res = cli("sample", *SMALL, "--num", "3", "--seed", "4", "-k", "5,3,3", "--out", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    saved = load_samples(tmp_path / "s.npz")
    got = run_samples(SampleSpec(data=small, seeds=[4, 5, 6], machine="els",
                                 options={"patch_size": "5,3,3", "padding": "zeros"}, steps=3))
    np.testing.assert_array_equal(saved["images"], got.images.numpy())
    assert saved["seeds"].tolist() == got.seeds == [4, 5, 6] and saved["labels"].tolist() == got.labels == [4, 5, 6]
    assert got.patch_sizes == [5, 3, 3] and got.trace is None and isinstance(got.denoiser, em.ELSMachine)
    assert {k: v for k, v in saved["meta"].items() if k != "seconds"} == \
           {k: v for k, v in json.loads(json.dumps(got.meta)).items() if k != "seconds"}


def test_a_traced_run_in_float64_and_its_record(small):
    got = run_samples(SampleSpec(data=small, seeds=(1,), machine="ls", options={"patch_size": 3}, steps=2,
                                 dtype="float64", class_rule="none", trace=True))
    assert got.images.dtype == torch.float64 and got.labels is None
    assert got.trace.source_image.shape == (2, 1, 32, 32) and got.trace.patch_sizes.tolist() == [3, 3]
    meta = got.meta
    assert set(meta) == {"model", "machine", "padding", "patch_schedule", "patch_sizes_used", "steps", "sampler",
                         "data", "dtype", "device", "class", "seconds", "denoiser"}
    assert (meta["machine"], meta["dtype"], meta["device"], meta["class"], meta["padding"]) == \
           ("ls", "float64", "cpu", "none", "zeros")
    assert meta["data"]["n"] == 20 and meta["denoiser"]["patch_size"] == 3 and meta["model"] is None


def test_a_network_samples_through_the_same_run(small):
    m = em.ELSMachine(small.images, patch_size=3, labels=small.labels)
    got = run_samples(SampleSpec(data=small, seeds=[0, 1], denoiser=m, steps=2))
    assert got.meta["machine"] == "network" and got.meta["patch_sizes_used"] == [3, 3]


def test_a_spec_is_checked_on_entry(small):
    with pytest.raises(em.InputError, match="not both"):
        SampleSpec(data=small, seeds=[0])
    with pytest.raises(em.InputError, match="cannot be traced"):
        SampleSpec(data=small, seeds=[0], machine="wiener", trace=True)
    with pytest.raises(em.InputError, match="unknown machine"):
        SampleSpec(data=small, seeds=[0], machine="els-reflect")
    with pytest.raises(em.InputError, match="float32 or float64"):
        SampleSpec(data=small, seeds=[0], machine="els", dtype="float16")
    with pytest.raises(em.InputError, match="non-negative"):
        SampleSpec(data=small, seeds=[-1], machine="els")
    with pytest.raises(em.InputError, match="has no threshold"):
        run_samples(SampleSpec(data=small, seeds=[0], machine="ideal", options={"threshold": 0.5}, steps=1))
    with pytest.raises(em.InputError, match="2 sizes but the grid has 3 steps"):
        run_samples(SampleSpec(data=small, seeds=[0], machine="els", options={"patch_size": [3, 5]}, steps=3))


# ----------------------------------------------------------------------------- the commands on it
def test_mosaic_records_what_sample_records(tmp_path):
    res = cli("sample", *SMALL, "--num", "1", "--seed", "3", "-k", "5,3,3", "--out", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    res = cli("mosaic", *SMALL, "--seed", "3", "-k", "5,3,3", "--out", tmp_path / "m")
    assert res.exit_code == 0, res.output
    sampled, drawn = load_samples(tmp_path / "s.npz"), load_samples(tmp_path / "m" / "sample.npz")
    assert set(drawn["meta"]) == set(sampled["meta"])
    assert {k: v for k, v in drawn["meta"].items() if k != "seconds"} == \
           {k: v for k, v in sampled["meta"].items() if k != "seconds"}
    np.testing.assert_array_equal(drawn["images"], sampled["images"])


@pytest.mark.parametrize("cmd", [
    ["sample", "--num", "1", "-k", "3", "--out", "OUT/s.png"],
    ["mosaic", "-k", "3", "--out", "OUT/m"],
    ["novelty", "--seeds", "1", "--machines", "ideal,els", "-k", "3", "--out", "OUT/n.json"],
    ["explore", "--num", "1", "-k", "3", "--out", "OUT/e.html"],
])
def test_every_sampling_command_takes_dtype_memory_budget_and_device(tmp_path, cmd):
    cmd = [a.replace("OUT", str(tmp_path)) for a in cmd]
    res = cli(*cmd, *SMALL, "--dtype", "float64", "--memory-budget", "64MiB", "--device", "cpu")
    assert res.exit_code == 0, res.output
    record = {"sample": tmp_path / "s.npz", "mosaic": tmp_path / "m" / "sample.npz"}.get(cmd[0])
    if record is not None:
        assert load_samples(record)["meta"]["dtype"] == "float64"
    res = cli(*cmd, *SMALL, "--memory-budget", "lots")
    assert res.exit_code == 2 and "lots" in error_line(res)


def test_an_option_the_machine_does_not_use_is_one_line_naming_it(tmp_path):
    res = cli("sample", "--machine", "ideal", "--threshold", "0.5", *SMALL, "--out", tmp_path / "s.png")
    assert res.exit_code == 2 and "--threshold" in error_line(res) and "ideal" in error_line(res)
    res = cli("mosaic", "--machine", "ideal", "-k", "3", *SMALL, "--out", tmp_path / "m")
    assert res.exit_code == 2 and "--patch-schedule" in error_line(res)
    res = cli("novelty", "--machines", "ideal,nearest", "--padding", "circular", *SMALL)
    assert res.exit_code == 2 and "--padding" in error_line(res)
    res = cli("explore", "--machine", "ideal", "--backend", "native", *SMALL, "--out", tmp_path / "e.html")
    assert res.exit_code == 2 and "--backend native" in error_line(res)
    res = cli("novelty", "--machines", "ideal,pspc-flex", *SMALL)
    assert res.exit_code == 2 and "the pspc-flex machine needs --sensitivity" in error_line(res)
    res = cli("sample", "--model", "mnist5k-resnet", "-k", "3", *SMALL, "--out", tmp_path / "s.png")
    assert res.exit_code == 2 and "--patch-schedule" in error_line(res)
    res = cli("sample", "-k", "5,3", *SMALL, "--out", tmp_path / "s.png")
    assert res.exit_code == 2 and "2 sizes but the grid has 3 steps" in error_line(res)
    assert not any(tmp_path.iterdir())  # refused before any work


def test_the_traced_commands_offer_the_traceable_machines_and_refuse_the_others(tmp_path):
    import typer

    group = typer.main.get_command(app)
    offered = {name: next(p for p in group.commands[name].params if p.name == "machine").metavar
               for name in ("sample", "mosaic", "explore")}
    traced = [n for n, cls in MACHINES.items() if cls.declaration.traceable]
    untraced = [n for n in MACHINES if n not in traced]
    assert traced and untraced
    for cmd in ("mosaic", "explore"):
        assert offered[cmd] == "[" + "|".join(traced) + "]"
        res = cli(cmd, "--machine", untraced[0], "--out", tmp_path / "x")
        assert res.exit_code == 2 and "cannot be traced" in error_line(res)
    assert offered["sample"] == "[" + "|".join(MACHINES) + "]"
    summaries = " ".join(cli("sample", "--help").output.split())  # the help names each machine's summary
    assert all(f"{n}:" in summaries for n in MACHINES)


def test_every_command_lists_the_data_options_and_the_machine_options_once():
    import typer

    group = typer.main.get_command(app)
    flagged = {o.flag for cls in MACHINES.values() for o in cls.declaration.options if o.flag}
    for name in ("sample", "mosaic", "novelty", "explore"):
        opts = [o for p in group.commands[name].params for o in p.opts]
        for want in ("--dataset", "--root", "--limit", "--per-class", "--download", "--device", "--dtype",
                     "--memory-budget", *flagged, "--patch-sizes", "-k"):
            assert opts.count(want) == 1, f"els {name}: {want}"
        help_text = cli(name, "--help").output
        assert all(f in help_text for f in ("--dataset", "--per-class", "--download", "--patch-schedule"))
