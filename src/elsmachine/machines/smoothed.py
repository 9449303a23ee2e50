"""Smoothed closed-form diffusion (Scarvelis, Borde and Solomon, "Closed-form Diffusion Models",
TMLR 2023; the Analytic Diffusion Studio's ``scfdm``; docs/theory.md, "The peers' machines"): the
ideal denoiser averaged over Gaussian perturbations of its input,

    x0_hat(x_t) = (1 / M) sum_{j=1..M} IS(x_t + sigma_s z_j),   z_j ~ N(0, I),

with sigma_s = ``smoothing_std`` and M = ``num_noise``. Smoothing the ideal denoiser's input
blurs the boundaries between the training images' basins, so the sampler can end between them
instead of on one. IS is exact over all N images by default; ``neighbours = k`` is the
authors' nearest-neighbour estimator, each perturbed query's softmax over its k nearest images
by |x - a Y_n| (the lower index on ties).

The perturbations of a query are drawn from a generator seeded from the machine's ``seed``, the
time, the class and the query itself (its float64 bytes), so the machine is a deterministic
function of (x_t, t, class), whatever else is in the batch and however the images are chunked.
smoothing_std = 0 is IS.
"""

from __future__ import annotations

import math

import torch

from .. import checks
from ..errors import InputError
from ..seeds import query_generator
from .declaration import Cost, SOFTMAX, Declaration, Option
from .ideal import IdealMachine

__all__ = ["SmoothedMachine"]



def _pairs(k, n, H, W, t, padding=None, radius=None):
    return 10 * n  # every image for each of its default 10 perturbed copies


def _flops(k, n, H, W, C, t, padding=None, radius=None):
    return 10 * n * (4.0 * (C * H * W + 1) + 10)  # IS once per copy


class SmoothedMachine(IdealMachine):
    """IS averaged over Gaussian perturbations of its input (see the module docstring)."""

    declaration = Declaration(
        name="smoothed", summary="Smoothed closed-form diffusion (Scarvelis et al.): IS averaged over Gaussian "
        "perturbations of its input.", candidates="every whole training image (neighbours: the nearest k), for "
        "each perturbed copy of the query", form=SOFTMAX, order=66,
        options=(
            Option("smoothing_std", float, 0.1, "Standard deviation of the perturbations of x_t (0: IS).",
                   flag="--smoothing-std"),
            Option("num_noise", int, 10, "Perturbed copies averaged per query.", flag="--num-noise"),
            Option("neighbours", int, None, "The nearest-neighbour estimator: each copy's softmax over its k "
                   "nearest images (default: all).", flag="--neighbours"),
            Option("seed", int, 0, "Seed of the machine's random draws.", flag="--machine-seed")), cost=Cost(_pairs, _flops))

    def __init__(self, images, smoothing_std: float = 0.1, num_noise: int = 10, neighbours=None, seed: int = 0,
                 labels=None, **kw) -> None:
        if isinstance(smoothing_std, bool) or not isinstance(smoothing_std, (int, float)) or not (
                smoothing_std >= 0 and math.isfinite(smoothing_std)):
            raise InputError(f"smoothing_std must be a non-negative number, got {smoothing_std!r}")
        if neighbours is not None and kw.get("distributed"):
            raise InputError("the nearest-neighbour estimator (neighbours=) picks from the whole set: not on a "
                             "sharded machine")
        super().__init__(images, labels=labels, **kw)
        self.smoothing_std = float(smoothing_std)
        self.num_noise = checks.positive_int(num_noise, "num_noise")
        self.neighbours = None if neighbours is None else checks.positive_int(neighbours, "neighbours")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed

    def perturbations(self, x: torch.Tensor, t: float, cls=None) -> torch.Tensor:
        """z [num_noise, C, H, W] (float64) of query x [C, H, W] at time t: the draws it is smoothed by."""
        g = query_generator(self.seed, t, cls, x)
        return torch.randn((self.num_noise, *x.shape), generator=g, dtype=torch.float64)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        if self.smoothing_std == 0.0:
            return super()._denoise_subset(x, a, s, k, cls, False, t)
        B, M = x.shape[0], self.num_noise
        z = torch.stack([self.perturbations(x[b], float(t[b]), cls) for b in range(B)])  # [B, M, C, H, W]
        xs = (x[:, None] + (self.smoothing_std * z).to(device=x.device, dtype=x.dtype)).flatten(0, 1)
        a_, s_ = a.repeat_interleave(M), s.repeat_interleave(M)
        if self.neighbours is None:
            x0 = super()._denoise_subset(xs, a_, s_, k, cls, False, t.repeat_interleave(M))[0]
        else:
            x0 = self._nearest_softmax(xs, a_, s_, cls)
        return x0.to(torch.float64).view(B, M, *x.shape[1:]).mean(1).to(x.dtype), None

    def _nearest_softmax(self, xs, a, s, cls):
        """IS over each query's ``neighbours`` nearest images, distances in direct form."""
        Y, _ = self._training(xs.dtype, xs.device, cls)
        n = Y.shape[0]
        k = min(self.neighbours, n)
        out = torch.empty_like(xs)
        per = max(1, (self.memory_budget // 4) // max(1, n * xs[0].numel() * xs.element_size()))
        for q0 in range(0, xs.shape[0], per):
            xq, aq = xs[q0 : q0 + per], a[q0 : q0 + per].view(-1, 1, 1, 1, 1)
            d = ((xq[:, None] - aq * Y[None]) ** 2).flatten(2).sum(-1)  # [q, n]
            order = torch.sort(d, dim=1, stable=True).indices[:, :k]
            dk = d.gather(1, order).to(torch.float64)
            w = torch.softmax(-dk / (2 * s[q0 : q0 + per].to(torch.float64).view(-1, 1) ** 2), dim=1)
            out[q0 : q0 + per] = torch.einsum("qk,qkd->qd", w, Y[order].flatten(2).to(torch.float64)).view_as(xq)
        return out
