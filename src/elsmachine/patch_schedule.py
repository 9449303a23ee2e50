"""Per-step values with their times (docs/theory.md, "Patch schedules"): :class:`StepSchedule`, a
machine setting v(t) given per denoiser step (a temperature, a window width, a radius, a blend
weight), and its integer case :class:`PatchSchedule`, the patch size k(t), with the paper's
calibrated presets and saved calibrations.

A schedule stores its times with its values, so whoever produced it and whoever samples with it
cannot disagree about indexing: the denoiser evaluated at ts[i] uses values[i]. The paper's
presets list the sizes for t = 0.05, 0.10, ..., 1.00 (a 20-step grid). A plain list is read on
the grid it was given for (one value per step, highest t first) and stored with those times.

A time that is not one of the stored times takes the value of the stored time at the nearest
noise level, log sigma_VE(t) = log(s(t) / a(t)) on the machine's noise schedule (nearest t where
no schedule is given), with a warning once per schedule: a value fitted on 20 DDIM steps means
the same noise level under 18 Heun steps or 7 DDIM steps. A schedule records the noise schedule
it was made on, and a machine on another refuses it (its times mean other noise levels there).

Every way of writing a patch schedule (one size, one per step, a preset, a file; in code or on
the command line) is read by one grammar, :meth:`PatchSchedule.parse`; ``as_patch_schedule``
(machines) and ``resolve_patch_sizes`` (the sampler) are calls of it.
"""

from __future__ import annotations

import json
import math
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

__all__ = ["StepSchedule", "PatchSchedule", "PRESETS", "step_values", "preset", "as_patch_schedule", "resolve_patch_sizes", "default_grid_times",
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


def _read_json(path: Path, what: str):
    """The JSON object of a schedule file, or a one-line error naming ``what`` and the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} file {path} is not readable JSON: {e}") from None


def _check_times(ts, n: int, what: str) -> None:
    if len(ts) != n or not ts:
        raise InputError(f"a {what} needs one value per time, got {len(ts)} times and {n} values")
    for t in ts:
        if not isinstance(t, numbers.Real) or not (0.0 < float(t) <= 1.0):
            raise InputError(f"{what} times must lie in (0, 1], got {t!r}")
    if len(set(ts)) != len(ts):
        raise InputError(f"{what} times must be distinct")


class _Timed:
    """The lookup both schedules share: the index of the stored time for a call at t."""

    ts: tuple[float, ...]
    _what = "schedule"

    def index_at(self, t: float, schedule=None) -> int:
        """The stored time for a call at ``t``: ``t`` itself where stored, else the one at the
        nearest log noise level on ``schedule`` (nearest t without one), warned once."""
        ts = torch.tensor(self.ts, dtype=torch.float64)
        d = (ts - float(t)).abs()
        i = int(torch.argmin(d))
        if float(d[i]) <= _EXACT:
            return i
        if schedule is not None:
            level = lambda v: math.log(max(float(schedule.sigma_ve(float(v))), 1e-300))  # noqa: E731
            d = torch.tensor([abs(level(u) - level(t)) for u in self.ts], dtype=torch.float64)
            i = int(torch.argmin(d))
        warned = self.__dict__.setdefault("_warned", [])
        if not warned:
            by = "noise level" if schedule is not None else "time"
            warnings.warn(f"t = {float(t):.6g} is not a time of this {self._what} ({len(self.ts)} times from "
                          f"{min(self.ts):g} to {max(self.ts):g}); times between take the value of the nearest {by} "
                          f"(here t = {self.ts[i]:g})", stacklevel=4)
            warned.append(True)
        return i


@dataclass(frozen=True)
class StepSchedule(_Timed):
    """A machine setting per denoiser time: ``values[i]`` applies when the denoiser runs at
    ``ts[i]`` (float64 numbers; inf where a setting allows it). ``meta`` carries provenance (the
    noise schedule it was made on, the fit that chose it, ...) and is saved with it."""

    ts: tuple[float, ...]
    values: tuple[float, ...]
    meta: dict = field(default_factory=dict, compare=False)
    _what = "per-step schedule"

    def __post_init__(self) -> None:
        _check_times(self.ts, len(self.values), "per-step schedule")

    def value_at(self, t: float, schedule=None) -> float:
        """The value for a denoiser call at time ``t`` (see :meth:`index_at`)."""
        return self.values[self.index_at(t, schedule)]

    def to_dict(self) -> dict:
        vals = [str(v) if math.isinf(v) else v for v in self.values]  # JSON has no infinity
        return {"ts": list(self.ts), "values": vals, **({"meta": self.meta} if self.meta else {})}

    def recorded(self) -> dict:
        """What decides the output: the times and values (``meta`` is provenance)."""
        d = self.to_dict()
        d.pop("meta", None)
        return d

    def save(self, path) -> None:
        from .files import write_json

        write_json(path, self.to_dict())

    @staticmethod
    def from_dict(d, what: str = "per-step schedule", **domain) -> "StepSchedule":
        if not isinstance(d, dict) or "ts" not in d or "values" not in d:
            raise InputError(f"{what} must hold an object with 'ts' and 'values'")
        if not isinstance(d["ts"], list) or not isinstance(d["values"], list):
            raise InputError(f"{what}: 'ts' and 'values' must be lists")
        values = step_values(d["values"], what, **domain)
        try:
            return StepSchedule(tuple(float(t) for t in d["ts"]), values, d.get("meta", {}))
        except (TypeError, ValueError) as e:
            raise InputError(f"{what}: {e}") from None

    @staticmethod
    def parse(spec, what: str, *, grid: torch.Tensor | None = None, schedule=None,
              **domain) -> "float | StepSchedule":
        """The one grammar of per-step values: one number (or its text) for every t; one per step
        of ``grid`` (a sequence or '0.5,0.7,...', highest t first); a :class:`StepSchedule` or
        its dict; or the path of its ``.json``. ``grid``: the descending time grid (float64
        [steps + 1], ending at 0) a list refers to; None is the DDIM grid of as many steps as the
        list has values, on ``schedule`` (default the paper's cosine). ``domain``: which numbers
        are allowed (:func:`step_values`). A schedule made on another noise schedule than
        ``schedule`` is refused."""
        if isinstance(spec, StepSchedule):
            step_values(spec.values, what, **domain)
            return _on_schedule(spec, schedule, what)
        if isinstance(spec, dict):
            return _on_schedule(StepSchedule.from_dict(spec, what, **domain), schedule, what)
        if isinstance(spec, (str, os.PathLike)) and str(spec).endswith(".json"):
            path = Path(spec)
            d = _read_json(path, what)
            return _on_schedule(StepSchedule.from_dict(d, f"{what} file {path}", **domain), schedule, what)
        values = step_values(spec, what, **domain)
        if len(values) == 1:  # one value is every step's
            return values[0]
        if grid is None:
            grid = ddim_grid(len(values)) if schedule is None else schedule.grid(len(values))
        grid = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if len(values) != grid.numel() - 1:
            raise InputError(f"{what} has {len(values)} values but the run has {grid.numel() - 1} steps: give one "
                             f"value, or one per step")
        meta = {"schedule": schedule.to_dict()} if schedule is not None else {}
        return StepSchedule(tuple(float(t) for t in grid[:-1].tolist()), values, meta)


def step_values(spec, name: str, *, infinite: bool = False, share: bool = False, zero: bool = False,
                whole: bool = False) -> tuple[float, ...]:
    """Numbers from a number, a sequence or '0.5,0.7,...': positive (``zero``: or 0; ``share``:
    in [0, 1] instead; ``infinite``: inf allowed, also spelled 'inf'; ``whole``: whole numbers
    only), each refused by name otherwise."""
    items = spec
    if isinstance(spec, str):
        try:
            items = [float(v) for v in spec.split(",")]
        except ValueError:
            raise InputError(f"{name} must be numbers separated by commas, got {spec!r}") from None
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        items = [spec]
    try:
        items = list(items)
    except TypeError:
        raise InputError(f"{name} must be a number or one per step, got {spec!r}") from None
    if infinite:  # as describe() records it, JSON having no infinity
        items = [math.inf if isinstance(v, str) and v.strip() == "inf" else v for v in items]
    if not items:
        raise InputError(f"{name}: give at least one")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
            ok = False
        elif share:
            ok = 0 <= v <= 1
        else:
            ok = (v >= 0 if zero else v > 0) and (infinite or not math.isinf(v))
        if not ok:
            sign = "non-negative" if zero else "positive"
            what = "numbers in [0, 1]" if share else f"{sign} numbers{' (or inf)' if infinite else ''}"
            raise InputError(f"{name} must be {what}, got {v!r}")
        if whole and not math.isinf(v) and v != int(v):
            raise InputError(f"{name} must be whole numbers{' (or inf)' if infinite else ''}, got {v!r}")
    return tuple(float(v) for v in items)


@dataclass(frozen=True)
class PatchSchedule(_Timed):
    """Patch size per denoiser time, the integer case of :class:`StepSchedule`: ``sizes[i]``
    applies when the denoiser runs at ``ts[i]``.

    ``meta`` carries provenance (criterion, dataset, model, seeds, ...) and is saved with it.
    """

    ts: tuple[float, ...]
    sizes: tuple[int, ...]
    meta: dict = field(default_factory=dict, compare=False)
    _what = "patch schedule"

    def __post_init__(self) -> None:
        _check_times(self.ts, len(self.sizes), "patch schedule")
        for k in self.sizes:
            checks.patch_size(k, "patch schedule sizes")

    @property
    def values(self) -> tuple[int, ...]:
        return self.sizes

    def size_at(self, t: float, schedule=None) -> int:
        """The size for a denoiser call at time ``t``: the stored one, or that of the stored time
        at the nearest noise level on ``schedule`` (nearest t without one), warned once."""
        return int(self.sizes[self.index_at(t, schedule)])

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
        return PatchSchedule.from_dict(_read_json(path, "patch schedule"), f"patch schedule file {path}")

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
    """A schedule calibrated or fitted on another noise schedule than the machine's is refused: its
    times mean other noise levels there (a calibration or a fit records its schedule in ``meta``)."""
    recorded = ps.meta.get("schedule") if isinstance(ps, (PatchSchedule, StepSchedule)) else None
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
