"""The explore page, opened in headless Chromium: no error, no request, and what it shows is what
the saved trace holds."""

import shutil

import pytest
import torch
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A traced sample, a comparison folder and a calibration, and the page showing all three."""
    from elsmachine.experiments.calibrate import calibrate
    from elsmachine.experiments.compare import compare

    d = tmp_path_factory.mktemp("explore")
    ds = em.load_dataset("mnist5k", per_class=3)
    m = em.ELSMachine(ds.images, labels=ds.labels, patch_size=[5, 3, 3])
    traced = em.Traced(m)
    labels = torch.tensor([3, 4])
    x = em.ddim_sample(traced, em.seed_noise([3, 4], (1, 32, 32)), steps=3, labels=labels)
    trace = traced.sample_trace()
    em.files.save_samples(d / "s.npz", x, seeds=[3, 4], labels=[3, 4], meta={"machine": "els",
                                 "data": ds.describe()}, **trace.to_arrays())

    class Fixed:
        schedule = m.schedule

        def denoise(self, x, t, labels=None):
            return m.denoise(x, t, labels=labels, patch_size=5)

    compare(Fixed(), {"ideal": em.IdealMachine(ds.images, labels=ds.labels), "els": m}, ds.images, [0, 1], d / "cmp",
            steps=3, classes=ds.classes)
    sched, _, _ = calibrate(Fixed(), em.ELSMachine(ds.images, labels=ds.labels), [3, 5], [0], steps=3,
                            labels=torch.tensor([0]))
    sched.save(d / "cal.json")
    res = CliRunner().invoke(app, ["explore", "--samples", str(d / "s.npz"), "--compare", str(d / "cmp"),
                                   "--calibration", str(d / "cal.json"), "--out", str(d / "page.html")])
    assert res.exit_code == 0, res.output
    return d, trace


def test_the_page_is_one_file_that_needs_nothing_else(made):
    d, _ = made
    html = (d / "page.html").read_text().replace('"http://www.w3.org/2000/svg"', "")  # a name, not an address
    for outside in ("http://", "https://", "src=", "href=", "@import", "url("):
        assert outside not in html, outside
    assert html.count("<script") == 2 and "<style>" in html


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian: apt-get install chromium)")
def test_the_page_in_a_browser_shows_what_the_trace_holds(made):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    d, trace = made
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        url = (d / "page.html").as_uri()
        page.goto(url)
        assert page.locator("#compare-section").is_visible() and page.locator("#calibration-section").is_visible()
        assert page.locator("#compare-table tr").count() == 3  # a header and two seeds

        def hover(i, j):
            box = page.locator("#xhat").bounding_box()
            page.mouse.move(box["x"] + (j + 0.5) * box["width"] / 32, box["y"] + (i + 0.5) * box["height"] / 32)

        S = trace.ts.numel()
        for step, (i, j) in ((S - 1, (14, 15)), (S - 1, (2, 30)), (0, (16, 9))):
            while int(page.locator("#step").input_value()) != step:  # the keyboard moves the step
                page.keyboard.press("ArrowLeft" if int(page.locator("#step").input_value()) > step else "ArrowRight")
            hover(i, j)
            assert page.locator("#info-pixel").inner_text() == f"({i}, {j})"
            assert page.locator("#info-source").inner_text() == f"#{int(trace.source_image[step, 0, i, j])}"
            shown = float(page.locator("#info-weight").inner_text())
            assert abs(shown - float(trace.weight[step, 0, i, j])) <= 1 / 255 + 1e-9
        # Moving the slider changes the step shown and the picture.
        page.locator("#step").fill("0")
        label0, pic0 = page.locator("#step-label").inner_text(), page.evaluate("document.getElementById('xhat').toDataURL()")
        page.locator("#step").fill(str(S - 1))
        label1, pic1 = page.locator("#step-label").inner_text(), page.evaluate("document.getElementById('xhat').toDataURL()")
        assert label0 != label1 and f"step {S} of {S}" in label1 and pic0 != pic1
        page.locator("#grid figure").nth(1).click()  # another sample
        assert "selected" in page.locator("#grid figure").nth(1).get_attribute("class")
        browser.close()
    assert errors == []
    assert requests == [url]  # nothing but the page itself


def test_explore_from_a_fresh_run_and_its_errors(tmp_path):
    run = CliRunner()
    res = run.invoke(app, ["explore", "--num", "2", "--steps", "2", "--per-class", "2", "-k", "3",
                           "--out", str(tmp_path / "e.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.html").stat().st_size > 10_000
    res = run.invoke(app, ["explore", "--num", "1", "--machine", "wiener", "--out", str(tmp_path / "w.html")])
    assert res.exit_code == 2 and "cannot be traced" in res.output
    res = run.invoke(app, ["explore", "--num", "0", "--out", str(tmp_path / "n.html")])
    assert res.exit_code == 2 and "nothing to show" in res.output
    res = run.invoke(app, ["explore", "--compare", str(tmp_path), "--num", "0", "--out", str(tmp_path / "c.html")])
    assert res.exit_code == 2 and "not a finished comparison folder" in res.output
