"""``els calibrate`` and ``els compare``: the paper's test of a machine against a trained network."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import torch
import typer

from ..errors import InputError
from .common import (
    DATASET,
    DEVICE,
    DOWNLOAD,
    LIMIT,
    MODEL,
    NOISE_SCHEDULE,
    NUM_CLASSES,
    PARALLEL,
    PER_CLASS,
    ROOT,
    SEED,
    STEPS,
    TEMPERATURE,
    THRESHOLD,
    Padding,
    Parallel,
    build_machine,
    console,
    load_model_and_data,
    parse_patch_schedule,
    parse_sizes,
    progress,
    seed_range,
    start_group,
)


class PatchMachineName(str, Enum):
    ls = "ls"
    els = "els"
    pspc = "pspc"


def _sensitivity_in(out: Path, net, ds, classes, steps: int, dev):
    """The network's sensitivity for pspc-flex, kept in the comparison folder: measured there once
    (4 noisy inputs a step, share 0.9), read back on every rerun."""
    from ..networks.sensitivity import Sensitivity, measure_sensitivity

    path = out / "sensitivity.safetensors"
    if path.exists():
        return Sensitivity.load(path)
    with progress() as prog:
        task = prog.add_task("measuring the network's sensitivity", total=steps)
        sens = measure_sensitivity(net, ds.images.to(dev), ds.labels if classes else None, steps=steps, inputs=4,
                                   meta={"model": net.meta.get("source"), "weights_sha256": net.meta.get("weights_sha256")},
                                   on_step=lambda info: prog.advance(task))
    sens.save(path)
    return sens


def run_classes(net, ds) -> list[int] | None:
    """The classes a run against ``net`` cycles through: the data's, for a conditional network."""
    return ds.classes if net.takes_labels else None


def calibrate(
    model: Path = MODEL,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    machine: PatchMachineName = typer.Option(PatchMachineName.els, help="ls, els or pspc."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    sizes: str = typer.Option("3:27", help="Candidate sizes: '3,5,7' or '3:27' (odd sizes in the range)."),
    seeds: int = typer.Option(10, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    steps: int = STEPS,
    criterion: str = typer.Option("cosine", help="cosine (similarity of scores) or l2."),
    device: str = DEVICE,
    num_classes: Optional[int] = NUM_CLASSES,
    noise_schedule: Optional[str] = NOISE_SCHEDULE,
    out: Path = typer.Option(Path("patch_schedule.json"), "--out", "-o", help="The patch schedule file to write."),
    parallel: Parallel = PARALLEL,
):
    """Calibrate the patch size per step against a trained network; writes a patch schedule JSON."""
    from ..experiments.calibrate import calibrate as run_calibration
    from ..experiments.calibrate import finish
    from ..files import check_writable
    from ..seeds import labels_for_seeds

    seed_list = seed_range(seed, seeds)
    sizes_tried = parse_sizes(sizes)
    check_writable(out)
    group, dev = start_group(device)
    net, ds, pad, dev = load_model_and_data(model, dataset, root, limit, per_class, dev, padding, num_classes, download,
                                            noise_schedule)
    classes = run_classes(net, ds)
    by_seeds = group.world > 1 and parallel == Parallel.seeds
    m = build_machine(machine.value, ds, conditional=bool(classes), padding=pad, schedule=net.schedule,
                      distributed=group.world > 1 and not by_seeds)
    labels = labels_for_seeds(seed_list, "cycle" if classes else "none", classes or [])
    lab = None if labels is None else torch.tensor(labels, device=dev)
    work = out.with_name(out.name + ".parts")  # finished seeds, kept until the schedule is written
    meta = {"data": ds.describe(), "model": str(model), "machine": machine.value, "padding": pad}
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("calibrating", total=steps * len(seed_list))
        if by_seeds:  # each process its share of the seeds into the work folder; rank 0 then reads them all
            mine = group.split(range(len(seed_list)))
            run_calibration(net, m, sizes_tried, [seed_list[i] for i in mine], steps=steps,
                            labels=None if lab is None else lab[mine], criterion=criterion, device=dev, meta=meta,
                            on_step=lambda info: prog.advance(task, group.world), work_dir=work)
            group.barrier()
            if not group.main:
                return
        sched, _, _ = run_calibration(
            net, m, sizes_tried, seed_list, steps=steps, labels=lab, criterion=criterion, device=dev, meta=meta,
            on_step=None if by_seeds else (lambda info: prog.advance(task)), work_dir=work,
            group=None if by_seeds else group,
        )
    if not group.main:
        return
    sched.save(out)
    finish(work)
    print(f"wrote {out}: sizes {list(sched.sizes)} for t = {', '.join(f'{t:g}' for t in sched.ts)} "
          f"({time.perf_counter() - t0:.0f} s)")


def compare(
    model: Path = MODEL,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    patch_schedule: Optional[str] = typer.Option(
        None, "--patch-schedule", "--schedule",
        help="Patch schedule of LS and ELS: a schedule .json, a preset name, one size or a comma list "
             "(default: the patch schedule beside the model)."),
    machines: str = typer.Option("ideal,ls,els", help="Comma list of machines, or 'all': ideal, ls, els, nearest, wiener, stationary, locality, pspc, pspc-flex."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    seeds: int = typer.Option(100, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    steps: int = STEPS,
    device: str = DEVICE,
    num_classes: Optional[int] = NUM_CLASSES,
    noise_schedule: Optional[str] = NOISE_SCHEDULE,
    threshold: float = THRESHOLD,
    temperature: float = TEMPERATURE,
    sensitivity: Optional[Path] = typer.Option(None, help="pspc-flex: the network's sensitivity file (default: measured here, once, and kept in the output folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a rerun resumes)."),
    parallel: Parallel = PARALLEL,
):
    """Measure, seed by seed, how well each machine predicts the network's samples."""
    from ..experiments.compare import check_resume
    from ..experiments.compare import compare as run_comparison
    from ..machines import MACHINES
    from ..networks.checkpoints import patch_schedule_beside
    from ..files import check_writable

    seed_list = seed_range(seed, seeds)
    check_writable(out / "summary.json")
    names = list(MACHINES) if machines.strip() == "all" else [n.strip() for n in machines.split(",") if n.strip()]
    for n in names:
        if n not in MACHINES:
            raise InputError(f"unknown machine {n!r} in --machines; choose from all, {', '.join(MACHINES)}")
    if not names:
        raise InputError("--machines is empty")
    group, dev = start_group(device)
    net, ds, pad, dev = load_model_and_data(model, dataset, root, limit, per_class, dev, padding, num_classes, download,
                                            noise_schedule)
    if patch_schedule is None and any(MACHINES[n].has_patch_size for n in names):
        beside = patch_schedule_beside(model)
        if beside is None:
            raise InputError(f"no --patch-schedule given and no patch schedule beside the model {model}")
        patch_schedule = str(beside)
    classes = run_classes(net, ds)
    if "pspc-flex" in names and sensitivity is None:  # measured once, by rank 0
        sensitivity = group.agree(_sensitivity_in(out, net, ds, classes, steps, dev) if group.main else None)
    by_seeds = group.world > 1 and parallel == Parallel.seeds
    ks = parse_patch_schedule(patch_schedule)
    ms = {n: build_machine(n, ds, conditional=bool(classes), padding=pad, patch_schedule=ks, schedule=net.schedule,
                           threshold=threshold, temperature=temperature, sensitivity=sensitivity,
                           distributed=group.world > 1 and not by_seeds) for n in names}
    meta = {"data": ds.describe(), "padding": pad}
    if group.main:
        check_resume(net, ms, out, steps=steps, classes=classes, meta=meta)
    group.barrier()
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("comparing", total=len(seed_list))
        if by_seeds:  # each process its share of the seeds; rank 0 then summarises them all
            run_comparison(net, ms, ds.images, group.split(seed_list), out, steps=steps, classes=classes, device=dev,
                           meta=meta, on_seed=lambda info: prog.advance(task, group.world), summary=False)
            group.barrier()
            if not group.main:
                return
        summary = run_comparison(net, ms, ds.images, seed_list, out, steps=steps, classes=classes, device=dev,
                                 meta=meta, on_seed=None if by_seeds else (lambda info: prog.advance(task)),
                                 group=None if by_seeds else group)
    if not group.main:
        return
    files = summary.pop("files")
    console.print_json(json.dumps({k: summary[k] for k in summary if k != "settings"}))
    print(f"wrote {', '.join(files)} ({time.perf_counter() - t0:.0f} s)")


def sensitivity(
    model: Path = MODEL,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    steps: int = STEPS,
    inputs: int = typer.Option(4, help="Noisy training images averaged at each step."),
    share: str = typer.Option("0.9", help="Share rho of a pixel's sensitivity its window holds: one number, or one per step (highest t first)."),
    seed: int = typer.Option(0, help="Seed of the images and noise the inputs are made of."),
    rows: int = typer.Option(128, help="Jacobian rows per backward batch (memory against speed)."),
    device: str = DEVICE,
    num_classes: Optional[int] = NUM_CLASSES,
    noise_schedule: Optional[str] = NOISE_SCHEDULE,
    out: Path = typer.Option(Path("sensitivity.safetensors"), "--out", "-o", help="The sensitivity file to write."),
):
    """Measure a network's sensitivity to its input per output pixel and step: the windows of pspc-flex."""
    from ..networks.sensitivity import measure_sensitivity
    from ..files import check_writable

    try:
        shares = [float(v) for v in share.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--share must be a number or a comma list of numbers, got {share!r}") from None
    check_writable(out)
    net, ds, _, dev = load_model_and_data(model, dataset, root, limit, per_class, device, None, num_classes, download,
                                          noise_schedule)
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("measuring the network's sensitivity", total=steps)
        sens = measure_sensitivity(net, ds.images.to(dev), ds.labels if net.takes_labels else None, steps=steps,
                                   inputs=inputs, share=shares[0] if len(shares) == 1 else shares, seed=seed, rows=rows,
                                   meta={"model": str(model), "weights_sha256": net.meta.get("weights_sha256"),
                                         "data": ds.describe()},
                                   on_step=lambda info: prog.advance(task))
    sens.save(out)
    print(f"wrote {out}: {steps} steps of {sens.image_size[0]}x{sens.image_size[1]} sensitivity maps "
          f"({time.perf_counter() - t0:.0f} s)")
