"""Seeds and classes: the one rule every command follows (docs/theory.md, "Seeds and classes").

Image i of a run starts from noise drawn by its own generator seeded with its seed (as EDM
does), so an image does not depend on the batch it is drawn in. Its class, when the run is
class-conditional and cycles through classes, is ``classes[seed % len(classes)]``: a function
of the seed alone, so ``--seed 3`` gives the same image in ``els sample``, ``els mosaic``,
``els novelty``, ``els compare`` and ``els calibrate``.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

from .errors import InputError

__all__ = ["seed_noise", "class_of_seed", "labels_for_seeds"]


def seed_noise(seeds: Sequence[int], shape: tuple[int, int, int], *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Starting noise [len(seeds), C, H, W]: image i drawn from its own generator seeded with
    seeds[i], in float64, then cast to ``dtype``."""
    seeds = list(seeds)
    if not seeds:
        raise InputError("give at least one seed")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise InputError(f"seeds must be non-negative integers, got {s!r}")
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(shape, generator=g, dtype=torch.float64))
    return torch.stack(out).to(device=device, dtype=dtype)


def class_of_seed(seed: int, classes: Sequence[int]) -> int:
    """The class a seed draws when a run cycles through ``classes``: classes[seed % len(classes)]."""
    if not classes:
        raise InputError("no classes to draw from")
    return int(sorted(classes)[int(seed) % len(classes)])


def labels_for_seeds(seeds: Sequence[int], choice: str | int | None, classes: Sequence[int]) -> list[int] | None:
    """Labels for ``seeds``: ``choice`` "none" (or None) is unconditional, "cycle" draws each
    seed's class by :func:`class_of_seed`, an integer (or its text) gives every seed that class."""
    if choice is None or choice == "none":
        return None
    if not classes:
        raise InputError(f"--class {choice} needs labelled training data; this data has no labels (use --class none)")
    if choice == "cycle":
        return [class_of_seed(s, classes) for s in seeds]
    try:
        c = int(choice)
    except (TypeError, ValueError):
        raise InputError(f"--class must be 'cycle', 'none' or a class label, got {choice!r}") from None
    if c not in classes:
        raise InputError(f"class {c} has no training images (classes present: {sorted(classes)})")
    return [c] * len(seeds)
