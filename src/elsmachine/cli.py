"""The ``els`` command line. Options are resolved here, once (device, dtype, seeds, labels);
the library functions below it only see tensors."""

from __future__ import annotations

import json
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
    model: Optional[Path] = typer.Option(None, "--model", help="Sample a trained network instead of a machine."),
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
        if model is not None:
            from .network import load_network

            m = load_network(model, device=dev)
            if labels is not None and not m.num_classes:
                labels = None  # an unconditional network ignores --class
            ks = None
        else:
            ks = parse_patch_sizes(patch_sizes) if machine != MachineName.ideal else None
            m = make_machine(machine.value, ds.images, padding=padding.value, labels=ds.labels,
                             memory_budget=parse_bytes(memory_budget))
        tdtype = getattr(torch, dtype.value)
        noise = seed_noise(seed_list, tuple(ds.images.shape[1:]), dtype=tdtype, device=dev)
        lab = None if labels is None else torch.tensor(labels, device=dev)
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task(f"{'network' if model else machine.value} sampling", total=steps)
            x = ddim_sample(m, noise, steps=steps, patch_sizes=ks, labels=lab,
                            callback=lambda info: prog.advance(task))
        elapsed = time.perf_counter() - t0
    except InputError as e:
        _fail(e)
    meta = {
        "model": None if model is None else str(model),
        "machine": machine.value if model is None else "network", "padding": padding.value, "patch_sizes": patch_sizes if ks is not None else None,
        "steps": steps, "dataset": ds.name, "n_train": len(ds), "dtype": dtype.value, "device": str(dev),
        "class": cls, "seconds": round(elapsed, 3),
    }
    npz = out.with_suffix(".npz")
    save_png(image_grid(x), out)
    save_samples(npz, x, seeds=seed_list, labels=labels, meta=meta)
    print(f"wrote {out} ({len(seed_list)} images) and {npz} (raw float32 {tuple(x.shape)}, seeds, labels) "
          f"in {elapsed:.1f} s on {dev}")


class Arch(str, Enum):
    resnet = "resnet"
    unet = "unet"


@app.command("train")
def train_cmd(
    dataset: str = typer.Option("mnist5k", help="Bundled name, a known dataset name, a folder or an .npz."),
    root: Optional[Path] = typer.Option(None, help="Folder holding the dataset's standard files."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N training images."),
    per_class: Optional[int] = typer.Option(None, help="Use only the first N training images of each class."),
    arch: Arch = typer.Option(Arch.resnet, help="resnet (paper: 8 layers x 256) or unet (paper: 64/128/256)."),
    padding: Padding = typer.Option(Padding.zeros, help="Padding of every convolution."),
    cond: bool = typer.Option(False, "--cond/--no-cond", help="Class-conditional (needs labels)."),
    width: int = typer.Option(256, help="ResNet channels."),
    depth: int = typer.Option(8, help="ResNet residual layers."),
    widths: str = typer.Option("64,128,256", help="UNet channels per scale."),
    epochs: int = typer.Option(300),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-4, help="Adam learning rate."),
    seed: int = typer.Option(0),
    grad_clip: float = typer.Option(1.0, help="Gradient-norm clip (0: off)."),
    checkpoint_every: int = typer.Option(0, help="Steps between checkpoints (0: every epoch)."),
    device: str = typer.Option("auto"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
):
    """Train a noise-predicting convolutional network (checkpoints: model.safetensors + config.json)."""
    from . import load_dataset
    from .models import NetConfig
    from .train import TrainConfig, train

    try:
        dev = resolve_device(device)
        ds = load_dataset(dataset, root=root, limit=limit, per_class=per_class)
        C, H, W = ds.images.shape[1:]
        if H != W:
            raise InputError(f"networks are built for square images; {ds.name} has {H}x{W}")
        try:
            ws = tuple(int(v) for v in widths.split(","))
        except ValueError:
            raise InputError(f"--widths must be a comma list of integers, got {widths!r}") from None
        ncls = (max(ds.classes) + 1) if cond and ds.classes else 0
        if cond and not ncls:
            raise InputError(f"--cond needs labels; dataset {ds.name} has none")
        net_cfg = NetConfig(arch=arch.value, channels=C, image_size=H, width=width, depth=depth, widths=ws,
                            padding=padding.value, num_classes=ncls)
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, grad_clip=grad_clip,
                          checkpoint_every=checkpoint_every)
        with _progress() as prog:
            task = prog.add_task("training", total=None)

            def on_step(info):
                prog.update(task, total=info["steps"], completed=info["step"],
                            description=f"epoch {info['epoch'] + 1} loss {info['loss']:.4f}")

            t0 = time.perf_counter()
            folder = train(net_cfg, cfg, ds, out, device=dev, resume=resume, on_step=on_step)
    except InputError as e:
        _fail(e)
    print(f"wrote {folder}/model.safetensors and config.json ({time.perf_counter() - t0:.0f} s on {dev})")


def parse_sizes(text: str) -> list[int]:
    """'3,5,7' or '3:27' (every odd size from 3 to 27)."""
    try:
        if ":" in text:
            lo, hi = (int(v) for v in text.split(":"))
            return [k for k in range(lo, hi + 1) if k % 2 == 1]
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--sizes must be a comma list of odd sizes or LO:HI, got {text!r}") from None


def _load_model_and_data(model: Path, dataset: str, root, limit, per_class, device: str, padding):
    from . import load_dataset
    from .network import load_network

    dev = resolve_device(device)
    net = load_network(model, device=dev, padding=None if padding is None else padding.value)
    ds = load_dataset(dataset, root=root, limit=limit, per_class=per_class)
    if net.num_classes and ds.labels is None:
        raise InputError(f"the model is class-conditional but dataset {ds.name} has no labels")
    pad = padding.value if padding is not None else (net.padding or "zeros")
    return net, ds, pad, dev


@app.command("calibrate")
def calibrate_cmd(
    model: Path = typer.Option(..., "--model", help="Checkpoint folder, model.safetensors, or TorchScript file."),
    dataset: str = typer.Option("mnist5k", help="The network's training set."),
    root: Optional[Path] = typer.Option(None, help="Folder holding the dataset's standard files."),
    limit: Optional[int] = typer.Option(None),
    per_class: Optional[int] = typer.Option(None),
    machine: MachineName = typer.Option(MachineName.els, help="ls or els."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    sizes: str = typer.Option("3:27", help="Candidate sizes: '3,5,7' or '3:27' (odd sizes in the range)."),
    seeds: int = typer.Option(10, help="Number of seeds (0..N-1)."),
    steps: int = typer.Option(20),
    criterion: str = typer.Option("cosine", help="cosine (similarity of scores) or l2."),
    device: str = typer.Option("auto"),
    out: Path = typer.Option(Path("schedule.json"), "--out", "-o"),
):
    """Calibrate the patch size per step against a trained network; writes a schedule JSON."""
    from . import make_machine
    from .calibrate import calibrate

    try:
        if machine == MachineName.ideal:
            raise InputError("the ideal machine has no patch size to calibrate; use ls or els")
        net, ds, pad, dev = _load_model_and_data(model, dataset, root, limit, per_class, device, padding)
        m = make_machine(machine.value, ds.images, padding=pad, labels=ds.labels if net.num_classes else None)
        seed_list = list(range(seeds))
        labels = torch.tensor([s % net.num_classes for s in seed_list], device=dev) if net.num_classes else None
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task("calibrating", total=steps)
            sched, best, _ = calibrate(
                net, m, parse_sizes(sizes), seed_list, steps=steps, labels=labels, criterion=criterion, device=dev,
                meta={"dataset": ds.name, "model": str(model), "machine": machine.value, "padding": pad},
                on_step=lambda info: prog.advance(task),
            )
        sched.save(out)
    except InputError as e:
        _fail(e)
    print(f"wrote {out}: sizes {list(sched.sizes)} for t = {', '.join(f'{t:g}' for t in sched.ts)} "
          f"({time.perf_counter() - t0:.0f} s)")


@app.command("compare")
def compare_cmd(
    model: Path = typer.Option(..., "--model", help="Checkpoint folder, model.safetensors, or TorchScript file."),
    dataset: str = typer.Option("mnist5k", help="The network's training set."),
    root: Optional[Path] = typer.Option(None),
    limit: Optional[int] = typer.Option(None),
    per_class: Optional[int] = typer.Option(None),
    schedule: str = typer.Option(..., help="Patch sizes: a schedule .json, a preset name, one size or a comma list."),
    machines: str = typer.Option("ideal,ls,els", help="Comma list of ideal, ls, els."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    seeds: int = typer.Option(100, help="Number of seeds (0..N-1)."),
    steps: int = typer.Option(20),
    device: str = typer.Option("auto"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a rerun resumes)."),
):
    """Measure, seed by seed, how well each machine predicts the network's samples."""
    from . import make_machine
    from .compare import compare
    from .presets import resolve_patch_sizes
    from .schedule import ddim_grid

    try:
        net, ds, pad, dev = _load_model_and_data(model, dataset, root, limit, per_class, device, padding)
        names = [n.strip() for n in machines.split(",") if n.strip()]
        for n in names:
            if n not in ("ideal", "ls", "els"):
                raise InputError(f"unknown machine {n!r} in --machines; choose from ideal, ls, els")
        ks = parse_patch_sizes(schedule)
        resolve_patch_sizes(ks, ddim_grid(steps))  # fail now, not after the first seed
        lab = ds.labels if net.num_classes else None
        ms = {n: make_machine(n, ds.images, padding=pad, labels=lab) for n in names}
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task("comparing", total=seeds)
            summary = compare(
                net, ms, ds.images, list(range(seeds)), out, schedule=ks, steps=steps, num_classes=net.num_classes,
                device=dev, meta={"model": str(model), "dataset": ds.name, "schedule": str(schedule), "padding": pad},
                on_seed=lambda info: prog.advance(task),
            )
    except InputError as e:
        _fail(e)
    console.print_json(json.dumps(summary))
    print(f"wrote {out}/results.csv, summary.json, scatter.png, montage.png ({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    try:
        app()
    except InputError as e:  # errors raised while typer parses (e.g. from callbacks)
        console.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
