"""Machines built from others (docs/theory.md, "Candidates beyond ELS"): a machine that holds an
ELS-family machine and changes its estimate, by composition rather than inheritance.

- :class:`Blend`: lambda(t) first + (1 - lambda(t)) inner, the per-step convex combination of two
  machines' estimates (the Wiener filter joined to ELS, or to ELS within a radius);
- :class:`Followed`: F_t(inner's x0_hat, x_t), the inner estimate passed through a map of the
  subclass's own (one attention step over it).

The composed machine declares itself like any other; its options are the inner machine's (handed
to it) and its own. It has the inner machine's patch size, classes, schedule and engine, and
``denoise_sizes`` keeps the inner machine's one pass over several sizes.
"""

from __future__ import annotations

import torch

from .. import checks
from ..patch_schedule import StepSchedule
from .base import DEFAULT_MEMORY_BUDGET, ScoreMachine

__all__ = ["Composed", "Blend", "Followed"]

# What the composed machine shares with its inner one (the data, its classes, the schedule).
_SHARED = ("images", "labels", "schedule", "n_train", "_all_classes", "_global", "_class_index", "distributed",
           "memory_budget", "_fingerprint", "_data")


class Composed(ScoreMachine):
    """A machine around ``inner``, an instance of the class ``inner_class`` built from the options
    that class declares; the subclass's own options (those ``inner_class`` does not declare) are
    per-step values, read by :meth:`_value`."""

    inner_class: type

    def __init__(self, images, *, labels=None, schedule=None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 distributed: bool = False, **options) -> None:
        inner_names = set(self.inner_class.declaration.option_names)
        own = {o.name: o for o in self.declaration.options if o.name not in inner_names}
        unknown = sorted(set(options) - inner_names - set(own))
        if unknown:
            from ..errors import InputError

            raise InputError(f"the {self.name} machine has no {', '.join(unknown)}")
        self.inner = self.inner_class(images, labels=labels, schedule=schedule, memory_budget=memory_budget,
                                      distributed=distributed,
                                      **{k: v for k, v in options.items() if k in inner_names})
        for key in _SHARED:
            setattr(self, key, getattr(self.inner, key))
        for name, opt in own.items():
            value = options.get(name, opt.default)
            if opt.per_step:
                value = StepSchedule.parse(value, name, schedule=self.schedule, **(opt.domain or {}))
            setattr(self, name, value)

    def __getattr__(self, name: str):
        # The inner machine's attributes (its options, padding, patch size, engine, reports).
        if name.startswith("__") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    @property
    def on_candidates(self):
        return self.inner.on_candidates

    @on_candidates.setter
    def on_candidates(self, fn) -> None:
        self.inner.on_candidates = fn

    @property
    def patch_size(self):
        return self.inner.patch_size

    @property
    def padding(self):
        return self.inner.padding

    def _value(self, name: str, t: float) -> float:
        v = getattr(self, name)
        return v.value_at(t, self.schedule) if isinstance(v, StepSchedule) else v

    def _values(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """float64 [b]: the option ``name`` at each time of t."""
        return torch.tensor([self._value(name, v) for v in t.tolist()], dtype=torch.float64)

    def _sizes(self, tt, patch_size):
        return self.inner._sizes(tt, patch_size)

    def sizes_on(self, grid: torch.Tensor) -> list[int]:
        return self.inner.sizes_on(grid)

    def _call_starts(self) -> None:
        self.inner._call_starts()

    def _call_ends(self, tt) -> None:
        self.inner._call_ends(tt)

    def describe(self) -> dict:
        d = self.inner.describe()
        d["machine"] = self.name
        for opt in self.declaration.options:
            if opt.recorded and opt.name not in d:
                d[opt.name] = opt.recorded_value(getattr(self, opt.name))
        return d

    def _mapped(self, est: torch.Tensor, x, a, s, cls, t) -> torch.Tensor:  # pragma: no cover - abstract
        """The estimate [b, C, H, W] from the inner one for the rows x of class ``cls`` at times t."""
        raise NotImplementedError

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        est, tr = self.inner._denoise_subset(x, a, s, k, cls, trace, t)
        return self._mapped(est, x, a, s, cls, t), tr

    def denoise_sizes(self, x, t, sizes, labels=None):
        """The inner estimate at every size (from one pass where its engine shares work between
        sizes), each then mapped."""
        outs = self.inner.denoise_sizes(x, t, sizes, labels)
        x = checks.query(x, self.image_shape)
        tt = checks.times(t, x.shape[0])
        a, s = self.schedule.coefficients(tt, x)
        done = [torch.empty_like(o) for o in outs]
        for bidx, cls, _ in self._subsets(labels, [None] * x.shape[0], x.shape[0]):
            sel = bidx.to(x.device)
            for o, d in zip(outs, done):
                d[sel] = self._mapped(o[sel], x[sel], a[sel], s[sel], cls, tt[bidx])
        return done

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class Blend(Composed):
    """lambda(t) first + (1 - lambda(t)) inner: ``first_class`` a machine without options of its
    own built on the same data, ``weight`` the name of the option lambda(t) in [0, 1]. Rows at
    lambda = 1 take the first machine's estimate alone and rows at 0 the inner one's, so neither
    runs where its weight is 0."""

    first_class: type
    weight: str

    def __init__(self, images, *, labels=None, schedule=None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 distributed: bool = False, **options) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget,
                         distributed=distributed, **options)
        self.first = self.first_class(images, labels=labels, schedule=self.schedule, memory_budget=memory_budget,
                                      distributed=distributed)

    def _mapped(self, est, x, a, s, cls, t):
        lam = self._values(self.weight, t)
        rows = torch.nonzero(lam > 0).flatten().to(x.device)
        if len(rows) == 0:
            return est
        w, _ = self.first._denoise_subset(x[rows], a[rows], s[rows], None, cls, False, t[rows.cpu()])
        out = est.clone()
        l4 = lam[rows.cpu()].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        out[rows] = l4 * w + (1 - l4) * est[rows]
        return out

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        whole = self._values(self.weight, t) == 1.0
        if trace or not bool(whole.any()):
            return super()._denoise_subset(x, a, s, k, cls, trace, t)
        out = torch.empty_like(x)
        rows = torch.nonzero(whole).flatten()
        sel = rows.to(x.device)
        out[sel], _ = self.first._denoise_subset(x[sel], a[sel], s[sel], None, cls, False, t[rows])
        rows = torch.nonzero(~whole).flatten()
        if len(rows):
            sel = rows.to(x.device)
            out[sel], _ = super()._denoise_subset(x[sel], a[sel], s[sel], k, cls, False, t[rows])
        return out, None


class Followed(Composed):
    """The inner estimate, then :meth:`_mapped` (a subclass states the map)."""
