"""The nearest-neighbour machine: the ideal score at zero temperature, the memorisation baseline
(docs/theory.md, "The peers' machines").

    x0_hat = Y_n*,    n* = argmin_n |x_t - a Y_n|^2   (the first on ties).

Distances are summed from their own squared differences in x's dtype, streamed over chunks of
training images within the memory budget.
"""

from __future__ import annotations

import torch

from ..noise import NoiseSchedule
from .base import DEFAULT_MEMORY_BUDGET, ScoreMachine, Trace
from .declaration import Cost, SOFTMAX, Declaration

__all__ = ["NearestMachine"]


class NearestMachine(ScoreMachine):
    """Nearest training image to x_t / a in L2, returned whole. Traced like IS: its one candidate
    holds all the weight."""

    declaration = Declaration(
        name="nearest", summary="The nearest training image, whole: IS at zero temperature (memorisation).",
        candidates="every whole training image (the nearest takes all the weight)", form=SOFTMAX, traceable=True,
        order=30, cost=Cost(lambda k, n, H, W, t, padding=None, radius=None: n, lambda k, n, H, W, C, t, padding=None, radius=None: n * 3.0 * C * H * W, "distances"))

    def __init__(self, images, labels=None, *, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        Y, gidx = self._training(x.dtype, x.device, cls)
        B = x.shape[0]
        per = max(1, (self.memory_budget // 4) // max(1, B * x[0].numel() * x.element_size()))
        best_d = torch.full((B,), float("inf"), dtype=x.dtype, device=x.device)
        best_i = torch.zeros(B, dtype=torch.long, device=x.device)
        for n0 in range(0, Y.shape[0], per):
            d = ((x[:, None] - a.view(-1, 1, 1, 1, 1) * Y[None, n0 : n0 + per]) ** 2).flatten(2).sum(-1)  # [B, n]
            dmin, imin = d.min(dim=1)  # the first minimum of the chunk
            better = dmin < best_d  # strictly: an earlier chunk keeps its tie
            best_d = torch.where(better, dmin, best_d)
            best_i = torch.where(better, imin + n0, best_i)
        gbest = gidx.to(x.device)[best_i] if Y.shape[0] else torch.full_like(best_i, -1)
        x0 = Y[best_i].clone() if Y.shape[0] else torch.zeros_like(x)
        if self.distributed:  # the nearest over every rank's share (the lowest global index on ties)
            from ..engines.distributed import gather_argmin

            _, gbest, x0 = gather_argmin(best_d, torch.where(gbest < 0, torch.full_like(gbest, 2**52), gbest), x0)
        if not trace:
            return x0, None
        _, _, H, W = x.shape
        every = (B, H, W)
        return x0, Trace(source_image=gbest.view(B, 1, 1).expand(every).clone(),
                         source_pixel=torch.arange(H * W, device=x.device).view(1, H, W).expand(every).clone(),
                         weight=x.new_ones(every), effective=x.new_ones(every),
                         patch_size=torch.full((B,), -1, dtype=torch.long))
