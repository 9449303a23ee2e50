"""The records of a comparison folder (elsmachine.results): they read back what they wrote, the
shipped docs/compare folder loads into them and resumes without recomputing anything, and a
comparison writes its settings once per run."""

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import elsmachine as em
from elsmachine.experiments.compare import ComparisonRun, compare, run_comparison
from elsmachine.output.explore import compare_data
from elsmachine.output.plots import comparison_plots
from elsmachine.sampling import Sampler
from elsmachine.results import (
    Comparison,
    ComparisonSettings,
    MachineImage,
    MachineSummary,
    SeedMetrics,
    SeedRecord,
    seed_path,
    settings_key,
)

# The module, not the function elsmachine.experiments re-exports under the same name.
compare_module = importlib.import_module("elsmachine.experiments.compare")
SHIPPED = Path(__file__).parents[1] / "docs" / "compare"


class FixedSize:
    """A machine with its patch size fixed, standing in for a network."""

    def __init__(self, m, k):
        self.m, self.k, self.schedule = m, k, m.schedule

    def denoise(self, x, t, labels=None):
        return self.m.denoise(x, t, patch_size=self.k, labels=labels)


class Refuses:
    """A denoiser that must not be asked: a resumed comparison has nothing left to compute."""

    schedule = None

    def denoise(self, x, t, labels=None):
        raise AssertionError("a resumed comparison recomputed an image")


def _layout(path):
    with np.load(path) as d:
        return [(k, d[k].dtype.str, d[k].shape) for k in d.files]


def _tiny():
    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)
    return ds, FixedSize(m, 3), {"ideal": em.IdealMachine(ds.images, labels=ds.labels), "els": m}


# ----------------------------------------------------------------------------- round trips
def test_a_seed_record_reads_back_what_it_wrote_in_the_layout_of_before(tmp_path):
    rng = np.random.default_rng(0)
    rec = SeedRecord(seed=7, label=3, network=rng.standard_normal((1, 4, 5)).astype(np.float32), nearest_index=12,
                     nearest_distance=1.25,
                     machines={"els": MachineImage(rng.standard_normal((1, 4, 5)).astype(np.float32), "0123456789abcdef"),
                               "pspc-flex": MachineImage(np.zeros((1, 4, 5), np.float32), "fedcba9876543210")})
    path = rec.save(seed_path(tmp_path, 7))
    assert path == tmp_path / "seeds" / "000007.npz"
    back = SeedRecord.load(path)
    assert back == rec and list(back.machines) == ["els", "pspc-flex"]
    assert back.made_with("els", "0123456789abcdef") and not back.made_with("els", "fedcba9876543210")
    assert not back.made_with("ideal", "0123456789abcdef")
    assert [k for k, _, _ in _layout(path)] == ["seed", "label", "network", "nearest_index", "nearest_distance",
                                                "img_els", "key_els", "img_pspc-flex", "key_pspc-flex"]
    changed = SeedRecord.load(path)
    changed.machines["els"] = MachineImage(changed.machines["els"].image + 1, "0123456789abcdef")
    assert changed != rec


def test_a_seed_record_that_is_not_one_is_an_input_error(tmp_path):
    with pytest.raises(em.InputError, match="does not exist"):
        SeedRecord.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(em.InputError, match="not a readable"):
        SeedRecord.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "half.npz", seed=np.int64(0))
    with pytest.raises(em.InputError, match="no array 'label'"):
        SeedRecord.load(tmp_path / "half.npz")


def test_a_comparison_reads_back_what_it_wrote(tmp_path):
    metrics = {"r": "correlation", "mse": "squared difference"}
    settings = ComparisonSettings({"steps": 3, "classes": None}, {"ideal": {"machine": "ideal"},
                                                                  "els": {"machine": "els", "patch_size": 3}})
    rows = (SeedMetrics(0, -1, {"ideal": {"r": 0.25, "mse": 0.5}, "els": {"r": 0.75, "mse": 0.125}}, 4, 2.5),
            SeedMetrics(1, -1, {"ideal": {"r": 0.5, "mse": 0.25}, "els": {"r": 0.625, "mse": 0.0625}}, 9, 3.25))
    c = Comparison(metrics=metrics, rows=rows, settings=settings, els_beats_is=1.0,
                   machines={"ideal": MachineSummary({"r": 0.375, "mse": 0.375}, {"r": 0.375, "mse": 0.375},
                                                     {"els": 0.0}),
                             "els": MachineSummary({"r": 0.6875, "mse": 0.09375}, {"r": 0.6875, "mse": 0.09375},
                                                   {"ideal": 1.0})})
    assert c.save(tmp_path) == Comparison.paths(tmp_path) == [tmp_path / "results.csv", tmp_path / "summary.json"]
    back = Comparison.load(tmp_path)
    assert back == c and back.seeds == 2 and back.names == ["ideal", "els"]
    np.testing.assert_array_equal(back.values("els", "r"), [0.75, 0.625])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == c.to_json() and summary["machines"]["els"] == {"median_r": 0.6875, "mean_r": 0.6875,
                                                                     "median_mse": 0.09375, "mean_mse": 0.09375,
                                                                     "beats_ideal": 1.0}
    assert c["machines"]["els"]["median_r"] == 0.6875 and c["seeds"] == 2  # reads like its summary.json
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header == "seed,label,r_ideal,mse_ideal,r_els,mse_els,nearest_index,nearest_distance,settings"
    # A results.csv that is not the summary's is refused, not read under its settings.
    other = Comparison(metrics, c.machines, ComparisonSettings({"steps": 4}, settings.machines), rows, 1.0)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "results.csv", tmp_path / "results.csv")
    with pytest.raises(em.InputError, match="other settings"):
        Comparison.load(tmp_path)
    with pytest.raises(em.InputError, match="no summary.json"):
        Comparison.load(tmp_path / "nowhere")


def test_settings_read_back_and_key_as_before(tmp_path):
    s = ComparisonSettings({"steps": 3}, {"els": {"machine": "els", "patch_size": [3, 5]}})
    s.save(tmp_path)
    assert ComparisonSettings.load(tmp_path) == s
    assert ComparisonSettings.load(tmp_path / "none", missing_ok=True) is None
    with pytest.raises(em.InputError, match="no settings.json"):
        ComparisonSettings.load(tmp_path / "none")
    # The key is a digest of the settings whatever their key order.
    assert s.key("els") == settings_key({"patch_size": [3, 5], "machine": "els"}) and len(s.key("els")) == 16


# ----------------------------------------------------------------------------- the shipped folder
def test_the_shipped_comparison_loads_into_records():
    summary = json.loads((SHIPPED / "summary.json").read_text())
    c = Comparison.load(SHIPPED)
    files = sorted((SHIPPED / "seeds").glob("*.npz"))
    assert c.seeds == summary["seeds"] == len(files) == len(c.rows)
    assert c.to_json() == summary
    settings = ComparisonSettings.load(SHIPPED)
    assert settings.only(c.names) == c.settings
    shown = list(c.records(SHIPPED))
    assert [row.seed for row, _ in shown] == [row.seed for row in c.rows]
    for _, rec in shown:  # every image was made with the settings settings.json names
        assert all(rec.made_with(n, settings.key(n)) for n in c.names)
    # The page shows the numbers of the results, not numbers of its own.
    page = compare_data(SHIPPED)
    assert page["machines"] == c.names and len(page["rows"]) == c.seeds
    assert page["rows"][0]["r"]["els"] == c.rows[0].values["els"]["r"]
    assert page["medians"]["els"] == summary["machines"]["els"]["median_r"]


def test_the_shipped_records_save_again_in_their_own_layout(tmp_path):
    for f in sorted((SHIPPED / "seeds").glob("*.npz"))[:3]:
        rec = SeedRecord.load(f)
        again = rec.save(tmp_path / f.name)
        assert SeedRecord.load(again) == rec and _layout(again) == _layout(f)


def test_resuming_the_shipped_comparison_recomputes_nothing(tmp_path):
    out = tmp_path / "compare"
    shutil.copytree(SHIPPED, out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("seeds/*.npz")}
    settings_before = (out / "settings.json").stat().st_mtime_ns
    saved = ComparisonSettings.load(out)
    names = list(json.loads((SHIPPED / "summary.json").read_text())["machines"])
    common = saved.common
    run = ComparisonRun(out=out, steps=common["steps"], classes=tuple(common["classes"]), dtype=torch.float32,
                        names=tuple(names), settings=saved)
    seen = []
    c = run_comparison(run, Refuses(), {n: Refuses() for n in names}, torch.zeros(1, 1, 32, 32),
                       range(len(before)), on_seed=seen.append)
    assert seen and all(s["resumed"] for s in seen)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("seeds/*.npz")} == before
    assert (out / "settings.json").stat().st_mtime_ns == settings_before  # nothing new to say
    # The summary rebuilt from the records is the shipped one.
    assert c.to_json() == json.loads((SHIPPED / "summary.json").read_text())
    assert (out / "results.csv").read_bytes() == (SHIPPED / "results.csv").read_bytes()


# ----------------------------------------------------------------------------- one run
def test_a_comparison_writes_its_settings_once_before_its_first_seed(tmp_path, monkeypatch):
    ds, net, machines = _tiny()
    saves, seed_saves = [], []
    real_settings_save, real_seed_save = ComparisonSettings.save, SeedRecord.save

    def settings_save(self, folder):
        saves.append(folder)
        return real_settings_save(self, folder)

    def seed_save(self, path):
        assert (tmp_path / "settings.json").exists(), "a seed file written before the settings it was made with"
        seed_saves.append(path)
        return real_seed_save(self, path)

    monkeypatch.setattr(ComparisonSettings, "save", settings_save)
    monkeypatch.setattr(SeedRecord, "save", seed_save)
    c = compare(net, machines, ds.images, [0, 1, 2], tmp_path, steps=3, classes=ds.classes)
    assert len(seed_saves) == 3 and len(saves) == 1
    assert c.seeds == 3 and c.settings == ComparisonSettings.load(tmp_path).only(["ideal", "els"])
    # Resumed with the same settings: nothing to compute, nothing written but the summary.
    compare(net, machines, ds.images, [0, 1, 2], tmp_path, steps=3, classes=ds.classes)
    assert len(seed_saves) == 3 and len(saves) == 1
    # A machine with other settings: its images again, the settings once more.
    machines["els"] = em.ELSMachine(ds.images, labels=ds.labels, patch_size=5)
    compare(net, machines, ds.images, [0, 1, 2], tmp_path, steps=3, classes=ds.classes)
    assert len(seed_saves) == 6 and len(saves) == 2


def test_a_resumed_comparison_recomputes_nothing_and_its_plots_come_from_the_records(tmp_path, monkeypatch):
    ds, net, machines = _tiny()
    first = compare(net, machines, ds.images, [0, 1], tmp_path, steps=3, classes=ds.classes)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "seeds").iterdir()}
    sampled = []
    real = Sampler.run
    monkeypatch.setattr(Sampler, "run", lambda *a, **k: sampled.append(a) or real(*a, **k))
    again = compare(net, machines, ds.images, [0, 1], tmp_path, steps=3, classes=ds.classes)
    assert sampled == []
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "seeds").iterdir()} == before
    assert again == first and Comparison.load(tmp_path).machines == first.machines
    # The caller draws: experiments/ draws nothing.
    assert not list(tmp_path.glob("*.png"))
    written = comparison_plots(tmp_path, again, ds.images)
    assert [p.name for p in written] == ["boxplot.png", "scatter.png", "montage.png"]
    assert all(p.stat().st_size > 0 for p in written)


def test_run_comparison_refuses_machines_it_was_not_prepared_for(tmp_path):
    ds, net, machines = _tiny()
    run = compare_module.prepare(net, machines, tmp_path, steps=2, classes=ds.classes)
    with pytest.raises(em.InputError, match="prepared for the machines"):
        run_comparison(run, net, {"els": machines["els"]}, ds.images, [0])
    assert not tmp_path.joinpath("settings.json").exists()  # preparing writes nothing


def test_the_compare_command_checks_once_and_writes_what_it_wrote(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from elsmachine.cli import app

    calls = []
    real = compare_module.prepare
    monkeypatch.setattr(compare_module, "prepare", lambda *a, **k: calls.append(a) or real(*a, **k))
    res = CliRunner().invoke(app, ["compare", "--model", "mnist5k-resnet", "--per-class", "1", "--seeds", "2",
                                   "--steps", "2", "--machines", "ideal,els", "--patch-schedule", "3",
                                   "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    for f in ("results.csv", "summary.json", "boxplot.png", "scatter.png", "montage.png"):
        assert (tmp_path / "c" / f).stat().st_size > 0
        assert str(tmp_path / "c" / f) in res.output.replace("\n", "")
    # the summary as a table, each paper's statistic under its name, not summary.json
    out = " ".join(res.output.split())
    assert "median r" in out and "mean R^2" in out and '"settings"' not in out
    assert [ln.split()[1] for ln in res.output.splitlines() if ln.split()[1:2] in (["ideal"], ["els"])] == \
           ["ideal", "els"]
