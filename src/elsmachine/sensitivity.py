"""A network's sensitivity to its input as windows per step: the type PSPC flex reads
(docs/theory.md, "The peers' machines"; Niedoba et al., ICML 2025). It is measured by
:func:`elsmachine.networks.sensitivity.measure_sensitivity`; this module only holds, saves and
loads it, so the machines use it without importing the networks.

The window of output pixel q at a step is the smallest set of input pixels holding a share rho(t)
of heat[q]'s total, largest first, and always q itself (so every pixel lies in at least one window).
Saved as safetensors: the heat maps (float16) with their metadata (model, weights hash, noise
schedule, grid, share per step, number of inputs averaged, image size).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["Sensitivity"]

_EXACT = 1e-9


def _schedule_brief(schedule: dict) -> str:
    """A saved noise schedule (``{"kind": ..., ...}``) in a few words: its kind, name and a digest
    of all its values, short enough for one line of an error (a discrete one holds 1000 numbers)."""
    kind = schedule.get("kind", "cosine")
    digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:8]
    if kind == "cosine":
        return f"cosine (offset {schedule.get('offset', 0.008):g}, sha256 {digest})"
    if kind == "discrete":
        T = len(schedule.get("alphas_cumprod", ()))
        return f"discrete {schedule.get('name') or 'custom'} (T={T}, sha256 {digest})"
    return f"{kind} (sha256 {digest})"


@dataclass
class Sensitivity:
    """Windows per step of a grid: from heat maps [S, H*W, H*W] and a share per step, or given
    directly (``fixed``: bool [S, windows, H*W])."""

    ts: tuple[float, ...]
    image_size: tuple[int, int]
    schedule: dict
    share: tuple[float, ...] = ()
    heat: torch.Tensor | None = None
    fixed: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    source: str = "(in memory)"

    def __post_init__(self) -> None:
        S = len(self.ts)
        if self.heat is None and self.fixed is None:
            raise InputError("a sensitivity needs heat maps or windows")
        if self.heat is not None:
            if len(self.share) != S:
                raise InputError(f"the sensitivity has {S} steps but {len(self.share)} shares")
            for r in self.share:
                if not 0.0 < r <= 1.0:
                    raise InputError(f"the share of a window must lie in (0, 1], got {r}")
        self._windows: dict[int, torch.Tensor] = {}

    @staticmethod
    def from_windows(windows: torch.Tensor, ts, image_size, schedule) -> "Sensitivity":
        """Windows given directly, bool [S, windows, H*W] (one set per step)."""
        return Sensitivity(ts=tuple(float(t) for t in ts), image_size=tuple(image_size), schedule=schedule,
                           fixed=windows.to(torch.bool))

    def check_schedule(self, schedule) -> None:
        """Refuse a noise schedule (a schedule or its dict) other than the one this was measured on:
        its windows belong to the times of that schedule's grid."""
        other = schedule if isinstance(schedule, dict) else schedule.to_dict()
        if self.schedule != other:
            raise InputError(f"the sensitivity {self.source} was measured on the noise schedule "
                             f"{_schedule_brief(self.schedule)}; the machine uses {_schedule_brief(other)}")

    def step_of(self, t: float) -> int:
        d = [abs(s - float(t)) for s in self.ts]
        i = min(range(len(d)), key=d.__getitem__)
        if d[i] > _EXACT:
            raise InputError(f"the sensitivity {self.source} was measured at t = {', '.join(f'{s:g}' for s in self.ts)}; "
                             f"t = {float(t):g} is not among them (sample on the same grid)")
        return i

    def windows_at(self, t: float) -> torch.Tensor:
        """bool [windows, H*W]: the input pixels of each window at time ``t``."""
        i = self.step_of(t)
        if self.fixed is not None:
            return self.fixed[i]
        if i not in self._windows:
            heat = self.heat[i].to(torch.float64)  # [q, p]
            order = heat.argsort(dim=1, descending=True)
            cum = heat.gather(1, order).cumsum(1) / heat.sum(1, keepdim=True).clamp_min(1e-300)
            count = (cum < self.share[i]).sum(1, keepdim=True) + 1  # smallest prefix holding the share
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
            win = rank < count
            win[torch.arange(win.shape[0]), torch.arange(win.shape[0])] = True  # q is always in its own window
            self._windows[i] = win
        return self._windows[i]

    def describe(self) -> dict:
        keep = {k: self.meta[k] for k in ("model", "weights_sha256", "inputs", "seed") if k in self.meta}
        return {**keep, "ts": list(self.ts), "share": list(self.share), "image_size": list(self.image_size),
                "fixed_windows": self.fixed is not None}

    def save(self, path) -> None:
        from safetensors.torch import save

        from .files import atomic_write

        if self.heat is None:
            raise InputError("only measured sensitivities (with heat maps) are saved")
        info = {"ts": list(self.ts), "share": list(self.share), "image_size": list(self.image_size),
                "schedule": self.schedule, **self.meta}
        atomic_write(path, save({"heat": self.heat.to(torch.float16).contiguous()},
                                metadata={"elsmachine": json.dumps(info)}))

    @staticmethod
    def load(path) -> "Sensitivity":
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), "pt") as f:
                info = json.loads(f.metadata()["elsmachine"])
                heat = f.get_tensor("heat").to(torch.float32)
        except FileNotFoundError:
            raise InputError(f"sensitivity file {path} does not exist") from None
        except Exception as e:  # noqa: BLE001 - not safetensors, or not ours
            raise InputError(f"{path} is not a sensitivity file: {e}") from None
        ts, share, size = info.pop("ts"), info.pop("share"), info.pop("image_size")
        S, HW = len(ts), size[0] * size[1]
        if tuple(heat.shape) != (S, HW, HW):
            raise InputError(f"sensitivity file {path}: heat of shape {tuple(heat.shape)} does not fit {S} steps of "
                             f"{size[0]}x{size[1]} images")
        return Sensitivity(ts=tuple(ts), image_size=tuple(size), schedule=info.pop("schedule"), share=tuple(share),
                           heat=heat, meta=info, source=str(path))
