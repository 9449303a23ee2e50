"""Machines by name, read from their declarations (:mod:`.declaration`).

Every module of this package is imported once, and every class that declares itself (a
``declaration`` in its own class body) is registered under its declared name, in its declared
order. ``make_machine(name, images, ...)`` builds one; an option the machine does not declare is
refused by name, never dropped.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError
from ..noise import NoiseSchedule
from .base import DEFAULT_MEMORY_BUDGET, ScoreMachine
from .declaration import Declaration

__all__ = ["MACHINES", "make_machine", "options_of", "declaration_of", "declarations", "DEFAULT_MACHINE",
           "EXACT_MACHINE", "cost_of", "timed_options"]


def _discover() -> dict[str, type[ScoreMachine]]:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
    found: dict[str, type] = {}
    todo = list(ScoreMachine.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        decl = cls.__dict__.get("declaration")
        if isinstance(decl, Declaration):
            if decl.name in found and found[decl.name] is not cls:
                raise RuntimeError(f"two machines declare the name {decl.name!r}: {found[decl.name].__name__}, "
                                   f"{cls.__name__}")
            found[decl.name] = cls
    return dict(sorted(found.items(), key=lambda kv: (kv[1].declaration.order, kv[0])))


MACHINES: dict[str, type[ScoreMachine]] = _discover()


def _the(flag: str) -> str:
    found = [n for n, cls in MACHINES.items() if getattr(cls.declaration, flag)]
    if len(found) != 1:
        raise RuntimeError(f"exactly one machine must declare {flag}=True, found {found}")
    return found[0]


# The machine the commands sample when none is named, and the exact denoiser of the training set:
# the two every comparison measures each machine against.
DEFAULT_MACHINE = _the("default")
EXACT_MACHINE = _the("exact")


def cost_of(name: str):
    """The cost model (:class:`~.declaration.Cost`) of machine ``name``: its own, or that of the
    machine its declaration's ``cost_like`` names."""
    decl = declaration_of(name)
    cost = decl.cost if decl.cost is not None else declaration_of(decl.cost_like).cost if decl.cost_like else None
    if cost is None:
        raise RuntimeError(f"the {name} machine declares no cost model")
    return cost


def timed_options(name: str, options: dict, grid, schedule=None) -> dict:
    """``options`` of machine ``name`` with each per-step value read on the run's time ``grid``
    (descending, ending at 0): a one-per-step list belongs to these steps and is stored with their
    times, and a list of another length is refused naming both counts; one value, a schedule and a
    file are kept as they are."""
    from ..patch_schedule import PatchSchedule, StepSchedule

    decl = declaration_of(name)
    out = dict(options)
    for key, value in options.items():
        opt = decl.option(key)
        if opt is None or not opt.per_step or value is None or isinstance(value, (PatchSchedule, StepSchedule)):
            continue
        if opt.kind == "patch_schedule":
            what = "patch schedule" if key == "patch_size" else key
            out[key] = PatchSchedule.parse(value, grid, what=what)
        else:
            out[key] = StepSchedule.parse(value, key, grid=grid, schedule=schedule, **(opt.domain or {}))
    return out


def declarations() -> list[Declaration]:
    """Every machine's declaration, in listing order."""
    return [cls.declaration for cls in MACHINES.values()]


def declaration_of(name: str) -> Declaration:
    if name not in MACHINES:
        raise InputError(f"unknown machine {name!r}; choose one of {', '.join(MACHINES)}")
    return MACHINES[name].declaration


def options_of(name: str) -> tuple[str, ...]:
    """The options (beyond images, labels, schedule, memory_budget, distributed) machine ``name`` takes."""
    return declaration_of(name).option_names


def make_machine(
    name: str,
    images,
    *,
    labels=None,
    schedule: NoiseSchedule | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    distributed: bool = False,
    **options,
) -> ScoreMachine:
    """Build the machine ``name`` (see ``MACHINES``; e.g. "ideal", "ls", "els", "nearest", "wiener",
    "stationary", "locality", "pspc", "pspc-flex") over ``images``, with the options it declares
    (``options_of(name)``; e.g. ``patch_size``, ``padding`` for LS and ELS). An option left None
    takes the machine's default; ``backend="auto"`` is every machine's default. ``distributed``:
    shard the candidate bank across the ranks of an initialised ``torch.distributed`` group."""
    decl = declaration_of(name)
    given = {k: v for k, v in options.items() if v is not None and not (k == "backend" and v == "auto")}
    refused = [k for k in given if decl.option(k) is None]
    if refused:
        raise InputError(f"the {name} machine ({MACHINES[name].__name__}) has no {', '.join(refused)}; "
                         f"got {', '.join(f'{k}={given[k]!r}' for k in refused)}")
    for opt in decl.options:
        if opt.required and opt.name not in given:
            flag = f" ({opt.flag} on the command line)" if opt.flag else ""
            raise InputError(f"the {name} machine needs a {opt.name.replace('_', ' ')}{flag}: {opt.help}")
    if distributed and not decl.distributed:
        raise InputError(f"the {name} machine cannot shard its bank (distributed=True)")
    return MACHINES[name](images, labels=labels, schedule=schedule, memory_budget=memory_budget,
                          distributed=distributed, **given)
