"""The analytic locality machine of Lukoianov et al. (NeurIPS 2025, arXiv 2509.09672): locality
patterns taken from the data's statistics (docs/theory.md, "The peers' machines").

At time t, P = U diag(a^2 l / (a^2 l + s^2)) U^T is the Wiener projection of the training
covariance [D, D], taken unbiased (1/(N - 1)) as the authors' code takes it (the Wiener machine's
own covariance is 1/N). M[u, m] = P[u, m] / P[u, u] (a row whose abs(P[u, u]) < 1e-6 is divided by 1),
and the binary mask keeps mask[u, m] = 1 where abs(M[u, m]) >= threshold * max abs(M). Output
entry m weighs whole training images by

    softmax_n( -sum_u mask[u, m] (x_t[u] - a Y_n[u])^2 / (2 s^2 T) )

and returns sum_n w_n(m) Y_n[m]. Each entry has its own softmax over images, summed exactly over
all N on the one softmax state (the published implementation normalises each chunk of images
apart and averages the chunks, which equals this only when all images fit one chunk).
Threshold 0 keeps every entry: the machine is then IS (at temperature 1).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

from ..errors import InputError
from ..noise import NoiseSchedule
from .base import DEFAULT_MEMORY_BUDGET, CandidateMachine, Trace
from .declaration import Cost, SOFTMAX, Declaration, Option
from .gaussian import WienerMachine
from .masked import masked_finish, masked_state

__all__ = ["LocalityMachine"]


class _MaskedEntries:
    """The engine of the locality machine: every output entry its own masked softmax over whole
    training images (:func:`.masked.masked_state`); ``source`` the global index of the best."""

    name = "masked"
    several_sizes = False

    def __init__(self, memory_budget: int) -> None:
        self.memory_budget = memory_budget

    def stream(self, queries, bank, *, trace: bool):
        x, a, scale, rows = queries
        Y = bank.as_float(x.dtype, x.device)
        return masked_state(x, a, scale, Y.flatten(1), rows, composite=False, memory_budget=self.memory_budget,
                            trace=trace, index=bank.index)



def _pairs(k, n, H, W, t, padding=None, radius=None):
    return H * W * n  # every output entry (one channel here) against every image


def _flops(k, n, H, W, C, t, padding=None, radius=None):
    D = C * H * W  # squared differences, the masked sums by matrix product, exp and weighted sums
    return n * (3.0 * D + H * W * (2.0 * D + 16))


class LocalityMachine(CandidateMachine):
    """Lukoianov et al.'s analytic locality machine (see the module docstring)."""

    declaration = Declaration(
        name="locality", summary="Lukoianov et al.'s analytic locality: masks from the data's Wiener projection.",
        candidates="every whole training image, each output entry through its own mask of input entries",
        form=SOFTMAX, traceable=True, order=60,
        options=(Option("threshold", float, 0.02, "The share of the largest normalised projection an entry needs to "
                        "enter a distance.", flag="--threshold"),
                 Option("temperature", float, 1.0, "The softmax temperature.", flag="--temperature")), cost=Cost(_pairs, _flops), baseline="masked softmax")

    def __init__(self, images, threshold: float = 0.02, temperature: float = 1.0, labels=None, *,
                 schedule: NoiseSchedule | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 distributed: bool = False) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise InputError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                temperature > 0 and math.isfinite(temperature)):
            raise InputError(f"temperature must be a positive number, got {temperature!r}")
        self.threshold, self.temperature = float(threshold), float(temperature)
        # The Wiener machine of the same share holds the statistics (summed over ranks when sharded).
        self._wiener = WienerMachine(self.images, self.labels, schedule=self.schedule)
        self._wiener.distributed = self.distributed
        self._masks: OrderedDict = OrderedDict()

    def mask(self, t: float, cls=None) -> torch.Tensor:
        """bool [D, D]: entry (u, m) says whether input entry u enters output entry m's distance."""
        key = (float(t), cls)
        hit = self._masks.get(key)
        if hit is not None:
            self._masks.move_to_end(key)
            return hit
        _, lam, U = self._wiener.statistics(cls)
        n = float(self._wiener._sum(torch.tensor(float(len(self._index(cls))), dtype=torch.float64)))
        lam = lam * (n / (n - 1.0)) if n > 1 else lam  # the unbiased covariance, 1/(N - 1)
        a, s = self.schedule.alpha(float(t)), self.schedule.sigma(float(t))
        P = (U * (a * a * lam / (a * a * lam + s * s))) @ U.T
        diag = P.diagonal().clone()
        diag[diag.abs() < 1e-6] = 1.0
        M = (P / diag[:, None]).abs()
        mask = M >= self.threshold * M.max()
        while self._masks and sum(m.numel() for m in self._masks.values()) + mask.numel() > self.memory_budget // 4:
            self._masks.popitem(last=False)
        self._masks[key] = mask
        return mask

    def describe(self) -> dict:
        # the masks' covariance is part of the definition (results made with 1/N are not these)
        return {**super().describe(), "mask_covariance": "1/(N-1)"}

    def _choose_engine(self, x):
        return _MaskedEntries(self.memory_budget)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        B, C, H, W = x.shape
        engine, bank = self.engine(x), self.bank(cls)
        out = torch.empty_like(x)
        tr = None
        if trace:
            tr = Trace.empty(B, H, W, x)
            tr.source_pixel[:] = torch.arange(H * W, device=x.device).view(1, H, W)
        for ti in sorted(set(t.tolist())):  # one mask per time in the batch
            sel = torch.nonzero(t == ti).flatten().to(x.device)
            rows = self.mask(ti, cls).T.to(device=x.device, dtype=x.dtype)  # [m, u]
            scale = (1.0 / (2.0 * s[sel].to(torch.float64) ** 2 * self.temperature)).to(x.dtype)
            state = engine.stream((x[sel].reshape(len(sel), -1), a[sel], scale, rows), bank, trace=trace)
            o, fin = masked_finish(state, rows, composite=False, dtype=x.dtype, trace=trace)
            out[sel] = o.view(len(sel), C, H, W)
            if trace:  # the first channel's entries stand for their pixel
                tr.source_image[sel] = state.source[:, : H * W].reshape(-1, H, W)
                tr.weight[sel] = fin.weight[:, : H * W].reshape(-1, H, W).to(x.dtype)
                tr.effective[sel] = fin.effective[:, : H * W].reshape(-1, H, W).to(x.dtype)
        return out, tr
