"""``els mosaic``: where every pixel of one sample comes from, and how new it is."""

from __future__ import annotations

import time
import zipfile
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
from .sample import print_novelty

MAX_SHIFT = typer.Option(2, help="Novelty: also match training images shifted by up to this many pixels.")


def load_traced(path: Path):
    """The samples (as :func:`elsmachine.files.load_samples` reads them) and their
    :class:`~elsmachine.machines.SampleTrace` in ``path``, a file of els sample --trace; any other
    file is an InputError that says so. (numpy reads a file that is not a zip as a pickle, and
    its refusal blames pickled data.)"""
    from ..files import load_samples
    from ..machines import SampleTrace

    not_samples = f"{path} is not an .npz written by els sample --trace"
    if path.exists() and not zipfile.is_zipfile(path):  # a missing file: load_samples says so
        raise InputError(not_samples)
    try:
        d = load_samples(path)
    except InputError:
        raise
    except ValueError as e:  # its meta is not JSON
        raise InputError(f"{not_samples} (its meta: {e})") from None
    if not isinstance(d["meta"], dict):
        raise InputError(f"{not_samples} (its meta is not a JSON object)")
    try:
        trace = SampleTrace.from_arrays(d)
    except InputError:
        raise
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{not_samples} (its trace: {e})") from None
    return d, trace


@data_options(recorded=True)
@machine_options(**SAMPLING_DEFAULTS)
def mosaic(
    seed: int = typer.Option(0, help="Seed of the sample to draw."),
    cls: str = CLASS,
    machine: MachineName = machine_option(traced=True),
    options: MachineOptions = None,
    steps: int = STEPS,
    data: DataSelection = None,
    samples: Optional[Path] = typer.Option(None, help="Draw a saved sample (an .npz written by els sample --trace) instead."),
    index: int = typer.Option(0, help="With --samples: which image of the file."),
    step: int = typer.Option(-1, help="Step whose sources the maps show (-1: the last, which makes the final image)."),
    max_shift: int = MAX_SHIFT,
    device: str = DEVICE,
    dtype: DType = DTYPE,
    memory_budget: str = MEMORY_BUDGET,
    out: Path = typer.Option(Path("mosaic"), "--out", "-o", help="Output folder."),
):
    """Show the patch mosaic of one sample: where every pixel comes from, and how new it is.

    Writes mosaic.png (final image, each pixel coloured by the training image its dominant
    patch came from, with the most used sources), travel.png (how far each patch moved from
    its place in its training image; effective number of candidates over time), strip.png
    (x_t, x0_hat and sources at every step, from noise to the final image) and, for a fresh
    sample, sample.npz (the sample with its trace and the record els sample writes).
    """
    from ..experiments.novelty import novelty
    from ..experiments.runs import SampleSpec
    from ..files import check_writable, save_samples
    from ..output.plots import render_mosaic

    if max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {max_shift}")
    check_writable(out / "mosaic.png")
    t0 = time.perf_counter()
    if samples is not None:
        options.refuse("--samples draws a saved sample")
        d, tr = load_traced(samples)
        ds = recorded_data(d, samples, data)
        n = d["images"].shape[0]
        if not 0 <= index < n:
            raise InputError(f"--index must lie in 0..{n - 1} for {samples}")
        tr = tr.select(index)
        x = torch.from_numpy(d["images"][index : index + 1])
        sd, lab_v = int(d["seeds"][index]), int(d["labels"][index])
        label = None if lab_v < 0 else lab_v
        what = f"{d['meta'].get('machine', '?')} sample {index} of {samples.name} (seed {sd})"
    else:
        options.check([machine.value])
        seed_range(seed, 1)
        budget = parse_bytes(memory_budget)
        group, dev = start_group(device)  # under torchrun: the processes share the bank
        ds = data.load()
        spec = SampleSpec(data=ds, seeds=[seed], machine=machine.value, options=options.of(machine.value),
                          class_rule=cls, steps=steps, dtype=dtype.value, device=dev, trace=True,
                          memory_budget=budget, distributed=bank_sharded(group, machine.value))
        run = run_with_progress(spec, f"{machine.value} sampling with trace")
        if not group.main:  # every process holds the same sample; one draws it
            return
        x, tr, sd = run.images, run.trace, seed
        label = None if run.labels is None else run.labels[0]
        padding = run.meta["padding"]
        what = (f"{machine.value}{'' if padding is None else f' ({padding})'}, seed {seed}"
                + ("" if label is None else f", class {label}"))
        save_samples(out / "sample.npz", x, seeds=run.seeds, labels=run.labels, meta=run.meta, **tr.to_arrays())
    paths = render_mosaic(tr, ds.images, out, step=step, title=what)
    nov = novelty(x.cpu(), ds.images, trace=tr, max_shift=max_shift)
    print_novelty(nov, [sd], None if label is None else [label])
    print(f"wrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.1f} s)")
