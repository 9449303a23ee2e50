"""Open an explore page (els explore) in headless Chromium: print its size and load time, and
save two screenshots (the sample view with a pixel's source shown, and the comparison and
calibration sections).

    python benchmarks/explore_page.py explore.html docs/explore [--browser /usr/bin/chromium]
"""

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ap = argparse.ArgumentParser()
ap.add_argument("page", type=Path)
ap.add_argument("out", type=Path)
ap.add_argument("--browser", default="/usr/bin/chromium")
args = ap.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
print(f"page size: {args.page.stat().st_size / 1e6:.2f} MB")
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=args.browser)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    t0 = time.perf_counter()
    page.goto(args.page.resolve().as_uri(), wait_until="load")
    page.wait_for_selector("#grid figure")
    print(f"load: {time.perf_counter() - t0:.2f} s to the first drawn sample")
    page.locator("#grid figure").nth(3).click()
    page.locator("#step").fill("12")
    box = page.locator("#xhat").bounding_box()
    page.mouse.move(box["x"] + 16.5 * box["width"] / 32, box["y"] + 14.5 * box["height"] / 32)
    page.screenshot(path=str(args.out / "sample.png"))
    box = page.locator("#compare-section").bounding_box()  # its top: the table runs to every seed
    page.screenshot(path=str(args.out / "compare.png"), full_page=True,
                    clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": min(box["height"], 640)})
    browser.close()
print(f"wrote {args.out / 'sample.png'} and {args.out / 'compare.png'}")
