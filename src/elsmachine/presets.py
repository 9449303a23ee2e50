"""Patch-size schedules k(t): the paper's calibrated presets and saved calibrations.

DESIGN.md, "Their calibrated patch sizes on a 20-step grid": sizes listed for the denoiser
evaluated at t = 0.05, 0.10, ..., 1.00. A schedule stores the times with the sizes, so whoever
produced it and whoever samples with it cannot disagree about indexing: step j of a DDIM run
evaluates the denoiser at ts[j] and uses the size stored for that time.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["PatchSchedule", "PRESETS", "preset", "resolve_patch_sizes"]

_PAPER_TS = [round(0.05 * i, 10) for i in range(1, 21)]  # 0.05 .. 1.00, ascending

PRESETS: dict[str, list[int]] = {
    "mnist-resnet-zeros": [3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15, 15, 15, 15, 15],
    "mnist-unet-zeros": [3, 3, 3, 5, 5, 7, 7, 7, 9, 9, 9, 11, 13, 15, 17, 21, 23, 23, 25, 27],
    "cifar10-resnet-zeros": [3, 3, 3, 3, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 11, 13, 15, 17, 17, 17],
}


@dataclass(frozen=True)
class PatchSchedule:
    """Patch size per denoiser time: ``sizes[i]`` applies when the denoiser runs at ``ts[i]``.

    ``meta`` carries provenance (criterion, dataset, model, seeds, ...) and is saved with it.
    """

    ts: tuple[float, ...]
    sizes: tuple[int, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.ts) != len(self.sizes) or not self.ts:
            raise InputError(f"a patch schedule needs one size per time, got {len(self.ts)} times and {len(self.sizes)} sizes")
        for k in self.sizes:
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 or k % 2 == 0:
                raise InputError(f"patch sizes must be odd positive integers, got {k!r}")
        for t in self.ts:
            if not (0.0 < float(t) <= 1.0):
                raise InputError(f"patch schedule times must lie in (0, 1], got {t!r}")
        if len(set(self.ts)) != len(self.ts):
            raise InputError("patch schedule times must be distinct")

    def sizes_for(self, grid: torch.Tensor) -> list[int]:
        """One size per step of ``grid`` (descending, ending at 0): the size stored for the
        step's time, or for the nearest stored time when the grid differs from the schedule's."""
        out = []
        ts = torch.tensor(self.ts, dtype=torch.float64)
        for t in grid[:-1].tolist():
            i = int(torch.argmin((ts - t).abs()).item())
            out.append(int(self.sizes[i]))
        return out

    def to_dict(self) -> dict:
        return {"ts": list(self.ts), "sizes": list(self.sizes), **({"meta": self.meta} if self.meta else {})}

    def save(self, path) -> None:
        """Write JSON atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @staticmethod
    def load(path) -> "PatchSchedule":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"patch schedule file {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"patch schedule file {path} is not readable JSON: {e}") from None
        if not isinstance(d, dict) or "ts" not in d or "sizes" not in d:
            raise InputError(f"patch schedule file {path} must hold an object with 'ts' and 'sizes'")
        try:
            return PatchSchedule(tuple(float(t) for t in d["ts"]), tuple(int(k) for k in d["sizes"]), d.get("meta", {}))
        except (TypeError, ValueError) as e:
            raise InputError(f"patch schedule file {path}: {e}") from None


def preset(name: str) -> PatchSchedule:
    """The paper's calibrated schedule ``name`` (see :data:`PRESETS`) on its 20-step grid."""
    if name not in PRESETS:
        raise InputError(f"unknown patch-size preset {name!r}; presets: {', '.join(PRESETS)}")
    return PatchSchedule(tuple(_PAPER_TS), tuple(PRESETS[name]), {"source": "Kamb & Ganguli 2025", "name": name})


def resolve_patch_sizes(patch_sizes, grid: torch.Tensor) -> list[int] | None:
    """One patch size per step of ``grid`` (in the order taken), or None to use the denoiser's.

    Accepts None, an odd int, a sequence of one int per step, a preset name, a
    :class:`PatchSchedule`, or a path to a saved schedule JSON.
    """
    n = grid.numel() - 1
    if patch_sizes is None:
        return None
    if isinstance(patch_sizes, PatchSchedule):
        return patch_sizes.sizes_for(grid)
    if isinstance(patch_sizes, (str, os.PathLike)):
        s = str(patch_sizes)
        if s in PRESETS:
            return preset(s).sizes_for(grid)
        if s.endswith(".json") or os.path.exists(s):
            return PatchSchedule.load(s).sizes_for(grid)
        raise InputError(f"patch sizes {s!r} are neither a preset ({', '.join(PRESETS)}) nor a schedule file")
    if isinstance(patch_sizes, numbers.Integral) and not isinstance(patch_sizes, bool):
        sizes = [int(patch_sizes)] * n
    else:
        try:
            sizes = [k for k in patch_sizes]
        except TypeError:
            raise InputError(f"patch_sizes must be an int, a sequence, a preset name or a schedule, got {patch_sizes!r}") from None
        if len(sizes) != n:
            raise InputError(f"patch_sizes has {len(sizes)} sizes but the grid has {n} steps")
    for k in sizes:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 or k % 2 == 0:
            raise InputError(f"patch sizes must be odd positive integers, got {k!r}")
    return [int(k) for k in sizes]
