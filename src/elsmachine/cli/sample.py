"""``els sample``: images from a machine (or a trained network) through deterministic DDIM."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import (
    default_machine,
    CLASS,
    DEVICE,
    DTYPE,
    MEMORY_BUDGET,
    NOISE_SCHEDULE,
    NUM_CLASSES,
    SEED,
    SAMPLING_DEFAULTS,
    SAMPLER,
    STEPS,
    DataSelection,
    DType,
    MachineName,
    SamplerName,
    MachineOptions,
    bank_sharded,
    data_options,
    flag,
    load_conditional_network,
    machine_option,
    machine_options,
    out_console,
    parse_bytes,
    parse_int_list,
    run_with_progress,
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


@data_options
@machine_options(**SAMPLING_DEFAULTS)
def sample(
    machine: Optional[MachineName] = machine_option(None),
    options: MachineOptions = None,
    steps: int = STEPS,
    sampler: SamplerName = SAMPLER,
    num: int = typer.Option(10, "--num", "-n", help="Number of samples."),
    seed: int = SEED,
    seeds: Optional[str] = typer.Option(None, help="Explicit comma list of seeds (overrides --seed/--num)."),
    cls: str = CLASS,
    data: DataSelection = None,
    device: str = DEVICE,
    dtype: DType = DTYPE,
    memory_budget: str = MEMORY_BUDGET,
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="Image grid (.png, or .jpg, .webp, ...); the raw outputs go beside it as .npz. A name ending in .npz writes the raw outputs alone."),
    model: Optional[Path] = typer.Option(None, "--model", help="Sample a trained network instead of a machine."),
    num_classes: Optional[int] = NUM_CLASSES,
    noise_schedule: Optional[str] = NOISE_SCHEDULE,
    trace: bool = flag("--trace", help="Save the patch-mosaic trace with the samples (for els mosaic)."),
    show_novelty: bool = flag("--novelty", help="Print how new each sample is (nearest training image, sources, verdict)."),
    max_shift: int = typer.Option(2, help="With --novelty: also match training images shifted by up to this many pixels."),
):
    """Generate images with a score machine through deterministic DDIM (or EDM's Heun sampler).

    Defaults: boundary-broken ELS (zeros) with the paper's MNIST ResNet patch schedule, 20 steps,
    10 class-conditional samples (digits 0..9, seeds 0..9) on the bundled 5,000 MNIST digits,
    float32.
    """
    from ..experiments.runs import SampleSpec
    from ..files import check_writable, save_samples
    from ..machines import MACHINES
    from ..output.images import image_format, image_grid, save_image

    group, dev = start_group(device)  # under torchrun: the processes share the bank
    if max_shift < 0:
        raise InputError(f"--max-shift must be >= 0, got {max_shift}")
    if model is None and noise_schedule is not None:
        raise InputError("--noise-schedule describes a --model; machines sample on the paper's cosine here")
    if model is not None and trace:
        raise InputError("--trace needs a machine: a network has no candidates to trace")
    if model is not None:
        if machine is not None:
            raise InputError(f"--machine {machine.value} and --model: sample a machine or a network, not both")
        options.refuse("--model samples a network")
    else:
        machine = machine or MachineName(default_machine())
        options.check([machine.value])
    seed_list = parse_int_list(seeds, "--seeds") if seeds else seed_range(seed, num, "--num")
    budget = parse_bytes(memory_budget)
    raw_only = out.suffix.lower() == ".npz"
    if not raw_only:
        image_format(out)  # before with_suffix, which cannot take an empty name
    npz = out.with_suffix(".npz")
    check_writable(out)
    check_writable(npz)
    ds = data.load()
    channels = ds.images.shape[1]
    if not raw_only and channels not in (1, 3):
        raise InputError(f"the data has {channels} channels, an image grid needs 1 or 3: give -o NAME.npz for the raw "
                         f"samples alone")
    traceable = model is None and MACHINES[machine.value].declaration.traceable
    if trace and not traceable:
        raise InputError(f"--trace: the {machine.value} machine cannot be traced (no candidate with the largest weight "
                         f"per pixel)")
    common = dict(data=ds, seeds=seed_list, class_rule=cls, steps=steps, sampler=sampler.value, dtype=dtype.value, device=dev,
                  trace=(trace or show_novelty) and traceable, memory_budget=budget)
    if model is not None:
        net = load_conditional_network(model, dev, num_classes=num_classes, noise_schedule=noise_schedule)
        spec = SampleSpec(denoiser=net, **common)
    else:
        spec = SampleSpec(machine=machine.value, options=options.of(machine.value),
                          distributed=bank_sharded(group, machine.value), **common)
    run = run_with_progress(spec, f"{'network' if model else machine.value} sampling")
    if not group.main:  # every process holds the same images; one writes them
        return
    x, tr = run.images, run.trace
    save_samples(npz, x, seeds=run.seeds, labels=run.labels, meta=run.meta,
                 **(tr.to_arrays() if tr is not None and trace else {}))
    if not raw_only:
        save_image(image_grid(x), out)
    if show_novelty:
        from ..experiments.novelty import novelty

        print_novelty(novelty(x.cpu(), ds.images, trace=tr, max_shift=max_shift), run.seeds, run.labels)
    print(f"wrote {'' if raw_only else f'{out} ({len(run.seeds)} images) and '}{npz} (raw float32 {tuple(x.shape)}, seeds, labels) "
          f"in {run.seconds:.1f} s on {dev}")
