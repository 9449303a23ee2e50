"""The displacement form of the engine: the streaming softmax of :mod:`.softmax`, computed by the
compiled kernel ``csrc/displacement.c`` directly from images instead of patch vectors
(docs/theory.md, "How it computes").

For query pixel q and candidate pixel p = q + d of image n, the logit
-|P_q(x) - a P_p(Y_n)|^2 / (2 s^2) is a k x k box sum of the squared-difference image
(x(r) - a Y_n(r + d))^2, so each (query, candidate) pair costs the same whatever the patch
size, and distances are summed from their own terms (no cancellation late in sampling).

The candidate set comes as groups of rectangles (:func:`elsmachine.machines.candidates.rectangles`).
"""

from __future__ import annotations

import ctypes
import itertools
from dataclasses import dataclass

import torch

from . import native
from .softmax import SoftmaxState

__all__ = ["available", "pad_images", "candidate_blocks", "DisplacementStream", "DisplacementResult"]


def available(x: torch.Tensor) -> bool:
    """True where the compiled kernel can take tensors like ``x`` (CPU, float32 or float64)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and native.library() is not None


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
    :func:`pad_images`, in blocks of NB (the kernel's block size) with the image index fastest,
    [ceil(N / NB), HY, WY, C, NB]; and the offset of pixel (0, 0)."""
    nb_size = native.block_size()
    Yp, oy = pad_images(Y, k, padding, extended=True)
    N, C, HY, WY = Yp.shape
    nb = -(-N // nb_size)
    if nb * nb_size != N:
        Yp = torch.cat([Yp, Yp.new_zeros(nb * nb_size - N, C, HY, WY)])
    return Yp.view(nb, nb_size, C, HY, WY).permute(0, 3, 4, 2, 1).contiguous(), oy


@dataclass
class DisplacementResult:
    """out [B, C, H, W], lse [B, H, W]; with the trace, per pixel the best candidate's
    source_image (index into the streamed images), source_pixel (flat i * W + j), its weight,
    and effective (exp of the entropy of the weights)."""

    out: torch.Tensor
    lse: torch.Tensor
    source_image: torch.Tensor | None = None
    source_pixel: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    effective: torch.Tensor | None = None


def _addr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class DisplacementStream:
    """Running softmax state for query images X (laid out by :func:`pad_images`), fed chunks
    of candidate images; per pixel the state of :class:`SoftmaxState`, and optionally the
    best candidate's image and pixel.

    Several patch sizes at once: ``k`` a sequence of increasing sizes and ``groups`` one
    rectangle tensor per size (X padded for the largest); the state then stacks the sizes,
    [len(k) * B, H, W] (size j at rows j * B .. j * B + B - 1), and there is no trace.
    """

    def __init__(self, X: torch.Tensor, ox: int, H: int, W: int, k, a: torch.Tensor, s: torch.Tensor,
                 groups, *, trace: bool = False) -> None:
        self.X, self.ox, self.H, self.W = X, ox, H, W
        B, C = X.shape[:2]
        self.C = C
        self.trace = trace
        self.a = a.to(X.dtype).contiguous()
        self.inv2s2 = (1.0 / (2.0 * s.to(torch.float64) ** 2)).to(X.dtype).contiguous()
        lib = native.library()
        if isinstance(k, int):
            self.k, self.sizes, self.starts = k, None, None
            self.groups = groups.to(torch.int32).contiguous()
            self._fn = lib.els_stream_f32 if X.dtype == torch.float32 else lib.els_stream_f64
        else:
            if trace:
                raise ValueError("several patch sizes at once carry no trace")
            if list(k) != sorted(set(k)) or len(k) != len(groups) or len(k) > native.max_sizes():
                raise ValueError(f"sizes {list(k)} must increase, number at most {native.max_sizes()}, "
                                 f"and come with one group tensor each")
            self.k = k[-1]
            self.sizes = torch.tensor(list(k), dtype=torch.int32)
            self.starts = torch.tensor([0, *itertools.accumulate(g.shape[0] for g in groups)], dtype=torch.int32)
            self.groups = torch.cat(list(groups)).to(torch.int32).contiguous()
            self._fn = lib.els_stream_sizes_f32 if X.dtype == torch.float32 else lib.els_stream_sizes_f64
        nk = 1 if self.sizes is None else len(self.sizes)
        self.state = SoftmaxState.empty((nk * B, H, W), C, value_dim=1, device=X.device)
        self.source_image = torch.zeros((B, H, W), dtype=torch.int64) if trace else None
        self.source_pixel = torch.zeros((B, H, W), dtype=torch.int64) if trace else None
        self.seen = 0

    def feed(self, Y: torch.Tensor, n: int, oy: int) -> None:
        """Stream ``n`` candidate images laid out by :func:`candidate_blocks` as Y [nb, HY, WY, C, NB]."""
        nb_size = native.block_size()
        if Y.dim() != 5 or Y.shape[4] != nb_size or Y.shape[3] != self.C or n > Y.shape[0] * nb_size:
            raise ValueError(f"candidate blocks of shape {tuple(Y.shape)} do not fit {n} images of {self.C} channels")
        Y = Y.contiguous()
        st = self.state
        args = native.args_type()(
            x=_addr(self.X), b=self.X.shape[0], hx=self.X.shape[2], wx=self.X.shape[3], ox=self.ox,
            y=_addr(Y), n=n, hy=Y.shape[1], wy=Y.shape[2], oy=oy, c=self.C, k=self.k,
            a=_addr(self.a), inv2s2=_addr(self.inv2s2), groups=_addr(self.groups), g=self.groups.shape[0],
            h=self.H, w=self.W, m=_addr(st.m), l=_addr(st.l), u=_addr(st.u), tl=_addr(st.best), acc=_addr(st.acc),
            tn=_addr(self.source_image), tp=_addr(self.source_pixel), n_offset=self.seen,
            nthreads=torch.get_num_threads(), nk=0 if self.sizes is None else len(self.sizes),
            ks=_addr(self.sizes), gk=_addr(self.starts),
        )
        if self._fn(ctypes.byref(args)) != 0:
            raise MemoryError("the displacement kernel could not allocate its per-thread state")
        self.seen += n

    def result(self) -> DisplacementResult:
        fin = self.state.finalize(torch.float64, trace=self.trace)
        return DisplacementResult(out=fin.out, lse=fin.lse, source_image=self.source_image,
                                  source_pixel=self.source_pixel, weight=fin.weight, effective=fin.effective)
