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

import math
import numbers
import warnings

import torch

from ..errors import InputError
from ..patch_schedule import default_grid_times
from .declaration import SOFTMAX, Declaration, Option
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine

__all__ = ["TemperedELSMachine"]


def _temperatures(spec) -> tuple[float, ...]:
    """One positive finite temperature, or one per step: from a number, a sequence or '0.5,0.7,...'."""
    items = spec
    if isinstance(spec, str):
        try:
            items = [float(v) for v in spec.split(",")]
        except ValueError:
            raise InputError(f"temperatures must be numbers separated by commas, got {spec!r}") from None
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        items = [spec]
    try:
        items = list(items)
    except TypeError:
        raise InputError(f"temperatures must be a number or one per step, got {spec!r}") from None
    if not items:
        raise InputError("temperatures: give at least one")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v > 0 and math.isfinite(v)):
            raise InputError(f"temperatures must be positive numbers, got {v!r}")
    return tuple(float(v) for v in items)


class TemperedELSMachine(ELSMachine):
    """ELS with its logits divided by a temperature per step (see the module docstring)."""

    declaration = Declaration(
        name="els-tempered", summary="ELS at a temperature per step: logits divided by T(t) (T = 1 is ELS).",
        candidates="as ELS", form=SOFTMAX, traceable=True, sizes_in_one_pass=True, backends=BACKENDS, order=40,
        cost_like="els",
        options=PATCH_OPTIONS + (Option(
            "temperatures", "temperature_schedule", 1.0,
            "Softmax temperature: one number, or one per step of the default grid (highest t first).",
            flag="--temperatures", record=list),))

    def __init__(self, images, patch_size=None, padding: str = "zeros", temperatures=1.0, **kw) -> None:
        self.temperatures = _temperatures(temperatures)
        super().__init__(images, patch_size, padding, **kw)

    def temperature_at(self, t: float) -> float:
        """T at a denoiser time: the one value, or the nearest default-grid time's (warned when
        ``t`` is not a time of that grid)."""
        if len(self.temperatures) == 1:
            return self.temperatures[0]
        ts = torch.tensor(default_grid_times(len(self.temperatures)), dtype=torch.float64)
        d = (ts - float(t)).abs()
        i = int(torch.argmin(d))
        if float(d[i]) > 1e-9:
            warnings.warn(f"t = {float(t):.6g} is not a time of the {len(ts)}-step grid of these temperatures; "
                          f"using that of t = {float(ts[i]):g}", stacklevel=4)
        return self.temperatures[i]

    def _logit_noise(self, s, t):
        T = torch.tensor([self.temperature_at(v) for v in t.tolist()], dtype=torch.float64)
        return s * T.sqrt().to(device=s.device, dtype=s.dtype)
