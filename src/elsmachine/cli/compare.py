"""``els compare``: the paper's test of machines against a trained network, seed by seed."""


from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .calibrate import run_classes
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
    SAMPLER,
    SETTINGS,
    STEPS,
    TEMPERATURE,
    THRESHOLD,
    Padding,
    Parallel,
    SamplerName,
    build_machine,
    console,
    load_model_and_data,
    machine_names,
    parse_machines,
    parse_patch_schedule,
    parse_settings,
    progress,
    refuse_unused,
    seed_range,
    start_group,
)


def _sensitivity_in(out: Path, net, ds, classes, steps: int, dev, grid):
    """The network's sensitivity for pspc-flex, kept in the comparison folder: measured there once
    at the sampler's times ``grid`` (4 noisy inputs a step, share 0.9), read back on every rerun."""
    from ..networks.sensitivity import Sensitivity, measure_sensitivity

    path = out / "sensitivity.safetensors"
    if path.exists():
        return Sensitivity.load(path)
    with progress() as prog:
        task = prog.add_task("measuring the network's sensitivity", total=steps)
        sens = measure_sensitivity(net, ds.images.to(dev), ds.labels if classes else None, steps=steps, inputs=4,
                                   meta={"model": net.meta.get("source"), "weights_sha256": net.meta.get("weights_sha256")},
                                   on_step=lambda info: prog.advance(task), grid=grid)
    sens.save(path)
    return sens


def print_summary(summary) -> None:
    """The summary as one table: each paper's statistic under its own name (Kamb and Ganguli's median
    r, which their tables call r^2; GoldDiff's and the Analytic Diffusion Studio's mean R^2 and MSE)."""
    from rich.table import Table

    from ..machines import DEFAULT_MACHINE, EXACT_MACHINE, declaration_of

    sampler = summary.settings.common.get("sampler", {}).get("name", "ddim")
    tab = Table(title=f"{summary.seeds} seeds against {summary.reference}, sampler {sampler}")
    for col in ("machine", "median r (K&G's 'r^2')", "mean R^2 (GoldDiff, Studio)", "mean MSE (GoldDiff, Studio)",
                "median R^2", *(f"beats {declaration_of(n).short}" for n in (EXACT_MACHINE, DEFAULT_MACHINE))):
        tab.add_column(col, justify="left" if col == "machine" else "right")
    share = lambda v: "" if v is None else f"{v:.0%}"  # noqa: E731
    for name, m in summary.machines.items():
        tab.add_row(name, f"{m.median['r']:.3f}", f"{m.mean['R2']:.3f}", f"{m.mean['mse']:.4f}", f"{m.median['R2']:.3f}",
                    share(m.beats.get(EXACT_MACHINE)), share(m.beats.get(DEFAULT_MACHINE)))
    console.print(tab)


def compare(
    model: Path = MODEL,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    patch_schedule: Optional[str] = typer.Option(
        None, "--patch-schedule",
        help="Patch schedule of the machines with a patch size: a schedule .json, a preset name, one size or a "
             "comma list (default: the patch schedule beside the model)."),
    old_patch_schedule: Optional[str] = typer.Option(None, "--schedule", hidden=True,
                                                     help="The old spelling of --patch-schedule."),
    machines: str = typer.Option("ideal,ls,els", help="Comma list of machines; 'all' among them stands for "
                                 "every machine but the candidates (all,wiener-els adds one): " + machine_names() + "."),
    settings: list[str] = SETTINGS,
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    seeds: int = typer.Option(100, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    steps: int = STEPS,
    sampler: SamplerName = SAMPLER,
    device: str = DEVICE,
    num_classes: Optional[int] = NUM_CLASSES,
    noise_schedule: Optional[str] = NOISE_SCHEDULE,
    threshold: Optional[float] = THRESHOLD,
    temperature: Optional[float] = TEMPERATURE,
    sensitivity: Optional[Path] = typer.Option(None, help="pspc-flex: the network's sensitivity file (default: measured here, once, and kept in the output folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a rerun resumes)."),
    parallel: Parallel = PARALLEL,
):
    """Measure, seed by seed, how well each machine predicts the network's samples."""
    if old_patch_schedule is not None:
        if patch_schedule is not None:
            raise InputError("give the patch schedule once: --patch-schedule (--schedule is its old spelling)")
        patch_schedule = old_patch_schedule
    from ..experiments.compare import prepare, run_comparison
    from ..files import check_writable
    from ..machines import MACHINES, timed_options
    from ..networks.checkpoints import patch_schedule_beside
    from ..output.plots import comparison_plots
    from ..results import Comparison
    from ..sampling import Sampler

    seed_list = seed_range(seed, seeds)
    check_writable(out / "summary.json")
    names = parse_machines(machines, allow_all=True)
    options = parse_settings(settings, names)
    refuse_unused({"threshold": threshold, "temperature": temperature, "sensitivity": sensitivity}, names)
    group, dev = start_group(device)
    net, ds, pad, dev = load_model_and_data(model, dataset, root, limit, per_class, dev, padding, num_classes, download,
                                            noise_schedule)
    if patch_schedule is None and any(MACHINES[n].has_patch_size for n in names):
        beside = patch_schedule_beside(model)
        if beside is None:
            raise InputError(f"no --patch-schedule given and no patch schedule beside the model {model}")
        patch_schedule = str(beside)
    classes = run_classes(net, ds)
    run_sampler = Sampler(sampler.value)
    grid = run_sampler.grid(net.schedule, steps)
    if any(MACHINES[n].declaration.needs_network for n in names) and sensitivity is None:  # measured once, by rank 0
        sensitivity = group.agree(_sensitivity_in(out, net, ds, classes, steps, dev, grid) if group.main else None)
    by_seeds = group.world > 1 and parallel == Parallel.seeds
    ks = parse_patch_schedule(patch_schedule, grid)
    ms = {n: build_machine(n, ds, conditional=bool(classes), padding=pad, patch_schedule=ks, schedule=net.schedule,
                           threshold=threshold, temperature=temperature, sensitivity=sensitivity,
                           distributed=group.world > 1 and not by_seeds,
                           settings=timed_options(n, options.get(n) or {}, grid, net.schedule)) for n in names}
    meta = {"data": ds.describe(), "padding": pad}
    # Checked once, by rank 0 (the folder is its): every rank runs what it checked.
    run = group.agree(prepare(net, ms, out, steps=steps, classes=classes, meta=meta,
                                     sampler=run_sampler) if group.main else None)
    t0 = time.perf_counter()
    with progress() as prog:
        task = prog.add_task("comparing", total=len(seed_list))
        if by_seeds:  # each process its share of the seeds; rank 0 then summarises them all
            run_comparison(run, net, ms, ds.images, group.split(seed_list), device=dev,
                           on_seed=lambda info: prog.advance(task, group.world), summary=False)
            group.barrier()
            if not group.main:
                return
        summary = run_comparison(run, net, ms, ds.images, seed_list, device=dev,
                                 on_seed=None if by_seeds else (lambda info: prog.advance(task)),
                                 group=None if by_seeds else group)
    if not group.main:
        return
    files = Comparison.paths(out) + comparison_plots(out, summary, ds.images)
    print_summary(summary)
    print(f"wrote {', '.join(str(f) for f in files)} ({time.perf_counter() - t0:.0f} s)")
