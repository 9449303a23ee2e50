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
call reports a bound on the share of every pixel's softmax left out (:mod:`.subset`).
"""

from __future__ import annotations

import warnings

import torch

from .. import checks
from ..engines import displacement as disp
from ..engines.engine import Bank, Fallback
from ..engines.softmax import SoftmaxState
from ..errors import InputError
from ..noise import NoiseSchedule
from ..patch_schedule import PatchSchedule, as_patch_schedule
from .base import BACKENDS, DEFAULT_MEMORY_BUDGET, TRITON_BACKENDS, CandidateMachine, PatchSized, Trace
from .declaration import PATCH_SIZE, SOFTMAX, Declaration, Option
from .forms import (AttentionForm, DisplacementForm, Geometry, PatchQueries, TritonChoice,
                    TritonDisplacementForm, TritonForm)
from .subset import SUBSET_OPTIONS

__all__ = ["PatchMachine", "LocalMachine", "ELSMachine", "PATCH_OPTIONS"]

PADDING = Option("padding", str, "zeros", "zeros: boundary-broken ELS; circular: periodic.", flag="--padding",
                 choices=("zeros", "circular"))
BACKEND = Option("backend", str, "auto", "The engine form: auto, native (the compiled CPU kernel), triton (a GPU "
                 "kernel: both forms timed per size on a GPU, the faster kept), triton-direct or triton-displacement "
                 "(one GPU form), fused or explicit (attention).", flag="--backend", choices=BACKENDS, recorded=False)
APPROX_IMAGES = Option("approx_images", int, None, "Approximate: each noisy image meets only the patches of its N "
                       "nearest training images.", flag="--approx-images")
APPROX_RADIUS = Option("approx_radius", int, None, "Approximate (ELS, compiled kernel): candidates at most this many "
                       "pixels from the query along each axis.", flag="--approx-radius")
PATCH_OPTIONS = (PATCH_SIZE, PADDING, BACKEND, APPROX_IMAGES, APPROX_RADIUS, *SUBSET_OPTIONS)


class PatchMachine(PatchSized, CandidateMachine):
    """Shared body of LS and ELS: patch sizes, the two engine forms, streamed candidates.
    ``candidate_kind`` ("ls" or "els") says which candidates a pixel sees (:mod:`.candidates`).

    Args (beyond :class:`CandidateMachine`'s):
        patch_size: one odd size, one per step of the default grid (highest t first), a preset
            name, a :class:`~elsmachine.PatchSchedule`, or a schedule file.
        padding: "zeros" or "circular".
        approx_images: (approximate) each noisy image meets only the patches of its
            ``approx_images`` nearest training images by |x_t - a Y_n|, chosen afresh per call.
        approx_radius: (approximate, ELS, compiled kernel) pixel q meets only the candidates at
            most this many pixels away along each axis (around the torus for circular); 0 is
            LS, a radius as large as the image is exact ELS.
        subset, subset_bound, subset_pool: (approximate, with a bound) see
            :class:`CandidateMachine` and :mod:`.subset`.

    ``els bench`` reports the approximate modes' speed-up and fidelity to the exact machine.
    """

    def __init__(self, images, patch_size=None, padding: str = "zeros", *, labels=None,
                 schedule: NoiseSchedule | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 backend: str = "auto", approx_images: int | None = None, approx_radius: int | None = None,
                 distributed: bool = False, subset=None, subset_bound=None, subset_pool: int = 4) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, backend=backend,
                         distributed=distributed, subset=subset, subset_bound=subset_bound, subset_pool=subset_pool)
        if self.subsetting and (approx_images is not None or approx_radius is not None):
            raise InputError("subset= is a mode of its own: not with approx_images or approx_radius")
        if distributed and approx_images is not None:
            raise InputError("approx_images picks the nearest images of the whole set: not on a sharded machine")
        self.patch_size = as_patch_schedule(patch_size, schedule=self.schedule)
        self.padding = checks.padding(padding)
        if approx_images is not None:
            approx_images = checks.positive_int(approx_images, "approx_images")
        self.approx_images = approx_images
        if approx_radius is not None:
            if isinstance(approx_radius, bool) or not isinstance(approx_radius, int) or approx_radius < 0:
                raise InputError(f"approx_radius must be a non-negative integer or None, got {approx_radius!r}")
            if self.candidate_kind != "els":
                raise InputError("approx_radius applies to ELS only (LS candidates sit at the query pixel already)")
            if backend not in ("auto", "native"):
                raise InputError(f"approx_radius needs the native backend, not backend={backend!r}")
        self.approx_radius = approx_radius

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

        return x.device.type == "cuda" and gpu.available(x) and self.approx_radius is None

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
        """``radius``: candidates within that many pixels (:mod:`.candidates`), on the compiled
        kernel under "auto" or "native", else on the attention form; None: ``approx_radius``."""
        if radius is None:
            radius = self.approx_radius
        geometry = Geometry(self.candidate_kind, self.padding, radius)
        attention = AttentionForm(geometry, self._cache, self.memory_budget, self._attention_backend)
        if self.backend in TRITON_BACKENDS:
            from ..engines import gpu, gpu_displacement

            why = (gpu_displacement if self.backend == "triton-displacement" else gpu).why_unavailable(x)
            if why is not None:
                raise InputError(f"the {self.backend} backend cannot run here: {why}")
            return Fallback(self._triton_form(geometry, x), None, strict=True)
        if self.backend == "auto" and radius is None and self._triton_wanted(x):
            return Fallback(self._triton_form(geometry, x), attention)
        if self.backend == "native" or self.approx_radius is not None:
            if not disp.available(x):
                from ..engines.native import status

                what = "approx_radius" if self.approx_radius is not None else "the native backend"
                raise InputError(f"{what} needs the compiled kernel and float32/float64 CPU tensors "
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

    def _logit_noise(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The s that divides the logits, |P_q(x_t) - a P|^2 / (2 s^2), at times t [b]: the
        schedule's own (a subclass may rescale it; x0_hat depends on s only through the logits)."""
        return s

    def _engine_at(self, x: torch.Tensor, t: torch.Tensor):
        """The engine the rows x at times t [b] stream through: the machine's one engine (a
        subclass whose candidates change with t picks one per t)."""
        return self.engine(x)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None, window=None):
        """``window``: weights [k, k] of a windowed patch distance (attention form; None: the box)."""
        s = self._logit_noise(s, t)
        engine = self._engine_at(x, t)
        bank = self.bank(cls)
        if self.subsetting:  # each row over its own subset (docs/theory.md, "Subsets with a bound")
            if window is not None:
                raise InputError("subset= bounds box patch distances; a windowed distance has no bound here")
            state = self._subset_state(x, a, s, k, cls, trace, lambda b, sub: engine.stream(
                PatchQueries(x[b : b + 1], a[b : b + 1], s[b : b + 1], k), sub, trace=trace))
        elif self.approx_images is None or self.approx_images >= len(bank):
            state = engine.stream(PatchQueries(x, a, s, k, window), bank, trace=trace)
        else:  # each image meets only the patches of its nearest training images
            state = SoftmaxState.cat([
                engine.stream(PatchQueries(x[b : b + 1], a[b : b + 1], s[b : b + 1], k, window),
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
        engine = self.engine(x)
        if (len(set(ks)) == 1 or self.approx_images is not None or self.subsetting
                or not getattr(engine, "several_sizes", False)):
            return [self.denoise(x, t, labels, patch_size=k) for k in ks]
        B = x.shape[0]
        tt = checks.times(t, B)
        a, s = self.schedule.coefficients(tt, x)
        s = self._logit_noise(s, tt)
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
        traceable=True, sizes_in_one_pass=True, backends=BACKENDS, order=10)


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
        backends=BACKENDS, order=20, bench_paddings=("zeros", "circular"))
