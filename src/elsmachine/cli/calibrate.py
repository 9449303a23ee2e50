"""``els calibrate``: the patch size per step that best predicts a trained network."""


from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Optional

import torch
import typer

from .common import (
    SETTINGS,
    default_machine,
    parse_settings,
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
    SAMPLER,
    SEED,
    STEPS,
    Padding,
    Parallel,
    SamplerName,
    build_machine,
    load_model_and_data,
    parse_sizes,
    progress,
    seed_range,
    start_group,
)


def _calibrating() -> dict[str, str]:
    from ..machines import declarations

    return {d.name.replace("-", "_"): d.name for d in declarations() if d.calibrates}


# Every machine with a patch size calibrates it (its declaration says so).
PatchMachineName = Enum("PatchMachineName", _calibrating(), type=str)


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
    machine: PatchMachineName = typer.Option(PatchMachineName(default_machine()),
                                             help="Any machine with a patch size: " + ", ".join(_calibrating().values())
                                             + "; its other options with --set (e.g. els-radius.radii=1)."),
    settings: list[str] = SETTINGS,
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    sizes: str = typer.Option("3:27", help="Candidate sizes: '3,5,7' or '3:27' (odd sizes in the range)."),
    seeds: int = typer.Option(10, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    steps: int = STEPS,
    sampler: SamplerName = SAMPLER,
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
    from ..experiments.compare import describe
    from ..machines import timed_options
    from ..files import check_writable
    from ..sampling import Sampler
    from ..seeds import labels_for_seeds

    seed_list = seed_range(seed, seeds)
    sizes_tried = parse_sizes(sizes)
    check_writable(out)
    group, dev = start_group(device)
    net, ds, pad, dev = load_model_and_data(model, dataset, root, limit, per_class, dev, padding, num_classes, download,
                                            noise_schedule)
    classes = run_classes(net, ds)
    by_seeds = group.world > 1 and parallel == Parallel.seeds
    run_sampler = Sampler(sampler.value)
    own = timed_options(machine.value, parse_settings(settings, [machine.value]).get(machine.value, {}),
                        run_sampler.grid(net.schedule, steps), net.schedule)
    m = build_machine(machine.value, ds, conditional=bool(classes), padding=pad, schedule=net.schedule,
                      distributed=group.world > 1 and not by_seeds, settings=own)
    labels = labels_for_seeds(seed_list, "cycle" if classes else "none", classes or [])
    lab = None if labels is None else torch.tensor(labels, device=dev)
    work = out.with_name(out.name + ".parts")  # finished seeds, kept until the schedule is written
    meta = {"data": ds.describe(), "model": str(model), "machine": machine.value, "padding": pad,
            **({"machine_settings": describe(m)} if own else {})}
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("calibrating", total=steps * len(seed_list))
        if by_seeds:  # each process its share of the seeds into the work folder; rank 0 then reads them all
            mine = group.split(range(len(seed_list)))
            run_calibration(net, m, sizes_tried, [seed_list[i] for i in mine], steps=steps,
                            labels=None if lab is None else lab[mine], criterion=criterion, device=dev, meta=meta,
                            sampler=run_sampler, on_step=lambda info: prog.advance(task, group.world), work_dir=work)
            group.barrier()
            if not group.main:
                return
        sched, _, _ = run_calibration(
            net, m, sizes_tried, seed_list, steps=steps, labels=lab, criterion=criterion, device=dev, meta=meta,
            sampler=run_sampler, on_step=None if by_seeds else (lambda info: prog.advance(task)), work_dir=work,
            group=None if by_seeds else group,
        )
    if not group.main:
        return
    sched.save(out)
    finish(work)
    print(f"wrote {out}: sizes {list(sched.sizes)} for t = {', '.join(f'{t:g}' for t in sched.ts)} "
          f"({time.perf_counter() - t0:.0f} s)")
