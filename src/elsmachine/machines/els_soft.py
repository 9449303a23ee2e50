"""ELS with a soft window (docs/theory.md, "ELS with a soft window"): ELS whose patch distance
weights each offset o of the k x k window by a Gaussian of width sigma(t),

    x0_hat(q) = sum_{n, p} softmax_{n, p}(-sum_o w(o) |x_t(q + o) - a Y_n(p + o)|^2 / (2 s^2)) Y_n(p),
    w(o) = exp(-|o|^2 / (2 sigma(t)^2)),

over the candidates ELS's pixel q sees (:mod:`.candidates`). A trained network's sensitivity to
its input falls off smoothly with distance instead of stopping at the edge of a box; the window
is the same at every pixel, so the machine stays equivariant. sigma = inf is ELS; the patch size
k is the window's support. sigma(t) is one number or a timed per-step schedule, fitted to
a network on seeds disjoint from evaluation seeds.

The windowed distance is the box distance of the patches scaled by sqrt(w) on both sides, so it
runs on the attention form (:class:`~elsmachine.machines.forms.AttentionForm`); w = 1 at the
centre keeps the values, the centre pixels, unscaled.
"""

from __future__ import annotations

from ..engines.attention import ATTENTION_BACKENDS
from .declaration import SOFTMAX, Declaration, Fit
from .local import PATCH_OPTIONS, ELSMachine, step_option
from .step import gaussian_window

__all__ = ["SoftELSMachine", "gaussian_window"]


class SoftELSMachine(ELSMachine):
    """ELS with a Gaussian window of width sigma(t) on its patch distance (see the module docstring)."""

    declaration = Declaration(
        name="els-soft", summary="ELS with a soft window: patch distances weighted by a Gaussian of width sigma(t).",
        candidates="as ELS", form=SOFTMAX, traceable=True, backends=ATTENTION_BACKENDS, order=41, cost_like="els",
        candidate=True, reduces_to="els", fit=Fit("sigma", ("0.5*k",)),
        options=PATCH_OPTIONS + (step_option(
            "sigma", "sigma", "inf",
            "Gaussian window width in pixels: one number, or one per step of the run's grid (highest t first); "
            "inf is ELS's box.", "--sigma"),))
