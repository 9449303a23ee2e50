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
    NUM_CLASSES,
    PER_CLASS,
    ROOT,
    SEED,
    STEPS,
    Padding,
    console,
    load_model_and_data,
    parse_patch_schedule,
    parse_sizes,
    progress,
    seed_range,
)


class PatchMachineName(str, Enum):
    ls = "ls"
    els = "els"


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
    machine: PatchMachineName = typer.Option(PatchMachineName.els, help="ls or els."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    sizes: str = typer.Option("3:27", help="Candidate sizes: '3,5,7' or '3:27' (odd sizes in the range)."),
    seeds: int = typer.Option(10, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    steps: int = STEPS,
    criterion: str = typer.Option("cosine", help="cosine (similarity of scores) or l2."),
    device: str = DEVICE,
    num_classes: Optional[int] = NUM_CLASSES,
    out: Path = typer.Option(Path("patch_schedule.json"), "--out", "-o", help="The patch schedule file to write."),
):
    """Calibrate the patch size per step against a trained network; writes a patch schedule JSON."""
    from ..experiments.calibrate import calibrate as run_calibration
    from ..experiments.calibrate import finish
    from ..machines import make_machine
    from ..output.files import check_writable
    from ..seeds import labels_for_seeds

    seed_list = seed_range(seed, seeds)
    sizes_tried = parse_sizes(sizes)
    check_writable(out)
    net, ds, pad, dev = load_model_and_data(model, dataset, root, limit, per_class, device, padding, num_classes, download)
    classes = run_classes(net, ds)
    m = make_machine(machine.value, ds.images, padding=pad, labels=ds.labels if classes else None, schedule=net.schedule)
    labels = labels_for_seeds(seed_list, "cycle" if classes else "none", classes or [])
    lab = None if labels is None else torch.tensor(labels, device=dev)
    work = out.with_name(out.name + ".parts")  # finished seeds, kept until the schedule is written
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("calibrating", total=steps * len(seed_list))
        sched, _, _ = run_calibration(
            net, m, sizes_tried, seed_list, steps=steps, labels=lab, criterion=criterion, device=dev,
            meta={"data": ds.describe(), "model": str(model), "machine": machine.value, "padding": pad},
            on_step=lambda info: prog.advance(task), work_dir=work,
        )
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
    machines: str = typer.Option("ideal,ls,els", help="Comma list of ideal, ls, els."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    seeds: int = typer.Option(100, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    steps: int = STEPS,
    device: str = DEVICE,
    num_classes: Optional[int] = NUM_CLASSES,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a rerun resumes)."),
):
    """Measure, seed by seed, how well each machine predicts the network's samples."""
    from ..experiments.compare import check_resume
    from ..experiments.compare import compare as run_comparison
    from ..machines import MACHINES, make_machine
    from ..networks.checkpoints import patch_schedule_beside
    from ..output.files import check_writable

    seed_list = seed_range(seed, seeds)
    check_writable(out / "summary.json")
    names = [n.strip() for n in machines.split(",") if n.strip()]
    for n in names:
        if n not in MACHINES:
            raise InputError(f"unknown machine {n!r} in --machines; choose from {', '.join(MACHINES)}")
    if not names:
        raise InputError("--machines is empty")
    net, ds, pad, dev = load_model_and_data(model, dataset, root, limit, per_class, device, padding, num_classes, download)
    if patch_schedule is None and any(MACHINES[n].has_patch_size for n in names):
        beside = patch_schedule_beside(model)
        if beside is None:
            raise InputError(f"no --patch-schedule given and no patch schedule beside the model {model}")
        patch_schedule = str(beside)
    ks = parse_patch_schedule(patch_schedule)
    classes = run_classes(net, ds)
    lab = ds.labels if classes else None
    ms = {n: make_machine(n, ds.images, padding=pad, labels=lab, schedule=net.schedule,
                          patch_size=ks if MACHINES[n].has_patch_size else None) for n in names}
    meta = {"data": ds.describe(), "padding": pad}
    check_resume(net, ms, out, steps=steps, classes=classes, meta=meta)
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("comparing", total=len(seed_list))
        summary = run_comparison(net, ms, ds.images, seed_list, out, steps=steps, classes=classes, device=dev,
                                 meta=meta, on_seed=lambda info: prog.advance(task))
    files = summary.pop("files")
    console.print_json(json.dumps({k: summary[k] for k in summary if k != "settings"}))
    print(f"wrote {', '.join(files)} ({time.perf_counter() - t0:.0f} s)")
