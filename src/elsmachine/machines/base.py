"""The score machines' common body (docs/theory.md, "The score machines").

Every machine is a denoiser returning x0_hat = E[x_0 | x_t] under an empirical model of the
training set Y [N, C, H, W]:

    x0_hat(q) = sum over candidates (n, p) of w(n, p) * Y_n[:, p],
    w(n, p)  = softmax over candidates of -|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2),

and the machines differ only in which candidates (n, p) an output pixel q sees
(:mod:`.candidates`). This module holds what they share: the contract, class-conditional
subsets, the patch size looked up by t, the trace, the full set's description on a sharded
machine, and (:class:`CandidateMachine`) what the softmax machines add: the engine chosen once
per device and dtype, its key cache, and the progress of a long stream.

A machine class declares itself (:mod:`.declaration`); its name, whether it can be traced and
whether it has a patch size are read from that declaration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .. import checks
from ..engines.engine import Bank, KeyCache, as_float
from ..errors import InputError
from ..files import tensor_digest
from ..noise import CosineSchedule, NoiseSchedule
from ..patch_schedule import PatchSchedule
from .declaration import Declaration
from .subset import SubsetSelection

__all__ = ["ScoreMachine", "CandidateMachine", "PatchSized", "Trace", "DEFAULT_MEMORY_BUDGET", "BACKENDS",
           "TRITON_BACKENDS", "as_float"]

DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of candidate keys held at once (cache + one chunk)

# "auto": the compiled displacement kernel where it runs (CPU, float32/64), the Triton kernels on
# CUDA tensors where Triton is installed, else attention. "native": the displacement kernel (error
# where unavailable); "triton": a Triton kernel (on a GPU the faster of the two forms, timed per
# patch size); "triton-direct", "triton-displacement": that Triton form; "fused", "explicit":
# attention.
TRITON_BACKENDS = ("triton", "triton-direct", "triton-displacement")
BACKENDS = ("auto", "native", *TRITON_BACKENDS, "fused", "explicit")

TRACE_FIELDS = ("source_image", "source_pixel", "weight", "effective")


@dataclass
class Trace:
    """Where each output pixel of one denoiser call comes from. Fields are [B, H, W] unless said.

    source_image: int64 index into the machine's training set of the candidate with the
        largest weight; source_pixel: its flat pixel index i * W + j in that image;
    weight: that candidate's weight; effective: exp(entropy of the weights), the effective
        number of candidates; patch_size: int64 [B], the size used (-1 for machines without one).
    """

    source_image: torch.Tensor
    source_pixel: torch.Tensor
    weight: torch.Tensor
    effective: torch.Tensor
    patch_size: torch.Tensor

    @staticmethod
    def empty(B: int, H: int, W: int, like: torch.Tensor) -> "Trace":
        long = dict(dtype=torch.long, device=like.device)
        return Trace(source_image=torch.empty(B, H, W, **long), source_pixel=torch.empty(B, H, W, **long),
                     weight=like.new_empty(B, H, W), effective=like.new_empty(B, H, W),
                     patch_size=torch.full((B,), -1, **long))

    def put(self, sel: torch.Tensor, other: "Trace") -> None:
        """Write ``other`` (the trace of the batch rows ``sel``) into this one."""
        for f in (*TRACE_FIELDS, "patch_size"):
            dest = getattr(self, f)
            dest[sel] = getattr(other, f).to(device=dest.device, dtype=dest.dtype)


def _channel_mean(images: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """float64 [C]: the per-channel mean, summed block by block (never the whole set in float64)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    for n0 in range(0, images.shape[0], block):
        total += as_float(images[n0 : n0 + block], torch.float64, "cpu").sum(dim=(0, 2, 3))
    return total / (images.shape[0] * images.shape[2] * images.shape[3])


class ScoreMachine:
    """A closed-form denoiser over a training set. Subclasses declare themselves
    (``declaration``) and say in :meth:`_denoise_subset` what they compute.

    Args:
        images: training set, float [N, C, H, W] in [-1, 1]; or uint8 in 0..255 (v / 127.5 - 1,
            as the dataset loaders convert), a tensor or a numpy array, memory-mapped or not:
            kept as it is and converted block by block where an engine streams (LS and ELS
            on the CPU), so a large set costs a quarter of its float32 size.
        labels: optional int [N] class labels, for class-conditional denoising.
        schedule: the noise schedule (default: the paper's legacy cosine).
        memory_budget: bytes the machine may hold at once for its candidates; above it they are
            built and streamed in chunks of training images.
        distributed: inside an initialised ``torch.distributed`` group, keep only this rank's
            share of ``images`` (every rank passes the same full set, or its path) and merge the
            ranks' results: every rank returns what one process holding all would. The machine
            still describes the full set (``n_train``, ``training_fingerprint``).
    """

    declaration: Declaration
    name = "machine"
    has_patch_size = False
    traceable = False
    padding: str | None = None

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        decl = cls.__dict__.get("declaration")
        if isinstance(decl, Declaration):  # what the rest of the project reads, from the one statement
            cls.name, cls.traceable, cls.has_patch_size = decl.name, decl.traceable, decl.has_patch_size

    def __init__(self, images, *, labels=None, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False) -> None:
        if isinstance(images, (str, os.PathLike)):
            from ..datasets import load_dataset

            images = load_dataset(images).images
        images = checks.images_tensor(images, uint8=True)
        n = images.shape[0]
        labels = None if labels is None else checks.labels_tensor(labels, n, "training labels").cpu()
        # What describes the machine, and what every rank must agree on, comes from the full set.
        self.n_train = int(n)
        self._all_classes = [] if labels is None else sorted(int(c) for c in torch.unique(labels))
        self._full_set(images, labels)
        self.distributed = bool(distributed)
        self._fingerprint = None
        if self.distributed:
            from ..engines.distributed import shard_of

            self._fingerprint = tensor_digest(images, labels)  # the full set is here only now
            self._global = shard_of(n, labels).index
            images = images[self._global]
            labels = None if labels is None else labels[self._global]
        else:
            self._global = torch.arange(n)
        self.images, self.labels = images, labels
        self.schedule = schedule if schedule is not None else CosineSchedule()
        if not isinstance(self.schedule, NoiseSchedule):
            raise InputError(f"schedule must be a noise schedule (CosineSchedule, DiscreteSchedule), got "
                             f"{type(self.schedule).__name__}")
        self.memory_budget = checks.memory_budget(memory_budget)
        self._class_index: dict[int, torch.Tensor] = {}
        if self.labels is not None:
            for c in torch.unique(self.labels).tolist():
                self._class_index[int(c)] = torch.nonzero(self.labels == c).flatten()
        self._data: dict = {}

    def _full_set(self, images: torch.Tensor, labels) -> None:
        """Called with the full training set before a sharded machine keeps its share."""

    # ------------------------------------------------------------------ public contract
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the training images."""
        return tuple(self.images.shape[1:])

    @property
    def classes(self) -> list[int]:
        """Class labels that have training images (empty for an unlabelled machine)."""
        return list(self._all_classes)

    @property
    def training_fingerprint(self) -> str:
        """A digest of the full training set as given (images as stored, and labels)."""
        if self._fingerprint is None:
            self._fingerprint = tensor_digest(self.images, self.labels)
        return self._fingerprint

    def denoise(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        """x0_hat = E[x_0 | x_t = x]: [B, C, H, W], same dtype and device as ``x``.

        Args:
            x: noisy images [B, C, H, W].
            t: a float or a [B] tensor of times in (0, 1].
            labels: int64 [B]; each image is then denoised against its class only.
            patch_size: odd window size, overriding the machine's own (patch machines only).
        """
        return self._run(x, t, labels, patch_size, trace=False)[0]

    __call__ = denoise

    def denoise_traced(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None):
        """Like :meth:`denoise`, also returning a :class:`Trace` of where each pixel comes from."""
        self.check_traceable()
        return self._run(x, t, labels, patch_size, trace=True)

    def check_traceable(self) -> None:
        """Refuse, by name, a trace of a machine that has no best candidate per pixel to name."""
        if not self.traceable:
            raise InputError(f"{type(self).__name__} cannot be traced: it has no candidate with the largest weight "
                             f"per pixel to name (its candidates: {self.declaration.candidates})")

    def eps(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        """eps_hat = (x_t - a x0_hat) / s."""
        a, s = self.schedule.coefficients(checks.times(t, x.shape[0]), x)
        return (x - a.view(-1, 1, 1, 1) * self.denoise(x, t, labels, patch_size)) / s.view(-1, 1, 1, 1)

    def score(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        """score = -eps_hat / s."""
        s = self.schedule.coefficients(checks.times(t, x.shape[0]), x)[1]
        return -self.eps(x, t, labels, patch_size) / s.view(-1, 1, 1, 1)

    def describe(self) -> dict:
        """The settings that decide this machine's output (for results files): its name, the full
        training set's size, whether it is conditional, the noise schedule, and every option its
        declaration records."""
        d = {"machine": self.name, "n_train": self.n_train, "conditional": self.labels is not None,
             "schedule": self.schedule.to_dict()}
        for opt in self.declaration.options:
            if opt.recorded:
                d[opt.name] = opt.recorded_value(getattr(self, opt.name))
        return d

    # ------------------------------------------------------------------ shared machinery
    def _sizes(self, tt: torch.Tensor, patch_size) -> list[int | None]:
        """The patch size of each batch element at its time (None for machines without one)."""
        if patch_size is not None:
            raise InputError(f"{type(self).__name__} has no patch size; got patch_size={patch_size!r}")
        return [None] * tt.shape[0]

    def _run(self, x, t, labels, patch_size, trace):
        x = checks.query(x, self.image_shape)
        B, _, H, W = x.shape
        tt = checks.times(t, B)
        sizes = self._sizes(tt, patch_size)
        a, s = self.schedule.coefficients(tt, x)
        out = torch.empty_like(x)
        tr = Trace.empty(B, H, W, x) if trace else None
        groups = self._subsets(labels, sizes, B)
        self._call_starts()
        for bidx, cls, k in groups:
            sel = bidx.to(x.device)
            x0, sub = self._denoise_subset(x[sel], a[sel], s[sel], k, cls, trace, tt[bidx])
            out[sel] = x0
            if trace:
                sub.patch_size = torch.full((len(bidx),), -1 if k is None else k, dtype=torch.long)
                tr.put(sel, sub)
        self._call_ends(tt)
        return out, tr

    def _call_starts(self) -> None:
        """Told before a call's first batch rows are denoised (what a machine reports per call)."""

    def _call_ends(self, tt: torch.Tensor) -> None:
        """Told after a call's rows, at times ``tt`` [B], were all denoised."""

    def _subsets(self, labels, sizes, B):
        """(batch indices, class or None, patch size) triples: each batch element meets only
        its class, and elements with different patch sizes run apart."""
        if labels is None:
            cls_of = [None] * B
        else:
            if self.labels is None:
                raise InputError("labels were given but the machine was built without training labels")
            lab = checks.labels_tensor(labels, B, "labels").cpu()
            for c in torch.unique(lab).tolist():
                if int(c) not in self._all_classes:
                    raise InputError(f"class {c} has no training images (classes present: {self.classes})")
            cls_of = [int(c) for c in lab.tolist()]
        groups: dict = {}
        for b, key in enumerate(zip(cls_of, sizes)):
            groups.setdefault(key, []).append(b)
        return [(torch.tensor(idx), cls, k) for (cls, k), idx in groups.items()]

    def _index(self, cls) -> torch.Tensor:
        """Positions in this machine's images of class ``cls`` (all if None; possibly none on a rank)."""
        if cls is None:
            return torch.arange(self.images.shape[0])
        return self._class_index.get(cls, torch.zeros(0, dtype=torch.long))

    def _training(self, dtype, device, cls):
        """Training images of class ``cls`` (all if None; on a sharded machine, this rank's share,
        possibly none) in ``dtype`` on ``device``, converted once, and their global indices."""
        key = (dtype, device, cls)
        hit = self._data.get(key)
        if hit is None:
            idx = self._index(cls)
            hit = self._data[key] = (as_float(self.images[idx], dtype, device), self._global[idx])
        return hit

    def _merge(self, state) -> None:
        """On a sharded machine, merge a softmax state with every rank's (codes must be global)."""
        if self.distributed:
            from ..engines.distributed import gather_merge_

            gather_merge_(state)

    def _denoise_subset(self, x, a, s, k, cls, trace, t):  # pragma: no cover - abstract
        """x0_hat [b, C, H, W] (and a Trace) of the batch rows x, all of class ``cls`` and size
        ``k``; a, s are their coefficients and t their times [b] (float64)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        return f"{type(self).__name__}(N={self.n_train}, C={C}, H={H}, W={W})"


class CandidateMachine(SubsetSelection, ScoreMachine):
    """A softmax machine: x0_hat is the softmax-weighted average of the training pixels its
    candidates hold (docs/theory.md, "The score machines"). It streams a bank of candidates
    through one engine (:mod:`elsmachine.engines.engine`), chosen once per device and dtype by
    :meth:`_choose_engine` and wrapped in the sharded bank when ``distributed``.

    Args (beyond :class:`ScoreMachine`'s):
        backend: one of the declaration's backends: "auto" (default: the compiled displacement
            kernel where it runs, the Triton kernels for CUDA tensors where Triton is installed,
            else the attention form), "native" (the kernel, or an error), "triton" (a GPU
            kernel, or an error; on a GPU both forms are timed at each patch size's first use
            and the faster kept), "triton-direct" or "triton-displacement" (that GPU form),
            "fused" or "explicit" (attention variants; see :mod:`elsmachine.engines.attention`).
        subset, subset_bound, subset_pool: the opt-in subset mode with a bound, for machines that
            declare it (:mod:`.subset`; docs/theory.md, "Subsets with a bound"): each query image
            meets only ``subset`` images of its class (a count or a share), or the shortest
            doubling prefix whose left-out share is at most ``subset_bound``, ranked by a screen
            pooled over ``subset_pool`` x ``subset_pool`` blocks; ``subset_report`` holds each
            call's subset size and bound. None (the default) is exact.

    ``on_candidates(done, total)``, when set, is told how far a long call has streamed the bank.
    """

    def __init__(self, images, *, labels=None, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, backend: str = "auto", distributed: bool = False,
                 subset=None, subset_bound=None, subset_pool: int = 4) -> None:
        if backend not in BACKENDS:
            raise InputError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend not in self.declaration.backends:
            raise InputError(self._no_backend(backend))
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed)
        self.backend = backend
        self._attention_backend = backend if backend in ("fused", "explicit") else "auto"
        self._cache = KeyCache(self.memory_budget)
        self._engines: dict = {}
        self._banks: dict = {}
        self.on_candidates = None
        self._init_subset(subset, subset_bound, subset_pool, distributed)

    def _no_backend(self, backend: str) -> str:
        return (f"the {self.name} machine has no {backend} backend; it takes {', '.join(self.declaration.backends)}")

    def _full_set(self, images, labels) -> None:
        # Both sides are centred by the full set's mean (a constant per query would not cancel
        # across ranks).
        self._mu = _channel_mean(images)

    def engine(self, x: torch.Tensor, variant=None):
        """The engine this machine streams tensors like ``x`` through (chosen at first use).
        ``variant``: what else the choice depends on, passed to :meth:`_choose_engine` (the
        step's radius for an ELS-family machine whose candidates change per step; None for most)."""
        key = (x.device, x.dtype, variant)
        hit = self._engines.get(key)
        if hit is None:
            hit = self._choose_engine(x) if variant is None else self._choose_engine(x, variant)
            if self.distributed:
                from ..engines.distributed import Sharded

                hit = Sharded(hit)
            self._engines[key] = hit
        return hit

    def engine_name(self, x: torch.Tensor) -> str:
        """The name of the engine form tensors like ``x`` run on (for benchmarks and reports)."""
        return self.engine(x).name

    def engine_report(self) -> dict:
        """How the engines chosen so far chose themselves, by "device dtype": where the two Triton
        forms were timed against each other, the form kept at each patch size and the measured
        times; empty where nothing was timed."""
        out = {}
        for (dev, dt, variant), eng in self._engines.items():
            own = getattr(eng, "report", None)
            got = own() if callable(own) else None
            if got:
                out[f"{dev} {str(dt).removeprefix('torch.')}" + ("" if variant is None else f" {variant}")] = got
        return out

    def describe(self) -> dict:
        """As :meth:`ScoreMachine.describe`, and, once engines were timed against each other,
        "engine": :meth:`engine_report` (how it ran: it decides nothing beyond rounding, so
        results leave it out of their settings keys)."""
        d = super().describe()
        how = self.engine_report()
        if how:
            d["engine"] = how
        return d

    def _choose_engine(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def bank(self, cls) -> Bank:
        """The candidates of class ``cls`` (all if None) on this rank: the images as stored (a
        class's gathered once), their global indices and the full set's mean."""
        hit = self._banks.get(cls)
        if hit is None:
            idx = None if cls is None else self._index(cls)
            images = self.images if idx is None else self.images[idx]
            index = self._global if idx is None else self._global[idx]
            hit = self._banks[cls] = Bank(images, index, self._mu, key=("class", cls))
        hit.progress = self.on_candidates
        return hit


class PatchSized:
    """What machines with a patch size share: ``self.patch_size`` is one size or a
    :class:`~elsmachine.PatchSchedule` (as :func:`~elsmachine.patch_schedule.as_patch_schedule`
    makes it), looked up by t at each call; ``denoise(..., patch_size=k)`` overrides it.
    Subclasses say in :meth:`_checked_size` what they do with a size their images cannot use."""

    has_patch_size = True
    patch_size: int | PatchSchedule | None = None

    def patch_size_at(self, t: float) -> int:
        """The machine's own patch size at time ``t`` (before :meth:`_checked_size`)."""
        if self.patch_size is None:
            raise InputError(f"{type(self).__name__} needs a patch size: pass patch_size= to the machine or to denoise")
        return self.patch_size if isinstance(self.patch_size, int) else self.patch_size.size_at(t, self.schedule)

    def _checked_size(self, k: int) -> int:
        return k

    def denoise_sizes(self, x: torch.Tensor, t, sizes, labels=None) -> list[torch.Tensor]:
        """x0_hat at each patch size of ``sizes`` (in that order), as ``denoise(..., patch_size=k)``
        gives it; machines whose engine shares work between sizes do so."""
        return [self.denoise(x, t, labels, patch_size=k) for k in sizes]

    def sizes_on(self, grid: torch.Tensor) -> list[int]:
        """The patch size this machine uses at each step of ``grid`` (descending, ending at 0)."""
        return self._sizes(grid[:-1], None)

    def _sizes(self, tt, patch_size):
        if patch_size is not None:
            return [self._checked_size(checks.patch_size(patch_size))] * tt.shape[0]
        by_time: dict[float, int] = {}
        for t in tt.tolist():
            if t not in by_time:
                by_time[t] = self._checked_size(self.patch_size_at(t))
        return [by_time[t] for t in tt.tolist()]
