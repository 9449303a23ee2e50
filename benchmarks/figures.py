"""The sample pictures of the README and docs/results.md, each drawn again by the one ``els sample``
line written beside it there:

    python benchmarks/figures.py                         # every picture, into docs/
    python benchmarks/figures.py --list                  # the line behind each picture
    python benchmarks/figures.py is-samples.png --out /tmp/figures    # some of them, elsewhere

Each line runs from the repository root (the patch schedule path is relative to it) with
``-o`` a temporary file; only the picture is kept (``els sample`` writes the raw samples beside
it as .npz, which docs/ does not hold). The pictures drawn from other commands (the patch
mosaic, the comparison montages, the explore page) come from the lines beside them too, and
from benchmarks/networks.py and benchmarks/explore_page.py. tests/test_figures.py checks that
this list is every sample picture the pages embed, with its line, and redraws the cheapest.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Picture (under docs/) -> the line the page writes beside it, verbatim.
RECIPES = {
    "els-samples.png": "els sample",
    "is-samples.png": "els sample --machine ideal",
    "network-samples.png": "els sample --model mnist5k-resnet -n 20",
    "els-network-schedule-samples.png":
        "els sample -k src/elsmachine/data/models/mnist5k-resnet/patch_schedule.json -n 20",
    "unet-samples.png": "els sample --model mnist5k-unet -n 20",
    "attn-unet-samples.png": "els sample --model mnist5k-attn-unet -n 20",
}


def command(name: str, out: Path) -> list[str]:
    """The argument list of picture ``name``'s line writing its grid to ``out``, run as
    ``python -m elsmachine.cli`` so that it is this interpreter's package."""
    words = shlex.split(RECIPES[name])
    assert words[:2] == ["els", "sample"], words
    return [sys.executable, "-m", "elsmachine.cli", *words[1:], "-o", str(out)]


def draw(name: str, dest: Path) -> Path:
    """Run picture ``name``'s line and write the picture alone to ``dest`` (a folder); returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / name
        subprocess.run(command(name, made), cwd=ROOT, check=True)
        return Path(shutil.copyfile(made, dest / name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"Pictures to draw, of {', '.join(RECIPES)} (default: all).")
    ap.add_argument("--out", type=Path, default=DOCS, help="Folder to write them to (default: docs/).")
    ap.add_argument("--list", action="store_true", help="Print each picture's line and draw nothing.")
    args = ap.parse_args()
    names = args.names or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"no recipe for {', '.join(unknown)}: the pictures are {', '.join(RECIPES)}")
    for name in names:
        if args.list:
            print(f"{name}: {RECIPES[name]}")
            continue
        t0 = time.perf_counter()
        path = draw(name, args.out)
        print(f"{path}: {RECIPES[name]} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
