"""``els explore``: one self-contained HTML page of where every pixel of the samples comes from."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
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
    MachineName,
    MachineOptions,
    bank_sharded,
    data_options,
    machine_option,
    machine_options,
    parse_bytes,
    recorded_data,
    run_with_progress,
    seed_range,
    start_group,
)


@data_options(recorded=True)
@machine_options(**SAMPLING_DEFAULTS)
def explore(
    num: int = typer.Option(10, "--num", "-n", help="Samples to make and trace (0: none; with --samples: ignored)."),
    seed: int = SEED,
    cls: str = CLASS,
    machine: MachineName = machine_option(traced=True),
    options: MachineOptions = None,
    steps: int = STEPS,
    data: DataSelection = None,
    samples: Optional[Path] = typer.Option(None, help="Show saved samples with their trace (els sample --trace, els mosaic's sample.npz)."),
    compare: Optional[Path] = typer.Option(None, help="Also show a comparison folder (els compare): the network beside every machine, seed by seed."),
    calibration: Optional[Path] = typer.Option(None, help="Also show a calibrated patch schedule (els calibrate): the size against t and each size's criterion."),
    device: str = DEVICE,
    dtype: DType = DTYPE,
    memory_budget: str = MEMORY_BUDGET,
    out: Path = typer.Option(Path("explore.html"), "--out", "-o", help="The HTML file to write (self-contained: open it from disk)."),
):
    """Write one self-contained HTML page to explore where every pixel of a sample comes from,
    step by step, with a comparison and a calibration beside it when given."""
    from ..experiments.runs import SampleSpec
    from ..files import check_writable
    from ..output.explore import calibration_data, compare_data, explore_page, page_path
    from .mosaic import load_traced

    page_path(out)
    check_writable(out)
    if num < 0:
        raise InputError(f"--num must be >= 0, got {num}")
    cmp = compare_data(compare) if compare is not None else None
    cal = calibration_data(calibration) if calibration is not None else None
    trace = images = seeds = labels = train = None
    title = "elsmachine: where every pixel comes from"
    t0 = time.perf_counter()
    if samples is not None:
        options.refuse("--samples shows saved samples")
        d, trace = load_traced(samples)
        ds = recorded_data(d, samples, data)
        images, seeds, train = torch.from_numpy(d["images"]), d["seeds"].tolist(), ds.images
        labels = None if (d["labels"] < 0).all() else d["labels"].tolist()
        title = f"elsmachine: {d['meta'].get('machine', 'samples')} samples of {samples.name}"
    elif num > 0:
        options.check([machine.value])
        seed_list = seed_range(seed, num, "--num")
        budget = parse_bytes(memory_budget)
        group, dev = start_group(device)  # under torchrun: the processes share the bank
        ds = data.load()
        spec = SampleSpec(data=ds, seeds=seed_list, machine=machine.value, options=options.of(machine.value),
                          class_rule=cls, steps=steps, dtype=dtype.value, device=dev, trace=True,
                          memory_budget=budget, distributed=bank_sharded(group, machine.value))
        run = run_with_progress(spec, f"{machine.value} sampling with trace")
        if not group.main:  # every process holds the same samples; one writes the page
            return
        trace, images, seeds, labels, train = run.trace, run.images, run.seeds, run.labels, ds.images
        padding = run.meta["padding"]
        title = f"elsmachine: {machine.value}{'' if padding is None else f' ({padding})'} on {ds.name}"
    path = explore_page(out, trace=trace, images=images, seeds=seeds, labels=labels, train_images=train, title=title,
                        compare=cmp, calibration=cal)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
