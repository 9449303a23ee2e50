"""Every plot the project draws: the patch mosaic of a traced sample (docs/theory.md, "The patch
mosaic") and the comparison of machines with a network (docs/theory.md, "Metrics"). Each figure
is written atomically as PNG.
"""

from __future__ import annotations

import io
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..files import atomic_write
from ..machines.tracing import DOMINANT, SampleTrace
from ..results import Comparison

__all__ = ["render_mosaic", "source_colour", "comparison_plots", "shown_image", "COMPARISON_FIGURES"]


# Distinct colours for the most used sources, the ones the legend names (matplotlib's tab10
# without its grey, which marks pixels without a dominant patch).
_LEGEND = np.array([(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
                    (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81)])


def source_colour(n: int, legend: list[int] = ()) -> np.ndarray:
    """The colour of training image n: a distinct legend colour for the sources ``legend``
    names, else a pale hue spread by the golden ratio (images with nearby indices still differ)."""
    import colorsys

    if n in legend and legend.index(n) < len(_LEGEND):
        return _LEGEND[legend.index(n)]
    h = (n * 0.6180339887498949) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, 0.3, 0.95))


def shown_image(img: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> [H, W] or [H, W, 3] in [0, 1] for imshow."""
    a = ((img.float().clamp(-1, 1) + 1) / 2).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def source_colours(src: torch.Tensor, weight: torch.Tensor, image: torch.Tensor, legend: list[int] = ()) -> np.ndarray:
    """[H, W, 3]: each pixel with a dominant patch in the colour of its source image, pixels
    without one grey; shaded by the pixel's brightness so the shape stays readable."""
    H, W = src.shape
    rgb = np.full((H, W, 3), 0.45)
    s = src.numpy()
    dom = weight.numpy() >= DOMINANT
    for n in np.unique(s[dom]):
        rgb[(s == n) & dom] = source_colour(int(n), legend)
    bright = shown_image(image)
    if bright.ndim == 3:
        bright = bright.mean(-1)
    return rgb * (0.3 + 0.7 * bright[..., None])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_mosaic(trace: SampleTrace, train_images: torch.Tensor, out_dir, *, step: int = -1, top: int = 6,
                  title: str = "") -> list[Path]:
    """Write mosaic.png (final image, source map with legend, travel map, effective number of
    candidates over time) and strip.png (x_t, x0_hat and the source map at every step) for the
    single image traced in ``trace`` (batch of 1)."""
    plt = _pyplot()
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
    ax.imshow(shown_image(final), cmap="gray", vmin=0, vmax=1)
    ax.set_title("final image", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(gs[:, 2:4])
    ax.imshow(source_colours(src, wt, trace.x0_hat[step, 0], order))
    ax.set_title(f"source image of each pixel at t = {t:.2f}" + (f", k = {k}" if k > 0 else "")
                 + f"\n(grey: no patch holds {DOMINANT:.0%} of the weight; {int(dom.sum())} of {H * W} px have one)", fontsize=8)
    ax.axis("off")
    for i, n in enumerate(order):
        a = fig.add_subplot(gs[i % 2, 4 + i // 2])
        a.imshow(shown_image(train_images[n]), cmap="gray", vmin=0, vmax=1)
        for sp in a.spines.values():
            sp.set_edgecolor(source_colour(n, order))
            sp.set_linewidth(3)
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"#{n}: {int(counts[n])} px", fontsize=7, color=source_colour(n, order) * 0.8)
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
        axes[0, i].imshow(shown_image(trace.x_t[i, 0]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(shown_image(trace.x0_hat[i, 0]), cmap="gray", vmin=0, vmax=1)
        axes[2, i].imshow(source_colours(si, trace.weight[i, 0], trace.x0_hat[i, 0], order))
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


def _label(name: str) -> str:
    """A machine's short name in figures (its declaration's label)."""
    from ..machines import MACHINES

    return MACHINES[name].declaration.short if name in MACHINES else name


# Every figure comparison_plots may write into a comparison folder: those a run does not make are
# removed, so that no figure is left beside a summary it does not show.
COMPARISON_FIGURES = ("boxplot.png", "scatter.png", "montage.png")


def comparison_plots(folder, comparison: Comparison, train_images: torch.Tensor, *, montage: int = 8) -> list[Path]:
    """Plots of the comparison folder ``folder``, summarised as ``comparison``, written into it: a
    box plot of r per machine (boxplot.png), IS against ELS seed by seed where both ran
    (scatter.png), and a labelled montage of the first ``montage`` seeds (montage.png: the
    network, every machine, the training image nearest to the network's; the images from the
    folder's seed records). ``train_images`` [N, C, H, W]. Returns the paths. A figure of
    :data:`COMPARISON_FIGURES` this comparison does not make (no ELS or no IS, no montage) is
    removed from the folder: an earlier run's would no longer match the summary beside it."""
    plt = _pyplot()
    out = Path(folder)
    names = comparison.names
    shown = list(islice(comparison.records(out), max(montage, 0)))
    made = {"boxplot.png", *(["scatter.png"] if comparison.els_beats_is is not None else []),
            *(["montage.png"] if shown else [])}
    for name in COMPARISON_FIGURES:  # first, so that a failure below leaves no stale figure either
        if name not in made:
            (out / name).unlink(missing_ok=True)
    written = []
    label = [_label(n) for n in names]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.6), dpi=120)
    ax.boxplot([comparison.values(n, "r") for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), label)
    ax.set_ylabel("r with the network's image")
    ax.set_title(f"{comparison.seeds} seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out / "boxplot.png"))
    if comparison.els_beats_is is not None:
        from ..machines import DEFAULT_MACHINE, EXACT_MACHINE

        r_els, r_is = comparison.values(DEFAULT_MACHINE, "r"), comparison.values(EXACT_MACHINE, "r")
        fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
        ax.scatter(r_is, r_els, s=12, alpha=0.7)
        lo = min(r_is.min(), r_els.min(), 0.0)
        ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
        ax.set_xlabel("IS: r with the network")
        ax.set_ylabel("ELS: r with the network")
        ax.set_title(f"{comparison.seeds} seeds; ELS beats IS on {comparison.els_beats_is:.0%}")
        fig.tight_layout()
        written.append(_save(fig, out / "scatter.png"))
    if shown:
        cols = ["network"] + label + ["nearest training image"]
        fig, axes = plt.subplots(len(shown), len(cols), figsize=(1.1 * len(cols), 1.15 * len(shown) + 0.4), dpi=110,
                                 squeeze=False)
        for i, (row, rec) in enumerate(shown):
            imgs = [torch.from_numpy(rec.network)] + [torch.from_numpy(rec.machines[n].image) for n in names]
            imgs.append(train_images[row.nearest_index].float())
            for j, img in enumerate(imgs):
                ax = axes[i, j]
                ax.imshow(shown_image(img), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if 1 <= j <= len(names):
                    ax.set_xlabel(f"r = {row.values[names[j - 1]]['r']:.2f}", fontsize=6, labelpad=1)
                if i == 0:
                    ax.set_title(cols[j], fontsize=7)
            axes[i, 0].set_ylabel(f"seed {row.seed}", fontsize=6)
        fig.tight_layout(pad=0.3)
        written.append(_save(fig, out / "montage.png"))
    return written
