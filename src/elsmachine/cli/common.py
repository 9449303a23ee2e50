"""What the commands share: option definitions, parsing of option values, the device, data and
model loading, progress bars, and the one way a command fails (one line naming the problem).

Two groups of options are declared once here and added to a command's signature by a decorator
(typer reads ``inspect.signature``, which honours ``__signature__``):

- :func:`data_options`: --dataset, --root, --limit, --per-class, --download, handed to the
  command as one :class:`DataSelection`;
- :func:`machine_options`: one option per option the machines declare with a flag (their
  ``declaration``), handed to the command as :class:`MachineOptions`, which gives each machine
  only what it declares and refuses, by name, what the chosen machine does not use.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError
from ..networks.checkpoints import BUNDLED_MODELS
from ..patch_schedule import spelled_sizes

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
VALUE_RANGE = typer.Option("-1,1", "--value-range", help="The range float images in an .npz lie in: '-1,1' or '0,1' (uint8 images are 0..255 whatever this says).")
LAYOUT = typer.Option(None, "--layout", help="The axes of the images in an .npz: nchw or nhwc (default: read from the shape where only one can be meant).")
DEVICE = typer.Option("auto", help="auto, cpu, cuda, cuda:N.")
STEPS = typer.Option(20, help="Sampler steps (DDIM: on the grid t_j = (n - j)/n; Heun: on EDM's noise levels, "
                     "2 n - 1 network or machine calls).")
MODEL = typer.Option(..., "--model", help="Checkpoint folder, model.safetensors, TorchScript file, or a bundled network (" + ", ".join(BUNDLED_MODELS) + ").")
NOISE_SCHEDULE = typer.Option(None, "--noise-schedule", help="Noise schedule of a TorchScript network or a bare diffusers UNet folder: cosine, linear, scaled_linear, squaredcos_cap_v2, a saved schedule or a scheduler config (others record their own).")
NUM_CLASSES = typer.Option(None, "--num-classes", help="Classes of a class-conditional TorchScript network (own checkpoints record theirs).")
CLASS = typer.Option("cycle", "--class", help="'cycle' (seed s draws class s mod #classes), 'none' (unconditional), a label, or a class folder's name.")
SEED = typer.Option(0, help="First seed; image i uses seed + i, each from its own generator.")


def flag(*decls: str, help: str) -> bool:  # noqa: A002 - typer's own keyword
    """An on/off option, shown without a value type in --help."""
    return typer.Option(False, *decls, help=help, metavar="")


def machine_names() -> str:
    from ..machines import MACHINES

    return ", ".join(MACHINES)


def _declarations():
    from ..machines import MACHINES

    return {name: cls.declaration for name, cls in MACHINES.items()}


def traceable_machines() -> list[str]:
    """The machines whose declaration says a candidate with the largest weight names each pixel's source."""
    return [name for name, decl in _declarations().items() if decl.traceable]


MachineName = Enum("MachineName", {name.replace("-", "_"): name for name in _declarations()}, type=str)


def machine_help(names: Sequence[str]) -> str:
    """One clause per machine, from its declaration's summary."""
    decls = _declarations()
    return "; ".join(f"{n}: {decls[n].summary.rstrip('.')}" for n in names) + "."


def _traceable(value):
    if value is not None and value.value not in traceable_machines():
        raise typer.BadParameter(f"the {value.value} machine cannot be traced (no candidate with the largest weight "
                                 f"per pixel); choose one of {', '.join(traceable_machines())}")
    return value


def default_machine() -> str:
    """The machine a command samples when none is named (the one whose declaration says so)."""
    from ..machines import DEFAULT_MACHINE

    return DEFAULT_MACHINE


def machine_option(default: str | None = "", *, traced: bool = False):
    """--machine / -m: every machine, or for a traced command those that can be traced (the
    others are refused saying so). ``default`` "": the declared default machine; None: the
    command tells a machine given from none (and takes the default)."""
    names = traceable_machines() if traced else list(_declarations())
    default = default_machine() if default == "" else default
    return typer.Option(None if default is None else MachineName(default), "--machine", "-m",
                        metavar="[" + "|".join(names) + "]", show_default=default or default_machine(),
                        help="The machine. " + machine_help(names), callback=_traceable if traced else None)


def parse_machines(text: str, *, allow_all: bool = False) -> list[str]:
    """--machines: a comma list of machine names, where ``allow_all``, 'all' among them: every
    machine but the candidates (so 'all,wiener-els' adds a candidate to them)."""
    known = list(_declarations())
    names: list[str] = []
    for n in (n.strip() for n in text.split(",")):
        if allow_all and n == "all":
            names += [m for m, d in _declarations().items() if not d.candidate]
        elif n in known:
            names.append(n)
        elif n:
            raise InputError(f"unknown machine {n!r} in --machines; choose from {'all, ' if allow_all else ''}"
                             f"{', '.join(known)}")
    names = list(dict.fromkeys(names))  # each machine once, in the order given
    if not names:
        raise InputError("--machines is empty")
    return names


SETTINGS = typer.Option([], "--set", metavar="MACHINE.OPTION=VALUE",
                        help="An option of one machine, e.g. els-soft.sigma=2,2,1.5 (repeatable; the option's "
                             "value as its flag takes it).")


def parse_settings(items: list[str], names: list[str]) -> dict[str, dict]:
    """--set MACHINE.OPTION=VALUE items -> {machine: {option: value}}, each option one its machine
    declares, for a machine among ``names``."""
    out: dict[str, dict] = {}
    decls = _declarations()
    for item in items:
        head, eq, value = item.partition("=")
        machine, dot, option = head.strip().rpartition(".")
        if not eq or not dot or not machine or not option:
            raise InputError(f"--set takes MACHINE.OPTION=VALUE, got {item!r}")
        if machine not in names:
            raise InputError(f"--set {item!r}: {machine!r} is not among the machines run ({', '.join(names)})")
        opt = decls[machine].option(option.replace("-", "_"))
        if opt is None:
            raise InputError(f"--set {item!r}: the {machine} machine has no option {option!r} "
                             f"(it has {', '.join(decls[machine].option_names) or 'none'})")
        value = value.strip()
        if opt.kind in (int, float):
            try:
                value = opt.kind(value)
            except ValueError:
                raise InputError(f"--set {item!r}: {option} must be {opt.kind.__name__}, got {value!r}") from None
        elif opt.kind == "patch_schedule":
            # in code the text '5,3' is refused (a size is a number there); on the command line it
            # spells the sizes, and only a name (a preset or a file) stays text
            spelled = spelled_sizes(value, option)
            value = value if spelled is None else spelled
        out.setdefault(machine, {})[opt.name] = value
    return out


def _declared(name: str):
    """The option ``name`` as the machines declare it (the first that does)."""
    for decl in _declarations().values():
        opt = decl.option(name)
        if opt is not None:
            return opt
    raise RuntimeError(f"no machine declares the option {name!r}")


def declared_option(name: str):
    """A typer option for the machine option ``name``, with its declared flag and help; unset it is
    None (each machine then takes its declared default), so a command can tell it was given."""
    opt = _declared(name)
    return typer.Option(None, opt.flag, *opt.aliases, help=f"{opt.help} (default {opt.default})", show_default=False)


THRESHOLD = declared_option("threshold")
TEMPERATURE = declared_option("temperature")


def refuse_unused(given: dict, names: Sequence[str]) -> None:
    """Refuse an option given on the command line ({option name: value or None}) that none of the
    machines ``names`` declares, naming its flag and the machines that have it."""
    decls = _declarations()
    for key, value in given.items():
        if value is None or any(decls[n].option(key) is not None for n in names):
            continue
        users = [n for n, d in decls.items() if d.option(key) is not None]
        flag_ = next(d.option(key).flag for d in decls.values() if d.option(key) is not None)
        raise InputError(f"{flag_} does not apply to the machines {', '.join(names)}: it is an option of "
                         f"{', '.join(users)}")


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
                  temperature: float | None = None, sensitivity=None, distributed: bool = False,
                  settings: dict | None = None):
    """Machine ``name`` on the data ``ds``, given the options it has (the others are left out)
    and ``settings``, its own options by name (``--set``); ``distributed``: its bank sharded
    across the processes of this run."""
    from ..machines import DEFAULT_MEMORY_BUDGET, make_machine, options_of

    takes = options_of(name)
    kw = {"padding": padding, "patch_size": patch_schedule, "threshold": threshold, "temperature": temperature,
          "sensitivity": sensitivity}
    kw = {k: v for k, v in kw.items() if k in takes and not (k in ("threshold", "temperature") and v is None)}
    kw |= dict(settings or {})
    if "sensitivity" in takes and sensitivity is None:
        raise InputError(f"the {name} machine needs --sensitivity FILE (made by els sensitivity --model ...)")
    return make_machine(name, ds.images, labels=ds.labels if conditional else None, schedule=schedule,
                        memory_budget=DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget,
                        distributed=distributed, **kw)


class SamplerName(str, Enum):
    ddim = "ddim"
    heun = "heun"


SAMPLER = typer.Option(SamplerName.ddim, "--sampler", help="ddim (deterministic DDIM) or heun (EDM's deterministic "
                       "second-order sampler, Karras et al. 2022: sigma from 80 to 0.002, rho 7). Results record it.")


class Padding(str, Enum):
    zeros = "zeros"
    circular = "circular"


RECORDED_DATASET = typer.Option(None, "--dataset", help="As for els sample (default mnist5k); with --samples, the data the samples record.")


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


DTYPE = typer.Option(DType.float32, help="Arithmetic precision.")
MEMORY_BUDGET = typer.Option("2GiB", help="Bytes of candidate keys held at once.")


# ----------------------------------------------------------------------------- options added to a signature
def _with_options(func: Callable, placeholder: str, params: list[inspect.Parameter], make: Callable[[dict], Any]):
    """``func`` with its parameter ``placeholder`` replaced, in its place, by the options
    ``params``; the command receives ``make({their values})`` as ``placeholder``."""
    sig = inspect.signature(func, eval_str=True)
    if placeholder not in sig.parameters:
        raise TypeError(f"{func.__name__} has no parameter {placeholder!r} to receive its options")
    clash = {p.name for p in params} & set(sig.parameters)
    if clash:
        raise TypeError(f"{func.__name__} already has parameters {sorted(clash)}")
    new = []
    for p in sig.parameters.values():
        new.extend(params if p.name == placeholder else [p])
    names = [p.name for p in params]

    @functools.wraps(func)
    def command(**kw):
        taken = {n: kw.pop(n) for n in names}
        return func(**kw, **{placeholder: make(taken)})

    command.__signature__ = sig.replace(parameters=new)
    # Resolved types: typer reads them with get_type_hints, in no module's namespace.
    command.__annotations__ = {p.name: p.annotation for p in new if p.annotation is not inspect.Parameter.empty}
    return command


def _param(name: str, annotation, option) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=annotation)


@dataclass(frozen=True)
class DataSelection:
    """The training data a command was asked for: the arguments of ``load_dataset``. ``dataset``
    is None where the command gives it no default (it then means the data a file records)."""

    dataset: str | None = "mnist5k"
    root: Path | None = None
    limit: int | None = None
    per_class: int | None = None
    download: bool = False
    value_range: str = "-1,1"
    layout: str | None = None

    @property
    def given(self) -> bool:
        """Whether the command line names any data."""
        return self.dataset is not None or self.root is not None or self.limit is not None or self.per_class is not None

    def load(self, default: str = "mnist5k"):
        return load_data(self.dataset or default, self.root, self.limit, self.per_class, self.download,
                         value_range=self.value_range, layout=self.layout)


def data_options(func: Callable | None = None, *, recorded: bool = False):
    """Add --dataset, --root, --limit, --per-class, --download, --value-range and --layout in place of
    the command's parameter ``data``, which receives them as one :class:`DataSelection`. ``recorded``: the
    command can also draw a file that records its data, so --dataset has no default."""

    def wrap(f):
        params = [_param("dataset", Optional[str] if recorded else str, RECORDED_DATASET if recorded else DATASET),
                  _param("root", Optional[Path], ROOT), _param("limit", Optional[int], LIMIT),
                  _param("per_class", Optional[int], PER_CLASS), _param("download", bool, DOWNLOAD),
                  _param("value_range", str, VALUE_RANGE), _param("layout", Optional[str], LAYOUT)]
        return _with_options(f, "data", params, lambda v: DataSelection(**v))

    return wrap(func) if func is not None else wrap


def _option_type(opt, choices):
    """The command-line type of a declared option: its choices as an Enum, a path, or its kind."""
    if choices:
        return Enum(f"{opt.name.title().replace('_', '')}Choice", {str(c): str(c) for c in choices}, type=str)
    if opt.kind == "path":
        return Path
    if opt.kind in (int, float, bool, str):
        return opt.kind
    return str  # a patch schedule and other forms: read from their text by the machine


@dataclass(frozen=True)
class _Flagged:
    """One command-line option for every machine declaring the option ``name`` with a flag."""

    option: Any  # the first declaration's Option: flag, aliases, kind
    users: tuple[str, ...]  # the machines declaring it
    choices: tuple  # every value some machine allows (empty: any)
    help: str  # the declared help, per machine where they differ


def _declared_flags() -> dict[str, _Flagged]:
    """option name -> how the command line offers it, for every machine option with a flag."""
    found: dict[str, list] = {}
    for name, decl in _declarations().items():
        for opt in decl.options:
            if opt.flag is not None:
                found.setdefault(opt.name, []).append((name, opt))
    out = {}
    for key, pairs in found.items():
        first = pairs[0][1]
        choices = tuple(dict.fromkeys(c for _, o in pairs for c in (o.choices or ())))
        helps: dict[str, list[str]] = {}
        for name, o in pairs:
            helps.setdefault(o.help.rstrip("."), []).append(name)
        text = next(iter(helps)) if len(helps) == 1 else "; ".join(f"{', '.join(ns)}: {h}" for h, ns in helps.items())
        out[key] = _Flagged(first, tuple(n for n, _ in pairs), choices, text)
    return out


@dataclass(frozen=True)
class MachineOptions:
    """The machine options of one command line.

    given: the options the user set (option name -> value); defaults: the command's own values,
    used where a machine has that option and it was not given.
    """

    given: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def check(self, machines: Sequence[str]) -> None:
        """Before any work: refuse an option given on the command line that none of ``machines``
        uses, and a machine that needs an option nobody gave."""
        decls = _declarations()
        for key in self.given:
            if not any(decls[m].option(key) is not None for m in machines):
                flagged = _declared_flags()[key]
                which = f"the {machines[0]} machine" if len(machines) == 1 else f"the machines {', '.join(machines)}"
                raise InputError(f"{flagged.option.flag} does not apply to {which}: it is an option of "
                                 f"{', '.join(flagged.users)}")
        for m in machines:
            for key, value in self.of(m).items():
                opt = decls[m].option(key)
                if opt.choices and value not in opt.choices:
                    raise InputError(f"{opt.flag} {value}: the {m} machine takes {', '.join(map(str, opt.choices))}")
            for opt in decls[m].options:
                if opt.required and opt.name not in self.of(m):
                    what = opt.flag or f"a {opt.name.replace('_', ' ')}"
                    raise InputError(f"the {m} machine needs {what}: {opt.help}")

    def refuse(self, why: str) -> None:
        """Refuse every machine option given, where the command samples no machine (``why``)."""
        if self.given:
            flags = ", ".join(_declared_flags()[k].option.flag for k in self.given)
            raise InputError(f"{flags}: machine options, but {why}")

    def of(self, machine: str) -> dict:
        """The options machine ``machine`` gets: those it declares, given or else defaulted here."""
        decl = _declarations()[machine]
        out = {k: v for k, v in self.defaults.items() if decl.option(k) is not None}
        out.update({k: v for k, v in self.given.items() if decl.option(k) is not None})
        return out


_PREFIX = "machine_option_"


def machine_options(**defaults):
    """Add one option per machine option declared with a flag (the union over all machines) in
    place of the command's parameter ``options``, which receives them as :class:`MachineOptions`.
    ``defaults``: the command's own values by option name, applied only to machines that have
    that option. Each option defaults to None, so a value set on the command line is told apart
    from a default."""

    def wrap(f):
        params = []
        for name, flagged in _declared_flags().items():
            opt = flagged.option
            kind = _option_type(opt, flagged.choices)
            default = defaults.get(name, opt.default)
            text = (f"{flagged.help} ({', '.join(flagged.users)}" + ("" if default is None else f"; default {default}")
                    + ").")
            decls = [opt.flag, *opt.aliases]
            if kind is bool:  # an on/off option: both spellings, so unset stays None
                decls = [f"{opt.flag}/--no-{opt.flag.lstrip('-')}", *opt.aliases]
            # the parameter is named apart from the command's own (a machine's seed is not --seed)
            params.append(_param(_PREFIX + name, Optional[kind],
                                 typer.Option(None, *decls, help=text, show_default=False)))

        def make(values: dict) -> MachineOptions:
            given = {k[len(_PREFIX):]: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
                     for k, v in values.items() if v is not None}
            return MachineOptions(given, dict(defaults))

        return _with_options(f, "options", params, make)

    return wrap


# ----------------------------------------------------------------------------- sampling
# What the sampling commands give a machine that has these options and is not told otherwise.
SAMPLING_DEFAULTS = {"patch_size": "mnist-resnet-zeros", "padding": "zeros"}


def recorded_data(d: dict, samples: Path, data: DataSelection):
    """The training data a samples file was made from: loaded again from its record, or, where the
    command line names data, that data, which must be the same (same fingerprint)."""
    from ..datasets import reload_dataset

    record = d["meta"].get("data")
    if not data.given:
        if record is None:
            raise InputError(f"{samples} does not record its training data; give --dataset (and --limit or "
                             f"--per-class) as it was sampled")
        return reload_dataset(record)
    ds = data.load()
    if record is not None and record.get("sha256") != ds.fingerprint():
        raise InputError(f"{samples} was made from {record.get('name')} ({record.get('n')} images, fingerprint "
                         f"{record.get('sha256')}), but the command line gives {ds.name} ({len(ds)} images, "
                         f"fingerprint {ds.fingerprint()}); leave out the data options to use the recorded data")
    return ds


def bank_sharded(group, machine: str) -> bool:
    """Under torchrun: shard the machine's bank across the processes where it can be sharded."""
    return group.world > 1 and _declarations()[machine].distributed


def run_with_progress(spec, what: str):
    """``run_samples(spec)`` with a bar of its steps and, on a bank of 20,000 images or more,
    one of the training images each step's (long) calls have streamed. The bar appears once
    sampling has begun, so a spec refused on entry prints nothing but its error."""
    from ..experiments.runs import run_samples

    prog = progress()
    tasks: dict[str, int] = {}

    def begin() -> None:
        if not tasks:
            prog.start()
            tasks["steps"] = prog.add_task(what, total=spec.steps)
            if spec.machine is not None and len(spec.data) >= 20_000:
                tasks["candidates"] = prog.add_task("  training images this step", total=len(spec.data))

    def on_candidates(done: int, total: int) -> None:
        begin()
        if "candidates" in tasks:
            prog.update(tasks["candidates"], completed=done, total=total)

    def on_step(info: dict) -> None:
        begin()
        prog.advance(tasks["steps"])

    try:
        return run_samples(spec, on_step=on_step, on_candidates=on_candidates)
    finally:
        if tasks:
            prog.stop()


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


def parse_bytes(text: str, what: str = "--memory-budget") -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"{what}: cannot read {text!r} as a size in bytes (e.g. 512MiB, 2GiB)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise InputError(f"{what} must be at least one byte, got {text!r}")
    return value


def parse_patch_schedule(text: str | None, grid: torch.Tensor | None = None):
    """A --patch-schedule value read by :meth:`~elsmachine.PatchSchedule.parse`: '5' -> 5, a
    preset name or a .json path -> its schedule, '3,5,7' -> a schedule on ``grid``. Without a
    grid a comma list stays the list of sizes, which the machine places on its own noise
    schedule's grid of that many steps."""
    from ..patch_schedule import PatchSchedule, spelled_sizes

    if text is None:
        return None
    if grid is None and isinstance(spelled_sizes(text, "--patch-schedule"), list):
        return spelled_sizes(text, "--patch-schedule")
    return PatchSchedule.parse(text, grid, what="--patch-schedule")


def parse_int_list(text: str, what: str) -> list[int]:
    items = text.split(",")
    if not text.strip():
        raise InputError(f"{what} is empty")
    if any(not v.strip() for v in items):
        raise InputError(f"{what} has an empty item in {text!r}")
    try:
        return [int(v) for v in items]
    except ValueError:
        raise InputError(f"{what} must be a comma list of integers, got {text!r}") from None


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


def parse_value_range(text: str) -> tuple[float, float]:
    """--value-range: two numbers, low and high ('-1,1', '0,1')."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--value-range takes two numbers, low and high ('-1,1' or '0,1'), got {text!r}") from None
    return lo, hi


def load_data(dataset: str, root, limit, per_class, download: bool = False, *, value_range: str = "-1,1",
              layout: str | None = None):
    from ..datasets import load_dataset

    return load_dataset(dataset, root=root, limit=limit, per_class=per_class, download=download,
                        value_range=parse_value_range(value_range), layout=layout)


def load_conditional_network(model, dev, padding=None, num_classes=None, noise_schedule=None):
    """A network on ``dev`` that, when class-conditional, knows how many classes it has."""
    from ..networks import load_network

    net = load_network(model, device=dev, padding=None if padding is None else padding.value, num_classes=num_classes,
                       noise_schedule=noise_schedule)
    if net.takes_labels and not net.num_classes:
        raise InputError(f"the model {model} is class-conditional but does not say how many classes it has: "
                         f"pass --num-classes")
    if num_classes is not None and net.num_classes != num_classes:
        recorded = f"{net.num_classes} classes" if net.takes_labels else "no classes (unconditional)"
        raise InputError(f"--num-classes {num_classes}: the model {model} records {recorded}")
    return net


def load_model_and_data(model: Path, dataset: str, root, limit, per_class, device, padding, num_classes=None,
                        download: bool = False, noise_schedule=None):
    """The network (on the resolved device), the training data, the padding the machines take
    (given, else the network's own) and the device. Warns where the network was trained on
    other data than the machines will see."""
    import warnings

    from ..networks.checkpoints import check_data_fits

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    net = load_conditional_network(model, dev, padding, num_classes, noise_schedule)
    ds = load_data(dataset, root, limit, per_class, download)
    check_data_fits(net, ds)  # channels, size and classes, before any work
    trained = net.meta.get("dataset")
    if isinstance(trained, dict) and trained.get("name") is not None:
        same = trained.get("name") == ds.name and trained.get("n", len(ds)) == len(ds)
        if same and "sha256" in trained:
            same = trained["sha256"] == ds.fingerprint()
        if not same:
            warnings.warn(f"the network was trained on {trained.get('name')} ({trained.get('n')} images), but the "
                          f"machines use {ds.name} ({len(ds)} images): they model different training sets", stacklevel=2)
    pad = padding.value if padding is not None else (net.padding or "zeros")
    return net, ds, pad, dev
