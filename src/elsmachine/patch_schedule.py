"""Patch schedules k(t): the patch size of a machine at each time, the paper's calibrated presets
and saved calibrations (docs/theory.md, "Patch schedules").

A patch schedule stores its times with its sizes, so whoever produced it and whoever samples
with it cannot disagree about indexing: the denoiser evaluated at ts[i] uses sizes[i]. The
paper's presets list the sizes for t = 0.05, 0.10, ..., 1.00 (a 20-step grid).

A time that is not one of the stored times takes the size of the nearest stored time, with a
warning that says so (a 20-step schedule is exact on 20, 10, 5, 4 and 2 steps of the default
grid, whose times are all among its own).

Every way of writing a patch schedule (one size, one per step, a preset, a file; in code or on
the command line) is read by one grammar, :meth:`PatchSchedule.parse`; ``as_patch_schedule``
(machines) and ``resolve_patch_sizes`` (the sampler) are calls of it.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checks
from .errors import InputError
from .noise import ddim_grid

__all__ = ["PatchSchedule", "PRESETS", "preset", "as_patch_schedule", "resolve_patch_sizes", "default_grid_times",
           "spelled_sizes"]

_PAPER_TS = [round(0.05 * i, 10) for i in range(1, 21)]  # 0.05 .. 1.00, ascending
_EXACT = 1e-9  # times closer than this are the same time

PRESETS: dict[str, list[int]] = {
    "mnist-resnet-zeros": [3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15, 15, 15, 15, 15],
    "mnist-unet-zeros": [3, 3, 3, 5, 5, 7, 7, 7, 9, 9, 9, 11, 13, 15, 17, 21, 23, 23, 25, 27],
    "cifar10-resnet-zeros": [3, 3, 3, 3, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 11, 13, 15, 17, 17, 17],
}


def default_grid_times(steps: int) -> tuple[float, ...]:
    """Times at which the denoiser runs on the default n-step grid: (n - j) / n, j = 0..n-1."""
    return tuple(float(t) for t in (torch.arange(steps, 0, -1, dtype=torch.float64) / steps))


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
            checks.patch_size(k, "patch schedule sizes")
        for t in self.ts:
            if not isinstance(t, numbers.Real) or not (0.0 < float(t) <= 1.0):
                raise InputError(f"patch schedule times must lie in (0, 1], got {t!r}")
        if len(set(self.ts)) != len(self.ts):
            raise InputError("patch schedule times must be distinct")

    def size_at(self, t: float) -> int:
        """The size for a denoiser call at time ``t``: the stored one, or the nearest stored
        time's with a warning when ``t`` is not among the schedule's times."""
        ts = torch.tensor(self.ts, dtype=torch.float64)
        d = (ts - float(t)).abs()
        i = int(torch.argmin(d))
        if float(d[i]) > _EXACT:
            warnings.warn(
                f"t = {float(t):.6g} is not a time of this patch schedule ({len(self.ts)} times from "
                f"{min(self.ts):g} to {max(self.ts):g}); using the size of the nearest, t = {self.ts[i]:g} (k = {self.sizes[i]})",
                stacklevel=3,
            )
        return int(self.sizes[i])

    def sizes_for(self, grid: torch.Tensor) -> list[int]:
        """One size per step of ``grid`` (descending, ending at 0)."""
        return [self.size_at(t) for t in grid[:-1].tolist()]

    def to_dict(self) -> dict:
        return {"ts": list(self.ts), "sizes": list(self.sizes), **({"meta": self.meta} if self.meta else {})}

    def save(self, path) -> None:
        """Write JSON atomically."""
        from .files import write_json

        write_json(path, self.to_dict())

    @staticmethod
    def from_dict(d, what: str = "patch schedule") -> "PatchSchedule":
        if not isinstance(d, dict) or "ts" not in d or "sizes" not in d:
            raise InputError(f"{what} must hold an object with 'ts' and 'sizes'")
        ts, sizes = d["ts"], d["sizes"]
        if not isinstance(ts, list) or not isinstance(sizes, list):
            raise InputError(f"{what}: 'ts' and 'sizes' must be lists")
        for k in sizes:  # JSON may hold 5.0 or 5.5: only whole numbers are sizes
            if isinstance(k, float) and k.is_integer():
                continue
            checks.patch_size(k, f"{what}: sizes")
        try:
            return PatchSchedule(tuple(float(t) for t in ts), tuple(int(k) for k in sizes), d.get("meta", {}))
        except (TypeError, ValueError) as e:
            raise InputError(f"{what}: {e}") from None

    @staticmethod
    def load(path) -> "PatchSchedule":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"patch schedule file {path} does not exist") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"patch schedule file {path} is not readable JSON: {e}") from None
        return PatchSchedule.from_dict(d, f"patch schedule file {path}")

    @staticmethod
    def parse(spec, grid: torch.Tensor | None, *, what: str = "patch schedule") -> "int | PatchSchedule":
        """The one grammar of patch schedules, for the library and the command line alike.

        ``spec``: an odd int or its text ('5'); one size per step of ``grid``, as a sequence or a
        comma list ('3,5,7'; highest t first); a preset name (:data:`PRESETS`); a
        :class:`PatchSchedule`; or the path of a schedule ``.json``.
        ``grid``: the descending DDIM time grid (float64 [steps + 1], ending at 0) that a
        one-per-step list refers to; None is the default 20-step cosine grid.

        Returns one size (int) for every t, or a PatchSchedule looked up by t. ``what`` names the
        value in error messages.
        """
        if isinstance(spec, PatchSchedule):
            return spec
        sizes = spelled_sizes(spec, what)
        if isinstance(sizes, int):
            return sizes
        if sizes is None:
            s = str(spec)
            if s in PRESETS:
                return preset(s)
            if s.endswith(".json") or os.path.exists(s):
                return PatchSchedule.load(s)
            raise InputError(f"{what} {s!r} is neither one size, a comma list of sizes, a preset "
                             f"({', '.join(PRESETS)}) nor a schedule file")
        if not sizes:
            raise InputError(f"{what}: a sequence needs at least one size")
        grid = ddim_grid(len(_PAPER_TS)) if grid is None else torch.as_tensor(grid, dtype=torch.float64).flatten()
        steps = grid.numel() - 1
        if len(sizes) != steps:
            raise InputError(f"{what} has {len(sizes)} sizes but the grid has {steps} steps")
        return PatchSchedule(tuple(float(t) for t in grid[:-1].tolist()), tuple(sizes))


def preset(name: str) -> PatchSchedule:
    """The paper's calibrated schedule ``name`` (see :data:`PRESETS`) on its 20-step grid."""
    if name not in PRESETS:
        raise InputError(f"unknown patch-size preset {name!r}; presets: {', '.join(PRESETS)}")
    return PatchSchedule(tuple(_PAPER_TS), tuple(PRESETS[name]), {"source": "Kamb & Ganguli 2025", "name": name})


def as_patch_schedule(spec, what: str = "patch_size", schedule=None) -> int | PatchSchedule | None:
    """A machine's patch size in one of two forms: one size for every t, or a PatchSchedule.

    ``spec`` is None or any form :meth:`PatchSchedule.parse` reads; a sequence (or comma list)
    has one size per step of the DDIM grid of that many steps (highest t first), on the noise
    ``schedule`` (by default the paper's cosine).
    """
    if spec is None:
        return spec
    if isinstance(spec, PatchSchedule):
        return _on_schedule(spec, schedule, what)
    _names_only(spec, what)
    sizes = spelled_sizes(spec, what)
    if isinstance(sizes, list) and sizes:  # the grid of as many steps as the list has sizes
        grid = ddim_grid(len(sizes)) if schedule is None else schedule.grid(len(sizes))
        return PatchSchedule.parse(sizes, grid, what=what)
    return _on_schedule(PatchSchedule.parse(spec, None, what=what), schedule, what)


def _on_schedule(ps, schedule, what: str):
    """A patch schedule calibrated on another noise schedule than the machine's is refused: its
    times mean other noise levels there (a calibration records its schedule in ``meta``)."""
    recorded = ps.meta.get("schedule") if isinstance(ps, PatchSchedule) else None
    if schedule is None or not isinstance(recorded, dict):
        return ps
    from .noise import schedule_from_dict

    try:
        theirs = schedule_from_dict(recorded)
    except InputError:
        raise InputError(f"{what}: the noise schedule it records cannot be read") from None
    if theirs != schedule:
        brief = lambda sch: (lambda r: r if len(r) <= 60 else r[:57] + "...")(repr(sch))  # noqa: E731
        raise InputError(f"{what} was calibrated on the noise schedule {brief(theirs)}, the machine runs on "
                         f"{brief(schedule)}: its times mean other noise levels; calibrate on the same schedule")
    return ps


def resolve_patch_sizes(spec, grid: torch.Tensor) -> list[int] | None:
    """One patch size per step of ``grid`` (in the order taken), or None for the denoiser's own.

    ``spec`` is None or any form :meth:`PatchSchedule.parse` reads; a sequence must have one
    size per step of ``grid`` (any grid, explicit ones included).
    """
    if spec is None:
        return None
    _names_only(spec, "patch_sizes")
    resolved = PatchSchedule.parse(spec, grid, what="patch_sizes")
    if isinstance(resolved, int):
        return [resolved] * (grid.numel() - 1)
    return resolved.sizes_for(grid)


def _names_only(spec, what: str) -> None:
    """In code a size is a number and text names a preset or a file: '5' is refused there (the
    command line reads its text through :meth:`PatchSchedule.parse` itself)."""
    if isinstance(spec, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", spec):
        raise InputError(f"{what} {spec!r} is text: give sizes as numbers ({spec.strip()} or a list), or a preset "
                         f"({', '.join(PRESETS)}) or a schedule file")


def spelled_sizes(spec, what: str = "patch size") -> int | list[int] | None:
    """The sizes a spec spells out itself, the lexical half of :meth:`PatchSchedule.parse`: one
    odd size (an int or '5'), a list of them (a sequence or '3,5,7'), or None for a name (a
    preset or a file) to look up."""
    if isinstance(spec, os.PathLike):
        return None
    if isinstance(spec, str):
        text = spec.strip()
        if re.fullmatch(r"\d+", text):
            return checks.patch_size(int(text), what)
        if re.fullmatch(r"\d+(\s*,\s*\d+)+", text):
            return [checks.patch_size(int(v), what) for v in text.split(",")]
        return None
    if isinstance(spec, (numbers.Number, bool)):
        return checks.patch_size(spec, what)
    try:
        return [checks.patch_size(k, what) for k in spec]
    except TypeError:
        raise InputError(f"{what} must be an int, a sequence, a preset name or a schedule, got {spec!r}") from None
