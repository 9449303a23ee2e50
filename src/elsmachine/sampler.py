"""Deterministic DDIM sampling (DESIGN.md, "Forward process and time grid").

One step from t to t' < t with any denoiser D(x, t) = x0_hat:

    eps_hat = (x_t - a(t) x0_hat) / s(t),    x_t' = a(t') x0_hat + s(t') eps_hat,

on the grid t_j = (n - j) / n, j = 0..n, so the last step lands on t = 0 where a = 1, s = 0 and
the result is the denoiser's last x0_hat. The sampler is a pure function of the denoiser, the
starting noise and the grid; a patch-size schedule is looked up by step.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch

from .errors import InputError
from .presets import resolve_patch_sizes
from .schedule import CosineSchedule, ddim_grid

__all__ = ["ddim_sample", "seed_noise", "resolve_grid"]


def resolve_grid(steps: int | None, ts) -> torch.Tensor:
    """The time grid as float64 [steps + 1], descending, ending at 0.0."""
    if ts is None:
        if steps is None:
            raise InputError("give steps or an explicit grid ts")
        return ddim_grid(steps)
    grid = torch.as_tensor(ts, dtype=torch.float64).detach().cpu().flatten()
    if grid.numel() < 2:
        raise InputError(f"ts must hold at least two times (one step), got {grid.numel()}")
    if steps is not None and grid.numel() != steps + 1:
        raise InputError(f"ts has {grid.numel()} times, so {grid.numel() - 1} steps, but steps={steps}")
    if not bool(torch.isfinite(grid).all()):
        raise InputError("ts contains NaN or inf")
    if grid[-1].item() != 0.0:
        raise InputError(f"ts must end at 0.0, got {grid[-1].item()}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise InputError("ts must be strictly descending")
    if grid[0].item() > 1.0:
        raise InputError(f"ts must start at or below 1.0, got {grid[0].item()}")
    return grid


def seed_noise(seeds: Sequence[int], shape: tuple[int, int, int], *, dtype=torch.float32, device="cpu"):
    """Starting noise [len(seeds), C, H, W]: image i drawn from its own generator seeded with
    seeds[i], so an image does not depend on the batch it is drawn in."""
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise InputError(f"seeds must be non-negative integers, got {s!r}")
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(shape, generator=g, dtype=torch.float64))
    return torch.stack(out).to(device=device, dtype=dtype)


def ddim_sample(
    denoiser,
    noise: torch.Tensor,
    steps: int | None = 20,
    patch_sizes=None,
    labels=None,
    ts=None,
    *,
    schedule: CosineSchedule | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trace: bool = False,
):
    """Deterministic DDIM from ``noise`` (x at the first grid time) down to t = 0.

    Args:
        denoiser: anything with ``denoise(x, t, labels=...)`` (machines, network adapters);
            when ``patch_sizes`` is given it is also called with ``patch_size=``.
        noise: [B, C, H, W], taken as x at ts[0].
        steps: number of steps of the default grid t_j = (n - j) / n.
        patch_sizes: None (the denoiser's own), one odd int for every step, a sequence with
            one size per step in the order taken (highest t first), a preset name, a
            :class:`PatchSchedule`, or a path to a saved schedule JSON.
        labels: int64 [B] class labels for class-conditional denoisers.
        ts: explicit descending grid of (number of steps + 1) times ending at 0.0; when given
            it overrides ``steps``.
        schedule: noise schedule (default: the denoiser's, else the paper's cosine).
        callback: called after each step with {"i", "t", "t_next", "x", "x0_hat", "patch_size"}.
        return_trace: also return a :class:`~elsmachine.mosaic.SampleTrace` (machines only):
            per step and pixel, the dominant candidate and the effective number of candidates,
            taken from the same engine pass that denoises.

    Returns:
        The final images [B, C, H, W], dtype and device of ``noise``; with ``return_trace``,
        (images, trace).
    """
    if not isinstance(noise, torch.Tensor) or noise.dim() != 4:
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise InputError(f"noise must be a [B, C, H, W] tensor, got {shape}")
    if not bool(torch.isfinite(noise).all()):
        raise InputError("noise contains NaN or inf")
    grid = resolve_grid(None if ts is not None else steps, ts)
    n = grid.numel() - 1
    sizes = resolve_patch_sizes(patch_sizes, grid)
    if schedule is None:
        schedule = getattr(denoiser, "schedule", None) or CosineSchedule()
    if return_trace and not hasattr(denoiser, "denoise_traced"):
        raise InputError(f"{type(denoiser).__name__} cannot be traced; only score machines have candidates to trace")
    x = noise
    B = x.shape[0]
    steps_trace = []
    for i in range(n):
        t, t_next = float(grid[i]), float(grid[i + 1])
        kw = {} if sizes is None else {"patch_size": sizes[i]}
        if return_trace:
            x0, tr = denoiser.denoise_traced(x, t, labels=labels, **kw)
            steps_trace.append((x, x0, tr))
        else:
            x0 = denoiser.denoise(x, t, labels=labels, **kw)
        a, s = schedule.alpha(t), schedule.sigma(t)
        a_next, s_next = schedule.alpha(t_next), schedule.sigma(t_next)
        eps = (x - a * x0) / s
        x = x0 if t_next == 0.0 else a_next * x0 + s_next * eps
        if callback is not None:
            callback({"i": i, "t": t, "t_next": t_next, "x": x, "x0_hat": x0,
                      "patch_size": None if sizes is None else sizes[i], "batch": B})
    if return_trace:
        from .mosaic import SampleTrace

        return x, SampleTrace.from_steps(grid, sizes, steps_trace)
    return x

