"""``els novelty``: how often each machine memorises, over many seeds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import (
    CLASS,
    DEVICE,
    DTYPE,
    MEMORY_BUDGET,
    SAMPLING_DEFAULTS,
    SEED,
    STEPS,
    DataSelection,
    DType,
    MachineOptions,
    bank_sharded,
    data_options,
    machine_names,
    machine_options,
    out_console,
    parse_bytes,
    parse_machines,
    run_with_progress,
    seed_range,
    start_group,
    traceable_machines,
)
from .mosaic import MAX_SHIFT


@data_options
@machine_options(**SAMPLING_DEFAULTS)
def novelty(
    machines: str = typer.Option("ideal,ls,els", help=f"Comma list of machines ({machine_names()}); the sources are counted for those that can be traced."),
    seeds: int = typer.Option(10, help="Number of seeds (--seed .. --seed + N - 1)."),
    seed: int = SEED,
    cls: str = CLASS,
    options: MachineOptions = None,
    steps: int = STEPS,
    data: DataSelection = None,
    max_shift: int = MAX_SHIFT,
    device: str = DEVICE,
    dtype: DType = DTYPE,
    memory_budget: str = MEMORY_BUDGET,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the per-seed rows and summary as JSON."),
):
    """Compare how often each machine memorises: IS should, ELS should not."""
    from rich.table import Table

    from ..experiments.novelty import novelty as novelty_of
    from ..experiments.novelty import novelty_summary
    from ..experiments.runs import SampleSpec
    from ..files import check_writable, write_json

    if max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {max_shift}")
    if out is not None:
        check_writable(out)
    seed_list = seed_range(seed, seeds)
    names = parse_machines(machines)
    options.check(names)
    budget = parse_bytes(memory_budget)
    group, dev = start_group(device)  # under torchrun: the processes share each machine's bank
    ds = data.load()
    traced = traceable_machines()
    result, labels = {}, None
    t0 = time.perf_counter()
    for name in names:
        spec = SampleSpec(data=ds, seeds=seed_list, machine=name, options=options.of(name), class_rule=cls,
                          steps=steps, dtype=dtype.value, device=dev, trace=name in traced, memory_budget=budget,
                          distributed=bank_sharded(group, name))
        run = run_with_progress(spec, f"{name} sampling")
        labels = run.labels
        result[name] = novelty_of(run.images.cpu(), ds.images, trace=run.trace, max_shift=max_shift).rows()
    if not group.main:
        return
    tab = Table(title=f"novelty over {seeds} seeds ({ds.name}, class {cls})")
    for col in ("machine", "memorised", "median RMS/px to nearest", "median sources", "median px with a source"):
        tab.add_column(col, justify="right")
    summary = {name: novelty_summary(rows) for name, rows in result.items()}
    for name, sm in summary.items():
        has_sources = sm["median_sources"] >= 0  # machines that cannot be traced name no sources
        tab.add_row(name, f"{sm['memorised']:.0%}", f"{sm['median_rms']:.3f}",
                    f"{sm['median_sources']:g}" if has_sources else "-",
                    f"{sm['median_dominated']:.0%}" if has_sources else "-")
    out_console().print(tab)
    if out is not None:
        write_json(out, {"summary": summary, "per_seed": result, "seeds": seed_list, "labels": labels})
    print(f"({time.perf_counter() - t0:.0f} s)")
