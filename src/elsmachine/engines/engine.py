"""The one engine interface (docs/theory.md, "How it computes"): an engine streams a bank of
candidates past a set of queries and returns the softmax state of :mod:`.softmax`, whose
best-candidate codes are already global (training image, pixel).

    state = engine.stream(queries, bank, trace=...)

The attention form, the compiled displacement form and the Triton kernel implement it for patch
candidates (:mod:`elsmachine.machines.forms`, which knows which candidates a pixel sees); the
sharded bank (:class:`~.distributed.Sharded`) wraps any of them; :class:`Fallback` keeps to a
second engine after the first one fails on a device. A machine chooses its engine once per device
and dtype and owns what follows the stream: the class subsets, the finalisation and the trace.
Nothing calls back from an engine into the machine.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import replace
from typing import Protocol, runtime_checkable

import torch

from ..errors import InputError, RunError
from .softmax import SoftmaxState

__all__ = ["Engine", "Bank", "KeyCache", "Fallback", "as_float"]


def as_float(images: torch.Tensor, dtype, device) -> torch.Tensor:
    """Training images in ``dtype`` on ``device``; uint8 v becomes v / 127.5 - 1 computed in
    float32, exactly what the dataset loaders make of the same file."""
    if images.dtype == torch.uint8:
        return (images.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)
    return images.to(device=device, dtype=dtype)


class Bank:
    """The candidate images an engine streams: ``images`` [n, C, H, W] as stored (uint8 or
    float; converted block by block where an engine streams them), their global indices
    ``index`` [n] (int64, CPU) in the machine's full training set, ``mean`` [C] (float64) the
    per-channel mean of the full set that attention forms centre both sides by, and ``key``, a
    name for the key cache (None: do not cache). ``progress(done, total)``, when set, hears how
    many images a stream has passed (a user's progress bar, not the machine)."""

    def __init__(self, images: torch.Tensor, index: torch.Tensor, mean: torch.Tensor, key=None, progress=None) -> None:
        self.images, self.index, self.mean, self.key, self.progress = images, index, mean, key, progress
        self._float: dict = {}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def as_float(self, dtype, device) -> torch.Tensor:
        """All the images in ``dtype`` on ``device``, converted once."""
        hit = self._float.get((dtype, device))
        if hit is None:
            hit = self._float[(dtype, device)] = as_float(self.images, dtype, device)
        return hit

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


class KeyCache:
    """Candidate keys kept between calls within half of a memory budget, least recently used
    evicted; keys that would not fit are not built here (the engine streams them in chunks)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._keys: OrderedDict = OrderedDict()
        self._bytes = 0

    def get(self, key, nbytes: int, build):
        """The keys named ``key`` (built by ``build()`` when missing), or None when ``nbytes``,
        an upper bound on their size, exceeds half the budget. ``key`` None: built, not kept."""
        if key is None:
            return build() if nbytes <= self.budget // 2 else None
        hit = self._keys.get(key)
        if hit is not None:
            self._keys.move_to_end(key)
            return hit
        if nbytes > self.budget // 2:
            return None
        while self._keys and self._bytes + nbytes > self.budget // 2:
            _, old = self._keys.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        keys = build()
        self._keys[key] = keys
        self._bytes += keys.numel() * keys.element_size()
        return keys


@runtime_checkable
class Engine(Protocol):
    """Streams ``bank`` past ``queries``; the state's ``source`` (with ``trace``) holds global codes."""

    name: str

    def stream(self, queries, bank: Bank, *, trace: bool) -> SoftmaxState: ...


class Wrapping:
    """An engine around another one (``inner``) that states what the inner one states: its name,
    whether it takes several patch sizes in one pass and how many, and its :meth:`report`."""

    def __init__(self, inner) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def several_sizes(self) -> bool:
        return getattr(self.inner, "several_sizes", False)

    @property
    def max_sizes(self) -> int:
        return self.inner.max_sizes

    def report(self) -> dict:
        """What the inner engine states about how it chose itself (forms timed against each other), if anything."""
        own = getattr(self.inner, "report", None)
        return (own() if callable(own) else {}) or {}


class Fallback(Wrapping):
    """``primary`` until it fails on this device, then ``secondary`` for good, with one warning
    (a GPU kernel whose compiler or driver fails here). An :class:`InputError` is the caller's and
    passes through; with ``strict`` any failure is one :class:`RunError`. Several patch sizes in
    one pass go to ``primary`` where it takes them; after a failure the secondary streams them
    size by size."""

    def __init__(self, primary, secondary, *, strict: bool = False) -> None:
        super().__init__(primary)
        self.secondary, self.strict = secondary, strict
        self.failed = False

    @property
    def primary(self):
        return self.inner

    @property
    def name(self) -> str:
        return self.secondary.name if self.failed else self.primary.name

    @property
    def several_sizes(self) -> bool:
        return not self.failed and super().several_sizes

    def _fail(self, e: Exception, queries) -> None:
        where = getattr(queries, "device", "this device")
        if self.strict or self.secondary is None:
            first = str(e).splitlines()[0] if str(e) else ""
            raise RunError(f"the {self.primary.name} kernel failed on {where}: {type(e).__name__}: "
                           f"{first}") from None
        warnings.warn(f"the {self.primary.name} kernel failed on {where} ({type(e).__name__}); using the "
                      f"{self.secondary.name} form instead", stacklevel=5)
        self.failed = True

    def stream(self, queries, bank: Bank, *, trace: bool) -> SoftmaxState:
        if not self.failed:
            try:
                return self.primary.stream(queries, bank, trace=trace)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - the kernel's compiler or driver, on this device
                self._fail(e, queries)
        return self.secondary.stream(queries, bank, trace=trace)

    def stream_sizes(self, queries, bank: Bank) -> SoftmaxState:
        """The states of the sizes ``queries.k``, stacked as the primary's ``stream_sizes`` gives them."""
        if not self.failed:
            try:
                return self.primary.stream_sizes(queries, bank)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - the kernel's compiler or driver, on this device
                self._fail(e, queries)
        return SoftmaxState.cat([self.secondary.stream(replace(queries, k=k), bank, trace=False) for k in queries.k])
