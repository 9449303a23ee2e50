"""``els single``: new images from one image's patches, coarse to fine (docs/single.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer

from ..errors import InputError
from .common import console


def _sizes(text: Optional[str]):
    if text is None:
        return None
    try:
        v = [int(p) for p in text.split(",")]
    except ValueError:
        raise InputError(f"--patch-size takes odd sizes separated by commas (one, or one per scale), got {text!r}") from None
    return v[0] if len(v) == 1 else v


def single(
    image: str = typer.Argument(..., help="The one training image: a file, or a bundled photograph (chelsea, coffee)."),
    out: Path = typer.Option(Path("single.png"), "-o", "--out", help="The picture of the samples (.png); the raw "
                             "samples, settings and copy statistics go beside it as .npz."),
    size: Optional[str] = typer.Option(None, help="The output's HxW (default the image's)."),
    mode: str = typer.Option("uncond", help="uncond, retarget, symmetric or tileable."),
    seed: int = typer.Option(0, help="First seed; image i uses seed + i."),
    num: int = typer.Option(1, "-n", "--num", help="How many samples."),
    symmetry: str = typer.Option("horizontal", help="symmetric mode: horizontal (left-right mirror) or vertical."),
    scales: Optional[int] = typer.Option(None, help="Number of pyramid scales (default: the most whose coarsest "
                                         "keeps a short side of 24)."),
    scale_factor: float = typer.Option(0.5, help="Size ratio of adjacent scales."),
    patch_size: Optional[str] = typer.Option(None, "--patch-size", "-k", help="One odd size, or one per scale "
                                             "coarsest first (default 15,11,9 then 7)."),
    padding: Optional[str] = typer.Option(None, help="zeros or circular (default zeros; tileable: circular)."),
    steps: int = typer.Option(20, help="DDIM steps at the coarsest scale."),
    fine_steps: int = typer.Option(3, help="DDIM steps at each finer scale."),
    t_renoise: float = typer.Option(0.4, help="The time each finer scale is re-noised to."),
    readout: str = typer.Option("centre", help="centre (ELS) or fold (the published method's denoiser)."),
    trace: bool = typer.Option(False, "--trace", help="Keep the finest scale's trace and write the explore page "
                               "(OUT.html): each output pixel's source pixel on the source image."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
) -> None:
    """Sample new images with the patch statistics of one image (closed-form ELS over its patches)."""
    from ..experiments.single import load_source, sample_single
    from ..files import save_samples, write_json
    from ..output.images import image_grid, save_image, image_format

    image_format(out)
    if num < 1:
        raise InputError(f"-n must be a positive integer, got {num}")
    if dtype not in ("float32", "float64"):
        raise InputError(f"--dtype must be float32 or float64, got {dtype!r}")
    source = load_source(image)
    seeds = list(range(seed, seed + num))
    t0 = time.perf_counter()
    run = sample_single(source, size=size, mode=mode, seeds=seeds, scale_factor=scale_factor, num_scales=scales,
                        patch_size=_sizes(patch_size), padding=padding, steps=steps, fine_steps=fine_steps,
                        t_renoise=t_renoise, symmetry=symmetry, readout=readout, trace=trace,
                        dtype=getattr(torch, dtype),
                        progress=lambda j, L: console.print(f"scale {j}/{L} done ({time.perf_counter() - t0:.1f} s)",
                                                            highlight=False))
    seconds = time.perf_counter() - t0
    images = run.images
    if mode == "tileable":  # each sample tiled 2x2, beside the input tiled 2x2 the naive way
        tile = lambda x: torch.cat([torch.cat([x, x], -1)] * 2, -2)  # noqa: E731
        pics = [tile(run.source)[None]] + [tile(im)[None] for im in images]
        H = max(p.shape[-2] for p in pics)
        pics = [torch.nn.functional.pad(p, (0, 0, 0, H - p.shape[-2]), value=1.0) for p in pics]
        grid = image_grid(torch.cat([torch.nn.functional.pad(p, (0, 8), value=1.0) for p in pics], -1), scale=1, pad=0)
    else:
        grid = image_grid(images, scale=1, pad=4, ncol=min(num, 4))
    save_image(grid, out)
    meta = {**run.settings, "image": str(image), "seconds": seconds,
            "copies": [c.to_dict() for c in run.copies]}
    arrays = {"final_source_pixel": run.final_sources.numpy().astype(np.int64)}
    if run.trace is not None:
        arrays.update(run.trace.to_arrays())
    save_samples(out.with_suffix(".npz"), images, seeds=seeds, meta=meta, **arrays)
    write_json(out.with_suffix(".json"), meta)
    for s, c in zip(seeds, run.copies):
        console.print(f"seed {s}: largest verbatim copy {100 * c.largest:.2f}% of the output (offset {c.offset}), "
                      f"{100 * c.copied:.1f}% of pixels share a neighbour's source offset, {c.regions} regions",
                      highlight=False)
    console.print(f"{num} sample(s) of {images.shape[-2]}x{images.shape[-1]} in {seconds:.1f} s "
                  f"({seconds / num:.1f} s each); scales {run.settings['output_pyramid']}, patch sizes "
                  f"{run.settings['patch_sizes']}; wrote {out}, {out.with_suffix('.npz')}", highlight=False)
    if trace:
        from ..output.single_page import single_page

        page = single_page(out.with_suffix(".html"), run.trace, run.source, seeds=seeds,
                           title=f"els single {image} ({mode})")
        console.print(f"explore page: {page}", highlight=False)
