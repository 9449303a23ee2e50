"""LS and ELS, the local and equivariant local score machines (docs/theory.md, "The score
machines"; the paper's LS and ELS machines), on either engine form.

A pixel q is denoised from the candidate patches :mod:`.candidates` says it sees:

    LS   (n, q): the patch at q of every training image;
    ELS  circular: the patch at every pixel of every (periodic) training image;
         zeros (boundary-broken): the patches at every pixel with q's padding footprint.

The patch size belongs to the machine: one size, or a patch schedule looked up by t
(:mod:`elsmachine.patch_schedule`); ``denoise(..., patch_size=k)`` overrides it per call.

The engine forms (attention, the compiled displacement kernel, the Triton kernel) are in
:mod:`.forms`; the machine picks one per device and dtype and finalises its state. With
``subset=`` (opt-in) each noisy image meets only the patches of a subset of its class, and each
call reports a bound on the share of every pixel's softmax left out (:mod:`.subset`). The ELS
variants are declarations over the same class: each sets per-step values of the one step
(:mod:`.step`), read here at each call and handed to the engine with the queries.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import torch

from .. import checks
from ..engines import displacement as disp
from ..engines.engine import Bank, Fallback
from ..engines.softmax import SoftmaxState
from ..errors import InputError
from ..noise import NoiseSchedule
from ..patch_schedule import PatchSchedule, StepSchedule, as_patch_schedule
from .base import BACKENDS, DEFAULT_MEMORY_BUDGET, TRITON_BACKENDS, CandidateMachine, PatchSized, Trace
from .candidates import rectangles, sees
from .declaration import PATCH_SIZE, SOFTMAX, Cost, Declaration, Option, _record_patch_size
from .step import STEP_FIELDS, PatchStep
from .forms import (AttentionForm, DisplacementForm, Geometry, PatchQueries, TritonChoice,
                    TritonDisplacementForm, TritonForm)
from .subset import SUBSET_OPTIONS

__all__ = ["PatchMachine", "LocalMachine", "ELSMachine", "PATCH_OPTIONS", "step_option", "record_step", "border_mask"]


def border_mask(H: int, W: int, k: int, device=None) -> torch.Tensor:
    """bool [H, W]: the pixels whose k x k window crosses the image's edge."""
    i = torch.arange(H, device=device).view(-1, 1)
    j = torch.arange(W, device=device).view(1, -1)
    ring = torch.minimum(torch.minimum(i, H - 1 - i), torch.minimum(j, W - 1 - j))
    return ring < k // 2

def _kernel_rectangles(kind: str, padding: str, k: int, H: int, W: int, radius: int | None = None):
    """(rows, columns) of the query rectangle of every displacement the kernel visits for LS or
    ELS, clipped to the candidates as csrc/displacement.c clips them."""
    for qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1 in rectangles(kind, padding, H, W, k, radius).tolist():
        for dr in range(dr0, dr1 + 1):
            rh = min(qr1, pr1 - dr) - max(qr0, pr0 - dr) + 1
            if rh <= 0:
                continue
            for dc in range(dc0, dc1 + 1):
                rw = min(qc1, pc1 - dc) - max(qc0, pc0 - dc) + 1
                if rw > 0:
                    yield rh, rw


def patch_cost(kind: str) -> Cost:
    """The cost of LS or ELS (``kind``) on the displacement form: each pixel paired with the
    candidates it sees (:mod:`.candidates`) in every image; per displacement and image the
    squared differences over the query rectangle grown by k - 1 (3C flops a pixel), window sums
    down the columns and along the rows (k - 1 additions each when summed afresh, k < 7, or 3 by
    segments), then per pair the scale, max, exp (counted as 10), sum and weighted sum (2 + 2C)."""

    def pairs(k, n, H, W, t, padding="zeros", radius=None):
        return int(sees(kind, padding or "zeros", H, W, k, radius).sum()) * n

    def flops(k, n, H, W, C, t, padding="zeros", radius=None):
        h = k // 2
        box = 3 if k >= 7 else k - 1
        total = 0.0
        for rh, rw in _kernel_rectangles(kind, padding or "zeros", k, H, W, radius):
            total += (rh + 2 * h) * (rw + 2 * h) * 3 * C + rh * (rw + 2 * h) * box + rh * rw * box
            total += rh * rw * (14 + 2 * C)
        return total * n

    return Cost(pairs, flops)


PADDING = Option("padding", str, "zeros", "zeros: boundary-broken ELS; circular: periodic.", flag="--padding",
                 choices=("zeros", "circular"))
BACKEND = Option("backend", str, "auto", "The engine form: auto, native (the compiled CPU kernel), triton (a GPU "
                 "kernel: both forms timed per size on a GPU, the faster kept), triton-direct or triton-displacement "
                 "(one GPU form), fused or explicit (attention).", flag="--backend", choices=BACKENDS, recorded=False)
APPROX_IMAGES = Option("approx_images", int, None, "Approximate: each noisy image meets only the patches of its N "
                       "nearest training images.", flag="--approx-images")
PATCH_OPTIONS = (PATCH_SIZE, PADDING, BACKEND, APPROX_IMAGES, *SUBSET_OPTIONS)


def record_step(value):
    """A per-step value as results record it: a schedule by its times and values, one value as a
    one-element list (inf as "inf", whole radii as integers)."""
    if isinstance(value, StepSchedule):
        return value.recorded()
    if value is None or isinstance(value, (int, PatchSchedule)):
        return _record_patch_size(value)
    return ["inf" if math.isinf(value) else value]


def step_option(name: str, step: str, default, help: str, flag: str, kind: str = "step_schedule") -> Option:  # noqa: A002
    """A per-step option that sets the :class:`~.step.PatchStep` field ``step``."""
    return Option(name, kind, default, help, flag=flag, record=record_step, step=step, domain=STEP_FIELDS[step].domain)


class PatchMachine(PatchSized, CandidateMachine):
    """Shared body of LS, ELS and the ELS-family variants: patch sizes, the engine forms, streamed
    candidates, and the per-step values a variant declares (:mod:`.step`).
    ``candidate_kind`` ("ls" or "els") says which candidates a pixel sees (:mod:`.candidates`).

    Args (beyond :class:`CandidateMachine`'s):
        patch_size: one odd size, one per step of the default grid (highest t first), a preset
            name, a :class:`~elsmachine.PatchSchedule`, or a schedule file.
        padding: "zeros" or "circular".
        approx_images: (approximate) each noisy image meets only the patches of its
            ``approx_images`` nearest training images by |x_t - a Y_n|, chosen afresh per call.
        subset, subset_bound, subset_pool: (approximate, with a bound) see
            :class:`CandidateMachine` and :mod:`.subset`.
        **steps: the per-step options the machine's declaration gives a ``step`` field (a
            radius, a temperature, ...): each one value or a :class:`~elsmachine.StepSchedule`
            (a plain list is one value per step of the DDIM grid of its length); any other name
            is refused.

    ``els bench`` reports the approximate modes' speed-up and fidelity to the exact machine.
    """

    def __init__(self, images, patch_size=None, padding: str = "zeros", *, labels=None,
                 schedule: NoiseSchedule | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 backend: str = "auto", approx_images: int | None = None, distributed: bool = False, subset=None,
                 subset_bound=None, subset_pool: int = 4, **steps) -> None:
        decl = self.declaration
        declared = {o.name: o for o in decl.options if o.step is not None}
        unknown = sorted(set(steps) - set(declared))
        if unknown:
            raise InputError(f"the {self.name} machine has no {', '.join(unknown)}")
        fields = [STEP_FIELDS[o.step] for o in declared.values()]
        if (subset is not None or subset_bound is not None) and not all(f.bounded for f in fields):
            which = next(o.name for o in declared.values() if not STEP_FIELDS[o.step].bounded)
            raise InputError(f"subset= bounds ELS's box distances over all its candidates; {self.name} sets "
                             f"{which}, so it has no bound")
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, backend=backend,
                         distributed=distributed, subset=subset, subset_bound=subset_bound, subset_pool=subset_pool)
        if self.subsetting and approx_images is not None:
            raise InputError("subset= is a mode of its own: not with approx_images")
        if distributed and approx_images is not None:
            raise InputError("approx_images picks the nearest images of the whole set: not on a sharded machine")
        self.patch_size = as_patch_schedule(patch_size, schedule=self.schedule)
        self.padding = checks.padding(padding)
        if any(f.zeros for f in fields) and self.padding != "zeros":
            raise InputError(f"{self.name} needs padding='zeros': a circular image has no border")
        if approx_images is not None:
            approx_images = checks.positive_int(approx_images, "approx_images")
        self.approx_images = approx_images
        self._attention_only = any(f.attention for f in fields)
        self._steps: dict[str, str] = {}  # PatchStep field -> the option that sets it
        for name, opt in declared.items():
            value = steps.get(name, opt.default)
            if opt.domain is None:  # a patch schedule of its own
                value = as_patch_schedule(value, name, schedule=self.schedule)
            else:
                value = StepSchedule.parse(value, name, schedule=self.schedule, **opt.domain)
            setattr(self, name, value)
            self._steps[opt.step] = name

    # ------------------------------------------------------------------ the step
    def _value(self, name: str, t: float):
        v = getattr(self, name)
        if isinstance(v, StepSchedule):
            return v.value_at(t, self.schedule)
        if isinstance(v, PatchSchedule):
            return v.size_at(t, self.schedule)
        return v

    def step_at(self, t: float, k: int) -> PatchStep:
        """The per-step values of a call at time ``t`` with patch size ``k`` (see :mod:`.step`)."""
        got = {f: self._value(name, t) for f, name in self._steps.items()}
        if "radius" in got:
            got["radius"] = None if math.isinf(got["radius"]) else int(got["radius"])
        if "border_k" in got:
            kb = got["border_k"]
            got["border_k"] = None if kb is None or self._checked_size(kb) == k else self._checked_size(kb)
        return PatchStep(k=k, **got)

    def _checked_size(self, k: int) -> int:
        """Zero padding: a window of 2 max(H, W) - 1 already sees the whole image from every
        pixel, and a larger one only adds zeros to both sides of every distance, so it gives the
        same result; it is clamped there (with a warning) instead of costing its area."""
        H, W = self.image_shape[1:]
        cover = 2 * max(H, W) - 1
        if self.padding == "zeros" and k > cover:
            warnings.warn(f"patch size {k} is larger than a {H}x{W} image needs; using {cover}, which covers the "
                          f"image from every pixel and gives the same result", stacklevel=5)
            return cover
        return k

    # ------------------------------------------------------------------ engine forms
    def _triton_wanted(self, x) -> bool:
        """Under "auto": the Triton kernel for CUDA tensors where Triton is installed (the CPU has its own)."""
        from ..engines import gpu

        return x.device.type == "cuda" and gpu.available(x)

    def _time_triton(self, x) -> bool:
        """Whether "auto" and "triton" time the two Triton forms against each other: on a GPU (under
        Triton's interpreter the times would say nothing, and the direct form runs)."""
        return x.device.type == "cuda"

    def _triton_form(self, geometry: Geometry, x):
        """The Triton engine of this machine's backend: one form, or under "auto" and "triton" both
        forms timed per patch size (:class:`~.forms.TritonChoice`) where both run and are timed."""
        from ..engines import gpu_displacement

        if self.backend == "triton-direct":
            return TritonForm(geometry)
        if self.backend == "triton-displacement":
            return TritonDisplacementForm(geometry)
        if self._time_triton(x) and gpu_displacement.available(x):
            return TritonChoice(geometry)
        return TritonForm(geometry)

    def _choose_engine(self, x, radius: int | None = None):
        """The engine of the steps at ``radius`` (candidates within that many pixels, :mod:`.candidates`;
        None: all): the attention form for a machine whose steps need it (a window, centring), else
        the backend's; a radius runs on the compiled kernel under "auto" or "native", else on the
        attention form."""
        geometry = Geometry(self.candidate_kind, self.padding, radius)
        attention = AttentionForm(geometry, self._cache, self.memory_budget, self._attention_backend)
        if self._attention_only:
            return attention
        if self.backend in TRITON_BACKENDS:
            from ..engines import gpu, gpu_displacement

            why = (gpu_displacement if self.backend == "triton-displacement" else gpu).why_unavailable(x)
            if why is not None:
                raise InputError(f"the {self.backend} backend cannot run here: {why}")
            return Fallback(self._triton_form(geometry, x), None, strict=True)
        if self.backend == "auto" and radius is None and self._triton_wanted(x):
            return Fallback(self._triton_form(geometry, x), attention)
        if self.backend == "native":
            if not disp.available(x):
                from ..engines.native import status

                raise InputError(f"the native backend needs the compiled kernel and float32/float64 CPU tensors "
                                 f"(kernel: {status()}; x: {x.dtype} on {x.device})")
            return DisplacementForm(geometry, self._cache, self.memory_budget)
        if self.backend == "auto" and disp.available(x):
            return DisplacementForm(geometry, self._cache, self.memory_budget)
        return attention

    def _nearest_bank(self, bank: Bank, x, a) -> Bank:
        """Approximate mode: the ``approx_images`` training images nearest to x [1, C, H, W] by
        |x - a Y_n|, chosen afresh at every call (not cached)."""
        Y = bank.as_float(x.dtype, x.device)
        d = ((x - a * Y) ** 2).flatten(1).sum(1)
        near = torch.topk(d, self.approx_images, largest=False).indices.sort().values
        return Bank(Y[near], bank.index[near.cpu()], bank.mean, key=None)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        """The rows of one class and patch size k, grouped by their step (:meth:`step_at`)."""
        groups: dict = {}
        for b, v in enumerate(t.tolist()):
            groups.setdefault(self.step_at(v, k), []).append(b)
        if len(groups) == 1:
            return self._denoise_step(x, a, s, next(iter(groups)), cls, trace)
        out = torch.empty_like(x)
        tr = Trace.empty(x.shape[0], x.shape[2], x.shape[3], x) if trace else None
        for step, idx in groups.items():
            sel = torch.tensor(idx, device=x.device)
            x0, sub = self._denoise_step(x[sel], a[sel], s[sel], step, cls, trace)
            out[sel] = x0
            if trace:
                tr.put(sel, sub)
        return out, tr

    def _denoise_step(self, x, a, s, step: PatchStep, cls, trace):
        """x0_hat (and the trace) of rows that share one step; a border size of its own replaces
        the estimate where a pixel's k window crosses the edge (docs/theory.md, "ELS with a patch
        size per pixel")."""
        out, tr = self._stream(x, a, s, step, step.k, cls, trace)
        if step.border_k is None:
            return out, tr
        mask = border_mask(x.shape[2], x.shape[3], step.k, x.device)
        if not bool(mask.any()):
            return out, tr
        x0, sub = self._stream(x, a, s, step, step.border_k, cls, trace)
        out = torch.where(mask, x0, out)
        if trace:
            for f in ("source_image", "source_pixel", "weight", "effective"):
                setattr(tr, f, torch.where(mask, getattr(sub, f), getattr(tr, f)))
        return out, tr

    def _stream(self, x, a, s, step: PatchStep, k: int, cls, trace):
        """One pass over the candidates at size k with the step's radius, temperature, window and
        centring: x0_hat [b, C, H, W] and the trace."""
        if step.temperature != 1.0:  # logits / T: x0_hat depends on s only through the logits
            s = s * math.sqrt(step.temperature)
        engine = self.engine(x, step.radius)
        bank = self.bank(cls)
        queries = lambda x, a, s: PatchQueries(x, a, s, k, step.window(k), step.centring)  # noqa: E731
        if self.subsetting:  # each row over its own subset (docs/theory.md, "Subsets with a bound")
            state = self._subset_state(x, a, s, k, cls, trace, lambda b, sub: engine.stream(
                queries(x[b : b + 1], a[b : b + 1], s[b : b + 1]), sub, trace=trace))
        elif self.approx_images is None or self.approx_images >= len(bank):
            state = engine.stream(queries(x, a, s), bank, trace=trace)
        else:  # each image meets only the patches of its nearest training images
            state = SoftmaxState.cat([
                engine.stream(queries(x[b : b + 1], a[b : b + 1], s[b : b + 1]),
                              self._nearest_bank(bank, x[b : b + 1], a[b]), trace=trace)
                for b in range(x.shape[0])])
        return self._finish(state, x, trace)

    def _finish(self, state: SoftmaxState, x, trace):
        """x0_hat [B, C, H, W] in x's dtype (and the trace) from a state over [B, H, W]."""
        fin = state.finalize(torch.float64, trace=trace)
        x0 = fin.out.to(x.dtype)
        if state.shift is not None:  # the attention form centred both sides by the training mean
            x0 = x0 + state.shift.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        if not trace:
            return x0, None
        HW = x.shape[2] * x.shape[3]
        code = state.source
        return x0, Trace(source_image=code // HW, source_pixel=code % HW, weight=fin.weight, effective=fin.effective,
                         patch_size=torch.full((x.shape[0],), -1, dtype=torch.long))

    def denoise_sizes(self, x: torch.Tensor, t, sizes, labels=None) -> list[torch.Tensor]:
        """x0_hat at each patch size of ``sizes`` (in that order): ``denoise(x, t, labels,
        patch_size=k)`` for each k, to rounding, from one pass over the candidates where a
        displacement form runs (the compiled kernel, or the Triton one; docs/theory.md, "Patch
        schedules"); elsewhere size by size."""
        if isinstance(sizes, (int, str, torch.Tensor)) or not hasattr(sizes, "__iter__"):
            raise InputError(f"sizes must be a list of odd patch sizes, got {sizes!r}")
        ks = [self._checked_size(checks.patch_size(k, "patch sizes")) for k in sizes]
        if not ks:
            raise InputError("give at least one patch size")
        x = checks.query(x, self.image_shape)
        B = x.shape[0]
        tt = checks.times(t, B)
        steps = [self.step_at(v, ks[0]) for v in tt.tolist()]
        radii = {st.radius for st in steps}
        engine = self.engine(x, next(iter(radii)))
        if (len(set(ks)) == 1 or self.approx_images is not None or self.subsetting or len(radii) > 1
                or not all(st.box or (st.radius is not None and replace(st, radius=None).box) for st in steps)
                or not getattr(engine, "several_sizes", False)):
            return [self.denoise(x, t, labels, patch_size=k) for k in ks]
        a, s = self.schedule.coefficients(tt, x)
        T = torch.tensor([st.temperature for st in steps], dtype=torch.float64)
        if bool((T != 1.0).any()):  # logits / T(t), as a call at each size divides them
            s = s * T.sqrt().to(device=s.device, dtype=s.dtype)
        uniq = sorted(set(ks))
        outs = {k: torch.empty_like(x) for k in uniq}
        most = engine.max_sizes
        for bidx, cls, _ in self._subsets(labels, [None] * B, B):
            sel = bidx.to(x.device)
            for j0 in range(0, len(uniq), most):
                part = uniq[j0 : j0 + most]
                state = engine.stream_sizes(PatchQueries(x[sel], a[sel], s[sel], part), self.bank(cls))
                got = state.finalize(torch.float64, trace=False).out.to(x.dtype)
                if state.shift is not None:  # a form that fell back to attention centred by the training mean
                    got = got + state.shift.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
                got = got.view(len(part), len(bidx), *x.shape[1:])
                for k, o in zip(part, got):
                    outs[k][sel] = o
        return [outs[k] for k in ks]

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        ps = self.patch_size
        k = f"a patch schedule of {len(ps.sizes)} steps" if isinstance(ps, PatchSchedule) else ps
        return (f"{type(self).__name__}(N={self.n_train}, C={C}, H={H}, W={W}, patch_size={k}, "
                f"padding={self.padding!r})")


class LocalMachine(PatchMachine):
    """LS, the local score machine: pixel q sees the patch at q of every training image.
    ``padding`` decides what a window past the border contains ("zeros" or "circular")."""

    candidate_kind = "ls"
    declaration = Declaration(
        name="ls", summary="LS, the local score machine: each pixel from the patches at the same pixel.",
        candidates="the patch at the same pixel of every training image", form=SOFTMAX, options=PATCH_OPTIONS,
        traceable=True, sizes_in_one_pass=True, backends=BACKENDS, order=10, label="LS", cost=patch_cost("ls"))


class ELSMachine(PatchMachine):
    """ELS, the equivariant local score machine.

    padding="circular": pixel q sees the patch at every pixel of every (periodically padded)
    training image. padding="zeros": the boundary-broken ELS of zero-padded networks; pixel q
    sees the patches at every pixel with q's padding footprint.
    """

    candidate_kind = "els"
    declaration = Declaration(
        name="els", summary="ELS, the equivariant local score machine (zeros: boundary-broken).",
        candidates="the patches at every pixel of every training image (zeros: those with the same padding "
                   "footprint)", form=SOFTMAX, options=PATCH_OPTIONS, traceable=True, sizes_in_one_pass=True,
        backends=BACKENDS, order=20, bench_paddings=("zeros", "circular"), label="ELS", default=True,
        cost=patch_cost("els"), baseline="patch softmax")
