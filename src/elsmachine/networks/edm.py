"""Denoisers in EDM's sigma convention, both ways (docs/theory.md, "Noise schedules").

EDM writes a denoiser as D(x_VE, sigma) -> x0_hat for x_VE = x0 + sigma eps. On a
variance-preserving schedule x_VP = a x0 + s eps, the same process has sigma = s / a and
x_VE = x_VP / a. So

- :func:`from_sigma_denoiser` makes any callable D(x, sigma) (EDM's ``net(x, sigma, labels)``, a
  k-diffusion model) a contract denoiser on a chosen schedule: denoise(x, t) = D(x / a, s / a);
- :func:`as_sigma_denoiser` makes any contract denoiser (a machine) a callable model(x, sigma)
  for samplers written in sigma (k-diffusion's): the time t with s/a = sigma, then
  denoise(a x, t).
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import checks
from ..contract import denoiser_name
from ..errors import InputError
from ..noise import CosineSchedule, NoiseSchedule

__all__ = ["SigmaDenoiser", "from_sigma_denoiser", "as_sigma_denoiser"]


class SigmaDenoiser:
    """A callable D(x_VE, sigma[, labels]) -> x0_hat behind the denoiser contract."""

    def __init__(self, fn: Callable, schedule: NoiseSchedule, takes_labels: bool = False, name: str = "") -> None:
        self.fn, self.schedule, self.takes_labels = fn, schedule, takes_labels
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def denoise(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        tt = checks.times(t, x.shape[0])
        a, s = self.schedule.coefficients(tt, x)
        sigma = s / a  # [B]
        args = (x / a.view(-1, 1, 1, 1), sigma)
        if self.takes_labels:
            out = self.fn(*args, labels)
        elif labels is not None:
            raise InputError(f"labels were given but {self.name} is not class-conditional")
        else:
            out = self.fn(*args)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise InputError(f"{self.name} returned {getattr(out, 'shape', type(out).__name__)}, expected {tuple(x.shape)}")
        return out.to(x.dtype)

    def describe(self) -> dict:
        return {"denoiser": self.name, "convention": "sigma", "schedule": self.schedule.to_dict()}

    def __repr__(self) -> str:
        return f"SigmaDenoiser({self.name})"


def from_sigma_denoiser(fn: Callable, schedule: NoiseSchedule | None = None, *, takes_labels: bool = False,
                        name: str = "") -> SigmaDenoiser:
    """``fn(x_VE, sigma[, labels]) -> x0_hat`` (sigma a [B] tensor) as a contract denoiser on
    ``schedule`` (default: the paper's cosine)."""
    if not callable(fn):
        raise InputError(f"from_sigma_denoiser takes a callable D(x, sigma), got {type(fn).__name__}")
    return SigmaDenoiser(fn, schedule if schedule is not None else CosineSchedule(), takes_labels, name)


def as_sigma_denoiser(denoiser) -> Callable:
    """A contract denoiser as ``model(x_VE, sigma, labels=None) -> x0_hat``, sigma a float or [B]."""
    sched = denoiser.schedule

    def model(x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        t = sched.t_of_sigma_ve(sig)
        a = sched.alpha(t).to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        return denoiser.denoise(a * x, t, labels=labels)

    model.__name__ = f"sigma view of {denoiser_name(denoiser)}"
    return model
