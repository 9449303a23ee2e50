"""The Wiener machine's linear regime joined to ELS (docs/theory.md, "Wiener at high noise, ELS
at low noise"): per step a convex combination of the two machines' estimates,

    x0_hat(t) = lambda(t) x0_Wiener(x_t) + (1 - lambda(t)) x0_ELS(x_t),   lambda(t) in [0, 1].

At high noise a trained network is close to linear in its input (the Gaussian regime of Wang &
Vastola, where the Wiener filter of the data's moments is the exact denoiser of a Gaussian with
them); at low noise it is local (ELS). lambda = 0 is ELS, lambda = 1 the Wiener filter; a step
switch (1 down to some t, then 0) joins them at one time. lambda(t) is one number or one per
step of the default grid (highest t first), fitted to a network on seeds disjoint from
evaluation seeds. Both parts hold the same training set, classes and schedule; ELS's patch
schedule, padding and engine are its own.
"""

from __future__ import annotations

import torch

from .base import DEFAULT_MEMORY_BUDGET
from .declaration import SOFTMAX, Declaration, Option
from .gaussian import WienerMachine
from .followed import ELSFollowed
from .local import BACKENDS, PATCH_OPTIONS
from .per_step import per_step_values, value_at

__all__ = ["WienerELSMachine"]


class WienerELSMachine(ELSFollowed):
    """lambda(t) Wiener + (1 - lambda(t)) ELS (see the module docstring)."""

    declaration = Declaration(
        name="wiener-els", summary="The Wiener filter at high noise joined to ELS at low noise: lambda(t) Wiener + "
        "(1 - lambda(t)) ELS.", candidates="as ELS, beside the training set's mean and covariance", form=SOFTMAX,
        sizes_in_one_pass=True, backends=BACKENDS, order=42, cost_like="els", candidate=True,
        options=PATCH_OPTIONS + (Option(
            "wiener_weight", "weight_schedule", 0.0,
            "Weight lambda of the Wiener filter in [0, 1]: one number, or one per step of the default grid (highest "
            "t first); 0 is ELS.", flag="--wiener-weight", record=list),))

    def __init__(self, images, patch_size=None, padding: str = "zeros", wiener_weight=0.0, *, labels=None,
                 schedule=None, memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False, **kw) -> None:
        self.wiener_weight = per_step_values(wiener_weight, "wiener_weight", share=True)
        common = dict(labels=labels, memory_budget=memory_budget, distributed=distributed)
        super().__init__(images, patch_size, padding, schedule=schedule, **common, **kw)
        self.wiener = WienerMachine(images, schedule=self.schedule, **common)

    def weight_at(self, t: float) -> float:
        """lambda at a denoiser time: the one value, or the nearest default-grid time's."""
        return value_at(self.wiener_weight, t, "wiener_weight")

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None, window=None):
        """Rows at lambda = 1 are the Wiener filter's alone, so ELS runs only on the others."""
        whole = torch.tensor([self.weight_at(v) == 1.0 for v in t.tolist()])
        if trace or not self._following or not bool(whole.any()):
            return super()._denoise_subset(x, a, s, k, cls, trace, t, window)
        out = torch.empty_like(x)
        rows = torch.nonzero(whole).flatten()
        sel = rows.to(x.device)
        out[sel], _ = self.wiener._denoise_subset(x[sel], a[sel], s[sel], None, cls, False, t[rows])
        rows = torch.nonzero(~whole).flatten()
        if len(rows):
            sel = rows.to(x.device)
            out[sel], _ = super()._denoise_subset(x[sel], a[sel], s[sel], k, cls, False, t[rows], window)
        return out, None

    def _after(self, els, x, a, s, cls, t):
        """lambda Wiener + (1 - lambda) ELS per row of one class; rows at lambda = 0 skip the filter."""
        lam = torch.tensor([self.weight_at(v) for v in t.tolist()], dtype=torch.float64)
        rows = torch.nonzero(lam > 0).flatten().to(x.device)
        if len(rows) == 0:
            return els
        w, _ = self.wiener._denoise_subset(x[rows], a[rows], s[rows], None, cls, False, t[rows.cpu()])
        out = els.clone()
        l4 = lam[rows.cpu()].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        out[rows] = l4 * w + (1 - l4) * els[rows]
        return out
