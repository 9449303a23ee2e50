"""The one denoiser contract (docs/theory.md, "The denoiser contract").

Everything that denoises -- every machine, every network adapter, anything added later --
answers ``denoise(x, t, labels=None) -> x0_hat``, an estimate of E[x_0 | x_t = x] with x's
shape, dtype and device, and carries ``.schedule``, the noise schedule its t refers to.
Samplers, calibration and metrics only ever call this. Machines that have a patch size also
take ``patch_size=`` as a per-call override; :func:`takes_patch_size` tells them apart.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import torch

__all__ = ["Denoiser", "takes_patch_size", "denoiser_name"]


@runtime_checkable
class Denoiser(Protocol):
    schedule: object

    def denoise(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """x [B, C, H, W] at time t (a float or [B]) -> x0_hat [B, C, H, W], same dtype and device."""
        ...


def takes_patch_size(denoiser) -> bool:
    """Whether ``denoiser.denoise`` takes ``patch_size=``: its ``has_patch_size`` attribute when
    it declares one, else whether the method's signature names the parameter."""
    declared = getattr(denoiser, "has_patch_size", None)
    if declared is not None:
        return bool(declared)
    try:
        return "patch_size" in inspect.signature(denoiser.denoise).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def denoiser_name(denoiser) -> str:
    """A short name for messages: the repr where the class defines one, else the class name."""
    cls = type(denoiser)
    return repr(denoiser) if cls.__repr__ is not object.__repr__ else cls.__name__
