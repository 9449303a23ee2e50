"""The straightforward implementation the benchmark measures the machines against.

Per chunk of training images: ``unfold`` the patches, the full tensor of distances to every
query patch by ``torch.cdist``, the mask of which candidates each pixel sees, and a softmax
merged across chunks. Written for the benchmark only (docs/theory.md, "How it computes").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..machines import ELSMachine
from ..machines.candidates import sees
from ..noise import CosineSchedule

__all__ = ["baseline_denoise", "baseline_locality", "BASELINES"]


def baseline_denoise(x, t, Y, k, padding="zeros", chunk_elems=1 << 25, kind=None):
    """Boundary-broken (zeros) or circular ELS of x [B, C, H, W] at time t against Y [N, C, H, W]
    (``kind``: the candidates a pixel sees, :mod:`elsmachine.machines.candidates`; None: ELS's)."""
    sch = CosineSchedule()
    a, s = sch.alpha(t), sch.sigma(t)
    B, C, H, W = x.shape
    h = k // 2

    def unfold(img):
        if padding == "circular":
            img = F.pad(img, (h, h, h, h), mode="circular") if h <= min(H, W) else img
            return F.unfold(img, k)
        return F.unfold(img, k, padding=h)

    q = unfold(x).transpose(1, 2)  # [B, HW, D]
    same = torch.from_numpy(sees(kind or ELSMachine.candidate_kind, padding, H, W, k).copy())  # [HW, HW]
    D = q.shape[-1]
    HW = H * W
    per = max(1, chunk_elems // (B * HW * HW))  # training images per chunk
    m = torch.full((B, HW), -math.inf, dtype=x.dtype)
    l = torch.zeros(B, HW, dtype=x.dtype)
    acc = torch.zeros(B, C, HW, dtype=x.dtype)
    for n0 in range(0, Y.shape[0], per):
        Yc = Y[n0 : n0 + per].to(x.dtype)
        c = unfold(Yc).transpose(1, 2)  # [n, HW, D]
        # The full distance tensor [B, HW, n * HW], by torch.cdist.
        dist = torch.cdist(q, (a * c).reshape(1, -1, D).expand(B, -1, -1)) ** 2
        logits = (-dist / (2 * s * s)).view(B, HW, c.shape[0], HW)
        logits = logits.masked_fill(~same[None, :, None, :], -math.inf).flatten(2)
        m_new = torch.maximum(m, logits.max(-1).values)
        w = torch.exp(logits - m_new[..., None])
        r = torch.exp(m - m_new)
        vals = Yc.flatten(2).permute(1, 0, 2).reshape(C, -1)  # [C, n*HW]
        l = l * r + w.sum(-1)
        acc = acc * r[:, None] + torch.einsum("bqj,cj->bcq", w, vals)
        m = m_new
    return (acc / l[:, None]).view(B, C, H, W)


def baseline_locality(x, t, Y, mask, temperature=1.0, chunk_elems=1 << 26):
    """The analytic locality machine done straightforwardly: per chunk of training images, the
    full masked distance tensor [B, D (outputs), n, D (inputs)], summed, and a softmax merged
    across chunks. ``mask`` bool [D, D] (input entry, output entry), x [B, C, H, W]."""
    sch = CosineSchedule()
    a, s = sch.alpha(t), sch.sigma(t)
    B = x.shape[0]
    xf, Yf = x.reshape(B, -1), Y.reshape(Y.shape[0], -1).to(x.dtype)
    D = xf.shape[1]
    maskT = mask.T.to(x.dtype)  # [outputs, inputs]
    per = max(1, chunk_elems // (B * D * D))
    m = torch.full((B, D), -math.inf, dtype=x.dtype)
    l = torch.zeros(B, D, dtype=x.dtype)
    acc = torch.zeros(B, D, dtype=x.dtype)
    for n0 in range(0, Yf.shape[0], per):
        Yc = Yf[n0 : n0 + per]
        sq = (xf[:, None, :] - a * Yc[None]) ** 2  # [B, n, inputs]
        masked = maskT[None, :, None, :] * sq[:, None]  # the full tensor [B, outputs, n, inputs]
        logits = -masked.sum(-1) / (2 * s * s * temperature)  # [B, outputs, n]
        m_new = torch.maximum(m, logits.max(-1).values)
        w = torch.exp(logits - m_new[..., None])
        r = torch.exp(m - m_new)
        l = l * r + w.sum(-1)
        acc = acc * r + (w * Yc.T[None]).sum(-1)
        m = m_new
    return (acc / l).view_as(x)


def _time_patch_softmax(m, noise, Y, cfg, sizes, padding) -> dict:
    """The baseline's 20-step time (each distinct patch size timed once, summed over the steps)
    and its largest difference from the machine, for a patch softmax machine (ELS)."""
    import time
    from collections import Counter

    from ..noise import ddim_grid

    per_k = {}
    grid = ddim_grid(cfg.steps)
    x = noise[:1] if cfg.batch == 1 else noise
    diff = 0.0
    for k in sorted(set(sizes)):
        t = float(grid[sizes.index(k)])
        t1 = time.perf_counter()
        ref = baseline_denoise(x, t, Y, k, padding, kind=m.candidate_kind)
        per_k[k] = time.perf_counter() - t1
        fast = m.denoise(x, t, patch_size=k)
        diff = max(diff, float((fast - ref).abs().max()))
    base = sum(per_k[k] * c for k, c in Counter(sizes).items())
    return {"baseline_max_diff": diff, "baseline_seconds": base, "baseline_per_k": per_k}


def _time_masked_softmax(m, noise, Y, cfg, sizes, padding) -> dict:
    """The same for a masked softmax machine (analytic locality): every step costs the same."""
    import time

    x = noise[:1] if cfg.batch == 1 else noise
    t = 0.5
    t1 = time.perf_counter()
    ref = baseline_locality(x, t, Y, m.mask(t))
    per_call = time.perf_counter() - t1
    return {"baseline_seconds": per_call * cfg.steps, "baseline_max_diff": float((m.denoise(x, t) - ref).abs().max())}


# The straightforward implementation of each formulation a machine declares as its ``baseline``.
BASELINES = {"patch softmax": _time_patch_softmax, "masked softmax": _time_masked_softmax}
