"""The attention form of the engine: softmax attention of queries over a stream of key chunks.

docs/theory.md, "The computation is attention". For every group g and query row i,

    out[g, i] = sum_j w[g, i, j] * keys[g, j, value_cols],
    w[g, i, :] = softmax_j(q[g, i] . keys[g, j]),

where the keys arrive in chunks along j and are folded into one :class:`SoftmaxState`. The engine
knows nothing about images or patches: the machines decide which candidates a query sees by
what they put in each group.

Two interchangeable ways to do one chunk:
- "explicit" (the default): logits by batched matrix multiply, then max, exp and sums in place
  on a reused buffer. It also gives the trace (best candidate, its weight, the entropy).
- "fused" (opt-in): PyTorch's fused flash-attention kernel on the CPU, which returns the
  chunk's output and log-sum-exp, merged into the state exactly. Faster, but its float32
  results drift from float64 by up to ~1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from ..errors import InputError
from .softmax import SoftmaxState, exp_floor

__all__ = ["Attended", "attend", "attention_state", "ATTENTION_BACKENDS"]

ATTENTION_BACKENDS = ("auto", "fused", "explicit")


_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass
class Attended:
    """Result of :func:`attend` for queries [G, M, D].

    out: [G, M, V] softmax-weighted sum of the value columns; lse: [G, M] log-sum-exp of the
    logits. With the trace: source [G, M] int64 position in the stream of the candidate with the
    largest weight, weight [G, M] its weight, effective [G, M] exp(entropy of the weights).
    """

    out: torch.Tensor
    lse: torch.Tensor
    source: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    effective: torch.Tensor | None = None


class _Workspace:
    """Reused scratch buffers: allocating large temporaries per chunk makes the allocator
    return them to the OS and map them again, which costs more than the arithmetic."""

    def __init__(self) -> None:
        self._bufs: dict = {}

    def get(self, name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.dtype, like.device)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._bufs[key] = buf
        return buf[:numel]


_WORKSPACE = _Workspace()


def attention_state(
    q: torch.Tensor,
    key_chunks: Iterable[torch.Tensor],
    value_cols: slice,
    *,
    trace: bool = False,
    backend: str = "auto",
    tile_elems: int = 1 << 20,
) -> SoftmaxState:
    """The softmax state of ``q`` [G, M, D] over the keys streamed in ``key_chunks``, not yet
    finalised (the engine's :class:`SoftmaxState` over [G, M], values last).

    Each chunk is [G, L_c, D] with the dtype and device of ``q``; the values are the columns
    ``value_cols`` of the keys. ``tile_elems`` bounds the logits held at once (G * rows * cols).
    With ``trace``, ``state.source`` holds the position along the concatenated stream of each
    query's best candidate. No candidate at all is an empty state (every m = -inf).
    """
    if backend not in ATTENTION_BACKENDS:
        raise InputError(f"unknown engine backend {backend!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    if q.dim() != 3:
        raise InputError(f"queries must be [G, M, D], got shape {tuple(q.shape)}")
    # "auto" is the explicit form: PyTorch's fused CPU kernel is faster but, in float32, drifts
    # by up to ~1e-3 from float64 (measured), so it is opt-in.
    use_fused = backend == "fused" and not trace
    if use_fused and not (q.device.type == "cpu" and _flash_cpu is not None and q.dtype in (torch.float32, torch.float64)):
        raise InputError("the fused backend needs float32 or float64 tensors on the CPU")
    G, M, D = q.shape
    nv = len(range(*value_cols.indices(D)))
    run = _Run(q, value_cols, SoftmaxState.empty((G, M), nv, value_dim=-1, device=q.device, trace=trace))
    offset = 0
    for keys in key_chunks:
        if keys.dim() != 3 or keys.shape[0] != G or keys.shape[2] != D:
            raise InputError(f"key chunk of shape {tuple(keys.shape)} does not fit queries {tuple(q.shape)}")
        if keys.shape[1] == 0:
            continue
        if use_fused:
            run.merge_fused(keys)
        else:
            run.update_explicit(keys, offset, tile_elems)
        offset += keys.shape[1]
    return run.state


def attend(q: torch.Tensor, key_chunks: Iterable[torch.Tensor], value_cols: slice, *, trace: bool = False,
           backend: str = "auto", tile_elems: int = 1 << 20) -> Attended:
    """:func:`attention_state`, finalised in ``q``'s dtype; no candidate at all is an error."""
    state = attention_state(q, key_chunks, value_cols, trace=trace, backend=backend, tile_elems=tile_elems)
    if not bool(torch.isfinite(state.m).any()) and state.m.numel():
        raise InputError("no candidates to attend to")
    fin = state.finalize(q.dtype, trace=trace)
    return Attended(out=fin.out, lse=fin.lse, source=state.source, weight=fin.weight, effective=fin.effective)


class _Run:
    def __init__(self, q: torch.Tensor, value_cols: slice, state: SoftmaxState) -> None:
        self.q, self.value_cols, self.state = q, value_cols, state
        self.floor = exp_floor(q.dtype)

    # ---- fused: one flash-attention call per chunk, merged through its log-sum-exp ----
    def merge_fused(self, keys: torch.Tensor) -> None:
        out, lse = _flash_cpu(self.q.unsqueeze(0), keys.unsqueeze(0), keys.unsqueeze(0), 0.0, False, scale=1.0)
        lse = lse[0].to(torch.float64)
        # The chunk as a state of its own: m = its lse, l = 1, acc = its normalised output.
        chunk = SoftmaxState(m=lse, l=torch.ones_like(lse), acc=out[0, :, :, self.value_cols].to(torch.float64),
                             u=torch.zeros_like(lse), best=torch.full_like(lse, -torch.inf), value_dim=-1)
        self.state.merge_(chunk)

    # ---- explicit: logits in a reused buffer, tiled so they stay in cache ----
    def update_explicit(self, keys: torch.Tensor, offset: int, tile_elems: int) -> None:
        G, M, D = self.q.shape
        L = keys.shape[1]
        rows = max(1, min(M, tile_elems // max(1, G * min(L, 4096))))
        cols = max(1, min(L, tile_elems // max(1, G * rows)))
        for r0 in range(0, M, rows):
            r1 = min(M, r0 + rows)
            for c0 in range(0, L, cols):
                c1 = min(L, c0 + cols)
                self._tile(r0, r1, keys[:, c0:c1], offset + c0)

    def _tile(self, r0: int, r1: int, kt: torch.Tensor, offset: int) -> None:
        qt = self.q[:, r0:r1]
        G, Lt = kt.shape[0], kt.shape[1]
        buf = _WORKSPACE.get("logits", G * (r1 - r0) * Lt, qt).view(G, r1 - r0, Lt)
        torch.bmm(qt, kt.transpose(1, 2), out=buf)  # [G, Mt, Lt] logits
        scratch = _WORKSPACE.get("z", buf.numel(), buf).view_as(buf) if self.state.source is not None else None
        values = kt[:, :, self.value_cols]
        self.state.fold_(buf, lambda w: torch.bmm(w, values), offset=offset, rows=(slice(None), slice(r0, r1)),
                         floor=self.floor, scratch=scratch)
