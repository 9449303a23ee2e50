"""The patch mosaic: where every pixel of a generated image comes from, and how new it is.

Paper, Section 6 ("patch mosaics"): each output pixel of an ELS image is the weighted average
of training patches; the one with the largest weight names the training image and the pixel
its patch came from. A trace records, per DDIM step and output pixel, that dominant candidate
(training image, source pixel, weight) and the effective number of candidates exp(H), H the
entropy of the weights. It comes out of the same engine pass that denoises.

A pixel has a dominant patch when its top candidate holds at least a tenth of the weight
(``DOMINANT``; on the strokes of MNIST mosaics the effective number of candidates is 10 to 40).
Elsewhere many candidates are equally good (a plain background patch matches thousands) and
naming one of them would be arbitrary, so maps leave those pixels grey and counts leave them
out.

Novelty of a sample: its nearest training image in L2 (optionally over circular shifts of up
to ``max_shift`` pixels), the RMS difference per pixel to it, and the number of distinct
training images whose patches dominate pixels of the final mosaic. The verdict is "memorised" when the RMS
difference is below ``threshold`` (default 0.1, i.e. 5% of the [-1, 1] range; two different
MNIST digits differ by 0.4 to 0.9), else "new".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .io import atomic_write_bytes

__all__ = ["SampleTrace", "Novelty", "novelty", "render_mosaic", "TRACE_FIELDS", "DOMINANT"]

DOMINANT = 0.1  # a top candidate with at least this weight names the pixel's source
TRACE_FIELDS = ("x_t", "x0_hat", "source_image", "source_pixel", "weight", "effective")


@dataclass
class SampleTrace:
    """Trace of a DDIM run over S steps for B images.

    ts [S] (time of each step, highest first), patch_sizes [S] (-1 where none), x_t and x0_hat
    [S, B, C, H, W] (each step's input and denoised estimate), source_image and source_pixel
    [S, B, H, W] (dominant candidate: training index, flat pixel i * W + j), weight and
    effective [S, B, H, W] (its weight; exp of the entropy of the weights).
    """

    ts: torch.Tensor
    patch_sizes: torch.Tensor
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    source_image: torch.Tensor
    source_pixel: torch.Tensor
    weight: torch.Tensor
    effective: torch.Tensor

    @staticmethod
    def from_steps(grid: torch.Tensor, sizes, steps) -> "SampleTrace":
        ks = [-1 if sizes is None or sizes[i] is None else int(sizes[i]) for i in range(len(steps))]
        cpu = lambda t: t.detach().cpu()  # noqa: E731
        return SampleTrace(
            ts=grid[: len(steps)].clone(),
            patch_sizes=torch.tensor(ks, dtype=torch.long),
            x_t=torch.stack([cpu(x).float() for x, _, _ in steps]),
            x0_hat=torch.stack([cpu(x0).float() for _, x0, _ in steps]),
            source_image=torch.stack([cpu(tr.source_image) for _, _, tr in steps]),
            source_pixel=torch.stack([cpu(tr.source_pixel) for _, _, tr in steps]),
            weight=torch.stack([cpu(tr.weight).float() for _, _, tr in steps]),
            effective=torch.stack([cpu(tr.effective).float() for _, _, tr in steps]),
        )

    def select(self, b: int) -> "SampleTrace":
        """The trace of image b alone (batch dimension kept, of size 1)."""
        f = {k: getattr(self, k)[:, b : b + 1] for k in TRACE_FIELDS}
        return SampleTrace(ts=self.ts, patch_sizes=self.patch_sizes, **f)

    def to_arrays(self) -> dict:
        out = {"trace_ts": self.ts.numpy(), "trace_patch_sizes": self.patch_sizes.numpy()}
        for k in TRACE_FIELDS:
            out[f"trace_{k}"] = getattr(self, k).numpy()
        return out

    @staticmethod
    def from_arrays(d: dict) -> "SampleTrace":
        missing = [k for k in ("trace_ts", *[f"trace_{f}" for f in TRACE_FIELDS]) if k not in d]
        if missing:
            raise InputError(f"no trace in these samples (missing {', '.join(missing)}); sample with --trace")
        f = {k: torch.from_numpy(np.asarray(d[f"trace_{k}"])) for k in TRACE_FIELDS}
        return SampleTrace(ts=torch.from_numpy(np.asarray(d["trace_ts"])),
                           patch_sizes=torch.from_numpy(np.asarray(d["trace_patch_sizes"])), **f)

    def travel(self) -> torch.Tensor:
        """[S, B, H, W] distance in pixels from each output pixel to the source pixel of its
        dominant patch (on a circularly padded set the torus distance)."""
        H, W = self.source_image.shape[-2:]
        i = torch.arange(H).view(1, 1, H, 1)
        j = torch.arange(W).view(1, 1, 1, W)
        si, sj = self.source_pixel // W, self.source_pixel % W
        return torch.sqrt(((si - i) ** 2 + (sj - j) ** 2).double()).float()


@dataclass
class Novelty:
    """Per sample (all [B]): nearest training index, its L2 distance and RMS difference per
    pixel, the circular shift (dy, dx) that matched, distinct training images dominating pixels
    of the final mosaic (-1 without a trace), the share of those pixels taken by the most used
    one, the share of pixels that have a dominant patch at all, and the verdict."""

    nearest_index: torch.Tensor
    distance: torch.Tensor
    rms: torch.Tensor
    shift: list
    distinct_sources: torch.Tensor
    top_source_share: torch.Tensor
    dominated: torch.Tensor
    verdict: list

    def rows(self) -> list[dict]:
        return [
            {"nearest": int(self.nearest_index[b]), "l2": float(self.distance[b]), "rms": float(self.rms[b]),
             "shift": self.shift[b], "sources": int(self.distinct_sources[b]),
             "top_share": float(self.top_source_share[b]), "dominated": float(self.dominated[b]),
             "verdict": self.verdict[b]}
            for b in range(len(self.verdict))
        ]


def novelty(images: torch.Tensor, train_images: torch.Tensor, *, trace: SampleTrace | None = None,
            max_shift: int = 0, threshold: float = 0.1) -> Novelty:
    """How new each of ``images`` [B, C, H, W] is against ``train_images`` [N, C, H, W]."""
    from .metrics import nearest

    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(train_images.shape[1:]):
        raise InputError(f"images {tuple(images.shape)} do not match training images {tuple(train_images.shape)}")
    if max_shift < 0:
        raise InputError(f"max_shift must be >= 0, got {max_shift}")
    x = images.detach().cpu()
    B = x.shape[0]
    best_d = torch.full((B,), float("inf"), dtype=torch.float64)
    best_i = torch.zeros(B, dtype=torch.long)
    best_s = [(0, 0)] * B
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            idx, d = nearest(torch.roll(x, (dy, dx), dims=(2, 3)), train_images)
            for b in range(B):
                if d[b] < best_d[b]:
                    best_d[b], best_i[b], best_s[b] = d[b], idx[b], (dy, dx)
    rms = best_d / np.sqrt(x[0].numel())
    distinct = torch.full((B,), -1)
    share = torch.full((B,), float("nan"), dtype=torch.float64)
    dominated = torch.full((B,), float("nan"), dtype=torch.float64)
    if trace is not None:
        # The last step's x0_hat is the final image, so its sources make the final mosaic.
        src = trace.source_image[-1].reshape(B, -1)
        dom = trace.weight[-1].reshape(B, -1) >= DOMINANT
        for b in range(B):
            s_b = src[b][dom[b]]
            dominated[b] = float(dom[b].float().mean())
            distinct[b] = len(torch.unique(s_b))
            share[b] = torch.bincount(s_b).max().item() / len(s_b) if len(s_b) else float("nan")
    verdict = ["memorised" if float(r) < threshold else "new" for r in rms]
    return Novelty(best_i, best_d, rms, best_s, distinct, share, dominated, verdict)


# ----------------------------------------------------------------------------- rendering
def source_colour(n: int) -> np.ndarray:
    """A colour of its own for training image n: hues spread by the golden ratio, so images
    with nearby indices still differ."""
    import colorsys

    h = (n * 0.6180339887498949) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, 0.75, 1.0))


def _gray(img: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> [H, W] or [H, W, 3] in [0, 1] for imshow."""
    a = ((img.float().clamp(-1, 1) + 1) / 2).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def source_colours(src: torch.Tensor, weight: torch.Tensor, image: torch.Tensor) -> np.ndarray:
    """[H, W, 3]: each pixel with a dominant patch in the colour of its source image, pixels
    without one grey; shaded by the pixel's brightness so the shape stays readable."""
    H, W = src.shape
    rgb = np.full((H, W, 3), 0.45)
    s = src.numpy()
    dom = weight.numpy() >= DOMINANT
    for n in np.unique(s[dom]):
        rgb[(s == n) & dom] = source_colour(int(n))
    bright = _gray(image)
    if bright.ndim == 3:
        bright = bright.mean(-1)
    return rgb * (0.3 + 0.7 * bright[..., None])


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def render_mosaic(trace: SampleTrace, train_images: torch.Tensor, out_dir, *, step: int = -1, top: int = 6,
                  title: str = "") -> list[Path]:
    """Write mosaic.png (final image, source map with legend, travel map, effective number of
    candidates over time) and strip.png (x_t, x0_hat and the source map at every step) for the
    single image traced in ``trace`` (batch of 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if trace.x_t.shape[1] != 1:
        raise InputError("render_mosaic draws one image: pass trace.select(b)")
    S = trace.ts.numel()
    if not -S <= step < S:
        raise InputError(f"step must lie in [-{S}, {S - 1}], got {step}")
    step = step % S
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = trace.x0_hat[-1, 0]
    src = trace.source_image[step, 0]
    wt = trace.weight[step, 0]
    dom = wt >= DOMINANT
    counts = torch.bincount(src[dom].flatten(), minlength=1)
    order = [int(i) for i in torch.argsort(counts, descending=True)[:top] if counts[i] > 0]
    H, W = src.shape
    travel = trace.travel()[step, 0].masked_fill(~dom, float("nan"))
    k = int(trace.patch_sizes[step])
    t = float(trace.ts[step])

    ncol_thumbs = max(1, (len(order) + 1) // 2)
    fig = plt.figure(figsize=(7 + 1.5 * ncol_thumbs, 3.6), dpi=120)
    gs = fig.add_gridspec(2, 4 + ncol_thumbs)
    ax = fig.add_subplot(gs[:, 0:2])
    ax.imshow(_gray(final), cmap="gray", vmin=0, vmax=1)
    ax.set_title("final image", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(gs[:, 2:4])
    ax.imshow(source_colours(src, wt, trace.x0_hat[step, 0]))
    ax.set_title(f"source image of each pixel at t = {t:.2f}" + (f", k = {k}" if k > 0 else "")
                 + f"\n(grey: no patch holds {DOMINANT:.0%} of the weight; {int(dom.sum())} of {H * W} px have one)", fontsize=8)
    ax.axis("off")
    for i, n in enumerate(order):
        a = fig.add_subplot(gs[i % 2, 4 + i // 2])
        a.imshow(_gray(train_images[n]), cmap="gray", vmin=0, vmax=1)
        for sp in a.spines.values():
            sp.set_edgecolor(source_colour(n))
            sp.set_linewidth(3)
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"#{n}: {int(counts[n])} px", fontsize=7, color=source_colour(n) * 0.7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(h_pad=1.2)
    _save(fig, out / "mosaic.png")

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), dpi=120)
    im = axes[0].imshow(travel.numpy(), cmap="viridis")
    med = float(torch.nanmedian(travel)) if bool(dom.any()) else float("nan")
    axes[0].set_title(f"how far each pixel's dominant patch travelled (px)\nat t = {t:.2f}; median {med:.1f}", fontsize=9)
    axes[0].axis("off")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    eff = trace.effective[:, 0].reshape(S, -1)
    ts = trace.ts.numpy()
    q = torch.quantile(eff.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=1).numpy()
    axes[1].fill_between(ts, q[0], q[2], alpha=0.3, label="10-90% of pixels")
    axes[1].plot(ts, q[1], "o-", ms=3, label="median pixel")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("effective number of candidates")
    axes[1].invert_xaxis()
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "travel.png")

    cols = S
    fig, axes = plt.subplots(3, cols, figsize=(1.1 * cols, 3.6), dpi=110)
    axes = np.asarray(axes).reshape(3, cols)
    for i in range(cols):
        si = trace.source_image[i, 0]
        axes[0, i].imshow(_gray(trace.x_t[i, 0]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(_gray(trace.x0_hat[i, 0]), cmap="gray", vmin=0, vmax=1)
        axes[2, i].imshow(source_colours(si, trace.weight[i, 0], trace.x0_hat[i, 0]))
        axes[0, i].set_title(f"t={float(trace.ts[i]):.2f}" + (f"\nk={int(trace.patch_sizes[i])}" if int(trace.patch_sizes[i]) > 0 else ""), fontsize=6)
        for r in range(3):
            axes[r, i].axis("off")
    for r, name in enumerate(("x_t", "x0_hat", "sources")):
        axes[r, 0].text(-4, H / 2, name, fontsize=7, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, out / "strip.png")
    return [out / "mosaic.png", out / "travel.png", out / "strip.png"]
