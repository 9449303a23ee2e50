"""``els mosaic`` and ``els novelty``: where every pixel of a sample comes from, and how new it is."""

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
    PADDING,
    PATCH_SCHEDULE,
    PER_CLASS,
    RECORDED_DATASET,
    ROOT,
    SEED,
    STEPS,
    TRACED_MACHINE,
    MachineName,
    Padding,
    build_machine,
    load_data,
    out_console,
    parse_patch_schedule,
    progress,
    resolve_device,
    seed_range,
)
from .sample import print_novelty

MAX_SHIFT = typer.Option(2, help="Novelty: also match training images shifted by up to this many pixels.")


def _data_of(d: dict, samples: Path, dataset, root, limit, per_class, download):
    """The training data a samples file was made from: loaded again from its record, or, where the
    command line names data, that data, which must be the same (same fingerprint)."""
    from ..datasets import reload_dataset

    record = d["meta"].get("data")
    given = dataset is not None or root is not None or limit is not None or per_class is not None
    if not given:
        if record is None:
            raise InputError(f"{samples} does not record its training data; give --dataset (and --limit or "
                             f"--per-class) as it was sampled")
        return reload_dataset(record)
    ds = load_data(dataset or "mnist5k", root, limit, per_class, download)
    if record is not None and record.get("sha256") != ds.fingerprint():
        raise InputError(f"{samples} was made from {record.get('name')} ({record.get('n')} images, fingerprint "
                         f"{record.get('sha256')}), but the command line gives {ds.name} ({len(ds)} images, "
                         f"fingerprint {ds.fingerprint()}); leave out the data options to use the recorded data")
    return ds


def mosaic(
    seed: int = typer.Option(0, help="Seed of the sample to draw."),
    cls: str = CLASS,
    machine: MachineName = TRACED_MACHINE,
    padding: Padding = PADDING,
    patch_schedule: str = PATCH_SCHEDULE,
    steps: int = STEPS,
    dataset: Optional[str] = RECORDED_DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    samples: Optional[Path] = typer.Option(None, help="Draw a saved sample (an .npz written by els sample --trace) instead."),
    index: int = typer.Option(0, help="With --samples: which image of the file."),
    step: int = typer.Option(-1, help="Step whose sources the maps show (-1: the last, which makes the final image)."),
    max_shift: int = MAX_SHIFT,
    device: str = DEVICE,
    out: Path = typer.Option(Path("mosaic"), "--out", "-o", help="Output folder."),
):
    """Show the patch mosaic of one sample: where every pixel comes from, and how new it is.

    Writes mosaic.png (final image, each pixel coloured by the training image its dominant
    patch came from, with the most used sources), travel.png (how far each patch moved from
    its place in its training image; effective number of candidates over time), strip.png
    (x_t, x0_hat and sources at every step, from noise to the final image) and, for a fresh
    sample, sample.npz (the sample with its trace, as els sample --trace writes it).
    """
    from ..experiments.novelty import novelty
    from ..machines import SampleTrace, Traced
    from ..files import check_writable, load_samples, save_samples
    from ..output.plots import render_mosaic
    from ..sampling import ddim_sample
    from ..seeds import labels_for_seeds, seed_noise

    if max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {max_shift}")
    check_writable(out / "mosaic.png")
    t0 = time.perf_counter()
    if samples is not None:
        d = load_samples(samples)
        ds = _data_of(d, samples, dataset, root, limit, per_class, download)
        n = d["images"].shape[0]
        if not 0 <= index < n:
            raise InputError(f"--index must lie in 0..{n - 1} for {samples}")
        tr = SampleTrace.from_arrays(d).select(index)
        x = torch.from_numpy(d["images"][index : index + 1])
        sd, lab_v = int(d["seeds"][index]), int(d["labels"][index])
        label = None if lab_v < 0 else lab_v
        what = f"{d['meta'].get('machine', '?')} sample {index} of {samples.name} (seed {sd})"
    else:
        dev = resolve_device(device)
        seed_range(seed, 1)
        ds = load_data(dataset or "mnist5k", root, limit, per_class, download)
        labels = labels_for_seeds([seed], cls, ds.classes)
        label = None if labels is None else labels[0]
        traced = Traced(build_machine(machine.value, ds, padding=padding.value,
                                      patch_schedule=parse_patch_schedule(patch_schedule)))
        noise = seed_noise([seed], tuple(ds.images.shape[1:]), device=dev)
        lab = None if label is None else torch.tensor([label], device=dev)
        with progress() as prog:
            task = prog.add_task(f"{machine.value} sampling with trace", total=steps)
            x = ddim_sample(traced, noise, steps=steps, labels=lab, callback=lambda info: prog.advance(task))
        tr = traced.sample_trace()
        sd = seed
        what = f"{machine.value} ({padding.value}), seed {seed}" + ("" if label is None else f", class {label}")
        save_samples(out / "sample.npz", x, seeds=[seed], labels=None if label is None else [label],
                     meta={"machine": machine.value, "padding": padding.value, "patch_schedule": patch_schedule,
                           "patch_sizes_used": tr.patch_sizes.tolist(), "steps": steps, "data": ds.describe(),
                           "class": cls}, **tr.to_arrays())
    paths = render_mosaic(tr, ds.images, out, step=step, title=what)
    nov = novelty(x.cpu(), ds.images, trace=tr, max_shift=max_shift)
    print_novelty(nov, [sd], None if label is None else [label])
    print(f"wrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.1f} s)")


def novelty(
    machines: str = typer.Option("ideal,ls,els", help="Comma list of machines (ideal, ls, els, nearest, wiener, stationary, locality, pspc); the sources are counted for those that can be traced."),
    seeds: int = typer.Option(10, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    cls: str = CLASS,
    padding: Padding = PADDING,
    patch_schedule: str = PATCH_SCHEDULE,
    steps: int = STEPS,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    max_shift: int = MAX_SHIFT,
    device: str = DEVICE,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the per-seed rows and summary as JSON."),
):
    """Compare how often each machine memorises: IS should, ELS should not."""
    from rich.table import Table

    from ..experiments.novelty import novelty as novelty_of
    from ..experiments.novelty import novelty_summary
    from ..machines import MACHINES, Traced
    from ..files import check_writable, write_json
    from ..sampling import ddim_sample
    from ..seeds import labels_for_seeds, seed_noise

    if max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {max_shift}")
    if out is not None:
        check_writable(out)
    dev = resolve_device(device)
    seed_list = seed_range(seed, seeds)
    names = [n.strip() for n in machines.split(",") if n.strip()]
    for n in names:
        if n not in MACHINES:
            raise InputError(f"unknown machine {n!r} in --machines; choose from {', '.join(MACHINES)}")
    ds = load_data(dataset, root, limit, per_class, download)
    labels = labels_for_seeds(seed_list, cls, ds.classes)
    lab = None if labels is None else torch.tensor(labels, device=dev)
    noise = seed_noise(seed_list, tuple(ds.images.shape[1:]), device=dev)
    ks = parse_patch_schedule(patch_schedule)
    built = {n: build_machine(n, ds, padding=padding.value, patch_schedule=ks) for n in names}
    result = {}
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("sampling", total=steps * len(names))
        for name, m in built.items():
            traced = Traced(m) if m.traceable else m
            x = ddim_sample(traced, noise, steps=steps, labels=lab, callback=lambda info: prog.advance(task))
            tr = traced.sample_trace() if m.traceable else None
            result[name] = novelty_of(x.cpu(), ds.images, trace=tr, max_shift=max_shift).rows()
    tab = Table(title=f"novelty over {seeds} seeds ({dataset}, class {cls})")
    for col in ("machine", "memorised", "median RMS/px to nearest", "median sources", "median px with a source"):
        tab.add_column(col, justify="right")
    summary = {name: novelty_summary(rows) for name, rows in result.items()}
    for name, sm in summary.items():
        traced = sm["median_sources"] >= 0  # machines that cannot be traced name no sources
        tab.add_row(name, f"{sm['memorised']:.0%}", f"{sm['median_rms']:.3f}",
                    f"{sm['median_sources']:g}" if traced else "-", f"{sm['median_dominated']:.0%}" if traced else "-")
    out_console().print(tab)
    if out is not None:
        write_json(out, {"summary": summary, "per_seed": result, "seeds": seed_list, "labels": labels})
    print(f"({time.perf_counter() - t0:.0f} s)")


def explore(
    num: int = typer.Option(10, "--num", "-n", help="Samples to make and trace (0: none; with --samples: ignored)."),
    seed: int = SEED,
    cls: str = CLASS,
    machine: MachineName = TRACED_MACHINE,
    padding: Padding = PADDING,
    patch_schedule: str = PATCH_SCHEDULE,
    steps: int = STEPS,
    dataset: Optional[str] = RECORDED_DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    samples: Optional[Path] = typer.Option(None, help="Show saved samples with their trace (els sample --trace, els mosaic's sample.npz)."),
    compare: Optional[Path] = typer.Option(None, help="Also show a comparison folder (els compare): the network beside every machine, seed by seed."),
    calibration: Optional[Path] = typer.Option(None, help="Also show a calibrated patch schedule (els calibrate): the size against t and each size's criterion."),
    device: str = DEVICE,
    out: Path = typer.Option(Path("explore.html"), "--out", "-o", help="The HTML file to write (self-contained: open it from disk)."),
):
    """Write one self-contained HTML page to explore where every pixel of a sample comes from,
    step by step, with a comparison and a calibration beside it when given."""
    from ..machines import SampleTrace, Traced
    from ..output.explore import calibration_data, compare_data, explore_page
    from ..files import check_writable, load_samples
    from ..sampling import ddim_sample
    from ..seeds import labels_for_seeds, seed_noise

    check_writable(out)
    if num < 0:
        raise InputError(f"--num must be >= 0, got {num}")
    cmp = compare_data(compare) if compare is not None else None
    cal = calibration_data(calibration) if calibration is not None else None
    trace = images = seeds = labels = train = None
    title = "elsmachine: where every pixel comes from"
    t0 = time.perf_counter()
    if samples is not None:
        d = load_samples(samples)
        ds = _data_of(d, samples, dataset, root, limit, per_class, download)
        trace = SampleTrace.from_arrays(d)
        images, seeds, train = torch.from_numpy(d["images"]), d["seeds"].tolist(), ds.images
        labels = None if (d["labels"] < 0).all() else d["labels"].tolist()
        title = f"elsmachine: {d['meta'].get('machine', 'samples')} samples of {samples.name}"
    elif num > 0:
        dev = resolve_device(device)
        ds = load_data(dataset or "mnist5k", root, limit, per_class, download)
        seeds = seed_range(seed, num, "--num")
        labels = labels_for_seeds(seeds, cls, ds.classes)
        traced = Traced(build_machine(machine.value, ds, padding=padding.value,
                                      patch_schedule=parse_patch_schedule(patch_schedule)))
        noise = seed_noise(seeds, tuple(ds.images.shape[1:]), device=dev)
        lab = None if labels is None else torch.tensor(labels, device=dev)
        with progress() as prog:
            task = prog.add_task(f"{machine.value} sampling with trace", total=steps)
            images = ddim_sample(traced, noise, steps=steps, labels=lab, callback=lambda info: prog.advance(task))
        trace, train = traced.sample_trace(), ds.images
        title = f"elsmachine: {machine.value} ({padding.value}) on {ds.name}"
    path = explore_page(out, trace=trace, images=images, seeds=seeds, labels=labels, train_images=train, title=title,
                        compare=cmp, calibration=cal)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
