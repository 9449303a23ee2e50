"""The pages' pictures and links: every sample picture the README and docs/ embed is drawn by
benchmarks/figures.py from the ``els sample`` line the page writes beside it, the cheapest line
redraws its committed picture pixel for pixel, and every picture and link of the pages resolves."""

import importlib.util
import re
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")


def _figures():
    spec = importlib.util.spec_from_file_location("benchmark_figures", ROOT / "benchmarks" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_sample_grid(path: Path) -> bool:
    """Whether a picture is what ``els sample`` writes: a grid of 32 x 32 images, 2 pixels apart and
    around, enlarged 4 times (output.images.image_grid), with no metadata (plots carry Matplotlib's)."""
    with Image.open(path) as im:
        fits = all(n % 4 == 0 and (n // 4 - 2) % 34 == 0 for n in im.size)
        return fits and im.mode in ("L", "RGB") and not im.info


def _embedded():
    """(page, picture path, the paragraph before the picture's line and its own line) for every
    picture the pages embed."""
    for page in PAGES:
        paragraphs = re.split(r"\n\s*\n", page.read_text())
        for i, para in enumerate(paragraphs):
            for bang, target in LINK.findall(para):
                if bang:
                    context = " ".join((paragraphs[i - 1] if i else "").split() + para.split())
                    yield page, (page.parent / target).resolve(), context


def test_the_recipes_are_every_sample_picture_the_pages_embed_each_with_the_line_beside_it():
    recipes = _figures().RECIPES
    docs = (ROOT / "docs").resolve()
    grids = {}
    for page, picture, context in _embedded():
        if _is_sample_grid(picture):
            name = picture.relative_to(docs).as_posix()
            assert name in recipes, f"{page.name} embeds {name}, a sample grid no recipe in benchmarks/figures.py draws"
            assert f"`{recipes[name]}`" in context, f"{page.name} does not write `{recipes[name]}` beside {name}"
            grids[name] = page
    assert set(grids) == set(recipes), f"recipes for pictures no page embeds: {set(recipes) - set(grids)}"


def test_every_picture_and_link_of_the_pages_resolves():
    def anchors(page):
        heads = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}

    for page in PAGES:
        for _, target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            assert path.exists(), f"{page.name} points to {target}, which does not exist"
            assert not anchor or anchor in anchors(path), f"{page.name} points to {target}: no such heading"


def test_the_ideal_recipe_redraws_its_committed_picture_pixel_for_pixel(tmp_path):
    """`els sample --machine ideal` (IS lands on training digits, a few seconds) gives the README's
    picture exactly; the other recipes are the same code path on slower machines and networks."""
    figures = _figures()
    drawn = figures.draw("is-samples.png", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-samples.png"]  # the picture alone
    with Image.open(drawn) as new, Image.open(ROOT / "docs" / "is-samples.png") as old:
        assert new.size == old.size and new.mode == old.mode
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
