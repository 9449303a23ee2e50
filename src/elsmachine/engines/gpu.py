"""The GPU form of the engine for LS and ELS: a Triton kernel (docs/theory.md, "How it computes"
and "The computation is attention"; the paper's local and equivariant local score machines).

One program takes one output pixel q of one noisy image and one split of its candidates: every
(training image n, candidate pixel p) where p sees q (``candidates.pixel_classes``: the same pixel
for LS, every pixel for circular ELS, the pixels of q's padding footprint for boundary-broken
ELS). It streams them in blocks and keeps the softmax state of its split: running max m, sum of
weights l, weighted sum of the candidates' centre pixels, the entropy term u = sum w (z - m), and
the best candidate. The splits of a pixel are merged afterwards with the same exact log-sum-exp
merge as everywhere else, in a fixed order, as flash-decoding merges its splits: so a batch of
one image still fills the GPU.

Distances are summed in their direct form, sum (x(q + o) - a Y_n(p + o))^2 over the window's
offsets o, never as an expanded square: late in sampling the logits scale as 1/s^2 and the
expanded form loses the small differences. Zero padding skips the offsets that fall outside the
image (they are zero on both sides of a footprint-matched pair); circular padding wraps them.

The kernel runs on CUDA tensors, and on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``), which the tests use.
"""

from __future__ import annotations

import functools
import os

import torch

from ..errors import InputError
from .softmax import SoftmaxState

__all__ = ["available", "why_unavailable", "TritonStream"]


@functools.lru_cache(maxsize=1)
def _triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def why_unavailable(x: torch.Tensor) -> str | None:
    """None when the kernel can run on ``x``; else the reason, in words."""
    if _triton() is None:
        return "Triton is not installed (pip install triton)"
    if x.dtype not in (torch.float32, torch.float64):
        return f"the kernel takes float32 or float64, not {x.dtype}"
    if x.device.type == "cuda":
        return None
    if x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"the kernel runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not on {x.device}"


def available(x: torch.Tensor) -> bool:
    return why_unavailable(x) is None


@functools.lru_cache(maxsize=1)
def _kernel():
    triton, tl = _triton()

    @triton.jit
    def patch_softmax(X, Y, A, SCALE, QCLS, CAND, CCOUNT, OUT_M, OUT_L, OUT_U, OUT_ACC, OUT_BEST, OUT_SRC,
                      N, PMAX, SPLITS, H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, CP: tl.constexpr,
                      K: tl.constexpr, CIRCULAR: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)  # b * H * W + q
        sid = tl.program_id(1)  # the split of q's candidates
        HW: tl.constexpr = H * W
        HK: tl.constexpr = K // 2
        b = pid // HW
        q = pid % HW
        qi = q // W
        qj = q % W
        a = tl.load(A + b)
        scale = tl.load(SCALE + b)
        cls = tl.load(QCLS + q)
        P = tl.load(CCOUNT + cls)
        total = N * P
        per = tl.cdiv(total, SPLITS)
        start = sid * per
        stop = tl.minimum(start + per, total)
        dt = X.dtype.element_ty
        chans = tl.arange(0, CP)
        lanes = tl.arange(0, BLOCK)
        m = tl.max(tl.full([BLOCK], float("-inf"), dt), 0)
        best = m
        lsum = tl.sum(tl.zeros([BLOCK], dt), 0)
        u = lsum
        acc = tl.zeros([CP], dt)
        src = tl.max(tl.full([BLOCK], -1, tl.int64), 0)
        for c0 in range(start, stop, BLOCK):
            offs = c0 + lanes
            valid = offs < stop
            n = (offs // P).to(tl.int64)
            p = tl.load(CAND + cls * PMAX + offs % P, mask=valid, other=0).to(tl.int64)
            pi = p // W
            pj = p % W
            d = tl.zeros([BLOCK], dt)
            for ch in range(C):
                for du in range(K):
                    for dv in range(K):
                        if CIRCULAR:
                            xi = ((qi + du - HK) % H + H) % H
                            xj = ((qj + dv - HK) % W + W) % W
                            yi = ((pi + du - HK) % H + H) % H
                            yj = ((pj + dv - HK) % W + W) % W
                            inside = qi >= 0  # always
                        else:
                            xi = qi + du - HK
                            xj = qj + dv - HK
                            yi = pi + du - HK
                            yj = pj + dv - HK
                            # A footprint-matched candidate is inside exactly where the query is.
                            inside = (xi >= 0) & (xi < H) & (xj >= 0) & (xj < W)
                        xv = tl.load(X + ((b * C + ch) * H + xi) * W + xj, mask=inside, other=0.0)
                        ymask = (valid.to(tl.int32) * inside.to(tl.int32)) != 0  # (& of a block and a scalar mask is int32 in the interpreter)
                        yv = tl.load(Y + ((n * C + ch) * H + yi) * W + yj, mask=ymask, other=0.0)
                        diff = xv - a * yv
                        d += tl.where(inside, diff * diff, 0.0)
            z = tl.where(valid, -d * scale, float("-inf"))
            bm = tl.max(z, 0)
            m_new = tl.maximum(m, bm)
            alpha = tl.exp(m - m_new)
            w = tl.exp(z - m_new)
            dz = tl.where(valid, z - m_new, 0.0)
            u = alpha * (u + (tl.where(lsum > 0, m, m_new) - m_new) * lsum) + tl.sum(w * dz, 0)  # m = -inf before
            lsum = alpha * lsum + tl.sum(w, 0)
            vals = tl.load(Y + (n[:, None] * C + chans[None, :]) * HW + p[:, None],
                           mask=valid[:, None] & (chans[None, :] < C), other=0.0)
            acc = acc * alpha + tl.sum(w[:, None] * vals, 0)
            code = n * HW + p
            first = tl.min(tl.where((z == bm) & valid, code, 2**62), 0)  # a tie goes to the lower index
            src = tl.where(bm > best, first, src)
            best = tl.maximum(best, bm)
            m = m_new
        o = pid * SPLITS + sid
        tl.store(OUT_M + o, m)
        tl.store(OUT_L + o, lsum)
        tl.store(OUT_U + o, u)
        tl.store(OUT_BEST + o, best)
        tl.store(OUT_SRC + o, src)
        tl.store(OUT_ACC + o * CP + chans, acc)

    return patch_softmax


def _splits(B: int, HW: int, longest: int, block: int, device: torch.device) -> int:
    """Splits per output pixel: enough programs to fill the GPU at batch 1 (about 8 per
    multiprocessor), never more than a pixel has blocks of candidates."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = -(-8 * sms // (B * HW))
    else:
        want = 2  # the interpreter: two splits, so the merge is exercised
    return max(1, min(want, -(-longest // block)))


class TritonStream:
    """The softmax state, merged over splits, of every output pixel of ``x`` [B, C, H, W] against
    the candidates of ``classes`` (``candidates.pixel_classes``) in the images ``Y`` [N, C, H, W].

    ``state`` is a float64 :class:`SoftmaxState` over [B, H, W] with the C values on dimension 1;
    its ``source`` holds candidate codes n * H * W + p, n counted in ``Y``.
    """

    def __init__(self, x: torch.Tensor, Y: torch.Tensor, a: torch.Tensor, s: torch.Tensor, k: int, padding: str,
                 classes, *, block: int | None = None, splits: int | None = None) -> None:
        why = why_unavailable(x)
        if why is not None:
            raise InputError(f"the triton backend cannot run here: {why}")
        B, C, H, W = x.shape
        HW = H * W
        dev = x.device
        qcls = torch.empty(HW, dtype=torch.int32)
        counts = [len(cand) for _, cand in classes]
        pmax = max(counts)
        cand = torch.zeros(len(classes), pmax, dtype=torch.int32)
        for c, (qs, ps) in enumerate(classes):
            qcls[qs] = c
            cand[c, : len(ps)] = torch.sort(ps).values.to(torch.int32)  # ascending: ties go to the lower index
        block = block or (128 if dev.type == "cuda" else 16)
        nsplit = splits or _splits(B, HW, Y.shape[0] * pmax, block, dev)
        CP = 1 << max(0, (C - 1).bit_length())
        dt = x.dtype
        shape = (B * HW * nsplit,)
        out = {f: torch.empty(shape, dtype=dt, device=dev) for f in ("m", "l", "u", "best")}
        out["acc"] = torch.empty(shape + (CP,), dtype=dt, device=dev)
        out["src"] = torch.empty(shape, dtype=torch.int64, device=dev)
        scale = (1.0 / (2.0 * s.to(torch.float64) ** 2)).to(device=dev, dtype=dt).contiguous()
        if Y.shape[0]:
            _kernel()[(B * HW, nsplit)](
                x.contiguous(), Y.to(device=dev, dtype=dt).contiguous(), a.to(device=dev, dtype=dt).contiguous(), scale,
                qcls.to(dev), cand.to(dev), torch.tensor(counts, dtype=torch.int32, device=dev),
                out["m"], out["l"], out["u"], out["acc"], out["best"], out["src"],
                Y.shape[0], pmax, nsplit, H=H, W=W, C=C, CP=CP, K=k, CIRCULAR=padding == "circular", BLOCK=block)
        else:  # no candidates here (a rank of a sharded bank without this class): an empty state
            out["m"].fill_(float("-inf"))
            out["best"].fill_(float("-inf"))
            for f in ("l", "u", "acc"):
                out[f].zero_()
            out["src"].fill_(-1)
        self.state = _merge_splits(out, B, H, W, nsplit, C)


def _merge_splits(out: dict, B: int, H: int, W: int, nsplit: int, C: int) -> SoftmaxState:
    """The splits of every pixel merged in split order, in float64: a state over [B, H, W] with
    the values on dimension 1 (as the displacement form's)."""
    f64 = {f: out[f].to(torch.float64).view(B, H, W, nsplit) for f in ("m", "l", "u", "best")}
    acc = out["acc"].to(torch.float64).view(B, H, W, nsplit, -1)[..., :C]
    src = out["src"].view(B, H, W, nsplit)
    state = None
    for j in range(nsplit):
        part = SoftmaxState(m=f64["m"][..., j].clone(), l=f64["l"][..., j].clone(),
                            acc=acc[..., j, :].permute(0, 3, 1, 2).contiguous(), u=f64["u"][..., j].clone(),
                            best=f64["best"][..., j].clone(), value_dim=1, source=src[..., j].clone())
        if state is None:
            state = part
        else:
            state.merge_(part)
    return state
