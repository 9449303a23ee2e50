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


def _out_console() -> Console:
    """Tables on stdout; wide enough when stdout is a file or a pipe (rich assumes 80)."""
    return Console() if sys.stdout.isatty() else Console(width=140)


@app.callback()
def _root() -> None:
    """The equivariant local score machine: closed-form models of convolutional diffusion models."""


# Options several commands share, defined once so their names and help agree.
DATASET = typer.Option("mnist5k", help="Bundled mnist5k; mnist, fashion-mnist, cifar10, celeba (with --root); a folder of images; or an .npz.")
ROOT = typer.Option(None, help="Folder holding the dataset's standard files.")
LIMIT = typer.Option(None, help="Use only the first N training images.")
PER_CLASS = typer.Option(None, help="Use only the first N training images of each class.")
DEVICE = typer.Option("auto", help="auto, cpu, cuda, cuda:N.")
STEPS = typer.Option(20, help="DDIM steps on the grid t_j = (n - j)/n.")
MODEL = typer.Option(..., "--model", help="Checkpoint folder, model.safetensors, TorchScript file, or a bundled network (mnist5k-resnet).")
PATCH_SIZES = typer.Option(
    "mnist-resnet-zeros", "--patch-sizes", "-k",
    help="One size ('5'), one per step ('3,5,...'), a preset name, or a schedule .json.",
)


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
    patch_sizes: str = PATCH_SIZES,
    steps: int = STEPS,
    num: int = typer.Option(10, "--num", "-n", help="Number of samples."),
    seed: int = typer.Option(0, help="First seed; sample i uses seed + i (its own generator)."),
    seeds: Optional[str] = typer.Option(None, help="Explicit comma list of seeds (overrides --seed/--num)."),
    cls: str = typer.Option("cycle", "--class", help="'cycle' (sample i gets class i mod #classes), 'none' (unconditional) or a label."),
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    device: str = DEVICE,
    dtype: DType = typer.Option(DType.float32, help="Arithmetic precision."),
    memory_budget: str = typer.Option("2GiB", help="Bytes of candidate keys held at once."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="PNG grid; the raw outputs go beside it as .npz."),
    model: Optional[Path] = typer.Option(None, "--model", help="Sample a trained network instead of a machine."),
    trace: bool = typer.Option(False, "--trace", help="Save the patch-mosaic trace with the samples (for els mosaic)."),
    show_novelty: bool = typer.Option(False, "--novelty", help="Print how new each sample is (nearest training image, sources, verdict)."),
    max_shift: int = typer.Option(2, help="With --novelty: also match training images shifted by up to this many pixels."),
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
        ds = load_dataset(dataset, root=root, limit=limit, per_class=per_class)
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
            want_trace = (trace or show_novelty) and model is None
            res = ddim_sample(m, noise, steps=steps, patch_sizes=ks, labels=lab, return_trace=want_trace,
                              callback=lambda info: prog.advance(task))
            x, tr = res if want_trace else (res, None)
        elapsed = time.perf_counter() - t0
        nov = None
        if show_novelty:
            from .mosaic import novelty

            nov = novelty(x, ds.images, trace=tr, max_shift=max_shift)
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
    save_samples(npz, x, seeds=seed_list, labels=labels, meta=meta, **(tr.to_arrays() if tr is not None and trace else {}))
    if nov is not None:
        _print_novelty(nov, seed_list, labels)
    print(f"wrote {out} ({len(seed_list)} images) and {npz} (raw float32 {tuple(x.shape)}, seeds, labels) "
          f"in {elapsed:.1f} s on {dev}")


class Arch(str, Enum):
    resnet = "resnet"
    unet = "unet"


@app.command("train")
def train_cmd(
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
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
    device: str = DEVICE,
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


def _print_novelty(nov, seeds, labels) -> None:
    from rich.table import Table

    tab = Table(title="novelty (nearest training image; sources = images whose patch dominates a pixel)")
    for col in ("seed", "class", "nearest", "L2", "RMS", "shift", "sources", "sourced", "verdict"):
        tab.add_column(col, justify="right")
    for i, r in enumerate(nov.rows()):
        tab.add_row(str(seeds[i]), "-" if labels is None else str(labels[i]), str(r["nearest"]), f"{r['l2']:.2f}",
                    f"{r['rms']:.3f}", str(r["shift"]), "-" if r["sources"] < 0 else str(r["sources"]),
                    "-" if r["dominated"] != r["dominated"] else f"{r['dominated']:.0%}", r["verdict"])
    _out_console().print(tab)


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
    model: Path = MODEL,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    machine: MachineName = typer.Option(MachineName.els, help="ls or els."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    sizes: str = typer.Option("3:27", help="Candidate sizes: '3,5,7' or '3:27' (odd sizes in the range)."),
    seeds: int = typer.Option(10, help="Number of seeds (0..N-1)."),
    steps: int = STEPS,
    criterion: str = typer.Option("cosine", help="cosine (similarity of scores) or l2."),
    device: str = DEVICE,
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
    model: Path = MODEL,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    schedule: Optional[str] = typer.Option(None, help="Patch sizes: a schedule .json, a preset name, one size or a comma list (default: schedule.json beside the model)."),
    machines: str = typer.Option("ideal,ls,els", help="Comma list of ideal, ls, els."),
    padding: Optional[Padding] = typer.Option(None, help="Default: the network's own padding."),
    seeds: int = typer.Option(100, help="Number of seeds (0..N-1)."),
    steps: int = STEPS,
    device: str = DEVICE,
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
        if schedule is None:
            folder = Path(net.meta["source"])  # load_network resolved bundled names to their folder
            folder = folder if folder.is_dir() else folder.parent
            if not (folder / "schedule.json").exists():
                raise InputError(f"no --schedule given and no schedule.json beside the model in {folder}")
            schedule = str(folder / "schedule.json")
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


@app.command("mosaic")
def mosaic_cmd(
    seed: int = typer.Option(0, help="Seed of the sample to draw."),
    cls: str = typer.Option("cycle", "--class", help="'cycle' (class = seed mod #classes), 'none' or a label."),
    machine: MachineName = typer.Option(MachineName.els, "--machine", "-m"),
    padding: Padding = typer.Option(Padding.zeros),
    patch_sizes: str = PATCH_SIZES,
    steps: int = STEPS,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    samples: Optional[Path] = typer.Option(None, help="Draw a saved sample (an .npz written by els sample --trace) instead."),
    index: int = typer.Option(0, help="With --samples: which image of the file."),
    step: int = typer.Option(-1, help="Step whose sources the maps show (-1: the last, which makes the final image)."),
    max_shift: int = typer.Option(2, help="Novelty: also match training images shifted by up to this many pixels."),
    device: str = DEVICE,
    out: Path = typer.Option(Path("mosaic"), "--out", "-o", help="Output folder."),
):
    """Show the patch mosaic of one sample: where every pixel comes from, and how new it is.

    Writes mosaic.png (final image, each pixel coloured by the training image its dominant
    patch came from, with the most used sources), travel.png (how far each patch moved from
    its place in its training image; effective number of candidates over time) and strip.png
    (x_t, x0_hat and sources at every step, from noise to the final image).
    """
    from . import ddim_sample, load_dataset, make_machine, seed_noise
    from .io import load_samples
    from .mosaic import SampleTrace, novelty, render_mosaic

    try:
        ds = load_dataset(dataset, root=root, limit=limit, per_class=per_class)
        t0 = time.perf_counter()
        if samples is not None:
            d = load_samples(samples)
            n = d["images"].shape[0]
            if not 0 <= index < n:
                raise InputError(f"--index must lie in 0..{n - 1} for {samples}")
            tr = SampleTrace.from_arrays(d).select(index)
            x = torch.from_numpy(d["images"][index : index + 1])
            sd, lab_v = int(d["seeds"][index]), int(d["labels"][index])
            label = None if lab_v < 0 else lab_v
            what = f"{d['meta'].get('machine', '?')} sample {index} of {samples.name} (seed {sd})"
        else:
            dev = resolve_device(device)
            labels = parse_class(cls, 1, ds.classes) if cls != "cycle" else (
                [ds.classes[seed % len(ds.classes)]] if ds.classes else None)
            label = None if labels is None else labels[0]
            ks = parse_patch_sizes(patch_sizes) if machine != MachineName.ideal else None
            m = make_machine(machine.value, ds.images, padding=padding.value, labels=ds.labels)
            noise = seed_noise([seed], tuple(ds.images.shape[1:]), device=dev)
            lab = None if label is None else torch.tensor([label], device=dev)
            with _progress() as prog:
                task = prog.add_task(f"{machine.value} sampling with trace", total=steps)
                x, tr = ddim_sample(m, noise, steps=steps, patch_sizes=ks, labels=lab, return_trace=True,
                                    callback=lambda info: prog.advance(task))
            sd = seed
            what = f"{machine.value} ({padding.value}), seed {seed}" + ("" if label is None else f", class {label}")
        paths = render_mosaic(tr, ds.images, out, step=step, title=what)
        nov = novelty(x.cpu(), ds.images, trace=tr, max_shift=max_shift)
    except InputError as e:
        _fail(e)
    _print_novelty(nov, [sd], None if label is None else [label])
    print(f"wrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.1f} s)")


@app.command("novelty")
def novelty_cmd(
    machines: str = typer.Option("ideal,ls,els", help="Comma list of ideal, ls, els."),
    seeds: int = typer.Option(10, help="Number of seeds (0..N-1)."),
    cls: str = typer.Option("cycle", "--class"),
    padding: Padding = typer.Option(Padding.zeros),
    patch_sizes: str = PATCH_SIZES,
    steps: int = STEPS,
    dataset: str = DATASET,
    root: Optional[Path] = ROOT,
    limit: Optional[int] = LIMIT,
    per_class: Optional[int] = PER_CLASS,
    max_shift: int = typer.Option(2),
    device: str = DEVICE,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the per-seed rows and summary as JSON."),
):
    """Compare how often each machine memorises: IS should, ELS should not."""
    from rich.table import Table

    from . import ddim_sample, load_dataset, make_machine, seed_noise
    from .mosaic import novelty

    try:
        dev = resolve_device(device)
        ds = load_dataset(dataset, root=root, limit=limit, per_class=per_class)
        seed_list = list(range(seeds))
        labels = parse_class(cls, len(seed_list), ds.classes)
        lab = None if labels is None else torch.tensor(labels, device=dev)
        noise = seed_noise(seed_list, tuple(ds.images.shape[1:]), device=dev)
        names = [n.strip() for n in machines.split(",") if n.strip()]
        result = {}
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task("sampling", total=steps * len(names))
            for name in names:
                m = make_machine(name, ds.images, padding=padding.value, labels=ds.labels)
                ks = None if name == "ideal" else parse_patch_sizes(patch_sizes)
                x, tr = ddim_sample(m, noise, steps=steps, patch_sizes=ks, labels=lab, return_trace=True,
                                    callback=lambda info: prog.advance(task))
                result[name] = novelty(x.cpu(), ds.images, trace=tr, max_shift=max_shift).rows()
    except InputError as e:
        _fail(e)
    tab = Table(title=f"novelty over {seeds} seeds ({dataset}, class {cls})")
    for col in ("machine", "memorised", "median RMS/px to nearest", "median sources", "median px with a source"):
        tab.add_column(col, justify="right")
    summary = {}
    for name, rows in result.items():
        import statistics

        summary[name] = {
            "memorised": sum(r["verdict"] == "memorised" for r in rows) / len(rows),
            "median_rms": statistics.median(r["rms"] for r in rows),
            "median_sources": statistics.median(r["sources"] for r in rows),
            "median_dominated": statistics.median(r["dominated"] for r in rows),
        }
        sm = summary[name]
        tab.add_row(name, f"{sm['memorised']:.0%}", f"{sm['median_rms']:.3f}", f"{sm['median_sources']:g}",
                    f"{sm['median_dominated']:.0%}")
    _out_console().print(tab)
    if out is not None:
        from .io import atomic_write_bytes

        atomic_write_bytes(out, json.dumps({"summary": summary, "per_seed": result, "seeds": seed_list}, indent=1).encode())
    print(f"({time.perf_counter() - t0:.0f} s)")


@app.command("bench")
def bench_cmd(
    machines: str = typer.Option("els-zeros,els-circular,ls,ideal", help="Comma list of els-zeros, els-circular, ls, ideal."),
    n: str = typer.Option("500,5000", help="Training-set sizes (bundled MNIST; repeated beyond 5,000)."),
    batch: str = typer.Option("1,16", help="Batch sizes."),
    steps: int = typer.Option(20, help="Steps of the paper's MNIST ResNet schedule."),
    baseline: str = typer.Option("els-zeros:500:1", help="Configurations (machine:n:batch, comma list) also timed against the straightforward baseline; 'none' for none."),
    skip: str = typer.Option("", help="Configurations (machine:n:batch, comma list) to leave out."),
    approx: str = typer.Option("", help="Approximate mode: also run ELS zeros, batch 1, with candidates from this many nearest images (comma list, e.g. 64,256; multiples of 64 fill the kernel's blocks), against exact."),
    approx_radius: str = typer.Option("", help="Approximate mode: also run ELS zeros, batch 4, with candidates only within this many pixels of the query along each axis (comma list, e.g. 4,8), against exact."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (N = 64, batch 1 and 2, 4 steps) that checks the benchmark itself."),
    out: Path = typer.Option(Path("bench.json"), "--out", "-o"),
):
    """Time the machines: seconds per sample, candidate pairs per second, GFLOP/s against this
    machine's own fp32 matmul, peak memory, and the speed-up over a straightforward implementation."""
    from rich.table import Table

    from .bench import BenchConfig, run_benchmark
    from .io import atomic_write_bytes

    try:
        names = [m.strip() for m in machines.split(",") if m.strip()]
        for m in names:
            if m not in ("els-zeros", "els-circular", "ls", "ideal"):
                raise InputError(f"unknown machine {m!r}; choose from els-zeros, els-circular, ls, ideal")
        ns = [64] if quick else [int(v) for v in n.split(",")]
        bs = [1, 2] if quick else [int(v) for v in batch.split(",")]
        st = 4 if quick else steps
        base = set() if baseline == "none" else {v.strip() for v in baseline.split(",") if v.strip()}
        if quick and baseline != "none":
            base = {"els-zeros:64:1"}
        left_out = {v.strip() for v in skip.split(",") if v.strip()}
        cfgs = [BenchConfig(machine=m, n=nn, batch=b, steps=st, baseline=f"{m}:{nn}:{b}" in base)
                for m in names for nn in ns for b in bs if f"{m}:{nn}:{b}" not in left_out]
        ks_approx = [int(v) for v in approx.split(",") if v.strip()]
        cfgs += [BenchConfig(machine="els-zeros", n=nn, batch=1, steps=st, approx=K) for nn in ns for K in ks_approx if K < nn]
        radii = [int(v) for v in approx_radius.split(",") if v.strip()]
        if any(r < 0 for r in radii):
            raise InputError(f"--approx-radius takes non-negative integers, got {approx_radius!r}")
        cfgs += [BenchConfig(machine="els-zeros", n=nn, batch=4, steps=st, radius=R) for nn in ns for R in radii]
    except (InputError, ValueError) as e:
        _fail(InputError(str(e)))
    with _progress() as prog:
        task = prog.add_task("benchmark", total=len(cfgs))
        report = run_benchmark(cfgs, on_result=lambda r: prog.advance(task))
    atomic_write_bytes(out, json.dumps(report, indent=1).encode())
    tab = Table(title=f"{st}-step samples on {report['cpu']}, {report['threads']} threads; "
                      f"fp32 matmul {report['matmul_gflops']:.0f} GFLOP/s")
    for col in ("machine", "N", "batch", "s / sample", "pairs / s", "GFLOP/s", "of matmul", "+MB peak", "backend",
                "baseline s", "speed-up"):
        tab.add_column(col, justify="right")
    for r in report["results"]:
        if "error" in r:
            tab.add_row(r["machine"], str(r["n"]), str(r["batch"]), r["error"], *[""] * 7)
            continue
        label = r["machine"] + (f" approx {r['approx']}" if r.get("approx") else "") + (
            f" radius {r['radius']}" if r.get("radius") is not None else "")
        tab.add_row(label, str(r["n"]), str(r["batch"]), f"{r['seconds_per_sample']:.3f}",
                    f"{r['pairs_per_s']:.3g}", f"{r['gflops']:.1f}", f"{r['matmul_fraction']:.0%}",
                    f"{r.get('peak_mb_over_idle', r['peak_mb']):.0f}", r["backend"],
                    f"{r['baseline_seconds']:.1f}" if "baseline_seconds" in r else "",
                    f"{r['speedup']:.0f}x" if "speedup" in r else "")
    _out_console().print(tab)
    for r in report["results"]:
        if "approx_speedup" in r:
            what = (f"{r['approx']} nearest of N={r['n']} images" if r.get("approx") else
                    f"candidates within {r['radius']} pixels, N={r['n']}, batch {r['batch']}")
            print(f"approximate ELS ({what}): {r['approx_speedup']:.1f}x faster than exact; "
                  f"final samples against exact: median r^2 {r['approx_median_r2']:.5f}, smallest {r['approx_min_r2']:.5f}"
                  + ("" if r["approx_min_r2"] >= 0.999 else " (below 0.999: not recommended)"))
        if "fidelity_max_abs" in r:
            print(f"{r['machine']} N={r['n']} batch {r['batch']}: float32 samples against float64: max |difference| "
                  f"{r['fidelity_max_abs']:.2e}, smallest r^2 {r['fidelity_min_r2']:.8f}; against the baseline: "
                  f"max |difference| {r['baseline_max_diff']:.2e}")
    print(f"wrote {out}")


def main() -> None:
    try:
        app()
    except InputError as e:  # errors raised while typer parses (e.g. from callbacks)
        console.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
