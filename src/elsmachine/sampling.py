"""Deterministic samplers (docs/theory.md, "Sampling"): DDIM, and EDM's second-order Heun sampler.

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

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .contract import denoiser_name, takes_patch_size
from .errors import InputError, RunError
from .noise import CosineSchedule, ddim_grid
from .patch_schedule import resolve_patch_sizes
from .seeds import seed_noise

__all__ = ["ddim_sample", "heun_sample", "edm_sigmas", "seed_noise", "resolve_grid", "SAMPLERS", "Sampler"]

SAMPLERS = ("ddim", "heun")


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
    schedule = _checked(denoiser, noise, schedule)
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
        x0, eps = _call(denoiser, x_in, t, labels, kw, i, with_eps=True)
        x0d = x0.to(torch.float64)
        if t_next == 0.0 and schedule.sigma(0.0) == 0.0:  # the clean image: the last x0_hat itself
            x_next = x0d
        else:
            a, s = schedule.alpha(t), schedule.sigma(t)
            eps = (x - a * x0d) / s if eps is None else eps.to(torch.float64)
            x_next = schedule.alpha(t_next) * x0d + schedule.sigma(t_next) * eps
        if callback is not None:
            callback({"i": i, "t": t, "t_next": t_next, "x": x_in, "x0_hat": x0, "x_next": x_next.to(dtype),
                      "patch_size": None if sizes is None else sizes[i]})
        x = x_next
    return x.to(dtype)


def _checked(denoiser, noise, schedule):
    """The noise checked, and the sampler's schedule: the denoiser's own unless one is given (then equal)."""
    if not isinstance(noise, torch.Tensor) or noise.dim() != 4:
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise InputError(f"noise must be a [B, C, H, W] tensor, got {shape}")
    if not noise.is_floating_point():
        raise InputError(f"noise must be floating point, got dtype {noise.dtype}")
    if not bool(torch.isfinite(noise).all()):
        raise InputError("noise contains NaN or inf")
    own = getattr(denoiser, "schedule", None)
    if schedule is None:
        return own if own is not None else CosineSchedule()
    if own is not None and own != schedule:
        raise InputError(f"the sampler's noise schedule {schedule} differs from {denoiser_name(denoiser)}'s {own}")
    return schedule


def _call(denoiser, x_in, t, labels, kw, i, *, with_eps: bool = False):
    """The denoiser's x0_hat at x_in, checked; ``with_eps``: (x0_hat, eps_hat or None), eps_hat
    from a denoiser whose DDIM noise estimate is its own (``denoise_eps``, a held network's)."""
    eps = None
    if with_eps and hasattr(denoiser, "denoise_eps") and not kw:
        x0, eps = denoiser.denoise_eps(x_in, t, labels=labels)
    else:
        x0 = denoiser.denoise(x_in, t, labels=labels, **kw)
    if not isinstance(x0, torch.Tensor) or x0.shape != x_in.shape:
        raise InputError(f"{denoiser_name(denoiser)} returned {getattr(x0, 'shape', type(x0).__name__)} "
                         f"for x of shape {tuple(x_in.shape)}")
    if not bool(torch.isfinite(x0).all()) or (eps is not None and not bool(torch.isfinite(eps).all())):
        raise RunError(f"{denoiser_name(denoiser)} returned NaN or inf at step {i} (t = {t:g})")
    return (x0, eps) if with_eps else x0


def edm_sigmas(steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, eq. 5), float64 [steps + 1] ending at 0:
    sigma_i = (sigma_max^(1/rho) + i / (steps - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise InputError(f"{name} must be a positive number, got {v!r}")
    if not sigma_min < sigma_max:
        raise InputError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / (steps - 1) if steps > 1 else i
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(hi + frac * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def _sizes_by_noise(denoiser, schedule):
    """A patch schedule's size for a call at time t, looked up at the schedule time of the
    nearest log noise level (Heun's times are not a DDIM grid's); None: the denoiser's own."""
    from .patch_schedule import PatchSchedule

    ps = getattr(denoiser, "patch_size", None)
    if not isinstance(ps, PatchSchedule) or not takes_patch_size(denoiser):
        return None
    level = torch.tensor([math.log(max(schedule.sigma_ve(t), 1e-300)) for t in ps.ts], dtype=torch.float64)
    warned = []

    def size(t: float) -> int:
        d = (level - math.log(max(schedule.sigma_ve(t), 1e-300))).abs()
        j = int(torch.argmin(d))
        if float(d[j]) > 1e-9 and not warned:
            warnings.warn(f"{denoiser_name(denoiser)}'s patch schedule was made on {len(ps.ts)} grid times; "
                          "Heun's times take the size of the nearest noise level", stacklevel=4)
            warned.append(True)
        return int(ps.sizes[j])

    return size


def heun_sample(
    denoiser,
    noise: torch.Tensor,
    steps: int = 18,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    labels=None,
    callback: Callable[[dict], None] | None = None,
    *,
    schedule=None,
) -> torch.Tensor:
    """EDM's deterministic second-order sampler (Karras et al. 2022, Algorithm 1) on the VE view
    of the denoiser's schedule: x_VE = x_t / a(t) at sigma = s(t) / a(t), D(x_VE; sigma) =
    denoiser(a x_VE, t(sigma)), and with d_i = (x_i - D(x_i; sigma_i)) / sigma_i

        x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i                      (Euler),
        x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_{i+1}) / 2     (Heun, unless sigma_{i+1} = 0),

    on EDM's levels (:func:`edm_sigmas`), 2 steps - 1 denoiser calls. ``noise`` is the standard
    normal draw: the run starts at x_VE = sigma_0 noise. The state and the update are float64;
    the denoiser sees x_t in the noise's dtype. A denoiser with a patch schedule gets at each call
    the size of the nearest noise level of its schedule (warned once). ``callback`` gets after
    each step {"i", "t", "t_next", "sigma", "sigma_next", "x" (x_t at the step's start), "x0_hat"
    (the first call's), "x_next" (x_t after the step; the clean image at the end)}.

    Returns:
        The final images [B, C, H, W], dtype and device of ``noise``.
    """
    schedule = _checked(denoiser, noise, schedule)
    sigmas = edm_sigmas(steps, sigma_min, sigma_max, rho)
    top = schedule.sigma_ve(1.0)
    if sigma_max > top * (1 + 1e-6):  # float32 tables (diffusers') round the top level up by ~1e-8
        raise InputError(f"sigma_max = {sigma_max:g} is above the noise schedule's largest level, {top:g} at t = 1")
    size_at = _sizes_by_noise(denoiser, schedule)
    dtype = noise.dtype

    def D(x_ve, sigma, i):
        t = min(1.0, schedule.t_of_sigma_ve(float(sigma)))
        a = schedule.alpha(t)
        kw = {} if size_at is None else {"patch_size": size_at(t)}
        x_in = (a * x_ve).to(dtype)
        return t, x_in, _call(denoiser, x_in, t, labels, kw, i).to(torch.float64)

    x = noise.to(torch.float64) * float(sigmas[0])
    for i in range(steps):
        sig, sig_next = float(sigmas[i]), float(sigmas[i + 1])
        t, x_in, x0 = D(x, sig, i)
        d = (x - x0) / sig
        x_next = x + (sig_next - sig) * d
        t_next = 0.0
        if sig_next > 0:
            t_next, _, x0_next = D(x_next, sig_next, i)
            x_next = x + (sig_next - sig) * (d + (x_next - x0_next) / sig_next) / 2
        if callback is not None:
            a_next = schedule.alpha(t_next) if sig_next > 0 else 1.0
            callback({"i": i, "t": t, "t_next": t_next, "sigma": sig, "sigma_next": sig_next, "x": x_in,
                      "x0_hat": x0.to(dtype), "x_next": (a_next * x_next).to(dtype)})
        x = x_next
    return x.to(dtype)


@dataclass(frozen=True)
class Sampler:
    """One of the deterministic samplers by name, with its settings: what a command runs and what
    its results record (:meth:`to_dict`). ``name``: "ddim" (:func:`ddim_sample` on the schedule's
    own grid) or "heun" (:func:`heun_sample` on EDM's levels ``sigma_min``, ``sigma_max``,
    ``rho``, which DDIM does not use)."""

    name: str = "ddim"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise InputError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if self.name == "heun":
            edm_sigmas(1, self.sigma_min, self.sigma_max, self.rho)  # refuses bad levels by name

    def run(self, denoiser, noise: torch.Tensor, steps: int, labels=None,
            callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        """The final images from ``noise`` [B, C, H, W] in ``steps`` steps."""
        if self.name == "ddim":
            return ddim_sample(denoiser, noise, steps=steps, labels=labels, callback=callback)
        return heun_sample(denoiser, noise, steps=steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                           rho=self.rho, labels=labels, callback=callback)

    def grid(self, schedule, steps: int) -> torch.Tensor:
        """float64 [steps + 1], descending, ending at 0: the time of each step's (first) denoiser
        call, as a DDIM grid holds them. A one-per-step patch schedule refers to these times, and
        calibration finds one size for each."""
        if self.name == "ddim":
            return resolve_grid(steps, None, schedule)
        sigmas = edm_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)[:-1]
        ts = [min(1.0, schedule.t_of_sigma_ve(float(s))) for s in sigmas]
        return torch.tensor([*ts, 0.0], dtype=torch.float64)

    def patch_sizes(self, denoiser, schedule, steps: int) -> list[int] | None:
        """The patch size ``denoiser`` is given at each step's (first) call, as a run records it;
        None for a denoiser without one."""
        if not getattr(denoiser, "has_patch_size", False) or not hasattr(denoiser, "sizes_on"):
            return None
        grid = self.grid(schedule, steps)
        size_at = _sizes_by_noise(denoiser, schedule) if self.name == "heun" else None
        if size_at is None:
            return denoiser.sizes_on(grid)
        with warnings.catch_warnings():  # the run itself says it once
            warnings.simplefilter("ignore")
            return [size_at(t) for t in grid[:-1].tolist()]

    def to_dict(self) -> dict:
        """The settings that decide its images, as results record them."""
        if self.name == "ddim":
            return {"name": "ddim"}
        return {"name": "heun", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho}
