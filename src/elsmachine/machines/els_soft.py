"""ELS with a soft window (docs/theory.md, "ELS with a soft window"): ELS whose patch distance
weights each offset o of the k x k window by a Gaussian of width sigma(t),

    x0_hat(q) = sum_{n, p} softmax_{n, p}(-sum_o w(o) |x_t(q + o) - a Y_n(p + o)|^2 / (2 s^2)) Y_n(p),
    w(o) = exp(-|o|^2 / (2 sigma(t)^2)),

over the candidates ELS's pixel q sees (:mod:`.candidates`). A trained network's sensitivity to
its input falls off smoothly with distance instead of stopping at the edge of a box; the window
is the same at every pixel, so the machine stays equivariant. sigma = inf is ELS; the patch size
k is the window's support. sigma(t) is one number or one per step of the default grid, fitted to
a network on seeds disjoint from evaluation seeds.

The windowed distance is the box distance of the patches scaled by sqrt(w) on both sides, so it
runs on the attention form (:class:`~elsmachine.machines.forms.AttentionForm`); w = 1 at the
centre keeps the values, the centre pixels, unscaled.
"""

from __future__ import annotations

import math

import torch

from ..engines.attention import ATTENTION_BACKENDS
from ..errors import InputError
from .declaration import SOFTMAX, Declaration, Option
from .forms import AttentionForm, Geometry
from .local import PATCH_OPTIONS, ELSMachine
from .per_step import by_step_value, per_step_values, value_at

__all__ = ["SoftELSMachine", "gaussian_window"]

def gaussian_window(k: int, sigma: float) -> torch.Tensor | None:
    """w(o) = exp(-|o|^2 / (2 sigma^2)) on the k x k offsets, float64 [k, k], 1 at the centre;
    None for sigma = inf (the box)."""
    if math.isinf(sigma):
        return None
    o = torch.arange(k, dtype=torch.float64) - k // 2
    return torch.exp(-(o.view(-1, 1) ** 2 + o.view(1, -1) ** 2) / (2 * sigma * sigma))


class SoftELSMachine(ELSMachine):
    """ELS with a Gaussian window of width sigma(t) on its patch distance (see the module docstring)."""

    declaration = Declaration(
        name="els-soft", summary="ELS with a soft window: patch distances weighted by a Gaussian of width sigma(t).",
        candidates="as ELS", form=SOFTMAX, traceable=True, backends=ATTENTION_BACKENDS, order=41, cost_like="els",
        candidate=True,
        options=PATCH_OPTIONS + (Option(
            "sigma", "sigma_schedule", math.inf,
            "Gaussian window width in pixels: one number, or one per step of the default grid (highest t first); "
            "inf is ELS's box.", flag="--sigma", record=lambda v: [str(x) if math.isinf(x) else x for x in v]),))

    def __init__(self, images, patch_size=None, padding: str = "zeros", sigma=math.inf, **kw) -> None:
        self.sigma = per_step_values(sigma, "sigma", infinite=True)
        if kw.get("approx_radius") is not None:
            raise InputError("approx_radius needs the compiled box kernel; els-soft runs on the attention form")
        if kw.get("subset") is not None or kw.get("subset_bound") is not None:
            raise InputError("subset= bounds box patch distances; els-soft weighs its window, so it has no bound")
        super().__init__(images, patch_size, padding, **kw)

    def sigma_at(self, t: float) -> float:
        """sigma at a denoiser time: the one value, or the nearest default-grid time's."""
        return value_at(self.sigma, t, "sigma")

    def _choose_engine(self, x):
        return AttentionForm(Geometry("els", self.padding), self._cache, self.memory_budget, self._attention_backend)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None, window=None):
        parent = super()._denoise_subset  # rows at different sigmas: one window each
        return by_step_value(self.sigma_at, x, a, s, t, trace,
                             lambda x, a, s, t, sig: parent(x, a, s, k, cls, trace, t, gaussian_window(k, sig)))
