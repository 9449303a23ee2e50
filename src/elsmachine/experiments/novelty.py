"""How new a generated image is (docs/theory.md, "The patch mosaic").

Novelty of a sample: its nearest training image in L2 (optionally over circular shifts of up to
``max_shift`` pixels), the RMS difference per pixel to it, and, from a trace, the number of
distinct training images whose patches dominate pixels of the final mosaic. The verdict is
"memorised" when the RMS difference is below ``threshold`` (default 0.1, i.e. 5% of the [-1, 1]
range; two different MNIST digits differ by 0.4 to 0.9), else "new".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..machines.tracing import DOMINANT, SampleTrace
from .metrics import nearest

__all__ = ["Novelty", "novelty", "novelty_summary"]


@dataclass
class Novelty:
    """Per sample (all [B]): nearest training index, its L2 distance and RMS difference per
    pixel, the circular shift (dy, dx) that matched, distinct training images dominating pixels
    of the final mosaic (-1 without a trace), the share of those pixels taken by the most used
    one, the share of pixels that have a dominant patch at all, and the verdict."""

    nearest_index: torch.Tensor
    distance: torch.Tensor
    rms: torch.Tensor
    shift: list
    distinct_sources: torch.Tensor
    top_source_share: torch.Tensor
    dominated: torch.Tensor
    verdict: list

    def rows(self) -> list[dict]:
        return [
            {"nearest": int(self.nearest_index[b]), "l2": float(self.distance[b]), "rms": float(self.rms[b]),
             "shift": self.shift[b], "sources": int(self.distinct_sources[b]),
             "top_share": float(self.top_source_share[b]), "dominated": float(self.dominated[b]),
             "verdict": self.verdict[b]}
            for b in range(len(self.verdict))
        ]


def novelty(images: torch.Tensor, train_images: torch.Tensor, *, trace: SampleTrace | None = None,
            max_shift: int = 0, threshold: float = 0.1) -> Novelty:
    """How new each of ``images`` [B, C, H, W] is against ``train_images`` [N, C, H, W]."""
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(train_images.shape[1:]):
        raise InputError(f"images {tuple(images.shape)} do not match training images {tuple(train_images.shape)}")
    if max_shift < 0:
        raise InputError(f"max_shift must be >= 0, got {max_shift}")
    H, W = images.shape[-2:]
    if max_shift > max(H, W) // 2:
        # A circular shift by d is one by d - H the other way: larger ones add nothing.
        warnings.warn(f"max_shift {max_shift} is more than half the image ({H}x{W}); using {max(H, W) // 2}, "
                      f"which already covers every circular shift", stacklevel=2)
        max_shift = max(H, W) // 2
    x = images.detach().cpu()
    B = x.shape[0]
    best_d = torch.full((B,), float("inf"), dtype=torch.float64)
    best_i = torch.zeros(B, dtype=torch.long)
    best_s = [(0, 0)] * B
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            idx, d = nearest(torch.roll(x, (dy, dx), dims=(2, 3)), train_images)
            for b in range(B):
                if d[b] < best_d[b]:
                    best_d[b], best_i[b], best_s[b] = d[b], idx[b], (dy, dx)
    rms = best_d / np.sqrt(x[0].numel())
    distinct = torch.full((B,), -1)
    share = torch.full((B,), float("nan"), dtype=torch.float64)
    dominated = torch.full((B,), float("nan"), dtype=torch.float64)
    if trace is not None:
        # The last step's x0_hat is the final image, so its sources make the final mosaic.
        src = trace.source_image[-1].reshape(B, -1)
        dom = trace.weight[-1].reshape(B, -1) >= DOMINANT
        for b in range(B):
            s_b = src[b][dom[b]]
            dominated[b] = float(dom[b].float().mean())
            distinct[b] = len(torch.unique(s_b))
            share[b] = torch.bincount(s_b).max().item() / len(s_b) if len(s_b) else float("nan")
    verdict = ["memorised" if float(r) < threshold else "new" for r in rms]
    return Novelty(best_i, best_d, rms, best_s, distinct, share, dominated, verdict)


def novelty_summary(rows: list[dict]) -> dict:
    """Over the per-sample rows of :meth:`Novelty.rows`: the share memorised and the medians of
    the RMS difference to the nearest training image, of the distinct sources and of the share
    of pixels with a dominant patch."""
    import statistics

    if not rows:
        raise InputError("no samples to summarise")
    return {
        "memorised": sum(r["verdict"] == "memorised" for r in rows) / len(rows),
        "median_rms": statistics.median(r["rms"] for r in rows),
        "median_sources": statistics.median(r["sources"] for r in rows),
        "median_dominated": statistics.median(r["dominated"] for r in rows),
    }
