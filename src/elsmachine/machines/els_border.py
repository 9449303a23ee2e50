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

from .declaration import SOFTMAX, Declaration, Fit
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine, border_mask, step_option

__all__ = ["BorderELSMachine", "border_mask"]


class BorderELSMachine(ELSMachine):
    """ELS whose pixels near the border take a patch size of their own (see the module docstring)."""

    declaration = Declaration(
        name="els-border", summary="ELS with a patch size of its own where a pixel's window crosses the border.",
        candidates="as ELS at the pixel's own patch size", form=SOFTMAX, traceable=True, backends=BACKENDS,
        order=44, cost_like="els", candidate=True, reduces_to="els", fit=Fit("border_patch_size", ("k-2", "k+2", "k+4")),
        options=PATCH_OPTIONS + (step_option(
            "border_patch_size", "border_k", None,
            "Patch schedule of the pixels whose window crosses the border (forms as --patch-schedule; default: the "
            "same).", "--border-patch-schedule", kind="patch_schedule"),))
