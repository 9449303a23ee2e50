"""ELS with a patch size of its own at the border (docs/theory.md, "ELS with a patch size per
pixel"): a zero-padded network knows where a pixel sits, since the padding footprint of its
window says how far the pixel is from the edge, so the window it effectively uses may differ
there. With k(t) the patch schedule and k_b(t) the border's,

    x0_hat(q) = ELS_{k_b(t)}(x_t)(q)  where q's k(t) window crosses the edge
                                      (min(i, j, H - 1 - i, W - 1 - j) < k(t) // 2),
                ELS_{k(t)}(x_t)(q)    elsewhere.

ELS's output at q depends only on the window at q and on q's candidates (:mod:`.candidates`),
so each pixel's estimate is exactly ELS's at its own size. k_b = k is ELS; k_b(t) is a patch
schedule of its own (one size, one per step, a preset or a file), fitted to a network on seeds
disjoint from evaluation seeds.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..patch_schedule import as_patch_schedule
from .base import Trace
from .declaration import SOFTMAX, Declaration, Option, _record_patch_size
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine

__all__ = ["BorderELSMachine", "border_mask"]


def border_mask(H: int, W: int, k: int, device=None) -> torch.Tensor:
    """bool [H, W]: the pixels whose k x k window crosses the image's edge."""
    i = torch.arange(H, device=device).view(-1, 1)
    j = torch.arange(W, device=device).view(1, -1)
    ring = torch.minimum(torch.minimum(i, H - 1 - i), torch.minimum(j, W - 1 - j))
    return ring < k // 2


class BorderELSMachine(ELSMachine):
    """ELS whose pixels near the border take a patch size of their own (see the module docstring)."""

    declaration = Declaration(
        name="els-border", summary="ELS with a patch size of its own where a pixel's window crosses the border.",
        candidates="as ELS at the pixel's own patch size", form=SOFTMAX, traceable=True, backends=BACKENDS,
        order=44, cost_like="els", candidate=True,
        options=PATCH_OPTIONS + (Option(
            "border_patch_size", "patch_schedule", None,
            "Patch schedule of the pixels whose window crosses the border (forms as --patch-schedule; default: the "
            "same).", flag="--border-patch-schedule", record=_record_patch_size),))

    def __init__(self, images, patch_size=None, padding: str = "zeros", border_patch_size=None, **kw) -> None:
        super().__init__(images, patch_size, padding, **kw)
        if self.padding != "zeros":
            raise InputError("els-border needs padding='zeros': a circular image has no border")
        self.border_patch_size = as_patch_schedule(border_patch_size, "border_patch_size", schedule=self.schedule)

    def border_size_at(self, t: float, k: int) -> int:
        """k_b at time ``t`` for interior size ``k`` (k itself without a border schedule)."""
        b = self.border_patch_size
        if b is None:
            return k
        return self._checked_size(b if isinstance(b, int) else b.size_at(t))

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None, window=None):
        out, tr = super()._denoise_subset(x, a, s, k, cls, trace, t, window)
        groups: dict[int, list[int]] = {}
        for b, v in enumerate(t.tolist()):
            groups.setdefault(self.border_size_at(v, k), []).append(b)
        mask = border_mask(x.shape[2], x.shape[3], k, x.device)
        for kb, idx in groups.items():
            if kb == k or not bool(mask.any()):
                continue
            sel = torch.tensor(idx, device=x.device)
            x0, sub = super()._denoise_subset(x[sel], a[sel], s[sel], kb, cls, trace, t[idx], window)
            out[sel] = torch.where(mask, x0, out[sel])
            if trace:
                part = Trace.empty(len(idx), x.shape[2], x.shape[3], x)
                for f in ("source_image", "source_pixel", "weight", "effective"):
                    setattr(part, f, torch.where(mask, getattr(sub, f), getattr(tr, f)[sel]))
                tr.put(sel, part)
        return out, tr

    def denoise_sizes(self, x, t, sizes, labels=None):
        """x0_hat with each interior size of ``sizes``, the border at its own schedule's size."""
        return [self.denoise(x, t, labels, patch_size=k) for k in sizes]
