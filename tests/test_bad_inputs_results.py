"""Bad inputs to the comparison folder, its plots, els mosaic and the explore page: each is refused
with one line naming the file or value, or (the plots) no figure outlives the run it belongs to."""

import json
import shutil

import numpy as np
import pytest

import elsmachine as em
from elsmachine.experiments.compare import compare, summarize
from elsmachine.output.explore import explore_page
from elsmachine.output.plots import comparison_plots
from elsmachine.sampling import Sampler
from elsmachine.results import Comparison, ComparisonSettings, SeedRecord, seed_path, settings_key
from helpers import FixedSize, cli, error_line


def _tiny():
    ds = em.load_dataset("mnist5k", per_class=2)
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=3)
    return ds, FixedSize(m, 3), {"ideal": em.IdealMachine(ds.images, labels=ds.labels), "els": m}


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


def _run(tiny, folder, seeds, steps=3, names=("ideal", "els")):
    ds, net, machines = tiny
    return compare(net, {n: machines[n] for n in names}, ds.images, seeds, folder, steps=steps, classes=ds.classes)


# ----------------------------------------------------------------------------- 1. the seed files
def test_a_seed_record_carries_the_key_of_the_shared_settings_that_made_it(tmp_path, tiny):
    _run(tiny, tmp_path, [0])
    rec = SeedRecord.load(seed_path(tmp_path, 0))
    assert rec.common_key == settings_key(ComparisonSettings.load(tmp_path).common)
    assert SeedRecord.load(rec.save(tmp_path / "again.npz")) == rec


def test_a_seed_file_of_another_comparison_is_refused_by_name(tmp_path, tiny):
    _run(tiny, tmp_path / "a", [0, 1])
    _run(tiny, tmp_path / "b", [2], steps=2)  # other shared settings
    foreign = seed_path(tmp_path / "a", 2)
    shutil.copy(seed_path(tmp_path / "b", 2), foreign)
    with pytest.raises(em.InputError, match="other shared settings") as e:
        summarize(tmp_path / "a", ["ideal", "els"])
    assert str(foreign) in str(e.value)
    with pytest.raises(em.InputError, match="other shared settings") as e:  # and a resumed run
        _run(tiny, tmp_path / "a", [0, 1, 2])
    assert str(foreign) in str(e.value)
    # A record saved under another seed's name is not that seed.
    foreign.unlink()
    shutil.copy(seed_path(tmp_path / "a", 1), seed_path(tmp_path / "a", 5))
    with pytest.raises(em.InputError, match="holds seed 1") as e:
        summarize(tmp_path / "a", ["ideal", "els"])
    assert str(seed_path(tmp_path / "a", 5)) in str(e.value)


@pytest.mark.parametrize("where", ["network", "els"])
@pytest.mark.parametrize("keyed", [True, False])
def test_a_seed_file_holding_nan_is_refused_by_name(tmp_path, tiny, where, keyed):
    _run(tiny, tmp_path, [0, 1])
    path = seed_path(tmp_path, 1)
    rec = SeedRecord.load(path)
    if not keyed:  # as written before records carried their common key
        rec.common_key = None
    if where == "network":
        rec.network[0, 3, 4] = np.nan
    else:
        rec.machines["els"].image[0, 5, 6] = np.inf
    rec.save(path)
    with pytest.raises(em.InputError, match="NaN or inf") as e:
        summarize(tmp_path, ["ideal", "els"])
    assert str(path) in str(e.value)
    with pytest.raises(em.InputError, match="NaN or inf") as e:
        _run(tiny, tmp_path, [0, 1])
    assert str(path) in str(e.value)


def test_a_seed_file_without_a_common_key_is_accepted_and_resumed(tmp_path, tiny, monkeypatch):
    first = _run(tiny, tmp_path, [0, 1])
    for s in (0, 1):  # the layout of before: no common key
        rec = SeedRecord.load(seed_path(tmp_path, s))
        rec.common_key = None
        rec.save(seed_path(tmp_path, s))
        with np.load(seed_path(tmp_path, s)) as d:
            assert "common_key" not in d.files
    sampled = []
    real = Sampler.run
    monkeypatch.setattr(Sampler, "run", lambda *a, **k: sampled.append(a) or real(*a, **k))
    again = _run(tiny, tmp_path, [0, 1])
    assert sampled == [] and again == first


# ----------------------------------------------------------------------------- 2. corrupt files, one line
@pytest.fixture(scope="module")
def made_by_cli(tmp_path_factory):
    """A comparison folder as els compare writes it, and the command that resumes it."""
    folder = tmp_path_factory.mktemp("cli") / "c"
    args = ["compare", "--model", "mnist5k-resnet", "--per-class", "1", "--seeds", "2", "--steps", "2",
            "--machines", "ideal,els", "--patch-schedule", "3", "--out"]
    res = cli(*args, folder)
    assert res.exit_code == 0, res.output
    return folder, args


def test_a_corrupt_seed_file_is_one_line_naming_it(tmp_path, made_by_cli):
    folder, args = made_by_cli
    out = tmp_path / "c"
    shutil.copytree(folder, out)
    bad = seed_path(out, 0)
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    res = cli(*args, out)
    assert res.exit_code == 2 and str(bad) in error_line(res)
    res = cli("explore", "--compare", out, "--num", "0", "--out", tmp_path / "e.html")
    assert res.exit_code == 2 and str(bad) in error_line(res)


@pytest.mark.parametrize("text", ["{", "[1]", '{"common": 3, "machines": {}}', '{"common": {}, "machines": [1]}',
                                  '{"common": {}}', "\xff\xfe"])
def test_a_corrupt_settings_json_is_one_line_naming_it(tmp_path, made_by_cli, text):
    folder, args = made_by_cli
    out = tmp_path / "c"
    shutil.copytree(folder, out)
    (out / "settings.json").write_bytes(text.encode("latin-1"))
    res = cli(*args, out)
    assert res.exit_code == 2 and str(out / "settings.json") in error_line(res)


@pytest.mark.parametrize("damage", ["value", "short row", "bytes", "settings"])
def test_a_corrupt_summary_is_one_line_naming_it(tmp_path, made_by_cli, damage):
    folder, _ = made_by_cli
    out = tmp_path / "c"
    shutil.copytree(folder, out)
    csv_path, json_path = Comparison.paths(out)
    lines = csv_path.read_text().splitlines()
    if damage == "value":
        cells = lines[1].split(",")
        cells[2] = "abc"
        lines[1] = ",".join(cells)
        csv_path.write_text("\n".join(lines) + "\n")
    elif damage == "short row":
        lines[1] = "0,1," + lines[1].split(",")[-1]
        csv_path.write_text("\n".join(lines) + "\n")
    elif damage == "bytes":
        csv_path.write_bytes(b"\xff\xfe" + csv_path.read_bytes())
    else:
        s = json.loads(json_path.read_text())
        s["settings"] = [1]
        json_path.write_text(json.dumps(s))
    res = cli("explore", "--compare", out, "--num", "0", "--out", tmp_path / "e.html")
    named = json_path if damage == "settings" else csv_path
    assert res.exit_code == 2 and str(named) in error_line(res)


# ----------------------------------------------------------------------------- 3. figures that stay true
def test_the_plots_remove_the_figures_the_run_does_not_make(tmp_path, tiny):
    ds = tiny[0]
    with_els = _run(tiny, tmp_path, [0, 1])
    written = comparison_plots(tmp_path, with_els, ds.images)
    assert sorted(p.name for p in written) == ["boxplot.png", "montage.png", "scatter.png"]
    only_is = _run(tiny, tmp_path, [0, 1], names=("ideal",))
    written = comparison_plots(tmp_path, only_is, ds.images, montage=0)
    assert [p.name for p in written] == ["boxplot.png"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["boxplot.png"]  # no IS-vs-ELS, no montage


# ----------------------------------------------------------------------------- 4. els mosaic --samples
@pytest.mark.parametrize("command", ["mosaic", "explore"])
def test_samples_that_are_not_an_npz_of_els_sample_are_one_line(tmp_path, command):
    png = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (4, 4)).save(png)
    res = cli(command, "--samples", png, "--out", tmp_path / ("o.html" if command == "explore" else "o"))
    line = error_line(res)
    assert res.exit_code == 2 and f"{png} is not an .npz written by els sample --trace" in line
    assert "pickle" not in line
    bad_meta = tmp_path / "m.npz"
    np.savez(bad_meta, images=np.zeros((1, 1, 4, 4), np.float32), seeds=np.zeros(1, np.int64), meta=np.array("{"))
    res = cli(command, "--samples", bad_meta, "--out", tmp_path / ("o.html" if command == "explore" else "o"))
    assert res.exit_code == 2 and f"{bad_meta} is not an .npz written by els sample --trace" in error_line(res)


# ----------------------------------------------------------------------------- 5. els explore -o page.txt
def test_the_explore_page_must_be_html(tmp_path):
    res = cli("explore", "--num", "1", "--steps", "2", "--per-class", "1", "--out", tmp_path / "page.txt")
    line = error_line(res)
    assert res.exit_code == 2 and "'page.txt'" in line and ".html" in line
    assert not any(tmp_path.iterdir())  # refused before any work
    with pytest.raises(em.InputError, match="ending in .html"):
        explore_page(tmp_path / "page.txt", calibration={"ts": [1.0], "sizes": [3]})
    assert explore_page(tmp_path / "page.HTML", calibration={"ts": [1.0], "sizes": [3]}).exists()


# ----------------------------------------------------------------------------- 6. the effective-candidates scale
def _page_data(html: str) -> dict:
    start = html.index('<script id="data" type="application/json">') + len('<script id="data" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)].replace("<\\/", "</"))


def test_the_effective_candidates_maps_carry_a_colour_scale_with_its_range(tmp_path):
    ds = em.load_dataset("mnist5k", per_class=1)
    traced = em.Traced(em.ELSMachine(ds.images, patch_size=[5, 3]))
    x = em.ddim_sample(traced, em.seed_noise([0, 1], (1, 32, 32)), steps=2)
    trace = traced.sample_trace()
    html = explore_page(tmp_path / "p.html", trace=trace, images=x, train_images=ds.images).read_text()
    lo, hi = _page_data(html)["samples"]["effective_range"]
    eff = trace.effective.double()
    assert (lo, hi) == (float(eff.min()), float(eff.max())) and 1 - 1e-6 <= lo < hi
    # A legend beside each map, filled from that range by the page's script.
    for scale in ("effective-scale", "final-effective-scale"):
        assert f'id="{scale}"' in html
    assert "effective_range" in html.split('<script id="data"')[1].split("</script>", 1)[1]
