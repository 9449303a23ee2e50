"""The streaming-softmax engine: attention of queries over a stream of candidate keys.

DESIGN.md, "The computation is attention". For every group g and query row i,

    out[g, i] = sum_j w[g, i, j] * keys[g, j, value_cols],
    w[g, i, :] = softmax_j(q[g, i] . keys[g, j]),

where the keys arrive in chunks along j. Chunks are merged with the online softmax: per query
a running max m, a running denominator l = sum exp(logit - m) and a running weighted sum, both
rescaled by exp(m_old - m_new) when the max grows. Sums, never per-chunk means, so the result
does not depend on how the stream is cut. Every query row has its own max, so a query far from
every candidate cannot turn another row into NaN.

The engine knows nothing about images or patches: the machines decide which candidates a query
sees by what they put in each group.

Two interchangeable ways to do one chunk:
- "explicit" (the default): logits by batched matrix multiply, then max, exp and sums in place
  on a reused buffer. It also gives the trace (top candidate, its logit, the entropy).
- "fused" (opt-in): PyTorch's fused flash-attention kernel on the CPU, which returns the
  chunk's output and log-sum-exp; chunks are merged through the log-sum-exp. Faster, but
  its float32 results drift from float64 by up to ~1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from .errors import InputError

__all__ = ["Attended", "attend", "BACKENDS"]

BACKENDS = ("auto", "fused", "explicit")

# float32 exp of arguments below about -87 produces subnormal numbers, which are ~10x slower
# to compute; those weights are below 1.7e-38 of the largest one, so clamping changes nothing.
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0, torch.float16: -17.0, torch.bfloat16: -87.0}

_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass
class Attended:
    """Result of :func:`attend` for queries [G, M, D].

    out: [G, M, V] softmax-weighted sum of the value columns.
    lse: [G, M] log-sum-exp of the logits.
    top_index: [G, M] int64 position in the stream of the candidate with the largest weight.
    top_weight: [G, M] that candidate's weight.
    entropy: [G, M] entropy of the weights in nats; exp(entropy) is the effective number of
        candidates. The three trace fields are None unless tracing was asked for.
    """

    out: torch.Tensor
    lse: torch.Tensor
    top_index: torch.Tensor | None = None
    top_weight: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


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


def attend(
    q: torch.Tensor,
    key_chunks: Iterable[torch.Tensor],
    value_cols: slice,
    *,
    trace: bool = False,
    backend: str = "auto",
    tile_elems: int = 1 << 20,
) -> Attended:
    """Softmax attention of ``q`` [G, M, D] over the keys streamed in ``key_chunks``.

    Each chunk is [G, L_c, D] with the dtype and device of ``q``; the values are the columns
    ``value_cols`` of the keys. ``tile_elems`` bounds the logits held at once (G * rows * cols).
    Candidate indices in the trace count along the concatenated stream.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if q.dim() != 3:
        raise InputError(f"queries must be [G, M, D], got shape {tuple(q.shape)}")
    # "auto" is the explicit form: PyTorch's fused CPU kernel is faster but, in float32, drifts
    # by up to ~1e-3 from float64 (measured), so it is opt-in.
    use_fused = backend == "fused" and not trace
    if use_fused and not (q.device.type == "cpu" and _flash_cpu is not None and q.dtype in (torch.float32, torch.float64)):
        raise InputError("the fused backend needs float32 or float64 tensors on the CPU")
    state = _State(q, value_cols, trace)
    offset = 0
    for keys in key_chunks:
        if keys.dim() != 3 or keys.shape[0] != q.shape[0] or keys.shape[2] != q.shape[2]:
            raise InputError(f"key chunk of shape {tuple(keys.shape)} does not fit queries {tuple(q.shape)}")
        if keys.shape[1] == 0:
            continue
        if use_fused:
            state.merge_fused(keys)
        else:
            state.update_explicit(keys, offset, tile_elems)
        offset += keys.shape[1]
    if offset == 0:
        raise InputError("no candidates to attend to")
    return state.result()


class _State:
    def __init__(self, q: torch.Tensor, value_cols: slice, trace: bool) -> None:
        G, M, _ = q.shape
        self.q = q
        self.value_cols = value_cols
        nv = len(range(*value_cols.indices(q.shape[2])))
        self.trace = trace
        # Running sums in float64 whatever the inputs: a query meets up to millions of
        # candidates, and float32 sums of that many terms drift by 1e-4.
        f64 = dict(dtype=torch.float64, device=q.device)
        self.m = torch.full((G, M), -math.inf, **f64)  # running max logit (or lse for fused merges)
        self.l = torch.zeros((G, M), **f64)  # running sum of exp(logit - m)
        self.acc = torch.zeros((G, M, nv), **f64)  # running sum of exp(logit - m) * value
        if trace:
            self.top_logit = torch.full((G, M), -math.inf, **f64)
            self.top_index = torch.zeros((G, M), dtype=torch.long, device=q.device)
            self.u = torch.zeros((G, M), **f64)  # running sum of exp(logit - m) * (logit - m)
        self.floor = _EXP_FLOOR.get(q.dtype, -87.0)

    # ---- fused: one flash-attention call per chunk, merged through the log-sum-exp ----
    def merge_fused(self, keys: torch.Tensor) -> None:
        out, lse = _flash_cpu(self.q.unsqueeze(0), keys.unsqueeze(0), keys.unsqueeze(0), 0.0, False, scale=1.0)
        out = out[0, :, :, self.value_cols].to(torch.float64)
        lse = lse[0].to(torch.float64)
        # Here m holds the running log-sum-exp and l stays 1: acc is already normalised.
        new = torch.logaddexp(self.m, lse)
        w_old = torch.exp(self.m - new)
        w_new = torch.exp(lse - new)
        self.acc.mul_(w_old.unsqueeze(-1)).add_(out * w_new.unsqueeze(-1))
        self.m = new
        self.l.fill_(1.0)

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
        G = kt.shape[0]
        Lt = kt.shape[1]
        qt = self.q[:, r0:r1]
        buf = _WORKSPACE.get("logits", G * (r1 - r0) * Lt, qt).view(G, r1 - r0, Lt)
        torch.bmm(qt, kt.transpose(1, 2), out=buf)  # [G, Mt, Lt] logits
        cmax, carg = buf.max(dim=-1) if self.trace else (buf.amax(dim=-1), None)
        m_old = self.m[:, r0:r1]
        m_new = torch.maximum(m_old, cmax.to(torch.float64))  # a logit's own value: exact in buf's dtype
        if self.trace:
            better = cmax > self.top_logit[:, r0:r1]
            self.top_logit[:, r0:r1] = torch.where(better, cmax, self.top_logit[:, r0:r1])
            self.top_index[:, r0:r1] = torch.where(better, carg + offset, self.top_index[:, r0:r1])
        buf.sub_(m_new.to(buf.dtype).unsqueeze(-1)).clamp_min_(self.floor)
        if self.trace:
            z = _WORKSPACE.get("z", buf.numel(), buf).view_as(buf)
            z.copy_(buf)
        buf.exp_()
        r = torch.exp(m_old - m_new)  # rescale of the old sums; exp(-inf) = 0 on the first tile
        r = torch.where(torch.isfinite(m_old), r, torch.zeros_like(r))
        l_old = self.l[:, r0:r1]
        if self.trace:
            # sum e^(l - m_new) (l - m_new) = r * (u_old + (m_old - m_new) * l_old) + this tile
            shift = torch.where(torch.isfinite(m_old), m_old - m_new, torch.zeros_like(r))
            self.u[:, r0:r1] = r * (self.u[:, r0:r1] + shift * l_old) + (buf * z).sum(-1, dtype=torch.float64)
        self.l[:, r0:r1] = l_old * r + buf.sum(-1, dtype=torch.float64)
        acc = self.acc[:, r0:r1]
        acc.mul_(r.unsqueeze(-1)).add_(torch.bmm(buf, kt[:, :, self.value_cols]))
        self.m[:, r0:r1] = m_new

    def result(self) -> Attended:
        dt = self.q.dtype
        out = (self.acc / self.l.unsqueeze(-1)).to(dt)
        lse = self.m + torch.log(self.l)
        if not self.trace:
            return Attended(out=out, lse=lse.to(dt))
        top_weight = torch.exp(self.top_logit - lse)
        entropy = (torch.log(self.l) - self.u / self.l).clamp_min(0.0)
        return Attended(out=out, lse=lse.to(dt), top_index=self.top_index, top_weight=top_weight.to(dt),
                        entropy=entropy.to(dt))
