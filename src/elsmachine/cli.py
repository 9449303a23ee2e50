"""The ``els`` command line. Options are resolved here, once (device, dtype, seeds, labels);
the library functions below it only see tensors."""

from __future__ import annotations

import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The equivariant local score machine: closed-form models of convolutional diffusion models.",
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """The equivariant local score machine: closed-form models of convolutional diffusion models."""


class MachineName(str, Enum):
    ideal = "ideal"
    ls = "ls"
    els = "els"


class Padding(str, Enum):
    zeros = "zeros"
    circular = "circular"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but CUDA is not available here")
    return dev


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"cannot read {text!r} as a size in bytes (e.g. 512MiB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_patch_sizes(text: str | None):
    """'5' -> 5; '3,5,7' -> [3, 5, 7]; a preset name or a .json path is passed through."""
    if text is None:
        return None
    if re.fullmatch(r"\s*\d+\s*", text):
        return int(text)
    if re.fullmatch(r"\s*\d+(\s*,\s*\d+)+\s*", text):
        return [int(v) for v in text.split(",")]
    return text


def parse_seeds(seed: int, num: int, seeds: str | None) -> list[int]:
    if seeds:
        try:
            out = [int(v) for v in seeds.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--seeds must be a comma list of integers, got {seeds!r}") from None
        if not out:
            raise InputError("--seeds is empty")
        return out
    if num < 1:
        raise InputError(f"--num must be >= 1, got {num}")
    return list(range(seed, seed + num))


def parse_class(text: str, n: int, classes: list[int]) -> list[int] | None:
    """'none' -> unconditional; 'cycle' -> sample i gets the i-th class in turn; 'N' -> class N."""
    if text == "none":
        return None
    if not classes:
        raise InputError(f"--class {text} needs a labelled dataset; this one has no labels (use --class none)")
    if text == "cycle":
        return [classes[i % len(classes)] for i in range(n)]
    try:
        c = int(text)
    except ValueError:
        raise InputError(f"--class must be 'cycle', 'none' or a class label, got {text!r}") from None
    if c not in classes:
        raise InputError(f"class {c} has no training images (classes present: {classes})")
    return [c] * n


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )


def _fail(e: Exception) -> None:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(2)


@app.command()
def sample(
    machine: MachineName = typer.Option(MachineName.els, "--machine", "-m", help="ideal (IS), ls (LS) or els (ELS)."),
    padding: Padding = typer.Option(Padding.zeros, help="zeros: boundary-broken ELS; circular: periodic."),
    patch_sizes: str = typer.Option(
        "mnist-resnet-zeros", "--patch-sizes", "-k",
        help="One size ('5'), one per step ('3,5,...'), a preset name, or a schedule .json.",
    ),
    steps: int = typer.Option(20, help="DDIM steps on the grid t_j = (n - j)/n."),
    num: int = typer.Option(10, "--num", "-n", help="Number of samples."),
    seed: int = typer.Option(0, help="First seed; sample i uses seed + i (its own generator)."),
    seeds: Optional[str] = typer.Option(None, help="Explicit comma list of seeds (overrides --seed/--num)."),
    cls: str = typer.Option("cycle", "--class", help="'cycle' (sample i gets class i mod #classes), 'none' (unconditional) or a label."),
    dataset: str = typer.Option("mnist5k", help="Bundled name or an .npz path."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N training images."),
    per_class: Optional[int] = typer.Option(None, help="Use only the first N training images of each class."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    dtype: DType = typer.Option(DType.float32, help="Arithmetic precision."),
    memory_budget: str = typer.Option("2GiB", help="Bytes of candidate keys held at once."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="PNG grid; the raw outputs go beside it as .npz."),
):
    """Generate images with a score machine through deterministic DDIM.

    Defaults: boundary-broken ELS (zeros) with the paper's MNIST ResNet patch-size schedule,
    20 steps, 10 class-conditional samples (digits 0..9, seeds 0..9) on the bundled 5,000
    MNIST digits, float32.
    """
    from . import ddim_sample, load_dataset, make_machine, seed_noise
    from .io import image_grid, save_png, save_samples

    try:
        dev = resolve_device(device)
        ds = load_dataset(dataset, limit=limit, per_class=per_class)
        seed_list = parse_seeds(seed, num, seeds)
        labels = parse_class(cls, len(seed_list), ds.classes)
        ks = parse_patch_sizes(patch_sizes) if machine != MachineName.ideal else None
        m = make_machine(machine.value, ds.images, padding=padding.value, labels=ds.labels,
                         memory_budget=parse_bytes(memory_budget))
        tdtype = getattr(torch, dtype.value)
        noise = seed_noise(seed_list, m.image_shape, dtype=tdtype, device=dev)
        lab = None if labels is None else torch.tensor(labels, device=dev)
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task(f"{machine.value} sampling", total=steps)
            x = ddim_sample(m, noise, steps=steps, patch_sizes=ks, labels=lab,
                            callback=lambda info: prog.advance(task))
        elapsed = time.perf_counter() - t0
    except InputError as e:
        _fail(e)
    meta = {
        "machine": machine.value, "padding": padding.value, "patch_sizes": patch_sizes if ks is not None else None,
        "steps": steps, "dataset": ds.name, "n_train": len(ds), "dtype": dtype.value, "device": str(dev),
        "class": cls, "seconds": round(elapsed, 3),
    }
    npz = out.with_suffix(".npz")
    save_png(image_grid(x), out)
    save_samples(npz, x, seeds=seed_list, labels=labels, meta=meta)
    print(f"wrote {out} ({len(seed_list)} images) and {npz} (raw float32 {tuple(x.shape)}, seeds, labels) "
          f"in {elapsed:.1f} s on {dev}")


def main() -> None:
    try:
        app()
    except InputError as e:  # errors raised while typer parses (e.g. from callbacks)
        console.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
