"""What one step of an ELS-family machine computes with (docs/theory.md, "ELS variants as data").

Every ELS-family machine denoises pixel q at time t by the softmax over its candidates (n, p),

    x0_hat(q) = sum_{n, p in C_R(q)} softmax(-|T(P_q(x_t)) - a T(P_p(Y_n))|^2 / (2 s^2 T(t))) Y_n(p),

and a variant is a choice of the per-step values in that one expression, a :class:`PatchStep`:

    k         the patch size k(t) (the machine's patch schedule);
    radius    R(t): candidates at most R pixels from q along each axis (None: all; 0 is LS);
    temperature  T(t), dividing the logits (1: ELS);
    sigma     the width of a Gaussian window w(o) = exp(-|o|^2 / (2 sigma^2)) weighing the patch
              distance, T(P) = sqrt(w) P (inf: the box);
    centring  c(t): T(P) = P - c mean(P), each channel's patch mean taken out by the share c
              (0: ELS; 1: patches compared by their shape only);
    border_k  the patch size where q's k window crosses the image's edge (None: k).

A machine declares which of these it sets, by declaring options whose ``step`` names the field
(:class:`~.declaration.Option`); the shared patch machine reads them per step from its options
and hands the step to the engine with the queries. :data:`STEP_FIELDS` states, once per field,
its value at which the step is ELS's (its identity), which numbers it takes, and what it needs:
the attention form (windows and centring are not box sums of squared differences), zero padding
(a border), or no subset bound (radius, window and centring change which distances the bound
ranks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["PatchStep", "StepField", "STEP_FIELDS", "gaussian_window"]


@dataclass(frozen=True)
class PatchStep:
    """The per-step values of one ELS-family denoiser call (see the module docstring)."""

    k: int
    radius: int | None = None
    temperature: float = 1.0
    sigma: float = math.inf
    centring: float = 0.0
    border_k: int | None = None

    @property
    def box(self) -> bool:
        """Whether the step is a plain box distance over all candidates at one size (what the
        kernels' several-sizes pass computes; a temperature only rescales s)."""
        return self.radius is None and math.isinf(self.sigma) and self.centring == 0 and self.border_k is None

    def window(self, k: int | None = None) -> torch.Tensor | None:
        """The Gaussian window on the k x k offsets (default this step's k), float64, 1 at the
        centre; None for the box."""
        return gaussian_window(self.k if k is None else k, self.sigma)


def gaussian_window(k: int, sigma: float) -> torch.Tensor | None:
    """w(o) = exp(-|o|^2 / (2 sigma^2)) on the k x k offsets, float64 [k, k], 1 at the centre;
    None for sigma = inf (the box)."""
    if math.isinf(sigma):
        return None
    o = torch.arange(k, dtype=torch.float64) - k // 2
    return torch.exp(-(o.view(-1, 1) ** 2 + o.view(1, -1) ** 2) / (2 * sigma * sigma))


@dataclass(frozen=True)
class StepField:
    """One field of :class:`PatchStep` as options set it.

    name: the field; identity: the option value at which the step is ELS's; domain: the numbers
    it takes (:func:`~elsmachine.patch_schedule.step_values`; None for a patch schedule);
    attention: only the attention form computes it; zeros: it needs zero padding; bounded:
    ``subset=``'s bound holds with it; triton: the Triton kernels compute it.
    """

    name: str
    identity: object
    domain: dict | None = field(default_factory=dict)
    attention: bool = False
    zeros: bool = False
    bounded: bool = True
    triton: bool = True


STEP_FIELDS: dict[str, StepField] = {f.name: f for f in (
    StepField("radius", math.inf, {"infinite": True, "zero": True, "whole": True}, bounded=False, triton=False),
    StepField("temperature", 1.0, {}),
    StepField("sigma", math.inf, {"infinite": True}, attention=True, bounded=False),
    StepField("centring", 0.0, {"share": True}, attention=True, bounded=False),
    StepField("border_k", None, None, zeros=True),
)}
