"""The engine's displacement form: the streaming softmax of :mod:`elsmachine.engine`, computed
by the compiled kernel ``csrc/displacement.c`` directly from images instead of patch vectors.

For query pixel q and candidate pixel p = q + d of image n, the logit
-|P_q(x) - a P_p(Y_n)|^2 / (2 s^2) is a k x k box sum of the squared-difference image
(x(r) - a Y_n(r + d))^2, so each (query, candidate) pair costs the same whatever the patch
size, and distances are summed from their own terms (no cancellation late in sampling).

A candidate set is given as groups of rectangles (all inclusive, image coordinates):
query pixels [qr0, qr1] x [qc0, qc1], displacements [dr0, dr1] x [dc0, dc1], and allowed
candidate pixels [pr0, pr1] x [pc0, pc1] in the coordinates of the candidate arrays.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass

import torch

from . import native

__all__ = ["available", "groups_for", "pad_images", "candidate_blocks", "DisplacementStream", "NB"]


def available(x: torch.Tensor) -> bool:
    """True where the compiled kernel can take tensors like ``x`` (CPU, float32 or float64)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and native.library() is not None


def _axis_segments(n: int, k: int, radius: int | None = None) -> list[tuple[int, int, int, int]]:
    """Along one axis of a zero-padded ELS: (query lo, hi, displacement lo, hi) segments.

    A query index and a candidate index share a footprint on this axis when they are equal
    (displacement 0: every index, edge or interior) or both interior (any displacement between
    interior indices). So the pairs of one axis are displacement 0 over the whole axis, and the
    nonzero displacements, on each side, over the interior (up to ``radius`` if given)."""
    lo, hi = k // 2, n - 1 - k // 2
    reach = hi - lo if radius is None else min(hi - lo, radius)
    segs = [(0, n - 1, 0, 0)]
    if reach > 0:
        segs += [(lo, hi, 1, reach), (lo, hi, -reach, -1)]
    return segs


def _circular_ranges(n: int, radius: int | None) -> list[tuple[int, int]]:
    """Displacements 0..n-1 (mod n) of a circular axis, or those within ``radius`` of 0."""
    if radius is None or 2 * radius + 1 >= n:
        return [(0, n - 1)]
    return [(0, radius), (n - radius, n - 1)]


@functools.lru_cache(maxsize=256)
def groups_for(kind: str, padding: str, H: int, W: int, k: int, radius: int | None = None) -> torch.Tensor:
    """Group rectangles [G, 12] int32 for machine ``kind`` ("ls" or "els") and ``padding``.

    Footprint classes are products of row and column classes, so the zero-padded ELS pairs
    (query, candidate with the same footprint) are the product of each axis's pairs: at most
    3 x 3 groups whose displacements share one product image over the whole query rectangle,
    instead of one group per footprint class each with its own margins.

    ``radius`` (ELS, approximate): only candidates at most ``radius`` pixels from the query
    along each axis."""
    if kind == "ls":
        rows = [[0, H - 1, 0, W - 1, 0, 0, 0, 0, 0, H - 1, 0, W - 1]]
    elif padding == "circular":
        rows = [[0, H - 1, 0, W - 1, dr0, dr1, dc0, dc1, 0, 2 * H - 2, 0, 2 * W - 2]
                for dr0, dr1 in _circular_ranges(H, radius) for dc0, dc1 in _circular_ranges(W, radius)]
    else:
        rows = []
        for qr0, qr1, dr0, dr1 in _axis_segments(H, k, radius):
            for qc0, qc1, dc0, dc1 in _axis_segments(W, k, radius):
                pr0, pr1 = (0, H - 1) if dr0 == 0 else (qr0, qr1)
                pc0, pc1 = (0, W - 1) if dc0 == 0 else (qc0, qc1)
                rows.append([qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1])
    return torch.tensor(rows, dtype=torch.int32)


NB = 64  # training images per lane block (csrc/displacement.c, NB)


def pad_images(x: torch.Tensor, k: int, padding: str, *, extended: bool) -> tuple[torch.Tensor, int]:
    """Images [B, C, H, W] laid out for the kernel, and the offset of pixel (0, 0).

    zeros: padded by h = k // 2 with zeros. circular: the periodic extension over rows
    -h .. H - 1 + h (queries) or -h .. 2H - 2 + h (``extended``, candidates), so every
    displacement 0..H-1 reaches its wrapped pixels without index arithmetic.
    """
    h = k // 2
    H, W = x.shape[-2:]
    if padding == "zeros":
        return torch.nn.functional.pad(x, (h, h, h, h)).contiguous(), h
    span_h = (2 * H - 1 if extended else H) + 2 * h
    span_w = (2 * W - 1 if extended else W) + 2 * h
    ri = (torch.arange(span_h, device=x.device) - h) % H
    ci = (torch.arange(span_w, device=x.device) - h) % W
    return x[:, :, ri][:, :, :, ci].contiguous(), h


def candidate_blocks(Y: torch.Tensor, k: int, padding: str) -> tuple[torch.Tensor, int]:
    """Training images [N, C, H, W] as the kernel reads them: padded or extended like
    :func:`pad_images`, in blocks of NB with the image index fastest,
    [ceil(N / NB), HY, WY, C, NB]; and the offset of pixel (0, 0)."""
    Yp, oy = pad_images(Y, k, padding, extended=True)
    N, C, HY, WY = Yp.shape
    nb = -(-N // NB)
    if nb * NB != N:
        Yp = torch.cat([Yp, Yp.new_zeros(nb * NB - N, C, HY, WY)])
    return Yp.view(nb, NB, C, HY, WY).permute(0, 3, 4, 2, 1).contiguous(), oy


def _ptr(t: torch.Tensor, ctype):
    return ctypes.cast(t.data_ptr(), ctypes.POINTER(ctype)) if t is not None else None


@dataclass
class DisplacementResult:
    out: torch.Tensor  # [B, C, H, W]
    lse: torch.Tensor  # [B, H, W]
    top_image: torch.Tensor | None = None  # [B, H, W] index into the streamed images
    top_pixel: torch.Tensor | None = None  # [B, H, W] flat source pixel
    top_weight: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


class DisplacementStream:
    """Running softmax state for query images X (laid out by :func:`pad_images`), fed chunks
    of candidate images; per pixel: max, denominator, weighted sums, and optionally the trace."""

    def __init__(self, X: torch.Tensor, ox: int, H: int, W: int, k: int, a: torch.Tensor, s: torch.Tensor,
                 groups: torch.Tensor, *, trace: bool = False) -> None:
        self.X, self.ox, self.H, self.W, self.k = X, ox, H, W, k
        B, C = X.shape[:2]
        dt = X.dtype
        self.C = C
        self.a = a.to(dt).contiguous()
        self.inv2s2 = (1.0 / (2.0 * s.to(torch.float64) ** 2)).to(dt).contiguous()
        self.groups = groups.contiguous()
        # The running sums are float64 whatever the inputs: they add up millions of terms.
        f64 = torch.float64
        self.m = torch.full((B, H, W), -math.inf, dtype=f64)
        self.l = torch.zeros((B, H, W), dtype=f64)
        self.u = torch.zeros((B, H, W), dtype=f64)
        self.tl = torch.full((B, H, W), -math.inf, dtype=f64)
        self.acc = torch.zeros((B, C, H, W), dtype=f64)
        self.tn = torch.zeros((B, H, W), dtype=torch.int64) if trace else None
        self.tp = torch.zeros((B, H, W), dtype=torch.int64) if trace else None
        self.seen = 0
        lib = native.library()
        self._fn, self._ct = (lib.els_stream_f32, ctypes.c_float) if dt == torch.float32 else (lib.els_stream_f64, ctypes.c_double)

    def feed(self, Y: torch.Tensor, n: int, oy: int) -> None:
        """Stream ``n`` candidate images laid out by :func:`candidate_blocks` as Y [nb, HY, WY, C, NB]."""
        if Y.dim() != 5 or Y.shape[4] != NB or Y.shape[3] != self.C or n > Y.shape[0] * NB:
            raise ValueError(f"candidate blocks of shape {tuple(Y.shape)} do not fit {n} images of {self.C} channels")
        Y = Y.contiguous()
        ct = self._ct
        rc = self._fn(
            _ptr(self.X, ct), self.X.shape[0], self.X.shape[2], self.X.shape[3], self.ox,
            _ptr(Y, ct), n, Y.shape[1], Y.shape[2], oy, self.C, self.k,
            _ptr(self.a, ct), _ptr(self.inv2s2, ct), _ptr(self.groups, ctypes.c_int), self.groups.shape[0],
            self.H, self.W, _ptr(self.m, ctypes.c_double), _ptr(self.l, ctypes.c_double),
            _ptr(self.u, ctypes.c_double), _ptr(self.tl, ctypes.c_double), _ptr(self.acc, ctypes.c_double),
            _ptr(self.tn, ctypes.c_int64), _ptr(self.tp, ctypes.c_int64),
            self.seen, torch.get_num_threads(),
        )
        if rc != 0:
            raise MemoryError("the displacement kernel could not allocate its per-thread state")
        self.seen += n

    def result(self) -> DisplacementResult:
        out = self.acc / self.l.unsqueeze(1)
        lse = self.m + torch.log(self.l)
        if self.tn is None:
            return DisplacementResult(out=out, lse=lse)
        entropy = (torch.log(self.l) - self.u / self.l).clamp_min(0.0)
        return DisplacementResult(out=out, lse=lse, top_image=self.tn, top_pixel=self.tp,
                                  top_weight=torch.exp(self.tl - lse), entropy=entropy)
