"""The ideal score at a temperature (docs/theory.md, "The tempered ideal machine"): the empirical
posterior mean with its logits divided by T,

    x0_hat = sum_n softmax_n(-|x_t - a Y_n|^2 / (2 s^2 T)) Y_n.

T = 1 is IS; T -> 0 is the nearest training image; T > 1 averages more images. Dividing the
logits by T is running IS with s^2 T in place of s^2 (a keeps its value), so the machine is IS on
the same engine with s scaled by sqrt(T); its subset mode (:mod:`.subset`) bounds that softmax.
"""

from __future__ import annotations

import math

from ..errors import InputError
from ..noise import NoiseSchedule
from .base import DEFAULT_MEMORY_BUDGET
from .declaration import SOFTMAX, Declaration, Fit, Option
from .ideal import IdealMachine
from .subset import SUBSET_OPTIONS

__all__ = ["TemperedMachine"]


class TemperedMachine(IdealMachine):
    """IS with its softmax at temperature ``temperature`` (see the module docstring)."""

    declaration = Declaration(
        name="tempered", summary="IS at a temperature: logits divided by T (T = 1 is IS, T -> 0 the nearest image).",
        candidates="every whole training image", form=SOFTMAX, traceable=True, order=35, cost_like="ideal",
        candidate=True, reduces_to="ideal", fit=Fit("temperature", ("0.5", "0.7", "1.4", "2")),
        options=(Option("temperature", float, 1.0, "The softmax temperature.", flag="--temperature"),
                 *SUBSET_OPTIONS))

    def __init__(self, images, temperature: float = 1.0, labels=None, *, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False, subset=None,
                 subset_bound=None, subset_pool: int = 4) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                temperature > 0 and math.isfinite(temperature)):
            raise InputError(f"temperature must be a positive number, got {temperature!r}")
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed,
                         subset=subset, subset_bound=subset_bound, subset_pool=subset_pool)
        self.temperature = float(temperature)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        return super()._denoise_subset(x, a, s * math.sqrt(self.temperature), k, cls, trace, t)
