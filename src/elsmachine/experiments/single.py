"""Closed-form single-image diffusion: the patches of one image as the training set, sampled
coarse to fine over an image pyramid (docs/single.md; after Qiu, Kutulakos and Lindell, CVPR 2026,
"Efficient and Training-Free Single-Image Diffusion Models").

The denoiser at one scale is ELS over the patches of one source image S [C, Hs, Ws]
(docs/theory.md, "The score machines"), for a noisy image x_t of any size H x W:

    x0_hat(q) = sum_p w_q(p) S(p),    w_q = softmax over p of -|P_q(x_t) - a P_p(S)|^2 / (2 s^2),

over the source pixels p that q sees. ``padding="circular"``: q's window wraps around the output
torus and q sees the patch at every pixel of the source torus (fully equivariant).
``padding="zeros"``: windows are zero-padded and q sees the source pixels with its padding
footprint (docs/theory.md, "Padding footprints"), per axis: a pixel r rows from the top edge
(r < k // 2) the source pixels r rows from the source's top edge, likewise for the bottom, left
and right, and an interior pixel every interior source pixel. At equal sizes both are
:class:`~elsmachine.ELSMachine` over the one image.

``readout="fold"`` is the published method's denoiser instead (their Eq. S31 and the fold of
their image denoiser): every k x k window of x_t that lies inside the image gets the posterior
mean of its whole patch over the source's windows that lie inside the source,
E_w = sum_v softmax_v(-|P_w(x_t) - a P_v(S)|^2 / (2 s^2)) P_v(S), and x0_hat at q is the average
of E_w at q over the windows w containing q, weighted by g(q - w) = exp(-u^2 / (2 rho^2))
exp(-v^2 / (2 rho^2)) with (u, v) = (q - w) / h in [-1, 1] (h = k // 2), rho = ``fold_rho``.

Sampling (:func:`sample_single`): a pyramid of the source, S_0 (coarsest) .. S_{L-1} = S, each
scale ``scale_factor`` of the next, and the output's pyramid with the same factors. DDIM from
noise at t = 1 over the coarsest scale; at each finer scale the result is upsampled, re-noised to
``t_renoise`` with fresh noise, x = a(t_r) up + s(t_r) eps, and sampled by DDIM down to 0 with
that scale's source. Image i draws all its noise from one generator seeded by seeds[i].

Copy statistic (:func:`copy_statistic`): the final step's dominant source pixel per output pixel
gives its offset (source minus output position); the largest 4-connected region of equal
offsets is the largest verbatim copy of the source, reported as a share of the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import checks
from ..engines import displacement as disp
from ..engines import native
from ..engines.softmax import SoftmaxState, exp_floor
from ..errors import InputError
from ..noise import CosineSchedule, NoiseSchedule
from ..patch_schedule import PatchSchedule
from ..sampling import ddim_sample

__all__ = ["load_source", "BUNDLED_IMAGES", "SingleImageDenoiser", "SingleTrace", "SingleRun", "CopyStatistic", "sample_single", "pyramid_shapes",
           "copy_statistic", "resize", "MODES", "DEFAULTS"]

MODES = ("uncond", "retarget", "symmetric", "tileable")
READOUTS = ("centre", "fold")
BACKENDS = ("auto", "native", "torch")
DEFAULT_MEMORY_BUDGET = 1 << 30


BUNDLED_IMAGES = ("chelsea", "coffee")  # data/single/*.png, CC0 (data/single/LICENSE.md)


def load_source(name_or_path) -> torch.Tensor:
    """One image as float32 [C, H, W] in [-1, 1]: a bundled photograph by name (``chelsea``,
    ``coffee``; 192 x 288, CC0) or an image file (RGB or gray), through the project's dataset
    loading (:func:`~elsmachine.load_dataset` of the pixels)."""
    from importlib import resources
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    from ..datasets import load_dataset

    if str(name_or_path) in BUNDLED_IMAGES:
        path = resources.files("elsmachine") / "data" / "single" / f"{name_or_path}.png"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"no image at {str(path)!r} (give an image file or one of {', '.join(BUNDLED_IMAGES)})")
    try:
        with path.open("rb") as f:
            im = Image.open(f)
            im.load()
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read {str(path)!r} as an image: {type(e).__name__}") from None
    im = im.convert("L" if im.mode in ("L", "I", "I;16", "1", "LA") else "RGB")
    arr = np.asarray(im)
    arr = arr[None, :, :, None] if arr.ndim == 2 else arr[None]
    return load_dataset(arr, layout="nhwc").images[0]


# ---------------------------------------------------------------------------------------- geometry
def _axis_segments(nq: int, ns: int, k: int, padding: str) -> list[tuple]:
    """Which source indices each output index sees along one axis, as segments:
    ("all", q0, q1, p0, p1): every q in [q0, q1] with every p in [p0, p1];
    ("diag", q0, q1, p0): q with p = p0 + (q - q0)."""
    if padding == "circular":
        return [("all", 0, nq - 1, 0, ns - 1)]
    h = k // 2
    segs = [("all", h, nq - 1 - h, h, ns - 1 - h)]
    if h:
        segs = [("diag", 0, h - 1, 0), *segs, ("diag", nq - h, nq - 1, ns - h)]
    return segs


def _fits(H: int, W: int, Hs: int, Ws: int, k: int, padding: str) -> None:
    if padding == "zeros" and k > min(H, W, Hs, Ws):
        raise InputError(f"patch size {k} does not fit a {H}x{W} output over a {Hs}x{Ws} source with zero padding "
                         f"(every footprint must exist in both): use at most {_largest_odd(min(H, W, Hs, Ws))}")


def _largest_odd(n: int) -> int:
    return n if n % 2 else n - 1


def pad(x: torch.Tensor, h: int, padding: str) -> torch.Tensor:
    """[..., C, H, W] padded by h on every side with zeros or periodically (any h)."""
    if h == 0:
        return x
    if padding == "zeros":
        return F.pad(x, (h, h, h, h))
    H, W = x.shape[-2:]
    ri = (torch.arange(-h, H + h, device=x.device)) % H
    ci = (torch.arange(-h, W + h, device=x.device)) % W
    return x[..., ri, :][..., ci]


# ---------------------------------------------------------------------------------------- trace
@dataclass
class SingleTrace:
    """The trace of one sampling run's finest scale, S steps for B images of H x W:
    ts [S]; x_t and x0_hat [S, B, C, H, W]; source_pixel [S, B, H, W] (the dominant candidate's
    flat pixel i * Ws + j of the finest source, -1 where the readout names none), weight
    [S, B, H, W] (its weight) and effective [S, B, H, W] (exp of the entropy of the weights);
    source_shape (Hs, Ws), padding, patch_sizes [S]."""

    ts: torch.Tensor
    patch_sizes: torch.Tensor
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    source_pixel: torch.Tensor
    weight: torch.Tensor
    effective: torch.Tensor
    source_shape: tuple[int, int]
    padding: str = "zeros"

    def to_arrays(self) -> dict:
        out = {f"trace_{k}": getattr(self, k).numpy() for k in
               ("ts", "patch_sizes", "x_t", "x0_hat", "source_pixel", "weight", "effective")}
        out["trace_source_shape"] = np.array(self.source_shape)
        out["trace_padding"] = np.array(self.padding)
        return out

    @staticmethod
    def from_arrays(d) -> "SingleTrace":
        if "trace_source_pixel" not in d or "trace_source_shape" not in d:
            raise InputError("no single-image trace in these samples: run els single with --trace")
        f = {k: torch.from_numpy(np.asarray(d[f"trace_{k}"])) for k in
             ("ts", "patch_sizes", "x_t", "x0_hat", "source_pixel", "weight", "effective")}
        return SingleTrace(source_shape=tuple(int(v) for v in d["trace_source_shape"]),
                           padding=str(d["trace_padding"]), **f)


# ---------------------------------------------------------------------------------------- denoiser
class SingleImageDenoiser:
    """ELS (or, with ``readout="fold"``, the published method's denoiser) over the patches of one
    image, for noisy images of any size (see the module docstring).

    Args:
        source: the one image, [C, Hs, Ws] or [1, C, Hs, Ws], float in [-1, 1].
        patch_size: one odd size or a :class:`~elsmachine.PatchSchedule` looked up by t.
        padding: "zeros" or "circular" (readout "centre"); the fold readout takes the windows
            that lie inside the image, as the published code does, and ignores it.
        readout: "centre" (ELS: the candidates' centre pixels) or "fold" (the published one).
        fold_rho: the fold's Gaussian width on the window's [-1, 1] coordinates.
        schedule: the noise schedule (default the paper's cosine).
        memory_budget: bytes the torch form holds at once (logits and patches).
        backend: "auto" (the compiled CPU kernel for the centre readout where it runs, else
            torch), "native" or "torch".

    ``denoise(x, t)`` takes x [B, C, H, W] in the source's channels, any H and W, and returns
    x0_hat of x's shape, dtype and device; ``denoise_traced`` also returns the dominant source
    pixel per output pixel (flat i * Ws + j), its weight and the effective number of candidates.
    """

    has_patch_size = True

    def __init__(self, source: torch.Tensor, patch_size=7, padding: str = "zeros", *, readout: str = "centre",
                 fold_rho: float = 0.2, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, backend: str = "auto") -> None:
        if not isinstance(source, torch.Tensor):
            raise InputError(f"the source image must be a torch tensor, got {type(source).__name__}")
        if source.dim() == 4 and source.shape[0] == 1:
            source = source[0]
        if source.dim() != 3:
            raise InputError(f"the source image must be [C, H, W] or [1, C, H, W], got shape {tuple(source.shape)}")
        if not source.is_floating_point():
            raise InputError(f"the source image must be floating point in [-1, 1], got dtype {source.dtype}")
        if not bool(torch.isfinite(source).all()):
            raise InputError("the source image contains NaN or inf")
        self.source = source
        if isinstance(patch_size, PatchSchedule):
            self.patch_size = patch_size
        else:
            self.patch_size = checks.patch_size(patch_size, "patch_size")
        self.padding = checks.padding(padding)
        if readout not in READOUTS:
            raise InputError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        self.readout = readout
        if not (isinstance(fold_rho, (int, float)) and fold_rho > 0 and math.isfinite(fold_rho)):
            raise InputError(f"fold_rho must be a positive number, got {fold_rho!r}")
        self.fold_rho = float(fold_rho)
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "native" and readout == "fold":
            raise InputError("the native backend computes the centre readout: use backend='torch' for readout='fold'")
        self.backend = backend
        self.memory_budget = checks.positive_int(memory_budget, "memory_budget")
        self.schedule = schedule if schedule is not None else CosineSchedule()
        self._blocks: dict = {}

    # ------------------------------------------------------------------ the contract
    def size_at(self, t: float) -> int:
        ps = self.patch_size
        return ps.size_at(t, self.schedule) if isinstance(ps, PatchSchedule) else ps

    def denoise(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        return self._denoise(x, t, labels, patch_size, trace=False)[0]

    def denoise_traced(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None):
        """(x0_hat, trace): trace a dict of source_pixel [B, H, W] (int64, flat in the source),
        weight and effective [B, H, W], patch_size."""
        return self._denoise(x, t, labels, patch_size, trace=True)

    def _denoise(self, x, t, labels, patch_size, *, trace: bool):
        if labels is not None:
            raise InputError("the single-image denoiser is unconditional: give no labels")
        x = self._query(x)
        tt = checks.times(t, x.shape[0])
        if bool((tt != tt[0]).any()):
            raise InputError("the single-image denoiser takes one t per call")
        k = checks.patch_size(patch_size, "patch_size") if patch_size is not None else self.size_at(float(tt[0]))
        C, Hs, Ws = self.source.shape
        H, W = x.shape[-2:]
        if self.readout == "fold":
            if k > min(H, W, Hs, Ws):
                raise InputError(f"patch size {k} is larger than the {H}x{W} output or the {Hs}x{Ws} source")
        else:
            _fits(H, W, Hs, Ws, k, self.padding)
        a, s = self.schedule.coefficients(tt[:1], x)
        a, s = float(a[0]), float(s[0])
        if self.readout == "fold":
            return self._fold(x, a, s, k, trace)
        if self._native(x):
            return self._native_centre(x, a, s, k, trace)
        return self._torch_centre(x, a, s, k, trace)

    def _query(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"x must be a [B, C, H, W] tensor, got {shape}")
        if x.shape[1] != self.source.shape[0]:
            raise InputError(f"x has {x.shape[1]} channels but the source image has {self.source.shape[0]}")
        if not x.is_floating_point():
            raise InputError(f"x must be floating point, got dtype {x.dtype}")
        if x.shape[0] < 1:
            raise InputError("x is an empty batch")
        if not bool(torch.isfinite(x).all()):
            raise InputError("x contains NaN or inf")
        return x

    def _native(self, x) -> bool:
        if self.backend == "torch":
            return False
        ok = disp.available(x)
        if self.backend == "native" and not ok:
            raise InputError(f"the native backend needs the compiled kernel and float32/float64 CPU tensors "
                             f"(kernel: {native.status()}; x: {x.dtype} on {x.device})")
        return ok

    def _src(self, x) -> torch.Tensor:
        return self.source.to(device=x.device, dtype=x.dtype)

    # ------------------------------------------------------------------ the compiled kernel
    def _native_centre(self, x, a: float, s: float, k: int, trace: bool):
        """The centre readout on the compiled displacement kernel. The kernel runs NB training
        images side by side in vector lanes; one image fills them as NB tiles of itself: each
        all-pairs segment of source indices is cut into m tiles of width w (and a remainder of
        width 1), tile n holding source rows o_n .. o_n + w - 1 (with its window's halo), so that
        lane n's candidate pixel p in 0..w-1 is source pixel o_n + p. Every (query, source pixel)
        pair the segments name is then taken exactly once, and the feeds merge exactly."""
        B, C, H, W = x.shape
        Hs, Ws = self.source.shape[1:]
        h = k // 2
        nb = native.block_size()
        rows = _axis_segments(H, Hs, k, self.padding)
        cols = _axis_segments(W, Ws, k, self.padding)
        feeds = []
        for rs in rows:
            for cs in cols:
                if rs[1] > rs[2] or cs[1] > cs[2]:
                    continue
                both = rs[0] == "all" and cs[0] == "all"
                m_r = (8 if both else nb) if rs[0] == "all" else 1
                m_c = (nb // m_r if both else nb) if cs[0] == "all" else 1
                for pr in _pieces(rs, m_r):
                    for pc in _pieces(cs, m_c):
                        feeds.append((pr, pc))
        Hc = max(H, *(pr[4] for pr, _ in feeds))
        Wc = max(W, *(pc[4] for _, pc in feeds))
        Xp = pad(x, h, self.padding)
        X = x.new_zeros(B, C, Hc + 2 * h, Wc + 2 * h)
        X[:, :, : H + 2 * h, : W + 2 * h] = Xp
        X = X.contiguous()
        av = torch.full((B,), a, dtype=x.dtype)
        sv = torch.full((B,), s, dtype=torch.float64)
        threads = max(1, torch.get_num_threads())
        total = None
        for pr, pc in feeds:
            Y, offsets = self._tiles(x, k, pr, pc)
            groups = []
            for b0, b1 in _bands(pr[0], pr[1], threads):
                groups.append((b0, b1, pc[0], pc[1], pr[2], pr[3], pc[2], pc[3], 0, pr[4] - 1, 0, pc[4] - 1))
            stream = disp.DisplacementStream(X, h, Hc, Wc, k, av, sv, torch.tensor(groups, dtype=torch.int32),
                                             trace=trace)
            stream.feed(Y, len(offsets), h)
            st = stream.state
            if trace:
                o = torch.tensor(offsets, dtype=torch.long)  # [n, 2] source position of lane n's pixel (0, 0)
                lane = stream.source_image.clamp(0, len(offsets) - 1)
                pi, pj = stream.source_pixel // Wc, stream.source_pixel % Wc
                st.source = (pi + o[lane, 0]) * Ws + (pj + o[lane, 1])
            if total is None:
                total = st
            else:
                total.merge_(st)
        fin = total.finalize(torch.float64, trace=trace)
        out = fin.out[:, :, :H, :W].to(x.dtype)
        if not trace:
            return out, None
        return out, {"source_pixel": total.source[:, :H, :W].clone(), "weight": fin.weight[:, :H, :W].clone(),
                     "effective": fin.effective[:, :H, :W].clone(), "patch_size": k}

    def _tiles(self, x, k: int, pr, pc):
        """The lanes of one feed laid out for the kernel, [ceil(n / NB), w_r + 2h, w_c + 2h, C, NB], and
        each lane's source offset; cached per size, dtype and piece (the source does not change)."""
        key = (k, x.dtype, pr[5], pr[4], pc[5], pc[4])
        hit = self._blocks.get(key)
        if hit is not None:
            return hit
        h = k // 2
        S = pad(self._src(x), h, self.padding)  # [C, Hs + 2h, Ws + 2h]
        wr, wc = pr[4], pc[4]
        lanes, offsets = [], []
        for o_r in pr[5]:
            for o_c in pc[5]:
                lanes.append(S[:, o_r : o_r + wr + 2 * h, o_c : o_c + wc + 2 * h])
                offsets.append((o_r, o_c))
        Y = torch.stack(lanes)  # [n, C, wr + 2h, wc + 2h]
        nb = native.block_size()
        n = Y.shape[0]
        blocks = -(-n // nb)
        if blocks * nb != n:
            Y = torch.cat([Y, Y.new_zeros(blocks * nb - n, *Y.shape[1:])])
        Y = Y.view(blocks, nb, *Y.shape[1:]).permute(0, 3, 4, 2, 1).contiguous()
        if len(self._blocks) > 64:
            self._blocks.clear()
        self._blocks[key] = (Y, offsets)
        return Y, offsets

    # ------------------------------------------------------------------ the torch form
    def _blocks2d(self, H: int, W: int, k: int):
        """Rectangles (query rows, query cols, source rows, source cols) whose every pair is a
        candidate pair, from the per-axis segments (a diagonal segment as single indices)."""

        def singles(segs):
            out = []
            for seg in segs:
                if seg[0] == "all":
                    if seg[1] <= seg[2] and seg[3] <= seg[4]:
                        out.append(((seg[1], seg[2]), (seg[3], seg[4])))
                else:
                    for q in range(seg[1], seg[2] + 1):
                        out.append(((q, q), (seg[3] + q - seg[1],) * 2))
            return out

        Hs, Ws = self.source.shape[1:]
        rows = singles(_axis_segments(H, Hs, k, self.padding))
        cols = singles(_axis_segments(W, Ws, k, self.padding))
        return [(qr, qc, pr, pc) for qr, pr in rows for qc, pc in cols]

    def _torch_centre(self, x, a: float, s: float, k: int, trace: bool):
        B, C, H, W = x.shape
        Hs, Ws = self.source.shape[1:]
        h = k // 2
        S = self._src(x)
        mean = S.mean(dim=(1, 2), keepdim=True)  # both sides centred by the source mean: less to round
        Sp = pad(S - mean, h, self.padding)
        Xp = pad(x - a * mean, h, self.padding)
        out = x.new_zeros(B, C, H, W, dtype=torch.float64)
        tr = {"source_pixel": torch.zeros(B, H, W, dtype=torch.long), "weight": torch.zeros(B, H, W, dtype=torch.float64),
              "effective": torch.zeros(B, H, W, dtype=torch.float64)} if trace else None
        for (qr0, qr1), (qc0, qc1), (pr0, pr1), (pc0, pc1) in self._blocks2d(H, W, k):
            keys = _patches(Sp[None], k, pr0, pr1, pc0, pc1)[0]  # [N, D]
            vals = S[:, pr0 : pr1 + 1, pc0 : pc1 + 1].reshape(C, -1).T  # [N, C] centre pixels
            codes = (torch.arange(pr0, pr1 + 1).view(-1, 1) * Ws + torch.arange(pc0, pc1 + 1).view(1, -1)).reshape(-1)
            qs = _patches(Xp, k, qr0, qr1, qc0, qc1)  # [B, M, D]
            st = self._stream(qs, keys, vals, a, s, trace)
            fin = st.finalize(torch.float64, trace=trace)
            nr, nc = qr1 - qr0 + 1, qc1 - qc0 + 1
            out[:, :, qr0 : qr1 + 1, qc0 : qc1 + 1] = fin.out.view(B, nr, nc, C).permute(0, 3, 1, 2)
            if trace:
                tr["source_pixel"][:, qr0 : qr1 + 1, qc0 : qc1 + 1] = codes[st.source.cpu()].view(B, nr, nc)
                tr["weight"][:, qr0 : qr1 + 1, qc0 : qc1 + 1] = fin.weight.view(B, nr, nc).cpu()
                tr["effective"][:, qr0 : qr1 + 1, qc0 : qc1 + 1] = fin.effective.view(B, nr, nc).cpu()
        if trace:
            tr["patch_size"] = k
        return out.to(x.dtype), tr

    def _stream(self, qs, keys, vals, a: float, s: float, trace: bool) -> SoftmaxState:
        """The streaming softmax of queries qs [B, M, D] over keys [N, D] with values [N, V]:
        logits -|q - a y|^2 / (2 s^2) = (2 a q.y - a^2 |y|^2) / (2 s^2) + const(q)."""
        B, M, D = qs.shape
        N, V = vals.shape
        dt = qs.dtype
        st = SoftmaxState.empty((B, M), V, value_dim=-1, device=qs.device, trace=trace)
        per = max(1, self.memory_budget // (qs.element_size() * 3 * max(B * M, 1)))
        c = 1.0 / (2.0 * s * s)
        yy = (keys * keys).sum(1)
        for n0 in range(0, N, per):
            kc = keys[n0 : n0 + per]
            logits = (qs @ kc.T) * (2.0 * a * c) - (a * a * c) * yy[n0 : n0 + per]  # [B, M, n]
            vc = vals[n0 : n0 + per]
            st.fold_(logits, lambda w, vc=vc: (w @ vc).to(torch.float64), offset=n0, floor=exp_floor(dt))
        return st

    def _fold(self, x, a: float, s: float, k: int, trace: bool):
        """The published readout: each inside window's posterior mean of its whole patch over the
        source's inside windows, folded back with Gaussian weights."""
        B, C, H, W = x.shape
        Hs, Ws = self.source.shape[1:]
        S = self._src(x)
        mean = S.mean(dim=(1, 2), keepdim=True)
        h = k // 2
        keys = _patches((S - mean)[None], k, h, Hs - 1 - h, h, Ws - 1 - h, padded=False)[0]  # [N, D]
        vals = _patches(S[None], k, h, Hs - 1 - h, h, Ws - 1 - h, padded=False)[0]
        qs = _patches(x - a * mean, k, h, H - 1 - h, h, W - 1 - h, padded=False)  # [B, M, D]
        st = self._stream(qs, keys, vals, a, s, trace)
        fin = st.finalize(torch.float64, trace=trace)
        g = torch.linspace(-1, 1, k, dtype=torch.float64, device=x.device)
        g = torch.exp(-0.5 * (g / self.fold_rho) ** 2)
        gw = (g.view(-1, 1) * g.view(1, -1)).repeat(C, 1, 1).reshape(1, -1, 1)  # [1, D, 1]
        est = fin.out.transpose(1, 2) * gw  # [B, D, M]
        num = F.fold(est, (H, W), k)
        den = F.fold(gw.expand(1, -1, est.shape[2]), (H, W), k)
        out = (num / den).to(x.dtype)
        if not trace:
            return out, None
        Hw, Ww = Hs - 2 * h, Ws - 2 * h
        src = st.source.cpu()
        code = (src // Ww + h) * Ws + (src % Ww + h)  # the dominant window's centre in the source
        full = torch.full((B, H, W), -1, dtype=torch.long)
        wgt = torch.zeros(B, H, W, dtype=torch.float64)
        eff = torch.zeros(B, H, W, dtype=torch.float64)
        nr, nc = H - 2 * h, W - 2 * h
        full[:, h : H - h, h : W - h] = code.view(B, nr, nc)
        wgt[:, h : H - h, h : W - h] = fin.weight.view(B, nr, nc).cpu()
        eff[:, h : H - h, h : W - h] = fin.effective.view(B, nr, nc).cpu()
        return out, {"source_pixel": full, "weight": wgt, "effective": eff, "patch_size": k}

    def describe(self) -> dict:
        ps = self.patch_size
        return {"machine": "single-image ELS" if self.readout == "centre" else "single-image fold",
                "source_shape": list(self.source.shape), "padding": self.padding, "readout": self.readout,
                "fold_rho": self.fold_rho if self.readout == "fold" else None,
                "patch_size": ps.to_dict() if isinstance(ps, PatchSchedule) else ps,
                "schedule": self.schedule.to_dict() if hasattr(self.schedule, "to_dict") else repr(self.schedule)}

    def __repr__(self) -> str:
        C, Hs, Ws = self.source.shape
        return (f"SingleImageDenoiser(source={C}x{Hs}x{Ws}, patch_size={self.patch_size!r}, padding={self.padding!r}, "
                f"readout={self.readout!r})")


def _pieces(seg, m: int):
    """Tiles of one axis segment for the kernel's lanes: (q0, q1, d0, d1, width, offsets) with lane
    n's pixel p in 0..width-1 at source index offsets[n] + p."""
    if seg[0] == "diag":
        _, q0, q1, p0 = seg
        return [(q0, q1, -q0, -q0, q1 - q0 + 1, (p0,))]
    _, q0, q1, p0, p1 = seg
    L = p1 - p0 + 1
    m = max(1, min(m, L))
    w = L // m
    out = [(q0, q1, -q1, w - 1 - q0, w, tuple(p0 + i * w for i in range(m)))]
    rest = L - m * w
    if rest:
        out.append((q0, q1, -q1, -q0, 1, tuple(p0 + m * w + i for i in range(rest))))
    return out


def _bands(r0: int, r1: int, n: int):
    """[r0, r1] cut into at most n row bands of nearly equal height (one work item each)."""
    rows = r1 - r0 + 1
    n = max(1, min(n, rows))
    edges = [r0 + rows * i // n for i in range(n + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(n) if edges[i + 1] > edges[i]]


def _patches(xp: torch.Tensor, k: int, r0: int, r1: int, c0: int, c1: int, *, padded: bool = True) -> torch.Tensor:
    """Patches of xp [B, C, H', W'] centred at pixels r0..r1 x c0..c1: [B, M, C*k*k], channel-major,
    then window row, then column. ``padded``: xp is the image padded by k // 2 (pixel (i, j) at
    (i + h, j + h)); else pixel (i, j) at (i, j)."""
    h = k // 2
    o = 0 if padded else -h
    sub = xp[:, :, r0 + o : r1 + o + 2 * h + 1, c0 + o : c1 + o + 2 * h + 1]
    u = F.unfold(sub, k)  # [B, C*k*k, M]
    return u.transpose(1, 2).contiguous()


# ---------------------------------------------------------------------------------------- pyramid
def pyramid_shapes(H: int, W: int, scale_factor: float, num_scales: int) -> list[tuple[int, int]]:
    """(H, W) of every scale, coarsest first, finest (H, W) last: scale j of L is
    round(H r^(L-1-j)) x round(W r^(L-1-j)), at least 1."""
    return [(max(1, round(H * scale_factor ** (num_scales - 1 - j))), max(1, round(W * scale_factor ** (num_scales - 1 - j))))
            for j in range(num_scales)]


def resize(x: torch.Tensor, shape: tuple[int, int], *, circular: bool = False) -> torch.Tensor:
    """x [B, C, H, W] resized to ``shape``: antialiased bilinear going down, bicubic going up;
    ``circular`` resamples the torus (the image padded periodically first)."""
    H, W = x.shape[-2:]
    if (H, W) == tuple(shape):
        return x
    down = shape[0] <= H and shape[1] <= W
    mode = "bilinear" if down else "bicubic"
    if not circular:
        return F.interpolate(x, size=shape, mode=mode, antialias=down, align_corners=False)
    p = 4
    fy, fx = shape[0] / H, shape[1] / W
    big = F.interpolate(pad(x, p, "circular"), size=(round((H + 2 * p) * fy), round((W + 2 * p) * fx)), mode=mode,
                        antialias=down, align_corners=False)
    r0, c0 = round(p * fy), round(p * fx)
    return big[..., r0 : r0 + shape[0], c0 : c0 + shape[1]]


# ---------------------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Defaults:
    """The sampler's defaults (docs/single.md, "Defaults")."""

    scale_factor: float = 0.5
    coarsest: int = 24          # the source's coarsest short side, at least
    patch_sizes: tuple = (15, 11, 9, 7)  # coarsest first; the last repeats at every finer scale
    steps: int = 20             # DDIM steps at the coarsest scale, from t = 1
    fine_steps: int = 3         # DDIM steps at each finer scale, from t_renoise
    t_renoise: float = 0.4
    t_retarget: float = 0.8     # retarget: where the coarsest scale starts from the resized source


DEFAULTS = Defaults()
T_LAST = 0.01  # the time of a finer scale's last call (see fine_grid)


def fine_grid(t0: float, steps: int) -> torch.Tensor:
    """A finer scale's DDIM grid: ``steps`` times spaced geometrically from t0 down to
    min(t0, T_LAST), then 0, so that the last call, whose x0_hat is the image, runs at low noise,
    where the softmax over a smooth image's neighbouring patches has narrowed to one."""
    if steps == 1:
        return torch.tensor([t0, 0.0], dtype=torch.float64)
    lo = min(t0, T_LAST)
    return torch.tensor([t0 * (lo / t0) ** (i / (steps - 1)) for i in range(steps)] + [0.0], dtype=torch.float64)


def default_num_scales(Hs: int, Ws: int, scale_factor: float, coarsest: int = DEFAULTS.coarsest) -> int:
    """The most scales whose coarsest source scale keeps a short side of ``coarsest`` or more (at least 1)."""
    short = min(Hs, Ws)
    if short <= coarsest:
        return 1
    return 1 + int(math.floor(math.log(coarsest / short) / math.log(scale_factor) + 1e-9))


@dataclass
class CopyStatistic:
    """How much of an output is a verbatim copy of the source: ``largest`` the share of the output
    in the largest 4-connected region of equal source offsets, ``copied`` the share of pixels
    whose offset equals a 4-neighbour's, ``regions`` the number of regions, ``offset`` the
    largest region's (rows, cols) offset from output to source."""

    largest: float
    copied: float
    regions: int
    offset: tuple[int, int]

    def to_dict(self) -> dict:
        return {"largest": self.largest, "copied": self.copied, "regions": self.regions, "offset": list(self.offset)}


def copy_statistic(source_pixel: torch.Tensor, source_shape: tuple[int, int], padding: str = "zeros") -> CopyStatistic:
    """The copy statistic of one output from its final step's dominant source pixels
    ``source_pixel`` [H, W] (flat in a source of ``source_shape``; -1: none, its own region)."""
    sp = torch.as_tensor(source_pixel).cpu().numpy().astype(np.int64)
    if sp.ndim != 2:
        raise InputError(f"source_pixel must be [H, W], got shape {sp.shape}")
    H, W = sp.shape
    Hs, Ws = source_shape
    i = np.arange(H).reshape(-1, 1)
    j = np.arange(W).reshape(1, -1)
    dr = sp // Ws - i
    dc = sp % Ws - j
    if padding == "circular":  # a copy that wraps around the source torus keeps its offset mod the source
        dr, dc = dr % Hs, dc % Ws
    key = dr * (4 * (W + Ws) + 1) + dc
    key = np.where(sp < 0, -1 - np.arange(H * W).reshape(H, W), key)  # no source: a region of its own
    labels = np.arange(H * W).reshape(H, W)
    same_r = key[1:, :] == key[:-1, :]
    same_c = key[:, 1:] == key[:, :-1]
    if padding == "circular":
        wrap_r = key[0, :] == key[-1, :]
        wrap_c = key[:, 0] == key[:, -1]
    while True:  # min-label propagation over equal neighbours, with pointer jumping
        new = labels.copy()
        np.minimum(new[1:, :], np.where(same_r, labels[:-1, :], new[1:, :]), out=new[1:, :])
        np.minimum(new[:-1, :], np.where(same_r, labels[1:, :], new[:-1, :]), out=new[:-1, :])
        np.minimum(new[:, 1:], np.where(same_c, labels[:, :-1], new[:, 1:]), out=new[:, 1:])
        np.minimum(new[:, :-1], np.where(same_c, labels[:, 1:], new[:, :-1]), out=new[:, :-1])
        if padding == "circular":
            np.minimum(new[0, :], np.where(wrap_r, labels[-1, :], new[0, :]), out=new[0, :])
            np.minimum(new[-1, :], np.where(wrap_r, labels[0, :], new[-1, :]), out=new[-1, :])
            np.minimum(new[:, 0], np.where(wrap_c, labels[:, -1], new[:, 0]), out=new[:, 0])
            np.minimum(new[:, -1], np.where(wrap_c, labels[:, 0], new[:, -1]), out=new[:, -1])
        flat = new.reshape(-1)
        flat = flat[flat]
        new = flat.reshape(H, W)
        if np.array_equal(new, labels):
            break
        labels = new
    ids, counts = np.unique(labels, return_counts=True)
    big = int(ids[np.argmax(counts)])
    bi, bj = divmod(big, W)
    paired = np.zeros((H, W), dtype=bool)
    paired[1:, :] |= same_r
    paired[:-1, :] |= same_r
    paired[:, 1:] |= same_c
    paired[:, :-1] |= same_c
    return CopyStatistic(largest=float(counts.max()) / (H * W), copied=float(paired.mean()), regions=int(ids.size),
                         offset=(int(dr[bi, bj]), int(dc[bi, bj])))


@dataclass
class SingleRun:
    """One run of :func:`sample_single`: ``images`` [B, C, H, W] in [-1, 1] (float32), the ``source``
    [C, Hs, Ws], ``seeds``, per image its :class:`CopyStatistic` (``copies``), the trace of the
    finest scale (``trace``, when asked for; the copy statistic needs the last step's sources, which
    are always taken), and ``settings`` (everything that made it: mode, sizes, pyramid, patch sizes
    per scale, steps, times)."""

    images: torch.Tensor
    source: torch.Tensor
    seeds: list[int]
    copies: list[CopyStatistic]
    settings: dict
    trace: SingleTrace | None = None
    final_sources: torch.Tensor | None = None  # [B, H, W] the last step's dominant source pixels
    seconds: float = 0.0
    scales: list = field(default_factory=list)  # per scale, the sampled images [B, C, h, w]


class _Mirrored:
    """A denoiser whose x0_hat is made mirror-symmetric after every call (the symmetric mode)."""

    def __init__(self, inner, dim: int) -> None:
        self.inner, self.dim = inner, dim
        self.schedule = inner.schedule

    def _sym(self, x0):
        return 0.5 * (x0 + x0.flip(self.dim))

    def denoise(self, x, t, labels=None, patch_size=None):
        return self._sym(self.inner.denoise(x, t, labels, patch_size))

    def denoise_traced(self, x, t, labels=None, patch_size=None):
        x0, tr = self.inner.denoise_traced(x, t, labels, patch_size)
        return self._sym(x0), tr


class _Recorder:
    """Records each call's input, x0_hat and trace (the finest scale), following the contract."""

    def __init__(self, inner, keep: bool) -> None:
        self.inner, self.keep = inner, keep
        self.schedule = inner.schedule
        self.calls: list = []

    def denoise(self, x, t, labels=None):
        x0, tr = self.inner.denoise_traced(x, t, labels)
        if not self.keep:
            self.calls = []
        self.calls.append((float(t), x.detach().cpu().float(), x0.detach().cpu().float(), tr))
        return x0


def _size(value, what: str) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise InputError(f"{what} must be HxW (two positive integers, e.g. 256x256), got {value!r}")
        value = tuple(int(p) for p in parts)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise InputError(f"{what} must be a pair of positive integers (H, W), got {value!r}")
    return int(value[0]), int(value[1])


def _per_scale(value, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)) and not isinstance(value, PatchSchedule):
        if len(value) != n:
            raise InputError(f"{what} has {len(value)} entries but the pyramid has {n} scales (give one, or one per "
                             f"scale, coarsest first)")
        return list(value)
    return [value] * n


def sample_single(source: torch.Tensor, *, size=None, mode: str = "uncond", seeds=(0,), scale_factor: float | None = None,
                  num_scales: int | None = None, patch_size=None, padding: str | None = None, steps: int | None = None,
                  fine_steps: int | None = None, t_renoise: float | None = None, t_retarget: float | None = None,
                  symmetry: str = "horizontal", readout: str = "centre", fold_rho: float = 0.2, trace: bool = False,
                  backend: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET, dtype=torch.float32,
                  device="cpu", progress=None) -> SingleRun:
    """New images with the patch statistics of one ``source`` image [C, Hs, Ws] in [-1, 1], coarse
    to fine (see the module docstring).

    Args:
        size: the output's (H, W) (or "HxW"); default the source's.
        mode: "uncond" (from noise), "retarget" (the coarsest scale starts from the source resized
            to the output's coarsest shape, re-noised to ``t_retarget``), "symmetric" (x0_hat
            mirrored after every call, along ``symmetry``: "horizontal" (left-right) or
            "vertical") or "tileable" (circular padding and circular resampling: the output tiles
            the plane seamlessly).
        seeds: one image per seed; image i draws all its noise from a generator seeded by seeds[i].
        scale_factor: the size ratio of adjacent scales (default 0.5); num_scales: default the
            most whose coarsest source scale keeps a short side of 24 or more.
        patch_size: one odd size, a :class:`~elsmachine.PatchSchedule` (looked up by t at each
            step), or a list with one of either per scale (coarsest first); default 15, 11, 9, then 7
            at every finer scale. A size
            larger than a scale allows (zero padding) is reduced to the largest odd that fits.
        padding: "zeros" or "circular" (tileable: circular; default zeros).
        steps: DDIM steps at the coarsest scale from t = 1 (default 20); fine_steps: at each finer
            scale from ``t_renoise`` down to 0.01 (defaults 3 and 0.4; see :func:`fine_grid`).
        readout: "centre" (ELS) or "fold" (the published denoiser, ``fold_rho``).
        trace: keep the finest scale's steps for the explore page.
    """
    import time

    start = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(source, torch.Tensor) or source.dim() not in (3, 4):
        raise InputError("the source must be a [C, H, W] tensor")
    if source.dim() == 4:
        if source.shape[0] != 1:
            raise InputError(f"give one source image, got {source.shape[0]}")
        source = source[0]
    source = source.to(device=device, dtype=dtype)
    C, Hs, Ws = source.shape
    H, W = _size(size, "size") if size is not None else (Hs, Ws)
    if mode == "retarget" and size is None:
        raise InputError("retarget needs the output's size: give size=(H, W)")
    if symmetry not in ("horizontal", "vertical"):
        raise InputError(f"symmetry must be horizontal or vertical, got {symmetry!r}")
    sf = DEFAULTS.scale_factor if scale_factor is None else scale_factor
    if not (isinstance(sf, (int, float)) and 0 < sf < 1):
        raise InputError(f"scale_factor must lie in (0, 1), got {sf!r}")
    L = default_num_scales(Hs, Ws, sf) if num_scales is None else checks.positive_int(num_scales, "num_scales")
    if padding is None:
        padding = "circular" if mode == "tileable" else "zeros"
    padding = checks.padding(padding)
    if mode == "tileable" and padding != "circular":
        raise InputError("tileable samples need padding='circular': a zero-padded output has a border")
    steps = DEFAULTS.steps if steps is None else checks.positive_int(steps, "steps")
    fine_steps = DEFAULTS.fine_steps if fine_steps is None else checks.positive_int(fine_steps, "fine_steps")
    t_r = DEFAULTS.t_renoise if t_renoise is None else t_renoise
    t_rt = DEFAULTS.t_retarget if t_retarget is None else t_retarget
    for name, v in (("t_renoise", t_r), ("t_retarget", t_rt)):
        if not (isinstance(v, (int, float)) and 0 < v <= 1):
            raise InputError(f"{name} must lie in (0, 1], got {v!r}")
    seeds = [int(s) for s in seeds] if not isinstance(seeds, int) else [seeds]
    if not seeds:
        raise InputError("give at least one seed")
    src_shapes = pyramid_shapes(Hs, Ws, sf, L)
    out_shapes = pyramid_shapes(H, W, sf, L)
    if patch_size is None:
        d = DEFAULTS.patch_sizes
        sizes = [d[min(j, len(d) - 1)] for j in range(L)]
    else:
        sizes = _per_scale(patch_size, L, "patch_size")
    circ = padding == "circular"
    schedule = CosineSchedule()
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    for s in seeds:
        if s < 0:
            raise InputError(f"seeds must be non-negative integers, got {s}")

    def noise(shape):
        n = torch.stack([torch.randn((C, *shape), generator=g, dtype=torch.float64) for g in gens])
        if mode == "symmetric":
            dim = -1 if symmetry == "horizontal" else -2
            n = (n + n.flip(dim)) / math.sqrt(2.0)
        return n.to(device=device, dtype=dtype)

    x = None
    record = None
    used_sizes, grids = [], []
    scales = []
    for j in range(L):
        S_j = resize(source[None], src_shapes[j])[0] if src_shapes[j] != (Hs, Ws) else source
        shape = out_shapes[j]
        k = sizes[j]
        if isinstance(k, int) and not isinstance(k, bool) and padding == "zeros":
            fit = _largest_odd(min(*shape, *src_shapes[j]))
            k = min(checks.patch_size(k, "patch_size"), max(fit, 1))
        den = SingleImageDenoiser(S_j, k, padding, readout=readout, fold_rho=fold_rho, schedule=schedule,
                                  memory_budget=memory_budget, backend=backend)
        if mode == "symmetric":
            den = _Mirrored(den, -1 if symmetry == "horizontal" else -2)
        if j == 0:
            if mode == "retarget":
                t0 = float(t_rt)
                init = resize(resize(source[None], src_shapes[0]), shape)
                x = schedule.alpha(t0) * init + schedule.sigma(t0) * noise(shape)
                ts = torch.linspace(t0, 0.0, steps + 1, dtype=torch.float64)
            else:
                x = noise(shape)
                ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        else:
            up = resize(x, shape, circular=circ)
            t0 = float(t_r)
            x = schedule.alpha(t0) * up + schedule.sigma(t0) * noise(shape)
            ts = fine_grid(t0, fine_steps)
        ts[-1] = 0.0
        last = j == L - 1
        run = den
        if last:
            record = _Recorder(den, keep=trace)
            run = record
        x = ddim_sample(run, x.to(dtype), steps=None, ts=ts).to(dtype)
        if mode == "symmetric":
            x = 0.5 * (x + x.flip(-1 if symmetry == "horizontal" else -2))
        scales.append(x.detach().cpu().float())
        used_sizes.append(k.to_dict() if isinstance(k, PatchSchedule) else k)
        grids.append([float(v) for v in ts])
        if progress is not None:
            progress(j + 1, L)
    final = record.calls[-1][3]
    final_sources = final["source_pixel"].cpu()
    copies = [copy_statistic(final_sources[b], (Hs, Ws), padding) for b in range(len(seeds))]
    tr = None
    if trace:
        calls = record.calls
        tr = SingleTrace(ts=torch.tensor([c[0] for c in calls], dtype=torch.float64),
                         patch_sizes=torch.tensor([int(c[3]["patch_size"]) for c in calls], dtype=torch.long),
                         x_t=torch.stack([c[1] for c in calls]), x0_hat=torch.stack([c[2] for c in calls]),
                         source_pixel=torch.stack([c[3]["source_pixel"].cpu() for c in calls]),
                         weight=torch.stack([c[3]["weight"].cpu().float() for c in calls]),
                         effective=torch.stack([c[3]["effective"].cpu().float() for c in calls]),
                         source_shape=(Hs, Ws), padding=padding)
    settings = {"mode": mode, "size": [H, W], "source_shape": [C, Hs, Ws], "scale_factor": sf, "num_scales": L,
                "source_pyramid": [list(s) for s in src_shapes], "output_pyramid": [list(s) for s in out_shapes],
                "patch_sizes": used_sizes, "padding": padding, "steps": steps, "fine_steps": fine_steps,
                "t_renoise": t_r, "t_retarget": t_rt if mode == "retarget" else None,
                "symmetry": symmetry if mode == "symmetric" else None, "readout": readout,
                "fold_rho": fold_rho if readout == "fold" else None, "grids": grids, "schedule": "cosine",
                "dtype": str(dtype).replace("torch.", "")}
    return SingleRun(images=x.detach().cpu().float(), source=source.detach().cpu().float(), seeds=seeds,
                     copies=copies, settings=settings, trace=tr, final_sources=final_sources,
                     seconds=time.perf_counter() - start, scales=scales)
