"""Deterministic DDIM sampling (docs/theory.md, "Sampling").

One step from t to t' < t with any denoiser D(x, t) = x0_hat:

    eps_hat = (x_t - a(t) x0_hat) / s(t),    x_t' = a(t') x0_hat + s(t') eps_hat,

on the schedule's grid (t_j = (n - j) / n, j = 0..n for the paper's cosine), so the last step
lands on t = 0 where a = 1, s = 0 and the result is the denoiser's last x0_hat (a schedule
whose t = 0 keeps some noise, as diffusers' ``set_alpha_to_one=False``, takes the same step
there as anywhere). The sampler is a pure function of the denoiser, the
starting noise and the grid. The state and the update are float64 whatever the denoiser's
dtype (as EDM does); the denoiser sees x in the noise's dtype, and the result is cast back.
"""

from __future__ import annotations

from typing import Callable

import torch

from .contract import denoiser_name, takes_patch_size
from .errors import InputError, RunError
from .noise import CosineSchedule, ddim_grid
from .patch_schedule import resolve_patch_sizes
from .seeds import seed_noise

__all__ = ["ddim_sample", "seed_noise", "resolve_grid"]


def resolve_grid(steps: int | None, ts, schedule=None) -> torch.Tensor:
    """The time grid as float64 [steps + 1], descending, ending at 0.0: ``ts`` when given, else
    the schedule's own DDIM grid for ``steps`` steps (the paper's cosine: t_j = (n - j) / n)."""
    if ts is None:
        if steps is None:
            raise InputError("give steps or an explicit grid ts")
        return ddim_grid(steps) if schedule is None else schedule.grid(steps)
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


def ddim_sample(
    denoiser,
    noise: torch.Tensor,
    steps: int | None = 20,
    patch_sizes=None,
    labels=None,
    ts=None,
    *,
    schedule=None,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM from ``noise`` (x at the first grid time) down to t = 0.

    Args:
        denoiser: anything that follows the contract, ``denoise(x, t, labels=...)``.
        noise: [B, C, H, W], taken as x at ts[0].
        steps: number of steps of the schedule's own DDIM grid (for the paper's cosine,
            t_j = (n - j) / n; for a discrete schedule, the timesteps diffusers' DDIMScheduler takes).
        patch_sizes: None (the denoiser's own patch schedule), or a per-step override for
            denoisers that have a patch size: one odd int, a sequence with one size per step
            (highest t first), a preset name, a :class:`~elsmachine.PatchSchedule` or a path.
        labels: int64 [B] class labels for class-conditional denoisers.
        ts: explicit descending grid of (number of steps + 1) times ending at 0.0; when given
            it overrides ``steps``.
        schedule: noise schedule of the update (default: the denoiser's ``.schedule``, else
            the paper's cosine); it must equal the denoiser's own where both are known.
        callback: called after each step with {"i", "t", "t_next", "x" (the denoiser's input),
            "x0_hat", "x_next" (the state after the step), "patch_size"}, tensors in the noise's
            dtype.

    Returns:
        The final images [B, C, H, W], dtype and device of ``noise``.
    """
    if not isinstance(noise, torch.Tensor) or noise.dim() != 4:
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise InputError(f"noise must be a [B, C, H, W] tensor, got {shape}")
    if not noise.is_floating_point():
        raise InputError(f"noise must be floating point, got dtype {noise.dtype}")
    if not bool(torch.isfinite(noise).all()):
        raise InputError("noise contains NaN or inf")
    own = getattr(denoiser, "schedule", None)
    if schedule is None:
        schedule = own if own is not None else CosineSchedule()
    elif own is not None and own != schedule:
        raise InputError(f"the sampler's noise schedule {schedule} differs from {denoiser_name(denoiser)}'s {own}")
    grid = resolve_grid(None if ts is not None else steps, ts, schedule)
    sizes = None
    if patch_sizes is not None:
        if not takes_patch_size(denoiser):
            raise InputError(f"patch_sizes was given, but {denoiser_name(denoiser)} has no patch size")
        sizes = resolve_patch_sizes(patch_sizes, grid)
    dtype = noise.dtype
    x = noise.to(torch.float64)
    for i in range(grid.numel() - 1):
        t, t_next = float(grid[i]), float(grid[i + 1])
        kw = {} if sizes is None else {"patch_size": sizes[i]}
        x_in = x.to(dtype)
        x0 = denoiser.denoise(x_in, t, labels=labels, **kw)
        if not isinstance(x0, torch.Tensor) or x0.shape != x_in.shape:
            raise InputError(f"{denoiser_name(denoiser)} returned {getattr(x0, 'shape', type(x0).__name__)} "
                             f"for x of shape {tuple(x_in.shape)}")
        if not bool(torch.isfinite(x0).all()):
            raise RunError(f"{denoiser_name(denoiser)} returned NaN or inf at step {i} (t = {t:g})")
        x0d = x0.to(torch.float64)
        if t_next == 0.0 and schedule.sigma(0.0) == 0.0:  # the clean image: the last x0_hat itself
            x_next = x0d
        else:
            a, s = schedule.alpha(t), schedule.sigma(t)
            x_next = schedule.alpha(t_next) * x0d + schedule.sigma(t_next) * ((x - a * x0d) / s)
        if callback is not None:
            callback({"i": i, "t": t, "t_next": t_next, "x": x_in, "x0_hat": x0, "x_next": x_next.to(dtype),
                      "patch_size": None if sizes is None else sizes[i]})
        x = x_next
    return x.to(dtype)
