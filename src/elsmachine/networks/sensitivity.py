"""A network's sensitivity to its input, per output pixel and step: the windows of PSPC flex
(docs/theory.md, "The peers' machines"; Niedoba et al., ICML 2025).

At each step t of the grid, for noisy inputs x_t = a(t) Y + s(t) eps made from training images,

    heat[q, p] = mean over the inputs of  sum over channels of abs(d D(x_t)[q] / d x_t[p]),

computed row by row of the Jacobian by batched backward passes (any denoiser that follows the
contract and is differentiable). The window of output pixel q is the smallest set of input
pixels holding a share rho(t) of heat[q]'s total, largest first, and always q itself (so every
pixel lies in at least one window).

Saved as safetensors: the heat maps (float16) with their metadata (model, weights hash, noise
schedule, grid, share per step, number of inputs averaged, image size).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import InputError
from ..sensitivity import Sensitivity

__all__ = ["Sensitivity", "measure_sensitivity"]

def measure_sensitivity(network, images: torch.Tensor, labels=None, *, steps: int = 20, inputs: int = 4,
                        share=0.9, seed: int = 0, rows: int = 128, meta: dict | None = None,
                        on_step: Callable[[dict], None] | None = None, grid=None) -> Sensitivity:
    """Measure ``network``'s sensitivity on its schedule's grid of ``steps`` steps (see the module
    docstring), averaging ``inputs`` noisy training images per step; ``rows`` Jacobian rows per
    backward batch; ``share`` one number or one per step. ``grid``: the times instead (float64
    [steps + 1], descending, ending at 0: a sampler's, e.g. ``Sampler("heun").grid(schedule, steps)``)."""
    if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
        raise InputError(f"inputs must be a positive integer, got {inputs!r}")
    if grid is None:
        grid = network.schedule.grid(steps)
    else:
        grid = torch.as_tensor(grid, dtype=torch.float64)
        if grid.dim() != 1 or grid.numel() != steps + 1:
            raise InputError(f"grid must hold steps + 1 = {steps + 1} times, got {tuple(grid.shape)}")
    shares = [float(share)] * steps if isinstance(share, (int, float)) else [float(r) for r in share]
    if len(shares) != steps:
        raise InputError(f"give one share or one per step ({steps}), got {len(shares)}")
    N, C, H, W = images.shape
    HW = H * W
    sched = network.schedule
    g = torch.Generator().manual_seed(seed)
    heat = torch.zeros(steps, HW, HW)
    for i, t in enumerate(grid[:-1].tolist()):
        a, s = sched.alpha(t), sched.sigma(t)
        pick = torch.randint(N, (inputs,), generator=g)
        noise = torch.randn((inputs, C, H, W), generator=g, dtype=torch.float64).to(images.dtype)
        for j in range(inputs):
            x = a * images[pick[j]] + s * noise[j]
            lab = None if labels is None else labels[pick[j]]
            for q0 in range(0, HW, rows):
                qs = torch.arange(q0, min(HW, q0 + rows))
                xr = x.expand(len(qs), C, H, W).clone().requires_grad_(True)
                out = network.denoise(xr, t, labels=None if lab is None else lab.expand(len(qs)))
                picked = out.reshape(len(qs), C, HW)[torch.arange(len(qs)), :, qs]  # [rows, C]: D(x)[c, q]
                for c in range(C):
                    (grad,) = torch.autograd.grad(picked[:, c].sum(), xr, retain_graph=c < C - 1)
                    heat[i, qs] += grad.abs().sum(1).reshape(len(qs), HW).to(heat.dtype).cpu()
        heat[i] /= inputs
        if on_step is not None:
            on_step({"i": i, "t": t})
    info = {"inputs": inputs, "seed": seed, **(meta or {})}
    return Sensitivity(ts=tuple(float(t) for t in grid[:-1]), image_size=(H, W), schedule=sched.to_dict(),
                       share=tuple(shares), heat=heat, meta=info)
