"""ELS with a temperature per step (docs/theory.md, "ELS at a temperature"): the ELS machine's
softmax over candidate patches with its logits divided by T(t),

    x0_hat(q) = sum_{n, p} softmax_{n, p}(-|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2 T(t))) Y_n(p),

over the candidates ELS's pixel q sees (:mod:`.candidates`). T = 1 is ELS; T -> 0 its best
patch alone; T > 1 averages more patches. x0_hat depends on s only through the logits, so the
machine is ELS with s sqrt(T(t)) in place of s. T(t) is one number, or one per step of the
default grid (highest t first) looked up at the nearest grid time, like a patch schedule; it is
fitted to a network by ``els calibrate``-style search on seeds disjoint from evaluation seeds.
"""

from __future__ import annotations

import torch

from .declaration import SOFTMAX, Declaration, Option
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine
from .per_step import per_step_values, value_at

__all__ = ["TemperedELSMachine"]


class TemperedELSMachine(ELSMachine):
    """ELS with its logits divided by a temperature per step (see the module docstring)."""

    declaration = Declaration(
        name="els-tempered", summary="ELS at a temperature per step: logits divided by T(t) (T = 1 is ELS).",
        candidates="as ELS", form=SOFTMAX, traceable=True, sizes_in_one_pass=True, backends=BACKENDS, order=40,
        cost_like="els", candidate=True,
        options=PATCH_OPTIONS + (Option(
            "temperatures", "temperature_schedule", 1.0,
            "Softmax temperature: one number, or one per step of the default grid (highest t first).",
            flag="--temperatures", record=list),))

    def __init__(self, images, patch_size=None, padding: str = "zeros", temperatures=1.0, **kw) -> None:
        self.temperatures = per_step_values(temperatures, "temperatures")
        super().__init__(images, patch_size, padding, **kw)

    def temperature_at(self, t: float) -> float:
        """T at a denoiser time: the one value, or the nearest default-grid time's (warned when
        ``t`` is not a time of that grid)."""
        return value_at(self.temperatures, t, "temperatures")

    def _logit_noise(self, s, t):
        T = torch.tensor([self.temperature_at(v) for v in t.tolist()], dtype=torch.float64)
        return s * T.sqrt().to(device=s.device, dtype=s.dtype)
