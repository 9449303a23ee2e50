"""The explore page: one self-contained HTML file that shows where every pixel comes from
(docs/theory.md, "The patch mosaic").

All data, scripts, styles and images are inline: the page makes no request and opens from disk.
The arrays travel quantised and base64-encoded inside one JSON block:

- samples: x_t and x0_hat at every step as uint8 [S, B, C, H, W]; per step and pixel the
  dominant candidate's training image (uint16 or uint32) and flat source pixel (uint16), its
  weight (uint8, x/255) and the effective number of candidates (float32), with that number's
  smallest and largest value over every step and sample (``effective_range``: the one colour
  scale of its maps, shown beside them);
- the training images those candidates name, as uint8 [M, C, H, W] with their indices;
- optionally a comparison folder (the network's and every machine's image per seed, r and R^2)
  and a calibration (the chosen patch size against t and each candidate size's criterion).

The page itself is ``explore_page/page.html``, ``page.css`` and ``page.js`` in the package:
plain HTML, CSS and JavaScript, no build step.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..files import atomic_write
from ..machines.tracing import DOMINANT, SampleTrace
from ..results import Comparison

__all__ = ["explore_page", "page_path", "compare_data", "calibration_data"]

PAGE_SUFFIXES = (".html", ".htm")


def page_path(path) -> Path:
    """``path`` if its name ends in .html (or .htm), else an InputError: the page is HTML, and a
    browser given another suffix shows its source."""
    path = Path(path)
    if path.suffix.lower() not in PAGE_SUFFIXES:
        raise InputError(f"cannot write the explore page as {path.name!r}: give a file name ending in .html")
    return path


def _u8(images) -> np.ndarray:
    """[..., C, H, W] in [-1, 1] -> uint8."""
    x = torch.as_tensor(images).detach().to("cpu", torch.float64).clamp(-1, 1)
    return ((x + 1) * 127.5).round().to(torch.uint8).numpy()


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def _array(arr: np.ndarray, kind: str) -> dict:
    return {"b64": _b64(arr.astype(kind)), "type": kind, "shape": list(arr.shape)}


def _asset(name: str) -> str:
    return (resources.files("elsmachine") / "output" / "explore_page" / name).read_text(encoding="utf-8")


def compare_data(folder) -> dict:
    """A comparison folder's per-seed images and metrics, for the page: the numbers as its
    results.csv and summary.json hold them, the images from its seed records."""
    folder = Path(folder)
    if not (folder / "summary.json").exists() or not any((folder / "seeds").glob("*.npz")):
        raise InputError(f"{folder} is not a finished comparison folder (no summary.json or seeds/)")
    comparison = Comparison.load(folder)
    names = comparison.names
    rows, images = [], []
    for row, rec in comparison.records(folder):
        rows.append({"seed": row.seed, "label": row.label, "r": {n: row.values[n]["r"] for n in names},
                     "R2": {n: row.values[n]["R2"] for n in names}})
        images.append(np.stack([rec.network] + [rec.machines[n].image for n in names]))
    if not rows:
        raise InputError(f"{folder} holds no seed with every machine of its summary")
    return {"machines": names, "rows": rows, "images": _array(_u8(np.stack(images)), "uint8"),
            "medians": {n: comparison.machines[n].median.get("r") for n in names}}


def calibration_data(path) -> dict:
    """A calibrated patch schedule's sizes against t and, where recorded, each candidate size's
    criterion per step (median over seeds)."""
    from ..patch_schedule import PatchSchedule

    sched = PatchSchedule.load(path)
    meta = sched.meta
    return {"ts": list(sched.ts), "sizes": list(sched.sizes), "tried": meta.get("sizes_tried"),
            "criterion": meta.get("criterion"), "by_size": meta.get("criterion_by_size"),
            "per_seed": meta.get("per_seed")}


def explore_page(out, *, trace: SampleTrace | None = None, images=None, seeds=None, labels=None,
                 train_images: torch.Tensor | None = None, title: str = "", compare: dict | None = None,
                 calibration: dict | None = None, meta: dict | None = None) -> Path:
    """Write the page to ``out``. ``trace`` (with the final ``images`` [B, C, H, W], their
    ``seeds`` and ``labels``) and ``train_images`` give the samples section; ``compare`` and
    ``calibration`` (from :func:`compare_data`, :func:`calibration_data`) their sections."""
    out = page_path(out)
    data: dict = {"title": title, "dominant": DOMINANT, "meta": meta or {}}
    if trace is not None:
        if train_images is None:
            raise InputError("a traced sample needs the training images its sources name")
        S, B = trace.source_image.shape[:2]
        src = trace.source_image.numpy()
        used = np.unique(src)
        remap = np.searchsorted(used, src)  # positions in the shipped training images
        N = int(train_images.shape[0])
        if used.size and int(used.max()) >= N:
            raise InputError(f"the trace names training image {int(used.max())}, but the training set has {N}")
        final = trace.x0_hat[-1] if images is None else torch.as_tensor(images)
        # One scale for every step and sample, so that a colour means the same number of candidates
        # as the slider moves and across samples.
        eff = trace.effective[torch.isfinite(trace.effective)]
        effective_range = [float(eff.min()), float(eff.max())] if eff.numel() else [1.0, 1.0]
        data["samples"] = {
            "count": B, "steps": S, "ts": trace.ts.tolist(), "patch_sizes": trace.patch_sizes.tolist(),
            "padding": trace.padding,
            "seeds": [int(s) for s in (seeds if seeds is not None else range(B))],
            "labels": None if labels is None else [int(v) for v in labels],
            "x_t": _array(_u8(trace.x_t), "uint8"), "x0_hat": _array(_u8(trace.x0_hat), "uint8"),
            "final": _array(_u8(final), "uint8"),
            "source": _array(remap, "uint16" if used.size < 65536 else "uint32"),
            "source_index": _array(used, "uint32"),
            "source_pixel": _array(trace.source_pixel.numpy(), "uint16"),
            "weight": _array(np.round(trace.weight.clamp(0, 1).numpy() * 255), "uint8"),
            "effective": _array(trace.effective.numpy(), "float32"), "effective_range": effective_range,
            "train": _array(_u8(train_images[torch.from_numpy(used.astype(np.int64))]), "uint8"),
        }
    if compare is not None:
        data["compare"] = compare
    if calibration is not None:
        data["calibration"] = calibration
    if len(data) == 3:
        raise InputError("nothing to show: give samples with a trace, a comparison folder or a calibration")
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # inert inside <script>
    page = (_asset("page.html").replace("/*STYLE*/", _asset("page.css")).replace("/*SCRIPT*/", _asset("page.js"))
            .replace("/*DATA*/", blob).replace("<!--TITLE-->", _html_escape(title or "elsmachine")))
    return atomic_write(out, page.encode("utf-8"))


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
