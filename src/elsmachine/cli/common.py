"""What the commands share: option definitions, parsing of option values, the device, data and
model loading, progress bars, and the one way a command fails (one line naming the problem)."""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError

console = Console(stderr=True)


def out_console() -> Console:
    """Tables on stdout; wide enough when stdout is a file or a pipe (rich assumes 80)."""
    return Console() if sys.stdout.isatty() else Console(width=140)


# Options several commands share, defined once so their names and help agree.
DATASET = typer.Option("mnist5k", help="Bundled mnist5k; mnist, fashion-mnist, cifar10, celeba (with --root); a folder of images; or an .npz.")
ROOT = typer.Option(None, help="Folder holding the dataset's standard files.")
LIMIT = typer.Option(None, help="Use only N training images, taken in turn from each class (the first of every class, then the second, ...).")
PER_CLASS = typer.Option(None, help="Use only the first N training images of each class.")
DOWNLOAD = typer.Option(False, "--download", metavar="", help="Fetch mnist, fashion-mnist or cifar10 into --root (MD5-checked) when missing.")
DEVICE = typer.Option("auto", help="auto, cpu, cuda, cuda:N.")
STEPS = typer.Option(20, help="DDIM steps on the grid t_j = (n - j)/n.")
MODEL = typer.Option(..., "--model", help="Checkpoint folder, model.safetensors, TorchScript file, or a bundled network (mnist5k-resnet).")
NOISE_SCHEDULE = typer.Option(None, "--noise-schedule", help="Noise schedule of a TorchScript network or a bare diffusers UNet folder: cosine, linear, scaled_linear, squaredcos_cap_v2, a saved schedule or a scheduler config (others record their own).")
NUM_CLASSES = typer.Option(None, "--num-classes", help="Classes of a class-conditional TorchScript network (own checkpoints record theirs).")
PATCH_SCHEDULE = typer.Option(
    "mnist-resnet-zeros", "--patch-schedule", "--patch-sizes", "-k",
    help="Patch schedule: one size ('5'), one per step ('3,5,...'), a preset name, or a schedule .json.",
)
CLASS = typer.Option("cycle", "--class", help="'cycle' (seed s draws class s mod #classes), 'none' (unconditional) or a label.")
SEED = typer.Option(0, help="First seed; image i uses seed + i, each from its own generator.")


def flag(*decls: str, help: str) -> bool:  # noqa: A002 - typer's own keyword
    """An on/off option, shown without a value type in --help."""
    return typer.Option(False, *decls, help=help, metavar="")


def machine_names() -> str:
    from ..machines import MACHINES

    return ", ".join(MACHINES)


MachineName = Enum("MachineName", {name.replace("-", "_"): name for name in
                                   ("ideal", "ls", "els", "nearest", "wiener", "stationary", "locality", "pspc",
                                    "pspc-flex")}, type=str)
THRESHOLD = typer.Option(0.02, help="locality: the share of the largest normalised projection an entry needs to enter a distance.")
TEMPERATURE = typer.Option(1.0, help="locality: the softmax temperature.")
SENSITIVITY = typer.Option(None, help="pspc-flex: the network sensitivity file (els sensitivity --model ...).")


class Parallel(str, Enum):
    bank = "bank"
    seeds = "seeds"


PARALLEL = typer.Option(Parallel.bank, help="Under torchrun: 'bank' shards the training images across the processes, which run every seed together; 'seeds' gives each process the whole bank and its share of the seeds. Nothing in one process.")


def start_group(device: str):
    """(group, device) of this run: under torchrun the process group is started, each process
    takes its own GPU (cuda:LOCAL_RANK) when the device is CUDA without an index, and only rank 0
    prints warnings and progress."""
    import os
    import warnings

    from ..engines.distributed import join

    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dev.type == "cuda" and dev.index is None:
        # Each process its own GPU, chosen before NCCL starts so its communicator binds there.
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    group = join(dev)
    if not group.main:
        warnings.simplefilter("ignore")
        console.quiet = True
    return group, dev


def build_machine(name: str, ds, *, conditional: bool = True, padding: str | None = None, patch_schedule=None,
                  schedule=None, memory_budget: int | None = None, threshold: float | None = None,
                  temperature: float | None = None, sensitivity=None, distributed: bool = False):
    """Machine ``name`` on the data ``ds``, given the options it has (the others are left out);
    ``distributed``: its bank sharded across the processes of this run."""
    from ..machines import DEFAULT_MEMORY_BUDGET, make_machine, options_of

    takes = options_of(name)
    kw = {"padding": padding, "patch_size": patch_schedule, "threshold": threshold, "temperature": temperature,
          "sensitivity": sensitivity}
    kw = {k: v for k, v in kw.items() if k in takes}
    if "sensitivity" in takes and sensitivity is None:
        raise InputError(f"the {name} machine needs --sensitivity FILE (made by els sensitivity --model ...)")
    return make_machine(name, ds.images, labels=ds.labels if conditional else None, schedule=schedule,
                        memory_budget=memory_budget or DEFAULT_MEMORY_BUDGET, distributed=distributed, **kw)


class Padding(str, Enum):
    zeros = "zeros"
    circular = "circular"


PADDING = typer.Option(Padding.zeros, help="zeros: boundary-broken ELS; circular: periodic.")
TRACED_MACHINE = typer.Option(MachineName.els, "--machine", "-m", help="A machine that can be traced: ideal, ls, els, nearest or locality.")
RECORDED_DATASET = typer.Option(None, "--dataset", help="As for els sample (default mnist5k); with --samples, the data the samples record.")


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; else a device that exists here (cpu, cuda,
    cuda:N, mps), or an InputError saying why not."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise InputError(f"device {name!r} was asked for but {why}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return dev
    raise InputError(f"device {name!r} is not available here; use auto, cpu, cuda or cuda:N")


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"cannot read {text!r} as a size in bytes (e.g. 512MiB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_patch_schedule(text: str | None):
    """'5' -> 5; '3,5,7' -> [3, 5, 7]; a preset name or a .json path is passed through."""
    if text is None:
        return None
    if re.fullmatch(r"\s*\d+\s*", text):
        return int(text)
    if re.fullmatch(r"\s*\d+(\s*,\s*\d+)+\s*", text):
        return [int(v) for v in text.split(",")]
    return text


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be a comma list of integers, got {text!r}") from None
    if not out:
        raise InputError(f"{what} is empty")
    return out


def parse_sizes(text: str) -> list[int]:
    """'3,5,7' or '3:27' (every odd size from 3 to 27)."""
    if ":" in text:
        try:
            lo, hi = (int(v) for v in text.split(":"))
        except ValueError:
            raise InputError(f"--sizes must be a comma list of odd sizes or LO:HI, got {text!r}") from None
        return [k for k in range(lo, hi + 1) if k % 2 == 1]
    return parse_int_list(text, "--sizes")


def seed_range(seed: int, count: int, what: str = "--seeds") -> list[int]:
    """Seeds seed .. seed + count - 1."""
    if count < 1:
        raise InputError(f"{what} must be >= 1, got {count}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    return list(range(seed, seed + count))


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def load_data(dataset: str, root, limit, per_class, download: bool = False):
    from ..datasets import load_dataset

    return load_dataset(dataset, root=root, limit=limit, per_class=per_class, download=download)


def load_conditional_network(model, dev, padding=None, num_classes=None, noise_schedule=None):
    """A network on ``dev`` that, when class-conditional, knows how many classes it has."""
    from ..networks import load_network

    net = load_network(model, device=dev, padding=None if padding is None else padding.value, num_classes=num_classes,
                       noise_schedule=noise_schedule)
    if net.takes_labels and not net.num_classes:
        raise InputError(f"the model {model} is class-conditional but does not say how many classes it has: "
                         f"pass --num-classes")
    return net


def load_model_and_data(model: Path, dataset: str, root, limit, per_class, device, padding, num_classes=None,
                        download: bool = False, noise_schedule=None):
    """The network (on the resolved device), the training data, the padding the machines take
    (given, else the network's own) and the device. Warns where the network was trained on
    other data than the machines will see."""
    import warnings

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    net = load_conditional_network(model, dev, padding, num_classes, noise_schedule)
    ds = load_data(dataset, root, limit, per_class, download)
    trained = net.meta.get("dataset")
    if isinstance(trained, dict) and trained.get("name") is not None:
        same = trained.get("name") == ds.name and trained.get("n", len(ds)) == len(ds)
        if same and "sha256" in trained:
            same = trained["sha256"] == ds.fingerprint()
        if not same:
            warnings.warn(f"the network was trained on {trained.get('name')} ({trained.get('n')} images), but the "
                          f"machines use {ds.name} ({len(ds)} images): they model different training sets", stacklevel=2)
    if net.takes_labels:
        if ds.labels is None:
            raise InputError(f"the model is class-conditional but dataset {ds.name} has no labels")
        if max(ds.classes) >= net.num_classes:
            raise InputError(f"dataset {ds.name} has classes up to {max(ds.classes)}; the model knows {net.num_classes}")
    pad = padding.value if padding is not None else (net.padding or "zeros")
    return net, ds, pad, dev
