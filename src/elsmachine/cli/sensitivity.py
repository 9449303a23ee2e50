"""``els sensitivity``: a network's sensitivity to its input, the windows of pspc-flex."""


from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

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
    PER_CLASS,
    ROOT,
    STEPS,
    load_model_and_data,
    progress,
)


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
    # Checked before the network loads: the measurement takes minutes and would refuse a share only once done.
    for name, value in (("--rows", rows), ("--inputs", inputs), ("--steps", steps)):
        if value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    if len(shares) not in (1, steps):
        raise InputError(f"--share takes one number or one per step ({steps}), got {len(shares)}: {share!r}")
    bad = [r for r in shares if not 0.0 < r <= 1.0]
    if bad:
        raise InputError(f"--share values are shares of a pixel's sensitivity, in (0, 1]; got {bad[0]:g}")
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
