"""The displacement form of the engine on the GPU: a Triton kernel for LS and ELS (docs/theory.md,
"How it computes" and "The computation is attention"; the paper's local and equivariant local
score machines), the counterpart of the compiled CPU kernel ``csrc/displacement.c``.

For query pixel q and candidate pixel p = q + d of training image n, the logit
-|P_q(x) - a P_p(Y_n)|^2 / (2 s^2) is a k x k window sum of the image of squared differences

    E_d(r) = sum_c (x_c(r) - a Y_nc(r + d))^2      (x and Y padded with zeros, or periodically),

so for each block of training images and each displacement d the kernel builds E_d on chip and
sums its windows by segments of k (van Herk / Gil-Werman), down the columns and then along the
rows: cut each line into segments of k, take the prefix sums and the suffix sums within each
segment, and the window starting at i is suffix[i] + prefix[i + k - 1] (suffix[i] alone where
i starts a segment). Every sum adds non-negative terms only, never a running sum that subtracts,
so its rounding stays relative to the distance itself late in sampling, where the logits scale
as 1/s^2.

Operations per (query pixel, candidate) pair, none of them growing with k:

- the product image: C loads and C multiply-adds per entry, over the window's padded extent,
  (1 + 2h/R)(1 + 2h/W) entries a pair (R the strip's rows);
- each of the two passes: a forward and a reverse in-line prefix sum (one add each per lane),
  two gathers and one add;
- the softmax update: one subtraction and one multiply-add for the logit relative to the
  block's nearest, one exp, two adds (l and, traced, u), and C loads and C multiply-adds for
  the weighted centre values; the per-pixel reductions over a block (nearest candidate, sums)
  and the float64 state update are shared by the block's candidates.

A segment occupies the next power of two of k lanes (tiles are powers of two), so at unlucky k
(9, 17) up to half the lanes of the two passes idle. Zero padding also idles the query pixels
whose candidate would fall outside the footprint's rectangle (the interior displacements of
boundary-broken ELS): the tile covers the whole strip whatever the displacement.

Layout: the segments are lines of a tile [lines, KP] (KP the next power of two of k), so each
prefix and suffix sum is ``tl.cumsum`` along the lane axis (forward and reverse). The passes
are gathers (``tl.gather``, on chip) from one line layout to the next. Layout A has a line per
(candidate slot, segment of k padded rows, padded column), layout B a line per (slot, query
row, segment of k padded columns), and the windows come out as [slots, query pixels].

Program decomposition: one program per (noisy image, strip of query rows, split of the work).
A strip is the whole image up to 32 x 32 (1,024 query pixels), else as many rows as hold 1,024.
The program keeps its query pixels' softmax states (running max m, sum l, weighted sum of
centre values acc, entropy term u, best logit and its code) in registers while it walks its
split, a contiguous range of items. An item is one block of candidate slots: BD displacements
times BNI training images. A large bank makes BD 1 and fills the block with images (one or two
32 x 32 images a block, about 4,096 lanes a tile); a small one, a class of a few images, packs
several displacements into it. At batch 1 a 32 x 32 image is one strip, and the splits fill the
GPU: about four programs per multiprocessor, each walking thousands of items at N = 5,000. The
partial states are merged afterwards in a fixed order, pairwise by the exact log-sum-exp merge
of :class:`~.softmax.SoftmaxState`, as flash-decoding merges its splits.

Several patch sizes in one pass (:class:`TritonDisplacementStream` with a list of sizes, up to
:data:`MAX_SIZES`): per item the product image is built once over the largest size's padded
extent. Each size gathers its own segment layout from it, sums its own windows and folds them
into its own softmax state, held in the program's slice of the output rather than in
registers. It skips the items none of whose displacements it takes; there is no trace. The
states stack the sizes, [len(k) * B, H, W], as the CPU kernel's do.

The per-split state is float64 whatever the inputs (sums over millions of candidates); the
distances and weights are in the inputs' dtype, each weight taken from the distance relative to
the nearest candidate of its block, as the CPU kernel does. The kernel runs on CUDA tensors,
and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which the tests use.
"""

from __future__ import annotations

import functools

import torch

from ..errors import InputError
from .gpu import _triton
from .gpu import why_unavailable as _why_triton
from .softmax import SoftmaxState

triton, tl = _triton() or (None, None)

__all__ = ["available", "why_unavailable", "TritonDisplacementStream", "MAX_SIZES", "displacements"]

MAX_SIZES = 8  # patch sizes one pass takes at most (one constexpr slot each)
_QUERY_PIXELS = 1024  # query pixels a program holds (a strip of rows; the whole image up to 32 x 32)


def why_unavailable(x: torch.Tensor) -> str | None:
    """None when the kernel can run on ``x``; else the reason, in words."""
    why = _why_triton(x)
    if why is not None:
        return why
    if not hasattr(tl, "gather"):  # the passes between line layouts are on-chip gathers
        return f"the displacement kernel needs Triton 3.2 or newer (tl.gather), not {triton.__version__}"
    return None


def available(x: torch.Tensor) -> bool:
    return why_unavailable(x) is None


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@functools.lru_cache(maxsize=64)
def _table(rects: tuple[tuple[tuple[int, ...], ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Rows (dr, dc, then per size its query rectangle r_lo, r_hi, c_lo, c_hi) of every
    displacement of the candidate groups ``rects`` (one tuple of groups per size); a size that
    does not take a displacement has an empty rectangle (r_lo > r_hi)."""
    nk = len(rects)
    rows: dict[tuple[int, int], list[int]] = {}
    for j, groups in enumerate(rects):
        for qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1 in groups:
            for dr in range(dr0, dr1 + 1):
                r_lo, r_hi = max(qr0, pr0 - dr), min(qr1, pr1 - dr)
                if r_lo > r_hi:
                    continue
                for dc in range(dc0, dc1 + 1):
                    c_lo, c_hi = max(qc0, pc0 - dc), min(qc1, pc1 - dc)
                    if c_lo > c_hi:
                        continue
                    row = rows.setdefault((dr, dc), [1, 0, 1, 0] * nk)
                    if row[4 * j] <= row[4 * j + 1]:
                        raise ValueError(f"displacement ({dr}, {dc}) appears in two groups of one size")
                    row[4 * j : 4 * j + 4] = [r_lo, r_hi, c_lo, c_hi]
    return tuple((dr, dc, *rows[(dr, dc)]) for dr, dc in sorted(rows))


def displacements(rects: list[torch.Tensor]) -> torch.Tensor:
    """int32 [D, 2 + 4 * len(rects)]: each displacement (dr, dc) that a candidate group of
    :func:`~elsmachine.machines.candidates.rectangles` holds, with the query pixels that take it
    at each size (one rectangle tensor per size)."""
    key = tuple(tuple(tuple(int(v) for v in g) for g in r.tolist()) for r in rects)
    return torch.tensor(_table(key), dtype=torch.int32).view(-1, 2 + 4 * len(rects))


# The kernels are module-level functions, where Triton resolves the helpers they call; they are
# defined only where Triton imports (this module is imported when a Triton form is used).
if tl is not None:

    @triton.jit
    def _window_maps(K: tl.constexpr, KP: tl.constexpr, MB: tl.constexpr, BN: tl.constexpr, QP: tl.constexpr,
                    TRQ: tl.constexpr, W: tl.constexpr):
        """Gather indices of the two passes: layout A (a line per candidate slot, segment of k
        padded rows and padded column; a lane per row of the segment) to layout B (a line per
        slot, query row and segment of k padded columns), and layout B to the windows [BN * QP];
        with the masks of the lanes that hold something and of the windows that end in the next
        segment."""
        HK: tl.constexpr = K // 2
        W2: tl.constexpr = W + 2 * HK
        SRL: tl.constexpr = (TRQ + 2 * HK + K - 1) // K
        SCL: tl.constexpr = (W2 + K - 1) // K
        fb = tl.arange(0, MB * KP)
        lb = fb // KP
        ob = fb % KP
        nb = lb // (TRQ * SCL)
        i = (lb // SCL) % TRQ
        kc = (lb % SCL) * K + ob
        inb = (lb < BN * TRQ * SCL) & (ob < K) & (kc < W2)
        line = (nb * SRL + i // K) * W2 + kc  # the segment holding row i of the window
        cs = tl.where(inb, line * KP + i % K, 0)
        hp = inb & (i % K > 0)  # a window not starting a segment ends in the next one
        cp = tl.where(hp, (line + W2) * KP + i % K - 1, 0)
        fc = tl.arange(0, BN * QP)
        q = fc % QP
        jc = q % W
        line2 = ((fc // QP) * TRQ + q // W) * SCL + jc // K
        inc = q < TRQ * W
        rs = tl.where(inc, line2 * KP + jc % K, 0)
        hp2 = inc & (jc % K > 0)
        rp = tl.where(hp2, (line2 + 1) * KP + jc % K - 1, 0)
        return inb, cs, cp, hp, rs, rp, hp2

    @triton.jit
    def _windows(E, inb, cs, cp, hp, rs, rp, hp2, MA: tl.constexpr, MB: tl.constexpr, KP: tl.constexpr,
                BN: tl.constexpr, QP: tl.constexpr):
        """k x k window sums [BN, QP] of the squared differences E [MA, KP] (layout A), by
        segments: per pass, prefix and suffix sums within each segment (non-negative terms only),
        window = suffix + the next segment's prefix."""
        pre = tl.reshape(tl.cumsum(E, 1), [MA * KP])
        suf = tl.reshape(tl.cumsum(E, 1, reverse=True), [MA * KP])
        col = tl.where(inb, tl.gather(suf, cs, 0) + tl.where(hp, tl.gather(pre, cp, 0), 0.0), 0.0)
        col = tl.reshape(col, [MB, KP])
        pre = tl.reshape(tl.cumsum(col, 1), [MB * KP])
        suf = tl.reshape(tl.cumsum(col, 1, reverse=True), [MB * KP])
        win = tl.gather(suf, rs, 0) + tl.where(hp2, tl.gather(pre, rp, 0), 0.0)
        return tl.reshape(win, [BN, QP])

    @triton.jit
    def _candidates(Y, DISP, NCOL, J: tl.constexpr, d0, n0, N, ND, nd, ni, iq, jq, in_q, H: tl.constexpr,
                    W: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, CIRC: tl.constexpr):
        """For the block of candidate slots (displacement d0 + nd, image n0 + ni) [BN, 1] and the
        query pixels (iq, jq) [1, QP]: which pairs are candidates at size slot J [BN, QP], the
        candidates' centre values [BN, QP, CP] and their codes n * H * W + p."""
        d = d0 + nd
        ok = d < ND
        row = DISP + d * NCOL
        dr = tl.load(row, mask=ok, other=0)
        dc = tl.load(row + 1, mask=ok, other=0)
        n = n0 + ni
        valid = (in_q & ok & (n < N) & (iq >= tl.load(row + 2 + 4 * J, mask=ok, other=1))
                 & (iq <= tl.load(row + 3 + 4 * J, mask=ok, other=0))
                 & (jq >= tl.load(row + 4 + 4 * J, mask=ok, other=1))
                 & (jq <= tl.load(row + 5 + 4 * J, mask=ok, other=0)))
        pr = iq + dr
        pc = jq + dc
        if CIRC:  # displacements 0..H-1 x 0..W-1 around the torus
            pr = tl.where(pr >= H, pr - H, pr)
            pc = tl.where(pc >= W, pc - W, pc)
        p = pr * W + pc
        n64 = n.to(tl.int64)
        ch = tl.arange(0, CP)[None, None, :]
        vals = tl.load(Y + ((n64 * C)[:, :, None] + ch) * (H * W) + p[:, :, None],
                       mask=valid[:, :, None] & (ch < C), other=0.0)
        return valid, vals, n64 * (H * W) + p

    @triton.jit
    def _differences(X, Y, DISP, NCOL, b, a, d0, n0, N, ND, nd, ni, row, col, in_e, in_x, H: tl.constexpr,
                     W: tl.constexpr, C: tl.constexpr, CIRC: tl.constexpr):
        """The squared differences sum_c (x_c(r) - a Y_nc(r + d))^2 at the lanes of the query-side
        pixels (row, col) (wrapped for circular padding; ``in_x``: inside the image) of the
        candidate slots (displacement d0 + nd, image n0 + ni); 0 in the lanes outside ``in_e``."""
        d = d0 + nd
        taken = d < ND
        dr = tl.load(DISP + d * NCOL, mask=taken, other=0)
        dc = tl.load(DISP + d * NCOL + 1, mask=taken, other=0)
        ok = in_e & taken
        n = n0 + ni
        yr = row + dr
        yc = col + dc
        if CIRC:
            yr = tl.where(yr >= H, yr - H, yr)
            yc = tl.where(yc >= W, yc - W, yc)
            in_y = ok & (n < N)
        else:
            in_y = ok & (n < N) & (yr >= 0) & (yr < H) & (yc >= 0) & (yc < W)
        xo = (b * C * H + row) * W + col
        yo = n.to(tl.int64) * (C * H * W) + yr * W + yc
        xv = tl.load(X + xo, mask=in_x, other=0.0)
        diff = xv - a * tl.load(Y + yo, mask=in_y, other=0.0)
        E = diff * diff
        for ch in tl.static_range(1, C):
            xv = tl.load(X + xo + ch * (H * W), mask=in_x, other=0.0)
            diff = xv - a * tl.load(Y + yo + ch * (H * W), mask=in_y, other=0.0)
            E += diff * diff
        return tl.where(in_e, E, 0.0)

    @triton.jit
    def _fold(m, l, u, best, src, acc, win, valid, scale, vals, code, TRACE: tl.constexpr):
        """The softmax states [QP] (float64) with one block of candidates folded in: distances
        ``win`` [BN, QP] where ``valid``, logits -win * scale, values ``vals`` [BN, QP, CP]."""
        dist = tl.where(valid, win, float("inf"))
        dmin = tl.min(dist, 0)  # the block's nearest candidate per query pixel
        seen = dmin < float("inf")
        top = tl.where(seen, -(dmin * scale), float("-inf")).to(tl.float64)  # its logit
        m_new = tl.maximum(m, top)
        had = m > float("-inf")
        # (Each difference of two maxima is taken where both are finite, never -inf - -inf.)
        dm = tl.where(had, m - tl.where(had, m_new, 0.0), 0.0)  # m_old - m_new <= 0
        alpha = tl.where(had, tl.exp(dm.to(win.dtype)), 0.0).to(tl.float64)
        # logit - m_new from the distance relative to the block's nearest, so no large logit
        # cancels against a large max.
        shift = tl.where(seen, top - tl.where(seen, m_new, 0.0), 0.0).to(win.dtype)
        e = tl.where(valid, (dmin[None, :] - win) * scale + shift[None, :], float("-inf"))
        w = tl.exp(e)
        if TRACE:
            u = alpha * (u + dm * l) + tl.sum(w * tl.where(valid, e, 0.0), 0).to(tl.float64)
            first = tl.min(tl.where(valid & (win == dmin[None, :]), code, 2**62), 0)  # ties: the lower code
            better = seen & ((top > best) | ((top == best) & (first < src)))
            best = tl.where(better, top, best)
            src = tl.where(better, first, src)
        l = alpha * l + tl.sum(w, 0).to(tl.float64)
        acc = acc * alpha[:, None] + tl.sum(w[:, :, None] * vals, 0).to(tl.float64)
        return m_new, l, u, best, src, acc

    @triton.jit
    def _stream_one(X, Y, A, SCALE, DISP, OUT_M, OUT_L, OUT_U, OUT_BEST, OUT_SRC, OUT_ACC, N, ND, NBLK, NSPLIT,
                    H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, K: tl.constexpr,
                    KP: tl.constexpr, TRQ: tl.constexpr, NSTRIP: tl.constexpr, BNI: tl.constexpr, BD: tl.constexpr,
                    QP: tl.constexpr, MA: tl.constexpr, MB: tl.constexpr, CIRC: tl.constexpr, TRACE: tl.constexpr):
        pid = tl.program_id(0)  # query image * NSTRIP + strip
        split = tl.program_id(1)
        b = pid // NSTRIP
        r0 = (pid % NSTRIP) * TRQ  # the strip's first query row
        BN: tl.constexpr = BNI * BD  # candidate slots of a block: BD displacements x BNI images
        HK: tl.constexpr = K // 2
        HSP: tl.constexpr = TRQ + 2 * HK
        W2: tl.constexpr = W + 2 * HK
        SRL: tl.constexpr = (HSP + K - 1) // K
        a = tl.load(A + b)
        scale = tl.load(SCALE + b)
        # Layout A: a line per (slot, segment of K padded rows, padded column), a lane per row.
        la = tl.arange(0, MA)[:, None]
        oa = tl.arange(0, KP)[None, :]
        slot = la // (SRL * W2)
        rho = ((la // W2) % SRL) * K + oa
        in_a = (la < BN * SRL * W2) & (oa < K) & (rho < HSP)
        row = r0 - HK + rho  # the query side's image row and column (may lie in the padding)
        col = la % W2 - HK
        if CIRC:
            row = (row % H + H) % H
            col = (col % W + W) % W
            in_x = in_a
        else:
            in_x = in_a & (row >= 0) & (row < H) & (col >= 0) & (col < W)
        inb, cs, cp, hp, rs, rp, hp2 = _window_maps(K, KP, MB, BN, QP, TRQ, W)
        sc = tl.arange(0, BN)[:, None]
        q = tl.arange(0, QP)[None, :]
        iq = r0 + q // W
        jq = q % W
        in_q = (q < TRQ * W) & (iq < H)
        m = tl.full([QP], float("-inf"), tl.float64)
        best = m
        l = tl.zeros([QP], tl.float64)
        u = l
        src = tl.full([QP], -1, tl.int64)
        acc = tl.zeros([QP, CP], tl.float64)
        total = tl.cdiv(ND, BD) * NBLK
        per = tl.cdiv(total, NSPLIT)
        start = split * per
        stop = tl.minimum(start + per, total)
        for t in range(start, stop):  # items: displacement-major, then blocks of images
            d0 = (t // NBLK) * BD
            n0 = (t % NBLK) * BNI
            E = _differences(X, Y, DISP, 6, b, a, d0, n0, N, ND, slot // BNI, slot % BNI, row, col, in_a, in_x,
                             H, W, C, CIRC)
            win = _windows(E, inb, cs, cp, hp, rs, rp, hp2, MA, MB, KP, BN, QP)
            valid, vals, code = _candidates(Y, DISP, 6, 0, d0, n0, N, ND, sc // BNI, sc % BNI, iq, jq, in_q,
                                            H, W, C, CP, CIRC)
            m, l, u, best, src, acc = _fold(m, l, u, best, src, acc, win, valid, scale, vals, code, TRACE)
        o = (pid * NSPLIT + split) * QP + tl.arange(0, QP)
        tl.store(OUT_M + o, m)
        tl.store(OUT_L + o, l)
        tl.store(OUT_U + o, u)
        tl.store(OUT_BEST + o, best)
        tl.store(OUT_SRC + o, src)
        tl.store(OUT_ACC + o[:, None] * CP + tl.arange(0, CP)[None, :], acc)

    @triton.jit
    def _size_step(Ep, Y, DISP, NCOL, J: tl.constexpr, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                   H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, K: tl.constexpr,
                   KP: tl.constexpr, MA: tl.constexpr, MB: tl.constexpr, KM: tl.constexpr, TRQ: tl.constexpr,
                   BNI: tl.constexpr, BD: tl.constexpr, QP: tl.constexpr, CIRC: tl.constexpr, r0):
        """Size slot J (patch size K) of one item: its segment layout gathered from the shared
        squared differences Ep (padded for the largest size KM), its windows, and its softmax
        state in the output (at ``base``) loaded, folded and stored."""
        BN: tl.constexpr = BNI * BD
        HK: tl.constexpr = K // 2
        SH: tl.constexpr = KM // 2 - HK
        W2M: tl.constexpr = W + 2 * (KM // 2)
        HSP: tl.constexpr = TRQ + 2 * HK
        W2: tl.constexpr = W + 2 * HK
        SRL: tl.constexpr = (HSP + K - 1) // K
        dd = d0 + tl.arange(0, BD)
        ok = dd < ND
        takes = tl.load(DISP + dd * NCOL + 2 + 4 * J, mask=ok, other=1) <= tl.load(DISP + dd * NCOL + 3 + 4 * J,
                                                                                   mask=ok, other=0)
        if tl.max(takes.to(tl.int32), 0) > 0:  # this size takes one of the block's displacements
            fa = tl.arange(0, MA * KP)
            la = fa // KP
            rho = ((la // W2) % SRL) * K + fa % KP
            in_a = (la < BN * SRL * W2) & (fa % KP < K) & (rho < HSP)
            at = ((la // (SRL * W2)) * (TRQ + 2 * (KM // 2)) + rho + SH) * W2M + la % W2 + SH
            E = tl.reshape(tl.where(in_a, tl.gather(Ep, tl.where(in_a, at, 0), 0), 0.0), [MA, KP])
            inb, cs, cp, hp, rs, rp, hp2 = _window_maps(K, KP, MB, BN, QP, TRQ, W)
            win = _windows(E, inb, cs, cp, hp, rs, rp, hp2, MA, MB, KP, BN, QP)
            sc = tl.arange(0, BN)[:, None]
            q = tl.arange(0, QP)[None, :]
            iq = r0 + q // W
            valid, vals, code = _candidates(Y, DISP, NCOL, J, d0, n0, N, ND, sc // BNI, sc % BNI, iq, q % W,
                                            (q < TRQ * W) & (iq < H), H, W, C, CP, CIRC)
            o = base + J * QP + tl.arange(0, QP)
            m = tl.load(OUT_M + o)
            l = tl.load(OUT_L + o)
            acc = tl.load(OUT_ACC + o[:, None] * CP + tl.arange(0, CP)[None, :])
            m, l, _, _, _, acc = _fold(m, l, l, m, tl.full([QP], -1, tl.int64), acc, win, valid, scale, vals, code,
                                       False)
            tl.store(OUT_M + o, m)
            tl.store(OUT_L + o, l)
            tl.store(OUT_ACC + o[:, None] * CP + tl.arange(0, CP)[None, :], acc)
            tl.debug_barrier()  # the next item reads these states back, maybe from other threads

    @triton.jit
    def _stream_sizes(X, Y, A, SCALE, DISP, NCOL, OUT_M, OUT_L, OUT_ACC, N, ND, NBLK, NSPLIT,
                      H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, TRQ: tl.constexpr,
                      NSTRIP: tl.constexpr, BNI: tl.constexpr, BD: tl.constexpr, QP: tl.constexpr, ME: tl.constexpr,
                      KM: tl.constexpr, CIRC: tl.constexpr, NSLOT: tl.constexpr,
                      K0: tl.constexpr, KP0: tl.constexpr, MA0: tl.constexpr, MB0: tl.constexpr,
                      K1: tl.constexpr, KP1: tl.constexpr, MA1: tl.constexpr, MB1: tl.constexpr,
                      K2: tl.constexpr, KP2: tl.constexpr, MA2: tl.constexpr, MB2: tl.constexpr,
                      K3: tl.constexpr, KP3: tl.constexpr, MA3: tl.constexpr, MB3: tl.constexpr,
                      K4: tl.constexpr, KP4: tl.constexpr, MA4: tl.constexpr, MB4: tl.constexpr,
                      K5: tl.constexpr, KP5: tl.constexpr, MA5: tl.constexpr, MB5: tl.constexpr,
                      K6: tl.constexpr, KP6: tl.constexpr, MA6: tl.constexpr, MB6: tl.constexpr,
                      K7: tl.constexpr, KP7: tl.constexpr, MA7: tl.constexpr, MB7: tl.constexpr):
        pid = tl.program_id(0)
        split = tl.program_id(1)
        b = pid // NSTRIP
        r0 = (pid % NSTRIP) * TRQ
        BN: tl.constexpr = BNI * BD
        HKM: tl.constexpr = KM // 2
        HSPM: tl.constexpr = TRQ + 2 * HKM
        W2M: tl.constexpr = W + 2 * HKM
        a = tl.load(A + b)
        scale = tl.load(SCALE + b)
        # The squared differences over the largest size's padded strip: a lane per (slot, row, column).
        fe = tl.arange(0, ME)
        slot = fe // (HSPM * W2M)
        in_e = fe < BN * HSPM * W2M
        row = r0 - HKM + (fe // W2M) % HSPM
        col = fe % W2M - HKM
        if CIRC:
            row = (row % H + H) % H
            col = (col % W + W) % W
            in_x = in_e
        else:
            in_x = in_e & (row >= 0) & (row < H) & (col >= 0) & (col < W)
        base = (pid * NSPLIT + split) * NSLOT * QP
        total = tl.cdiv(ND, BD) * NBLK
        per = tl.cdiv(total, NSPLIT)
        start = split * per
        stop = tl.minimum(start + per, total)
        for t in range(start, stop):
            d0 = (t // NBLK) * BD
            n0 = (t % NBLK) * BNI
            Ep = _differences(X, Y, DISP, NCOL, b, a, d0, n0, N, ND, slot // BNI, slot % BNI, row, col, in_e, in_x,
                              H, W, C, CIRC)
            if K0 > 0:
                _size_step(Ep, Y, DISP, NCOL, 0, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K0, KP0, MA0, MB0, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K1 > 0:
                _size_step(Ep, Y, DISP, NCOL, 1, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K1, KP1, MA1, MB1, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K2 > 0:
                _size_step(Ep, Y, DISP, NCOL, 2, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K2, KP2, MA2, MB2, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K3 > 0:
                _size_step(Ep, Y, DISP, NCOL, 3, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K3, KP3, MA3, MB3, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K4 > 0:
                _size_step(Ep, Y, DISP, NCOL, 4, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K4, KP4, MA4, MB4, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K5 > 0:
                _size_step(Ep, Y, DISP, NCOL, 5, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K5, KP5, MA5, MB5, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K6 > 0:
                _size_step(Ep, Y, DISP, NCOL, 6, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K6, KP6, MA6, MB6, KM, TRQ, BNI, BD, QP, CIRC, r0)
            if K7 > 0:
                _size_step(Ep, Y, DISP, NCOL, 7, d0, n0, N, ND, scale, OUT_M, OUT_L, OUT_ACC, base,
                           H, W, C, CP, K7, KP7, MA7, MB7, KM, TRQ, BNI, BD, QP, CIRC, r0)


def _kernels():
    return _stream_one, _stream_sizes


class _Tiles:
    """The constexpr tile sizes of one launch: strips of TRQ query rows (QP lanes), blocks of
    BN = BD x BNI candidate slots (BD displacements of BNI training images each: a small bank
    packs several displacements into a block), and per size k its segment lanes KP and the
    lines of layouts A (MA) and B (MB); ME lanes of the shared squared differences of a pass of
    several sizes."""

    def __init__(self, H: int, W: int, ks: list[int], N: int, ND: int, device: torch.device,
                 block: int | None) -> None:
        self.TRQ = H if H * W <= _QUERY_PIXELS else max(1, _QUERY_PIXELS // W)
        self.NSTRIP = -(-H // self.TRQ)
        self.QP = _pow2(self.TRQ * W)
        # Lanes of one tile: on a GPU about what a program's registers hold; the interpreter takes
        # fewer, larger steps.
        budget = 4096 if device.type == "cuda" else 1 << 16
        km = max(ks) // 2

        def lanes(bn: int, k: int) -> tuple[int, int, int]:
            h = k // 2
            srl, scl = -(-(self.TRQ + 2 * h) // k), -(-(W + 2 * h) // k)
            return _pow2(k), _pow2(bn * srl * (W + 2 * h)), _pow2(bn * self.TRQ * scl)

        def fits(bn: int) -> bool:
            return (bn * self.QP <= budget // 2 and all(kp * ma <= budget for kp, ma, _ in (lanes(bn, k) for k in ks))
                    and (len(ks) == 1 or bn * (self.TRQ + 2 * km) * (W + 2 * km) <= budget))

        if block is None:
            bn = 1
            while bn < N * ND and fits(2 * bn):
                bn *= 2
        else:
            bn = _pow2(block)
        self.BNI = min(bn, _pow2(N))
        self.BD = bn // self.BNI
        self.sizes = [(k, *lanes(bn, k)) for k in ks]  # (k, KP, MA, MB)
        self.ME = _pow2(bn * (self.TRQ + 2 * km) * (W + 2 * km))
        widest = max(max(kp * ma for _, kp, ma, _ in self.sizes), self.ME if len(ks) > 1 else 0)
        self.warps = 4 if widest <= 2048 else 8 if widest <= 8192 else 16


def _splits(items: int, programs: int, device: torch.device) -> int:
    """Splits of the items per (query image, strip): about four programs per multiprocessor in
    all, so that one image fills the GPU; never more than there are items."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = -(-4 * sms // programs)
    else:
        want = 2  # the interpreter: two splits, so the merge is exercised
    return max(1, min(want, items))


class TritonDisplacementStream:
    """The softmax state, merged over splits, of every output pixel of ``x`` [B, C, H, W] against
    the candidates stated by ``rects`` (one :func:`~elsmachine.machines.candidates.rectangles`
    tensor per size) in the images ``Y`` [N, C, H, W] (on x's device, in x's dtype).

    ``k`` one odd size: ``state`` is a float64 :class:`SoftmaxState` over [B, H, W] with the C
    values on dimension 1, and with ``trace`` its ``source`` holds codes n * H * W + p, n counted
    in ``Y``. ``k`` a list of increasing sizes (at most :data:`MAX_SIZES`): the states of all
    sizes from one pass, stacked [len(k) * B, H, W] (size j at rows j * B .. j * B + B - 1); no
    trace.
    """

    def __init__(self, x: torch.Tensor, Y: torch.Tensor, a: torch.Tensor, s: torch.Tensor, k, padding: str,
                 rects: list[torch.Tensor], *, trace: bool = False, block: int | None = None,
                 splits: int | None = None) -> None:
        why = why_unavailable(x)
        if why is not None:
            raise InputError(f"the triton-displacement backend cannot run here: {why}")
        several = not isinstance(k, int)
        ks = list(k) if several else [k]
        if several and (trace or ks != sorted(set(ks)) or len(ks) > MAX_SIZES):
            raise ValueError(f"sizes {ks} must increase, number at most {MAX_SIZES}, and carry no trace")
        if len(rects) != len(ks):
            raise ValueError(f"{len(ks)} sizes need one rectangle tensor each, got {len(rects)}")
        B, C, H, W = x.shape
        N = Y.shape[0]
        dev, dt = x.device, x.dtype
        table = displacements(rects)
        ND = table.shape[0]
        tiles = _Tiles(H, W, ks, N, ND, dev, block)
        CP = _pow2(C)
        nblk = -(-N // tiles.BNI)
        programs = B * tiles.NSTRIP
        nsplit = splits or _splits(-(-ND // tiles.BD) * nblk, programs, dev)
        nslot = len(ks) if several else 1
        shape = (programs * nsplit * nslot * tiles.QP,)
        out = {"m": torch.full(shape, float("-inf"), dtype=torch.float64, device=dev),
               "l": torch.zeros(shape, dtype=torch.float64, device=dev),
               "acc": torch.zeros(shape + (CP,), dtype=torch.float64, device=dev)}
        if not several:
            out.update(u=torch.zeros(shape, dtype=torch.float64, device=dev),
                       best=torch.full(shape, float("-inf"), dtype=torch.float64, device=dev),
                       src=torch.full(shape, -1, dtype=torch.int64, device=dev))
        scale = (1.0 / (2.0 * s.to(torch.float64) ** 2)).to(device=dev, dtype=dt).contiguous()
        args = (x.contiguous(), Y.to(device=dev, dtype=dt).contiguous(), a.to(device=dev, dtype=dt).contiguous(),
                scale, table.to(dev))
        common = dict(H=H, W=W, C=C, CP=CP, TRQ=tiles.TRQ, NSTRIP=tiles.NSTRIP, BNI=tiles.BNI, BD=tiles.BD, QP=tiles.QP,
                      CIRC=padding == "circular", num_warps=tiles.warps)
        if N and ND:  # else no candidates here (a rank of a sharded bank without this class)
            one, sizes = _kernels()
            if several:
                slots = {}
                for j in range(MAX_SIZES):
                    kj, kp, ma, mb = tiles.sizes[j] if j < len(ks) else (0, 1, 1, 1)
                    slots.update({f"K{j}": kj, f"KP{j}": kp, f"MA{j}": ma, f"MB{j}": mb})
                sizes[(programs, nsplit)](*args, table.shape[1], out["m"], out["l"], out["acc"], N, ND,
                                          nblk, nsplit, ME=tiles.ME, KM=ks[-1], NSLOT=nslot, **common, **slots)
            else:
                _, KP, MA, MB = tiles.sizes[0]
                one[(programs, nsplit)](*args, out["m"], out["l"], out["u"], out["best"], out["src"], out["acc"], N,
                                        ND, nblk, nsplit, K=ks[0], KP=KP, MA=MA, MB=MB, TRACE=trace,
                                        **common)
        self.state = _merge_splits(out, B, C, H, W, tiles, nsplit, nslot, trace)


def _merge_splits(out: dict, B: int, C: int, H: int, W: int, tiles: _Tiles, nsplit: int, nslot: int,
                  trace: bool) -> SoftmaxState:
    """The programs' partial states, [B * strips, splits, slots, QP] per field, as one state over
    [slots * B, H, W] (values on dimension 1), the splits merged pairwise (split j with split
    j + half, until one is left): a fixed order, by the exact merge of :class:`SoftmaxState`."""
    TRQ, NS, QP = tiles.TRQ, tiles.NSTRIP, tiles.QP

    def plane(t: torch.Tensor) -> torch.Tensor:  # -> [splits, slots * B, H, W]
        t = t.view(B, NS, nsplit, nslot, QP)[..., : TRQ * W].reshape(B, NS, nsplit, nslot, TRQ, W)
        return t.permute(2, 3, 0, 1, 4, 5).reshape(nsplit, nslot * B, NS * TRQ, W)[:, :, :H]

    acc = out["acc"].view(B, NS, nsplit, nslot, QP, -1)[..., : TRQ * W, :C].reshape(B, NS, nsplit, nslot, TRQ, W, C)
    acc = acc.permute(2, 3, 0, 6, 1, 4, 5).reshape(nsplit, nslot * B, C, NS * TRQ, W)[..., :H, :]
    m, l = plane(out["m"]), plane(out["l"])
    if "best" in out:
        u, best, src = plane(out["u"]), plane(out["best"]), plane(out["src"])
    else:
        u, best, src = torch.zeros_like(l), torch.full_like(m, float("-inf")), None
    st = SoftmaxState(m=m, l=l, acc=acc, u=u, best=best, value_dim=2, source=src if trace else None)
    while st.m.shape[0] > 1:
        S = st.m.shape[0]
        half = S // 2
        lo, hi, rest = _splits_of(st, 0, half), _splits_of(st, half, 2 * half), _splits_of(st, 2 * half, S)
        lo.merge_(hi)
        st = SoftmaxState.cat([lo, rest]) if S % 2 else lo
    return SoftmaxState(m=st.m[0].contiguous(), l=st.l[0].contiguous(), acc=st.acc[0].contiguous(),
                        u=st.u[0].contiguous(), best=st.best[0].contiguous(), value_dim=1,
                        source=None if st.source is None else st.source[0].contiguous())


def _splits_of(st: SoftmaxState, i0: int, i1: int) -> SoftmaxState:
    """Splits i0 .. i1 - 1 of a state whose first dimension holds the splits."""
    return SoftmaxState(m=st.m[i0:i1], l=st.l[i0:i1], acc=st.acc[i0:i1], u=st.u[i0:i1], best=st.best[i0:i1],
                        value_dim=st.value_dim, source=None if st.source is None else st.source[i0:i1])
