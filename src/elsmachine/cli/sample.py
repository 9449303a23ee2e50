"""``els sample``: images from a machine (or a trained network) through deterministic DDIM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
import typer

from ..errors import InputError
from .common import (
    CLASS,
    DATASET,
    DEVICE,
    DOWNLOAD,
    LIMIT,
    NOISE_SCHEDULE,
    NUM_CLASSES,
    PADDING,
    PATCH_SCHEDULE,
    PER_CLASS,
    ROOT,
    SEED,
    SENSITIVITY,
    STEPS,
    TEMPERATURE,
    THRESHOLD,
    DType,
    MachineName,
    Padding,
    build_machine,
    flag,
    load_conditional_network,
    load_data,
    out_console,
    parse_bytes,
    parse_int_list,
    parse_patch_schedule,
    progress,
    seed_range,
    start_group,
)


def print_novelty(nov, seeds, labels) -> None:
    from rich.table import Table

    tab = Table(title="novelty (nearest training image; sources = images whose patch dominates a pixel)")
    for col in ("seed", "class", "nearest", "L2", "RMS", "shift", "sources", "sourced", "verdict"):
        tab.add_column(col, justify="right")
    for i, r in enumerate(nov.rows()):
        tab.add_row(str(seeds[i]), "-" if labels is None else str(labels[i]), str(r["nearest"]), f"{r['l2']:.2f}",
                    f"{r['rms']:.3f}", str(r["shift"]), "-" if r["sources"] < 0 else str(r["sources"]),
                    "-" if r["dominated"] != r["dominated"] else f"{r['dominated']:.0%}", r["verdict"])
    out_console().print(tab)


def patch_sizes_used(machine, grid) -> list[int] | None:
    """The patch size a machine takes at each step of ``grid`` (None for machines without one)."""
    if not getattr(machine, "has_patch_size", False):
        return None
    return machine.sizes_on(grid)


def sample(
    machine: MachineName = typer.Option(MachineName.els, "--machine", "-m", help="ideal (IS), ls (LS), els (ELS), or a peer: nearest, wiener, stationary, locality, pspc, pspc-flex."),
    padding: Padding = PADDING,
    patch_schedule: str = PATCH_SCHEDULE,
    steps: int = STEPS,
    num: int = typer.Option(10, "--num", "-n", help="Number of samples."),
    seed: int = SEED,
    seeds: Optional[str] = typer.Option(None, help="Explicit comma list of seeds (overrides --seed/--num)."),
    cls: str = CLASS,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    device: str = DEVICE,
    dtype: DType = typer.Option(DType.float32, help="Arithmetic precision."),
    memory_budget: str = typer.Option("2GiB", help="Bytes of candidate keys held at once."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="Image grid (.png, or .jpg, .webp, ...); the raw outputs go beside it as .npz."),
    model: Optional[Path] = typer.Option(None, "--model", help="Sample a trained network instead of a machine."),
    num_classes: Optional[int] = NUM_CLASSES,
    noise_schedule: Optional[str] = NOISE_SCHEDULE,
    trace: bool = flag("--trace", help="Save the patch-mosaic trace with the samples (for els mosaic)."),
    show_novelty: bool = flag("--novelty", help="Print how new each sample is (nearest training image, sources, verdict)."),
    max_shift: int = typer.Option(2, help="With --novelty: also match training images shifted by up to this many pixels."),
    threshold: float = THRESHOLD,
    temperature: float = TEMPERATURE,
    sensitivity: Optional[Path] = SENSITIVITY,
):
    """Generate images with a score machine through deterministic DDIM.

    Defaults: boundary-broken ELS (zeros) with the paper's MNIST ResNet patch schedule, 20 steps,
    10 class-conditional samples (digits 0..9, seeds 0..9) on the bundled 5,000 MNIST digits,
    float32.
    """
    from ..experiments.compare import describe
    from ..machines import Traced
    from ..files import check_writable, save_samples
    from ..output.images import image_format, image_grid, save_image
    from ..sampling import ddim_sample
    from ..seeds import labels_for_seeds, seed_noise

    group, dev = start_group(device)  # under torchrun: the processes share the bank
    if max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {max_shift}")
    if model is None and noise_schedule is not None:
        raise InputError("--noise-schedule describes a --model; machines sample on the paper's cosine here")
    if model is not None and trace:
        raise InputError("--trace needs a machine: a network has no candidates to trace")
    seed_list = parse_int_list(seeds, "--seeds") if seeds else seed_range(seed, num, "--num")
    npz = out.with_suffix(".npz")
    image_format(out)
    check_writable(out)
    check_writable(npz)
    ds = load_data(dataset, root, limit, per_class, download)
    if model is not None:
        m = load_conditional_network(model, dev, num_classes=num_classes, noise_schedule=noise_schedule)
        classes = list(range(m.num_classes)) if m.takes_labels else []
        if not m.takes_labels and cls not in ("cycle", "none"):
            raise InputError(f"--class {cls}: the network {model} is not class-conditional")
        labels = labels_for_seeds(seed_list, cls if m.takes_labels else "none", classes)
    else:
        labels = labels_for_seeds(seed_list, cls, ds.classes)
        m = build_machine(machine.value, ds, padding=padding.value, patch_schedule=parse_patch_schedule(patch_schedule),
                          memory_budget=parse_bytes(memory_budget), threshold=threshold, temperature=temperature,
                          sensitivity=sensitivity, distributed=group.world > 1)
    tdtype = getattr(torch, dtype.value)
    noise = seed_noise(seed_list, tuple(ds.images.shape[1:]), dtype=tdtype, device=dev)
    lab = None if labels is None else torch.tensor(labels, device=dev)
    if trace and not m.traceable:
        raise InputError(f"--trace: the {machine.value} machine cannot be traced (no candidate with the largest weight "
                         f"per pixel)")
    want_trace = (trace or show_novelty) and model is None and m.traceable
    denoiser = Traced(m) if want_trace else m
    used = patch_sizes_used(m, m.schedule.grid(steps))
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task(f"{'network' if model else machine.value} sampling", total=steps)
        if model is None and len(ds) >= 20_000:  # long calls: how far each has streamed the bank
            cand = prog.add_task("  training images this step", total=len(ds))
            m.on_candidates = lambda done, total: prog.update(cand, completed=done, total=total)
        x = ddim_sample(denoiser, noise, steps=steps, labels=lab, callback=lambda info: prog.advance(task))
    elapsed = time.perf_counter() - t0
    tr = denoiser.sample_trace() if want_trace else None
    meta = {
        "model": None if model is None else str(model),
        "machine": machine.value if model is None else "network", "padding": padding.value,
        "patch_schedule": patch_schedule if used is not None else None, "patch_sizes_used": used,
        "steps": steps, "data": ds.describe(), "dtype": dtype.value, "device": str(dev),
        "class": cls, "seconds": round(elapsed, 3), "denoiser": describe(m),
    }
    if not group.main:  # every process holds the same images; one writes them
        return
    save_samples(npz, x, seeds=seed_list, labels=labels, meta=meta, **(tr.to_arrays() if tr is not None and trace else {}))
    save_image(image_grid(x), out)
    if show_novelty:
        from ..experiments.novelty import novelty

        print_novelty(novelty(x.cpu(), ds.images, trace=tr, max_shift=max_shift), seed_list, labels)
    print(f"wrote {out} ({len(seed_list)} images) and {npz} (raw float32 {tuple(x.shape)}, seeds, labels) "
          f"in {elapsed:.1f} s on {dev}")
