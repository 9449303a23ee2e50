"""Seeds and classes: the one rule every command follows (docs/theory.md, "Seeds and classes").

Image i of a run starts from noise drawn by its own generator seeded with its seed (as EDM
does), so an image does not depend on the batch it is drawn in. Its class, when the run is
class-conditional and cycles through classes, is ``classes[seed % len(classes)]``: a function
of the seed alone, so ``--seed 3`` gives the same image in ``els sample``, ``els mosaic``,
``els novelty``, ``els compare`` and ``els calibrate``.
"""

from __future__ import annotations

import hashlib
import numbers
from typing import Sequence

import torch

from .errors import InputError

__all__ = ["seed_noise", "class_of_seed", "labels_for_seeds", "query_generator", "SEED_LIMIT"]

# Seeds are saved with the images they made as int64 (samples.npz, per-seed records), and some
# torch versions take no larger seed, so 2**63 and above would fail after the sampling is done.
SEED_LIMIT = 2**63


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
        if s >= SEED_LIMIT:
            raise InputError(f"seed {s} is too large: seeds must be below 2**63 = {SEED_LIMIT} (records keep "
                             f"them as int64)")
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(shape, generator=g, dtype=torch.float64))
    return torch.stack(out).to(device=device, dtype=dtype)


def query_generator(seed: int, t: float, cls, query: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded from (seed, t, class, the query's float64 bytes): the randomness of a
    machine that draws (GoldDiff's pre-sampled images, the smoothed machine's perturbations) is
    then a function of its query, whatever batch or process the query comes in."""
    h = hashlib.sha256()
    h.update(f"{seed}|{float(t)!r}|{cls}".encode())
    h.update(query.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return torch.Generator().manual_seed(int.from_bytes(h.digest()[:8], "little") & (SEED_LIMIT - 1))


def class_of_seed(seed: int, classes: Sequence[int]) -> int:
    """The class a seed draws when a run cycles through ``classes``: classes[seed % len(classes)]."""
    if not classes:
        raise InputError("no classes to draw from")
    return int(sorted(classes)[int(seed) % len(classes)])


def labels_for_seeds(seeds: Sequence[int], choice: str | int | None, classes: Sequence[int],
                     names: Sequence[str] | None = None) -> list[int] | None:
    """Labels for ``seeds``: ``choice`` "none" (or None) is unconditional, "cycle" draws each
    seed's class by :func:`class_of_seed`, an integer (or its text) gives every seed that class,
    and where the data names its classes (``names[c]`` the name of label c, as
    ``Dataset.class_names`` holds an image folder's sub-folders) so does a class's name."""
    if choice is None or choice == "none":
        return None
    if not classes:
        raise InputError(f"--class {choice} needs labelled training data; this data has no labels (use --class none)")
    if choice == "cycle":
        return [class_of_seed(s, classes) for s in seeds]
    c = _class_of_choice(choice, names)
    if c not in classes:
        raise InputError(f"class {c} has no training images (classes present: {sorted(classes)})")
    return [c] * len(seeds)


def _class_of_choice(choice, names: Sequence[str] | None) -> int:
    """The label ``choice`` stands for: an int is a label; a text is a class name or a label's digits."""
    if isinstance(choice, numbers.Integral) and not isinstance(choice, bool):
        return int(choice)
    if not isinstance(choice, str):
        raise InputError(f"--class must be 'cycle', 'none' or a class label, got {choice!r}")
    names = list(names) if names is not None else []
    try:
        index = int(choice)
    except ValueError:
        index = None
    if choice in names:
        c = names.index(choice)
        # Folders named by numbers that are not their index ("1", "10", "2" sort as labels 0, 1,
        # 2): "1" could be either; refuse rather than guess.
        if index is not None and index != c and 0 <= index < len(names):
            raise InputError(f"--class {choice!r} is ambiguous: class {index} is folder {names[index]!r}, and "
                             f"folder {choice!r} is class {c}; give {c} for folder {choice!r} or {names[index]!r} "
                             f"for class {index}")
        return c
    if index is not None:
        return index
    if names:
        listed = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
        raise InputError(f"--class {choice!r} is not a class: the classes are {listed}")
    raise InputError(f"--class must be 'cycle', 'none' or a class label, got {choice!r}")
