"""The noise schedule and the DDIM time grid (docs/theory.md, "Forward process and time grid").

The paper's legacy cosine schedule: abar(t) = cos(t / 1.008 * pi / 2)^2 with no offset in the
numerator, so abar(0) = 1 exactly; x_t = a x_0 + s eps with a = sqrt(abar), s = sqrt(1 - abar).
The deterministic DDIM grid for n steps is t_j = (n - j) / n, j = 0..n, ending at t = 0.

"Schedule" alone always means this noise schedule; the patch size per step is the *patch
schedule* (:mod:`elsmachine.patch_schedule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import InputError

__all__ = ["CosineSchedule", "ddim_grid", "schedule_from_dict"]


@dataclass(frozen=True)
class CosineSchedule:
    """abar(t) = cos(t / (1 + offset) * pi / 2)^2, the paper's code's "legacy" cosine schedule.

    ``offset`` = 0.008 reproduces the paper. ``alpha_bar``, ``alpha`` and ``sigma`` take a float
    or a tensor of times in [0, 1] and return the same kind (tensors keep dtype and device).
    """

    offset: float = 0.008

    def __post_init__(self) -> None:
        if not (self.offset >= 0 and math.isfinite(self.offset)):
            raise InputError(f"CosineSchedule offset must be a finite number >= 0, got {self.offset!r}")

    def alpha_bar(self, t):
        """abar(t), the signal variance at time t."""
        if isinstance(t, torch.Tensor):
            return torch.cos(t / (1.0 + self.offset) * (math.pi / 2)) ** 2
        return math.cos(t / (1.0 + self.offset) * (math.pi / 2)) ** 2

    def alpha(self, t):
        """a(t) = sqrt(abar(t)), the scale of x_0 in x_t."""
        ab = self.alpha_bar(t)
        return ab.sqrt() if isinstance(ab, torch.Tensor) else math.sqrt(ab)

    def sigma(self, t):
        """s(t) = sqrt(1 - abar(t)), the noise level of x_t."""
        ab = self.alpha_bar(t)
        if isinstance(ab, torch.Tensor):
            return (1.0 - ab).clamp_min(0.0).sqrt()
        return math.sqrt(max(0.0, 1.0 - ab))

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a(t), s(t) for times ``t`` [B] (float64 on the CPU), as [B] tensors in ``like``'s dtype
        and device. Computed in float64 first: late in sampling s^2 is small and 1 - abar loses
        digits in float32."""
        t64 = t.to(torch.float64)
        a = self.alpha(t64).to(device=like.device, dtype=like.dtype)
        s = self.sigma(t64).to(device=like.device, dtype=like.dtype)
        return a, s

    def to_dict(self) -> dict:
        return {"kind": "cosine", "offset": self.offset}

    @staticmethod
    def from_dict(d: dict) -> "CosineSchedule":
        return schedule_from_dict(d)


def schedule_from_dict(d: dict) -> CosineSchedule:
    """The noise schedule a saved artifact recorded (``{"kind": ..., ...}``)."""
    if not isinstance(d, dict):
        raise InputError(f"a noise schedule is saved as an object, got {type(d).__name__}")
    if d.get("kind", "cosine") != "cosine":
        raise InputError(f"unknown noise schedule kind {d.get('kind')!r}; only 'cosine' is known")
    return CosineSchedule(offset=float(d.get("offset", 0.008)))


def ddim_grid(steps: int) -> torch.Tensor:
    """The default DDIM grid t_j = (n - j) / n, j = 0..n: float64 [steps + 1], from 1.0 down to 0.0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    return torch.arange(steps, -1, -1, dtype=torch.float64) / steps
