"""``els train``: a noise-predicting convolutional network, resumable exactly."""

from __future__ import annotations

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
    PER_CLASS,
    ROOT,
    Padding,
    flag,
    load_data,
    parse_int_list,
    progress,
    resolve_device,
)


class Arch(str, Enum):
    resnet = "resnet"
    unet = "unet"
    attn_unet = "attn-unet"


def train(
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    download: bool = DOWNLOAD,
    arch: Arch = typer.Option(Arch.resnet, help="resnet (paper: 8 layers x 256), unet (paper: 64/128/256) or attn-unet "
                              "(the UNet with self-attention at its coarsest scales, as DDPM's)."),
    padding: Padding = typer.Option(Padding.zeros, help="Padding of every convolution."),
    cond: bool = flag("--cond/--no-cond", help="Class-conditional (needs labels)."),
    width: int = typer.Option(256, help="ResNet channels."),
    depth: int = typer.Option(8, help="ResNet residual layers."),
    widths: str = typer.Option("64,128,256", help="UNet channels per scale."),
    attention: Optional[int] = typer.Option(None, help="attn-unet: how many of the coarsest scales attend, besides the middle (default 2)."),
    heads: Optional[int] = typer.Option(None, help="attn-unet: attention heads (default 4)."),
    epochs: int = typer.Option(300, help="Passes over the training set (more on --resume continues)."),
    batch_size: int = typer.Option(128, help="Images per optimizer step."),
    lr: float = typer.Option(1e-4, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed of the initial weights, the data order and the noise."),
    grad_clip: float = typer.Option(1.0, help="Gradient-norm clip (0: off)."),
    checkpoint_every: int = typer.Option(0, help="Steps between checkpoints (0: every epoch)."),
    noise_schedule: str = typer.Option("cosine", "--noise-schedule", help="The noise schedule to train on: cosine (the paper's), linear, scaled_linear, squaredcos_cap_v2, or a saved schedule."),
    ema: float = typer.Option(0.0, help="Decay of a moving average of the weights, which the checkpoint then holds (e.g. 0.999; 0: none)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from the weights of this checkpoint (same architecture)."),
    device: str = DEVICE,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for checkpoints."),
    resume: bool = flag("--resume", help="Continue the run in --out exactly where it stopped."),
):
    """Train a noise-predicting convolutional network (checkpoints: model.safetensors + config.json).

    On a GPU the forward pass runs under bf16 autocast; on the CPU in float32.
    """
    from ..networks.architectures import NetConfig
    from ..networks.training import TrainConfig
    from ..networks.training import train as run_training
    from ..files import check_writable

    dev = resolve_device(device)
    check_writable(out / "config.json")
    schedule = _schedule(noise_schedule)
    ds = load_data(dataset, root, limit, per_class, download)
    C, H, W = ds.images.shape[1:]
    if H != W:
        raise InputError(f"networks are built for square images; {ds.name} has {H}x{W}")
    ws = tuple(parse_int_list(widths, "--widths"))
    if arch != Arch.attn_unet and (attention is not None or heads is not None):
        raise InputError(f"--attention and --heads are options of --arch attn-unet, not of {arch.value}")
    attn = {k: v for k, v in (("attention", attention), ("heads", heads)) if v is not None}
    ncls = (max(ds.classes) + 1) if cond and ds.classes else 0
    if cond and not ncls:
        raise InputError(f"--cond needs labels; dataset {ds.name} has none")
    net_cfg = NetConfig(arch=arch.value, channels=C, image_size=H, width=width, depth=depth, widths=ws,
                        padding=padding.value, num_classes=ncls, **attn)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, grad_clip=grad_clip,
                      checkpoint_every=checkpoint_every, ema=ema)
    with progress() as prog:
        task = prog.add_task("training", total=None)

        def on_step(info):
            prog.update(task, total=info["steps"], completed=info["step"],
                        description=f"epoch {info['epoch'] + 1} loss {info['loss']:.4f}")

        t0 = time.perf_counter()
        folder = run_training(net_cfg, cfg, ds, out, device=dev, resume=resume, on_step=on_step, init_from=init_from,
                              schedule=schedule,
                              autocast=torch.bfloat16 if dev.type == "cuda" else None)
    print(f"wrote {folder}/model.safetensors and config.json ({time.perf_counter() - t0:.0f} s on {dev})")


def _schedule(spec: str):
    """The noise schedule --noise-schedule names, or one line saying why the file is not one."""
    from ..noise import noise_schedule

    try:
        return noise_schedule(spec)
    except InputError as e:
        # The checks of a schedule's values do not say which file held them.
        raise InputError(str(e) if spec in str(e) else f"--noise-schedule {spec}: {e}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        # A file that is not text, or JSON of another shape, fails inside the parser as Python's own error.
        raise InputError(f"--noise-schedule {spec} is not a noise schedule file: {e}") from None
