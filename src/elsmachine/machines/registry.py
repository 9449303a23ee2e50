"""Machines by name: ``make_machine("els", images, ...)`` and the list the CLI offers."""

from __future__ import annotations

from ..errors import InputError
from ..noise import CosineSchedule
from .base import DEFAULT_MEMORY_BUDGET, ScoreMachine
from .ideal import IdealMachine
from .local import ELSMachine, LocalMachine

__all__ = ["MACHINES", "make_machine"]

MACHINES = {"ideal": IdealMachine, "ls": LocalMachine, "els": ELSMachine}


def make_machine(
    name: str,
    images,
    *,
    padding: str = "zeros",
    patch_size=None,
    labels=None,
    schedule: CosineSchedule | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    backend: str = "auto",
    approx_images: int | None = None,
    approx_radius: int | None = None,
) -> ScoreMachine:
    """Build a machine by name: "ideal" (IS), "ls" (LS) or "els" (ELS; zeros = boundary-broken).

    Options that a machine does not have are refused by name, never dropped.
    """
    if name not in MACHINES:
        raise InputError(f"unknown machine {name!r}; choose one of {', '.join(MACHINES)}")
    cls = MACHINES[name]
    common = dict(labels=labels, schedule=schedule, memory_budget=memory_budget, backend=backend)
    if not cls.has_patch_size:
        given = {k: v for k, v in (("patch_size", patch_size), ("approx_images", approx_images),
                                   ("approx_radius", approx_radius)) if v is not None}
        if given:
            raise InputError(f"the {name} machine ({cls.__name__}) has no {', '.join(given)}; "
                             f"got {', '.join(f'{k}={v!r}' for k, v in given.items())}")
        return cls(images, **common)
    return cls(images, patch_size=patch_size, padding=padding, approx_images=approx_images,
               approx_radius=approx_radius, **common)
