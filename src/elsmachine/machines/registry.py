"""Machines by name: ``make_machine("els", images, ...)`` and the list the command line offers.

Every machine takes the training images, optional labels, the noise schedule and a memory budget;
each class lists in ``OPTIONS`` the further options it has. An option given to a machine that
does not have it is refused by name, never dropped.
"""

from __future__ import annotations

from ..errors import InputError
from ..noise import NoiseSchedule
from .base import DEFAULT_MEMORY_BUDGET, ScoreMachine
from .composite import FlexCompositeMachine, PatchCompositeMachine
from .gaussian import StationaryMachine, WienerMachine
from .ideal import IdealMachine
from .local import ELSMachine, LocalMachine
from .locality import LocalityMachine
from .nearest import NearestMachine

__all__ = ["MACHINES", "make_machine", "options_of"]

MACHINES: dict[str, type[ScoreMachine]] = {
    "ideal": IdealMachine, "ls": LocalMachine, "els": ELSMachine, "nearest": NearestMachine,
    "wiener": WienerMachine, "stationary": StationaryMachine, "locality": LocalityMachine,
    "pspc": PatchCompositeMachine, "pspc-flex": FlexCompositeMachine,
}

_OPTIONS = {
    IdealMachine: ("backend",),
    LocalMachine: ("patch_size", "padding", "backend", "approx_images", "approx_radius"),
    ELSMachine: ("patch_size", "padding", "backend", "approx_images", "approx_radius"),
    LocalityMachine: ("threshold", "temperature"),
    PatchCompositeMachine: ("patch_size",),
    FlexCompositeMachine: ("sensitivity",),
}


def options_of(name: str) -> tuple[str, ...]:
    """The options (beyond images, labels, schedule, memory_budget) machine ``name`` takes."""
    if name not in MACHINES:
        raise InputError(f"unknown machine {name!r}; choose one of {', '.join(MACHINES)}")
    return _OPTIONS.get(MACHINES[name], ())


def make_machine(
    name: str,
    images,
    *,
    labels=None,
    schedule: NoiseSchedule | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    padding: str | None = None,
    patch_size=None,
    backend: str = "auto",
    approx_images: int | None = None,
    approx_radius: int | None = None,
    threshold: float | None = None,
    temperature: float | None = None,
    sensitivity=None,
    distributed: bool = False,
) -> ScoreMachine:
    """Build a machine by name: "ideal" (IS), "ls" (LS), "els" (ELS; zeros = boundary-broken),
    "nearest", "wiener", "stationary", "locality", "pspc", "pspc-flex". ``padding`` defaults to
    "zeros" where a machine has one. ``distributed``: shard the candidate bank across the ranks of
    an initialised ``torch.distributed`` group (every machine)."""
    takes = options_of(name)
    given = {"padding": padding, "patch_size": patch_size, "backend": None if backend == "auto" else backend,
             "approx_images": approx_images, "approx_radius": approx_radius, "threshold": threshold,
             "temperature": temperature, "sensitivity": sensitivity}
    given = {k: v for k, v in given.items() if v is not None}
    refused = [k for k in given if k not in takes]
    if refused:
        raise InputError(f"the {name} machine ({MACHINES[name].__name__}) has no {', '.join(refused)}; "
                         f"got {', '.join(f'{k}={given[k]!r}' for k in refused)}")
    if "sensitivity" in takes and "sensitivity" not in given:
        raise InputError(f"the {name} machine needs a sensitivity (els sensitivity --model ...)")
    return MACHINES[name](images, labels=labels, schedule=schedule, memory_budget=memory_budget,
                          distributed=distributed, **given)
