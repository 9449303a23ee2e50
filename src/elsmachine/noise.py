"""Noise schedules and their DDIM grids (docs/theory.md, "Forward process and time grid" and
"Noise schedules").

A schedule gives abar(t) for t in [0, 1], with x_t = a x_0 + s eps, a = sqrt(abar), s = sqrt(1 -
abar), and the grid of times a deterministic DDIM run of n steps takes. Two kinds:

- :class:`CosineSchedule`: the paper's legacy cosine, abar(t) = cos(t / 1.008 * pi / 2)^2 (no
  offset in the numerator, so abar(0) = 1 exactly), on the grid t_j = (n - j) / n; a = cos and
  s = sin of the same angle.
- :class:`DiscreteSchedule`: any discrete variance-preserving schedule given by the abar of its
  T training timesteps (``alphas_cumprod``, what every diffusers scheduler holds). Training
  timestep k sits at t = (k + 1) / T, so t = 1 is the noisiest and t = 0 the clean image.
  Between two training timesteps log sigma_ve = log(s / a) is interpolated linearly in t, as
  diffusers' ``_sigma_to_t`` and k-diffusion's ``DiscreteSchedule`` do, so the fractional
  timestep t T - 1 of a noise level is the one diffusers' Karras-sigma schedulers give their
  model; between t = 0 (sigma_ve = 0) and the first timestep, log abar is. Its grid for n steps
  is the one diffusers' ``DDIMScheduler`` takes (its ``timestep_spacing`` and ``steps_offset``),
  ending at 0.

s(t) is computed without forming 1 - abar where abar rounds to 1 (sin for the cosine; s^2 =
r / (1 + r) with r = sigma_ve^2, or -expm1(log abar), for the discrete), so s(t) > 0 for every
t > 0 and a denoiser's 1 / s^2 stays finite at t = 1e-9.

The EDM / variance-exploding view of the same process: sigma = s / a and x_VE = x_VP / a.
"Schedule" alone means the noise schedule; the patch size per step is the *patch schedule*.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["NoiseSchedule", "CosineSchedule", "DiscreteSchedule", "ddim_grid", "schedule_from_dict",
           "noise_schedule", "BETA_SCHEDULES"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class NoiseSchedule:
    """What every noise schedule answers. ``alpha_bar``, ``alpha``, ``sigma`` and
    ``sigma_ve`` take a float or a tensor of times in [0, 1] and return the same kind."""

    def alpha_bar(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def grid(self, steps: int) -> torch.Tensor:  # pragma: no cover - abstract
        """float64 [steps + 1]: the times of a DDIM run of ``steps`` steps, descending, ending at 0."""
        raise NotImplementedError

    def to_dict(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha(self, t):
        """a(t) = sqrt(abar(t)), the scale of x_0 in x_t."""
        ab = self.alpha_bar(t)
        return ab.sqrt() if isinstance(ab, torch.Tensor) else math.sqrt(ab)

    def sigma(self, t):
        """s(t) = sqrt(1 - abar(t)), the noise level of x_t."""
        ab = self.alpha_bar(t)
        if isinstance(ab, torch.Tensor):
            return (1.0 - ab).clamp_min(0.0).sqrt()
        return math.sqrt(max(0.0, 1.0 - ab))

    def sigma_ve(self, t):
        """sigma(t) = s / a: the noise level of x_VE = x_VP / a (EDM's view)."""
        return self.sigma(t) / self.alpha(t)

    def t_of_sigma_ve(self, sigma):
        """The time whose sigma_ve is ``sigma`` (a float or a tensor), by bisection on the
        decreasing abar = 1 / (1 + sigma^2)."""
        target = 1.0 / (1.0 + torch.as_tensor(sigma, dtype=torch.float64) ** 2)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.alpha_bar(mid) > target  # still too clean: later
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        t = (lo + hi) / 2
        return float(t) if not isinstance(sigma, torch.Tensor) else t

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a(t), s(t) for times ``t`` [B] (float64 on the CPU), as [B] tensors in ``like``'s dtype
        and device. Computed in float64 first: late in sampling s^2 is small and 1 - abar loses
        digits in float32."""
        t64 = t.to(torch.float64)
        return (self.alpha(t64).to(device=like.device, dtype=like.dtype),
                self.sigma(t64).to(device=like.device, dtype=like.dtype))

    def save(self, path) -> None:
        from .files import write_json

        write_json(path, self.to_dict())


@dataclass(frozen=True)
class CosineSchedule(NoiseSchedule):
    """abar(t) = cos(t / (1 + offset) * pi / 2)^2, the paper's code's "legacy" cosine schedule;
    ``offset`` = 0.008 reproduces the paper. Grid: t_j = (n - j) / n."""

    offset: float = 0.008

    def __post_init__(self) -> None:
        if not (self.offset >= 0 and math.isfinite(self.offset)):
            raise InputError(f"CosineSchedule offset must be a finite number >= 0, got {self.offset!r}")

    def _angle(self, t):
        return t / (1.0 + self.offset) * (math.pi / 2)

    def alpha_bar(self, t):
        if isinstance(t, torch.Tensor):
            return torch.cos(self._angle(t)) ** 2
        return math.cos(self._angle(t)) ** 2

    def alpha(self, t):
        """a(t) = cos(t / (1 + offset) * pi / 2)."""
        return torch.cos(self._angle(t)) if isinstance(t, torch.Tensor) else math.cos(self._angle(t))

    def sigma(self, t):
        """s(t) = sin(t / (1 + offset) * pi / 2): sqrt(1 - abar) would round to 0 below t ~ 1e-8."""
        return torch.sin(self._angle(t)) if isinstance(t, torch.Tensor) else math.sin(self._angle(t))

    def grid(self, steps: int) -> torch.Tensor:
        return ddim_grid(steps)

    def t_of_sigma_ve(self, sigma):
        # abar = 1 / (1 + sigma^2) = cos(theta)^2, theta = t / (1 + offset) * pi / 2.
        s = torch.as_tensor(sigma, dtype=torch.float64)
        t = torch.atan(s) * 2 / math.pi * (1.0 + self.offset)
        return float(t) if not isinstance(sigma, torch.Tensor) else t

    def to_dict(self) -> dict:
        return {"kind": "cosine", "offset": self.offset}

    @staticmethod
    def from_dict(d: dict) -> "NoiseSchedule":
        return schedule_from_dict(d)


# A time within this many training timesteps of one is that timestep's own time (float32 times
# near 1 are off by up to about 6e-5 timesteps of a 1000-step schedule).
_SNAP = 1e-4


class DiscreteSchedule(NoiseSchedule):
    """A discrete variance-preserving schedule: ``alphas_cumprod`` [T], timestep k at
    t = (k + 1) / T, abar(0) = ``final_alpha_cumprod`` (1: the clean image, as diffusers'
    ``set_alpha_to_one``). ``timestep_spacing`` ("leading", "trailing", "linspace") and
    ``steps_offset`` make the DDIM grid as diffusers' ``DDIMScheduler`` makes it."""

    def __init__(self, alphas_cumprod, *, steps_offset: int = 0, timestep_spacing: str = "leading",
                 final_alpha_cumprod: float = 1.0, name: str = "") -> None:
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if ab.numel() < 2:
            raise InputError(f"alphas_cumprod needs at least two timesteps, got {ab.numel()}")
        if not bool(torch.isfinite(ab).all()) or bool((ab < 0).any()) or bool((ab > 1).any()):
            raise InputError("alphas_cumprod must lie in [0, 1]")
        if bool((ab[1:] > ab[:-1]).any()):
            raise InputError("alphas_cumprod must not increase with the timestep")
        if timestep_spacing not in ("leading", "trailing", "linspace"):
            raise InputError(f"unknown timestep_spacing {timestep_spacing!r}; choose leading, trailing or linspace")
        if isinstance(steps_offset, bool) or not isinstance(steps_offset, int) or steps_offset < 0:
            raise InputError(f"steps_offset must be a non-negative integer, got {steps_offset!r}")
        if not 0.0 < float(final_alpha_cumprod) <= 1.0:
            raise InputError(f"final_alpha_cumprod must lie in (0, 1], got {final_alpha_cumprod}")
        self.alphas_cumprod = ab
        self.T = ab.numel()
        self.steps_offset = steps_offset
        self.timestep_spacing = timestep_spacing
        self.final_alpha_cumprod = float(final_alpha_cumprod)
        self.name = name
        # abar at the nodes t = 0, 1/T, ..., 1: the final value, then each timestep's.
        self._nodes = torch.cat([torch.tensor([self.final_alpha_cumprod], dtype=torch.float64), ab])
        self._log_nodes = self._nodes.clamp_min(1e-300).log()
        # log sigma_ve^2 = log((1 - abar) / abar) at the nodes: -inf at abar = 1, inf at abar = 0.
        self._log_ratio = ((1.0 - self._nodes) / self._nodes).log()
        self._finite_ratio = torch.isfinite(self._log_ratio)

    @staticmethod
    def from_betas(kind: str, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                   **kw) -> "DiscreteSchedule":
        """A schedule from one of diffusers' beta schedules, computed as diffusers computes them
        (in float32): "linear", "scaled_linear" or "squaredcos_cap_v2"."""
        T = num_train_timesteps
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
        elif kind == "squaredcos_cap_v2":
            def f(x):
                return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float32)
        else:
            raise InputError(f"unknown beta schedule {kind!r}; choose one of {', '.join(BETA_SCHEDULES)}")
        return DiscreteSchedule(torch.cumprod(1.0 - betas, dim=0), name=kind, **kw)

    def _index(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = t.to(torch.float64) * self.T
        near = torch.round(u)
        # A timestep's own time: its own abar. Never t = 0, the clean image: a time just above it
        # keeps its (tiny) noise.
        u = torch.where(((u - near).abs() < _SNAP) & (near > 0), near, u)
        i = u.floor().clamp(0, self.T - 1)
        return i.long(), (u - i).clamp(0, 1)

    def _interpolated(self, t):
        """abar(t) and 1 - abar(t), float64, each computed without cancelling the other."""
        tt = torch.as_tensor(t, dtype=torch.float64)
        if bool(((tt < 0) | (tt > 1)).any()):
            raise InputError(f"t must lie in [0, 1] for a discrete schedule, got {t}")
        i, f = self._index(tt)
        lo, hi = self._nodes[i], self._nodes[i + 1]
        # log sigma_ve linear in t where both ends have a finite one: abar = 1 / (1 + r), 1 - abar =
        # r / (1 + r) with r = sigma_ve^2 ...
        lr = self._log_ratio[i] + f * (self._log_ratio[i + 1] - self._log_ratio[i])
        r = lr.exp()
        by_ratio = self._finite_ratio[i] & self._finite_ratio[i + 1]
        # ... else (beside abar = 1 or 0) log abar linear in t, and 1 - abar = -expm1(log abar).
        la = self._log_nodes[i] + f * (self._log_nodes[i + 1] - self._log_nodes[i])
        ab = torch.where(by_ratio, 1.0 / (1.0 + r), la.exp())
        rest = torch.where(by_ratio, r / (1.0 + r), -torch.expm1(la))
        ab = torch.where(f == 0, lo, torch.where(f == 1, hi, ab))
        rest = torch.where(f == 0, 1.0 - lo, torch.where(f == 1, 1.0 - hi, rest))
        return ab, rest

    @staticmethod
    def _like(t, v: torch.Tensor):
        if isinstance(t, torch.Tensor):
            return v.to(t.dtype) if t.is_floating_point() else v
        return float(v)

    def alpha_bar(self, t):
        return self._like(t, self._interpolated(t)[0])

    def sigma(self, t):
        """s(t) = sqrt(1 - abar(t)), 1 - abar computed without cancellation (s > 0 for t > 0)."""
        return self._like(t, self._interpolated(t)[1].sqrt())

    def t_of_sigma_ve(self, sigma):
        """Exact inverse of the interpolation: the node interval holding abar = 1 / (1 + sigma^2),
        and the point in it (a node's own time where abar is the node's). Between two training
        timesteps this is diffusers' ``_sigma_to_t``: t T - 1 = k + w, w = (log sigma - log
        sigma_k) / (log sigma_{k+1} - log sigma_k)."""
        s = torch.as_tensor(sigma, dtype=torch.float64)
        lt = -torch.log1p(s * s)  # log abar
        lr = 2 * s.log()  # log sigma_ve^2
        logn = self._log_nodes  # decreasing in t
        j = torch.searchsorted(-logn, -lt.reshape(-1)).clamp(1, self.T).reshape(lt.shape)  # logn[j] <= lt
        by_ratio = self._finite_ratio[j - 1] & self._finite_ratio[j]
        lo = torch.where(by_ratio, self._log_ratio[j - 1], logn[j - 1])
        hi = torch.where(by_ratio, self._log_ratio[j], logn[j])
        at = torch.where(by_ratio, lr, lt)
        f = torch.where(hi == lo, torch.ones_like(lt), (at - lo) / (hi - lo)).clamp(0, 1)
        t = (j - 1 + f) / self.T
        return float(t) if not isinstance(sigma, torch.Tensor) else t

    def timestep(self, t):
        """The training timestep of time t: k = t T - 1 (an integer on the grid's times; fractional
        between them, as diffusers' Karras-sigma schedulers pass it)."""
        u = torch.as_tensor(t, dtype=torch.float64) * self.T - 1
        return torch.where(((u - u.round()).abs() < _SNAP) & (u.round() >= 0), u.round(), u)

    def time_of_timestep(self, k):
        """t = (k + 1) / T."""
        return (torch.as_tensor(k, dtype=torch.float64) + 1) / self.T

    def timesteps(self, steps: int) -> torch.Tensor:
        """The training timesteps of a DDIM run of ``steps`` steps, as diffusers' DDIMScheduler
        sets them (int64, descending)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        T = self.T
        if steps > T:
            raise InputError(f"steps ({steps}) cannot exceed the schedule's {T} training timesteps")
        if self.timestep_spacing == "linspace":
            ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().flip(0).long()
        elif self.timestep_spacing == "leading":
            ts = (torch.arange(steps, dtype=torch.float64) * (T // steps)).round().flip(0).long() + self.steps_offset
        else:
            ts = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)).long() - 1
        if int(ts.max()) >= T:
            raise InputError(f"steps_offset {self.steps_offset} puts a timestep past the last ({T - 1})")
        return ts

    def grid(self, steps: int) -> torch.Tensor:
        ts = self.timesteps(steps)
        return torch.cat([self.time_of_timestep(ts), torch.zeros(1, dtype=torch.float64)])

    def to_dict(self) -> dict:
        return {"kind": "discrete", "name": self.name, "alphas_cumprod": self.alphas_cumprod.tolist(),
                "steps_offset": self.steps_offset, "timestep_spacing": self.timestep_spacing,
                "final_alpha_cumprod": self.final_alpha_cumprod}

    def __eq__(self, other) -> bool:
        return isinstance(other, DiscreteSchedule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return (f"DiscreteSchedule({self.name or 'custom'}, T={self.T}, spacing={self.timestep_spacing}, "
                f"offset={self.steps_offset})")


def schedule_from_dict(d: dict) -> NoiseSchedule:
    """The noise schedule a saved artifact recorded (``{"kind": ..., ...}``)."""
    if not isinstance(d, dict):
        raise InputError(f"a noise schedule is saved as an object, got {type(d).__name__}")
    kind = d.get("kind", "cosine")
    if kind == "cosine":
        return CosineSchedule(offset=float(d.get("offset", 0.008)))
    if kind == "discrete":
        if "alphas_cumprod" not in d:
            raise InputError("a discrete noise schedule needs its alphas_cumprod")
        return DiscreteSchedule(d["alphas_cumprod"], steps_offset=int(d.get("steps_offset", 0)),
                                timestep_spacing=d.get("timestep_spacing", "leading"),
                                final_alpha_cumprod=float(d.get("final_alpha_cumprod", 1.0)), name=d.get("name", ""))
    raise InputError(f"unknown noise schedule kind {kind!r}; known: cosine, discrete")


def noise_schedule(spec) -> NoiseSchedule:
    """A noise schedule from a name ("cosine", or one of diffusers' beta schedules with 1000
    timesteps: "linear", "scaled_linear", "squaredcos_cap_v2"), a saved schedule (.json) or its
    dict, a diffusers scheduler config (``scheduler_config.json`` or its folder), or a schedule."""
    if isinstance(spec, NoiseSchedule):
        return spec
    if isinstance(spec, dict):
        return schedule_from_dict(spec)
    s = str(spec)
    if s == "cosine":
        return CosineSchedule()
    if s in BETA_SCHEDULES:
        return DiscreteSchedule.from_betas(s)
    path = Path(s)
    if path.is_dir():
        path = path / "scheduler_config.json"
    if not path.exists():
        raise InputError(f"unknown noise schedule {s!r}: not cosine, {', '.join(BETA_SCHEDULES)}, or a file")
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"noise schedule file {path} is not readable JSON: {e}") from None
    if "kind" in d:
        return schedule_from_dict(d)
    if "num_train_timesteps" in d:  # a diffusers scheduler config
        if d.get("trained_betas") is not None or d.get("rescale_betas_zero_snr"):
            raise InputError(f"{path}: trained_betas and rescale_betas_zero_snr need the scheduler itself "
                             f"(elsmachine.from_diffusers(unet, scheduler))")
        base = DiscreteSchedule.from_betas(d.get("beta_schedule", "linear"), int(d["num_train_timesteps"]),
                                           float(d.get("beta_start", 0.0001)), float(d.get("beta_end", 0.02)))
        final = 1.0 if d.get("set_alpha_to_one", True) else float(base.alphas_cumprod[0])
        return DiscreteSchedule(base.alphas_cumprod, steps_offset=int(d.get("steps_offset", 0)),
                                timestep_spacing=d.get("timestep_spacing", "leading"), final_alpha_cumprod=final,
                                name=base.name)
    raise InputError(f"{path} is neither a saved noise schedule nor a diffusers scheduler config")


def ddim_grid(steps: int) -> torch.Tensor:
    """The default DDIM grid t_j = (n - j) / n, j = 0..n: float64 [steps + 1], from 1.0 down to 0.0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    return torch.arange(steps, -1, -1, dtype=torch.float64) / steps
