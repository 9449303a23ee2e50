"""A machine parameter given as one number or one per step of the default grid (highest t first),
looked up at the nearest grid time like a patch schedule (docs/theory.md, "Patch schedules")."""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from ..errors import InputError
from ..patch_schedule import default_grid_times
from .base import Trace

__all__ = ["per_step_values", "value_at", "by_step_value"]


def per_step_values(spec, name: str, *, infinite: bool = False, share: bool = False,
                    zero: bool = False) -> tuple[float, ...]:
    """Positive numbers (``infinite``: inf allowed too; ``zero``: 0 too; ``share``: numbers in
    [0, 1] instead) from a number, a sequence or '0.5,0.7,...'."""
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
    return tuple(float(v) for v in items)


def value_at(values: tuple[float, ...], t: float, name: str) -> float:
    """The one value, or the nearest default-grid time's (warned when ``t`` is not a time of that grid)."""
    if len(values) == 1:
        return values[0]
    ts = torch.tensor(default_grid_times(len(values)), dtype=torch.float64)
    d = (ts - float(t)).abs()
    i = int(torch.argmin(d))
    if float(d[i]) > 1e-9:
        warnings.warn(f"t = {float(t):.6g} is not a time of the {len(ts)}-step grid of these {name}; "
                      f"using that of t = {float(ts[i]):g}", stacklevel=5)
    return values[i]


def by_step_value(value_of, x, a, s, t, trace: bool, run):
    """x0_hat [b, C, H, W] (and the trace) of the rows x at times t [b] whose machine takes a value
    per step: ``run(x, a, s, t, v)`` once for the rows of each value v = ``value_of(t_b)``, the
    whole batch in one call where every row has the same value."""
    groups: dict = {}
    for b, v in enumerate(t.tolist()):
        groups.setdefault(value_of(v), []).append(b)
    if len(groups) == 1:
        return run(x, a, s, t, next(iter(groups)))
    out = torch.empty_like(x)
    tr = Trace.empty(x.shape[0], x.shape[2], x.shape[3], x) if trace else None
    for v, idx in groups.items():
        sel = torch.tensor(idx, device=x.device)
        x0, sub = run(x[sel], a[sel], s[sel], t[idx], v)
        out[sel] = x0
        if trace:
            tr.put(sel, sub)
    return out, tr
