"""The score machines' common body (docs/theory.md, "The score machines").

Every machine is a denoiser returning x0_hat = E[x_0 | x_t] under an empirical model of the
training set Y [N, C, H, W]:

    x0_hat(q) = sum over candidates (n, p) of w(n, p) * Y_n[:, p],
    w(n, p)  = softmax over candidates of -|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2),

and the machines differ only in which candidates (n, p) an output pixel q sees
(:mod:`.candidates`). This module holds what they share: the contract, class-conditional
subsets, the patch size looked up by t, the trace, and the caches of converted training data.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .. import checks
from ..errors import InputError
from ..noise import CosineSchedule, NoiseSchedule
from ..patch_schedule import PatchSchedule

__all__ = ["ScoreMachine", "PatchSized", "Trace", "DEFAULT_MEMORY_BUDGET", "BACKENDS", "as_float"]

DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of candidate keys held at once (cache + one chunk)

# "auto": the compiled displacement kernel where it runs (CPU, float32/64), else attention.
# "native": the displacement kernel (error where unavailable); "fused", "explicit": attention.
BACKENDS = ("auto", "native", "triton", "fused", "explicit")

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


def as_float(images: torch.Tensor, dtype, device) -> torch.Tensor:
    """Training images in ``dtype`` on ``device``; uint8 v becomes v / 127.5 - 1 computed in
    float32, exactly what the dataset loaders make of the same file."""
    if images.dtype == torch.uint8:
        return (images.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)
    return images.to(device=device, dtype=dtype)


def _channel_mean(images: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """float64 [C]: the per-channel mean, summed block by block (never the whole set in float64)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    for n0 in range(0, images.shape[0], block):
        total += as_float(images[n0 : n0 + block], torch.float64, "cpu").sum(dim=(0, 2, 3))
    return total / (images.shape[0] * images.shape[2] * images.shape[3])


class ScoreMachine:
    """A closed-form denoiser over a training set. Subclasses say which candidates a pixel sees.

    Args:
        images: training set, float [N, C, H, W] in [-1, 1]; or uint8 in 0..255 (v / 127.5 - 1,
            as the dataset loaders convert), a tensor or a numpy array, memory-mapped or not:
            kept as it is and converted block by block where the engine streams (LS and ELS
            on the CPU), so a large set costs a quarter of its float32 size.
        labels: optional int [N] class labels, for class-conditional denoising.
        schedule: the noise schedule (default: the paper's legacy cosine).
        memory_budget: bytes of candidate keys the machine may hold at once; above it keys are
            built and streamed in chunks of training images.
        distributed: inside an initialised ``torch.distributed`` group, keep only this rank's
            share of ``images`` (every rank passes the same full set, or its path) and merge the
            ranks' softmax states: every rank returns what one process holding all would.
        backend: "auto" (default: the compiled displacement kernel where it runs, else the
            attention engine; the Triton kernel for LS and ELS on CUDA tensors where Triton is
            installed), "native" (the kernel, or an error), "triton" (the GPU kernel for LS and
            ELS, or an error), "fused" or "explicit"
            (attention engine variants; see :mod:`elsmachine.engines.attention`).
    """

    name = "machine"
    has_patch_size = False
    traceable = True  # has a candidate with the largest weight per pixel to name
    padding: str | None = None

    def __init__(self, images, *, labels=None, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, backend: str = "auto", distributed: bool = False) -> None:
        if isinstance(images, (str, os.PathLike)):
            from ..datasets import load_dataset

            images = load_dataset(images).images
        images = checks.images_tensor(images, uint8=True)
        n = images.shape[0]
        labels = None if labels is None else checks.labels_tensor(labels, n, "training labels").cpu()
        # What every rank must agree on comes from the full set: its classes and its mean (both
        # sides are centred by it, and a constant per query would not cancel across ranks).
        self._all_classes = [] if labels is None else sorted(int(c) for c in torch.unique(labels))
        self._mu = _channel_mean(images)
        self.distributed = bool(distributed)
        if self.distributed:
            from ..engines.distributed import shard_of

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
        if backend not in BACKENDS:
            raise InputError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        self._attention_backend = backend if backend in ("fused", "explicit") else "auto"
        self._class_index: dict[int, torch.Tensor] = {}
        if self.labels is not None:
            for c in torch.unique(self.labels).tolist():
                self._class_index[int(c)] = torch.nonzero(self.labels == c).flatten()
        self._data: dict = {}
        # Called as on_candidates(images done, images in all) while a long call streams its bank.
        self.on_candidates = None
        self._keys: OrderedDict = OrderedDict()
        self._keys_bytes = 0

    # ------------------------------------------------------------------ public contract
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the training images."""
        return tuple(self.images.shape[1:])

    @property
    def classes(self) -> list[int]:
        """Class labels that have training images (empty for an unlabelled machine)."""
        return list(self._all_classes)

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
        return self._run(x, t, labels, patch_size, trace=True)

    def eps(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        """eps_hat = (x_t - a x0_hat) / s."""
        a, s = self.schedule.coefficients(checks.times(t, x.shape[0]), x)
        return (x - a.view(-1, 1, 1, 1) * self.denoise(x, t, labels, patch_size)) / s.view(-1, 1, 1, 1)

    def score(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        """score = -eps_hat / s."""
        s = self.schedule.coefficients(checks.times(t, x.shape[0]), x)[1]
        return -self.eps(x, t, labels, patch_size) / s.view(-1, 1, 1, 1)

    def describe(self) -> dict:
        """The settings that decide this machine's output (for results files)."""
        return {"machine": self.name, "n_train": int(self.images.shape[0]), "conditional": self.labels is not None,
                "schedule": self.schedule.to_dict()}

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
        for bidx, cls, k in self._subsets(labels, sizes, B):
            sel = bidx.to(x.device)
            x0, sub = self._denoise_subset(x[sel], a[sel], s[sel], k, cls, trace, tt[bidx])
            out[sel] = x0
            if trace:
                sub.patch_size = torch.full((len(bidx),), -1 if k is None else k, dtype=torch.long)
                tr.put(sel, sub)
        return out, tr

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

    def _training(self, dtype, device, cls):
        """Training images of class ``cls`` (all if None; on a sharded machine, this rank's share,
        possibly none) in x's dtype and device, their global indices, and the per-channel mean of
        the full training set used to centre both sides."""
        key = (dtype, device, cls)
        hit = self._data.get(key)
        if hit is None:
            if cls is None:
                idx = torch.arange(self.images.shape[0])
            else:
                idx = self._class_index.get(cls, torch.zeros(0, dtype=torch.long))
            Y = as_float(self.images[idx], dtype, device)
            hit = (Y, self._global[idx], self._mu.to(device=device, dtype=dtype))
            self._data[key] = hit
        return hit

    def _report(self, done: int, total: int) -> None:
        """Tell ``on_candidates`` (when set) how many training images one call has streamed."""
        if self.on_candidates is not None:
            self.on_candidates(done, total)

    def _raw(self, cls):
        """Training images of class ``cls`` (all if None) as stored (uint8 stays uint8; all of
        them without a copy; a class's gathered once) and their global indices: for engines that
        convert block by block."""
        if cls is None:
            return self.images, self._global
        hit = self._data.get(("stored", cls))
        if hit is None:
            idx = self._class_index.get(cls, torch.zeros(0, dtype=torch.long))
            hit = self._data[("stored", cls)] = (self.images[idx], self._global[idx])
        return hit

    def _combine(self, state) -> None:
        """Before a state is finalised: on a sharded machine, merge it with every rank's (its
        ``source`` must hold global codes by then)."""
        if self.distributed:
            from ..engines.distributed import gather_merge_

            gather_merge_(state)

    def _cached_keys(self, key, nbytes, build):
        """Keys for one block: cached when they fit half the budget, least recently used evicted.
        ``nbytes`` is an upper bound on the size ``build()`` will return; None when they do not
        fit (the caller streams them in chunks instead)."""
        if key is None:
            return build() if nbytes <= self.memory_budget // 2 else None
        hit = self._keys.get(key)
        if hit is not None:
            self._keys.move_to_end(key)
            return hit
        if nbytes > self.memory_budget // 2:
            return None
        while self._keys and self._keys_bytes + nbytes > self.memory_budget // 2:
            _, old = self._keys.popitem(last=False)
            self._keys_bytes -= old.numel() * old.element_size()
        keys = build()
        self._keys[key] = keys
        self._keys_bytes += keys.numel() * keys.element_size()
        return keys

    def _denoise_subset(self, x, a, s, k, cls, trace, t):  # pragma: no cover - abstract
        """x0_hat [b, C, H, W] (and a Trace) of the batch rows x, all of class ``cls`` and size
        ``k``; a, s are their coefficients and t their times [b] (float64)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        return f"{type(self).__name__}(N={self.images.shape[0]}, C={C}, H={H}, W={W})"


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
        return self.patch_size if isinstance(self.patch_size, int) else self.patch_size.size_at(t)

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

    def describe(self) -> dict:
        ps = self.patch_size
        # A schedule's times and sizes decide the output; its meta is provenance only.
        return {**super().describe(),
                "patch_size": {"ts": list(ps.ts), "sizes": list(ps.sizes)} if isinstance(ps, PatchSchedule) else ps}
