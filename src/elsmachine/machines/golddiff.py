"""GoldDiff, the golden-subset analytic denoiser of Shang et al. ("Fast and Scalable Analytical
Diffusion", ICML 2026; docs/theory.md, "The peers' machines"): the analytic locality softmax
(:mod:`.locality`) over a subset of the training images chosen per query and step, coarse to
fine. With s = s(t) and l = 1 - s (the locality factor; s in [0, 1] on a variance-preserving
schedule), over the N images of the query's class:

    m_t = clamp(round(k_max + (N - k_max) l), k_max, N)   images drawn at random (pre-sample),
    the k_max of them nearest by |pool(x_t) - a pool(Y_n)|^2 (average-pooled to low_res x low_res),
    k_t = max(k_min, round(k_max - (k_max - k_min) l))   of those nearest by |x_t - a Y_n|^2,

and x0_hat at entry m = sum over those k_t images of softmax_n(-sum_u mask_t[u, m] (x_t[u] -
a Y_n[u])^2 / (2 s^2)) Y_n[m], the locality machine's masked softmax. Defaults as the authors'
configurations: k_min = N / 20, k_max = N / 10, threshold 0.02, low_res 16.

The subset is random only through the pre-sample. Its generator is seeded from the machine's
``seed``, the time and the query itself (its float64 bytes), so the machine is a deterministic
function of (x_t, t, class): a query gets the same subset whatever else is in its batch, and a
float32 query the same as its float64 copy. Distances are taken in direct form, and ties go to
the lower index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import checks
from ..errors import InputError
from ..noise import NoiseSchedule
from ..seeds import query_generator
from .base import DEFAULT_MEMORY_BUDGET, Trace
from .declaration import Cost, SOFTMAX, Declaration, Option
from .locality import LocalityMachine
from .masked import masked_finish, masked_state

__all__ = ["GoldDiffMachine"]


def _count(v, what: str) -> int | None:
    return None if v is None else checks.positive_int(v, what)



def _counts(n: int, t: float) -> tuple[int, int, int]:
    """(pre-sample, screen, softmax) image counts at time t with the default k_min and k_max, on
    the paper's cosine schedule."""
    from ..noise import CosineSchedule

    return GoldDiffMachine.sizes_of(n, CosineSchedule().sigma(t), None, None)


def _pairs(k, n, H, W, t, padding=None, radius=None):
    # the pre-sample screened on pooled proxies, the survivors at full size (one pair an image
    # each), then every output entry against the k_t images kept
    m, k_max, k_t = _counts(n, t)
    return m + k_max + H * W * k_t


def _flops(k, n, H, W, C, t, padding=None, radius=None):
    D = C * H * W
    m, k_max, k_t = _counts(n, t)
    return m * 3.0 * D / 4 + k_max * 3.0 * D + k_t * (3.0 * D + H * W * (2.0 * D + 16))


class GoldDiffMachine(LocalityMachine):
    """GoldDiff (see the module docstring)."""

    declaration = Declaration(
        name="golddiff", summary="GoldDiff (Shang et al.): the analytic locality softmax over a subset chosen coarse "
        "to fine per query and step.", candidates="the k_t nearest of a random pre-sample of the class's images, "
        "each output entry through its own mask", form=SOFTMAX, traceable=True, distributed=False, order=65,
        options=(
            Option("k_min", int, None, "Images the softmax keeps at low noise (default: N / 20 of the class).",
                   flag="--k-min"),
            Option("k_max", int, None, "Images the coarse screen keeps, and the softmax at high noise (default: "
                   "N / 10).", flag="--k-max"),
            Option("low_res", int, 16, "Side of the average-pooled proxies of the coarse screen.", flag="--low-res"),
            Option("threshold", float, 0.02, "The share of the largest normalised projection an entry needs to "
                   "enter a distance.", flag="--threshold"),
            Option("seed", int, 0, "Seed of the random pre-sample.", flag="--machine-seed")), cost=Cost(_pairs, _flops))

    def __init__(self, images, k_min=None, k_max=None, low_res: int = 16, threshold: float = 0.02, seed: int = 0,
                 labels=None, *, schedule: NoiseSchedule | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 distributed: bool = False) -> None:
        if distributed:
            raise InputError("golddiff chooses its subset from the whole set: it cannot shard its bank")
        super().__init__(images, threshold=threshold, temperature=1.0, labels=labels, schedule=schedule,
                         memory_budget=memory_budget)
        self.k_min, self.k_max = _count(k_min, "k_min"), _count(k_max, "k_max")
        if self.k_min is not None and self.k_max is not None and self.k_min > self.k_max:
            raise InputError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        self.low_res = checks.positive_int(low_res, "low_res")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        H, W = self.image_shape[1:]
        # the pooling factor: the smallest common divisor of the sides whose proxy is at most low_res
        # on each side (32 x 32 at 16: 2; 28 x 28 at 16: 2, proxies of 14 x 14)
        divisors = [f for f in range(1, min(H, W) + 1) if H % f == 0 and W % f == 0]
        self._factor = next((f for f in divisors if H // f <= self.low_res and W // f <= self.low_res), divisors[-1])

    def sizes(self, n: int, s: float) -> tuple[int, int, int]:
        """(m_t, k_max, k_t) for a class of n images at noise s (see the module docstring)."""
        return self.sizes_of(n, s, self.k_min, self.k_max)

    @staticmethod
    def sizes_of(n: int, s: float, k_min: int | None, k_max: int | None) -> tuple[int, int, int]:
        """(m_t, k_max, k_t) for a class of n images at noise s, given k_min and k_max (None:
        the defaults, n / 20 and n / 10)."""
        k_min = min(n, k_min if k_min is not None else max(1, n // 20))
        k_max = min(n, max(k_min, k_max if k_max is not None else max(1, n // 10)))
        loc = 1.0 - min(1.0, max(0.0, float(s)))
        m = min(n, max(k_max, int(round(k_max + (n - k_max) * loc))))
        k = max(k_min, int(round(k_max - (k_max - k_min) * loc)))
        return m, k_max, k

    def _generator(self, row: torch.Tensor, t: float, cls) -> torch.Generator:
        return query_generator(self.seed, t, cls, row)

    def chosen(self, x: torch.Tensor, t: float, cls=None) -> torch.Tensor:
        """int64 [k_t]: the positions, among the class's images (all when None), of the images the
        softmax of query x [C, H, W] at time t runs over, nearest first."""
        Y, _ = self._training(x.dtype, x.device, cls)
        a, s = self.schedule.alpha(float(t)), self.schedule.sigma(float(t))
        n = Y.shape[0]
        m, k_max, k = self.sizes(n, s)
        pre = torch.randperm(n, generator=self._generator(x, t, cls))[:m].sort().values.to(x.device)
        f = self._factor
        pool = (lambda v: F.avg_pool2d(v, f)) if f > 1 else (lambda v: v)  # noqa: E731
        coarse = ((pool(x[None]) - a * pool(Y[pre])) ** 2).flatten(1).sum(1)
        keep = pre[torch.sort(coarse, stable=True).indices[:k_max]].sort().values
        fine = ((x[None] - a * Y[keep]) ** 2).flatten(1).sum(1)
        return keep[torch.sort(fine, stable=True).indices[:k]]

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        B, C, H, W = x.shape
        Y, gidx = self._training(x.dtype, x.device, cls)
        out = torch.empty_like(x)
        tr = Trace.empty(B, H, W, x) if trace else None
        if trace:
            tr.source_pixel[:] = torch.arange(H * W, device=x.device).view(1, H, W)
        for b in range(B):
            ti = float(t[b])
            sub = self.chosen(x[b], ti, cls)
            rows = self.mask(ti, cls).T.to(device=x.device, dtype=x.dtype)  # [m, u]
            scale = (1.0 / (2.0 * s[b : b + 1].to(torch.float64) ** 2)).to(x.dtype)
            state = masked_state(x[b : b + 1].reshape(1, -1), a[b : b + 1], scale, Y[sub].flatten(1), rows,
                                 composite=False, memory_budget=self.memory_budget, trace=trace,
                                 index=gidx[sub.cpu()])
            o, fin = masked_finish(state, rows, composite=False, dtype=x.dtype, trace=trace)
            out[b] = o.view(C, H, W)
            if trace:
                tr.source_image[b] = state.source[0, : H * W].view(H, W)
                tr.weight[b] = fin.weight[0, : H * W].view(H, W).to(x.dtype)
                tr.effective[b] = fin.effective[0, : H * W].view(H, W).to(x.dtype)
        return out, tr
