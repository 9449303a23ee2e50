"""One seeded sampling run: a machine (or a network) through a deterministic sampler (DDIM or EDM's
Heun) from each seed's own noise (docs/theory.md, "Sampling" and "Seeds and classes"), optionally traced, with the one
metadata record every command writes beside its samples.

``els sample``, ``els mosaic``, ``els novelty`` and ``els explore`` all sample through
:func:`run_samples`, so the same spec gives the same images and the same record in each.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..datasets import Dataset
from ..contract import denoiser_name
from ..errors import InputError
from ..machines import DEFAULT_MEMORY_BUDGET, MACHINES, Traced, make_machine, timed_options
from ..machines.tracing import SampleTrace
from ..noise import CosineSchedule
from ..patch_schedule import PatchSchedule
from ..sampling import Sampler
from ..seeds import SEED_LIMIT, labels_for_seeds, seed_noise
from .compare import describe

__all__ = ["SampleSpec", "SampleRun", "run_samples"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class SampleSpec:
    """What a sampling run is made of.

    data: the training data (its images make the machine's bank; its classes the labels).
    seeds: one image per seed, each from its own generator.
    machine: a name of ``MACHINES``, with ``options`` (those it declares; ``patch_size`` in any
        form :meth:`~elsmachine.PatchSchedule.parse` reads, a one-per-step list on this run's
        grid). Or instead ``denoiser``: anything that follows the denoiser contract (a network).
    class_rule: "cycle" (seed s draws class s mod #classes), "none" (unconditional) or a label.
    steps: sampler steps (DDIM: on the schedule's own grid).
    sampler: a :class:`~elsmachine.sampling.Sampler`, or its name ("ddim", "heun").
    schedule: the machine's noise schedule (None: the paper's cosine); a denoiser brings its own.
    dtype: torch.float32 or torch.float64 (or their names): the denoiser's arithmetic.
    device: where the noise, and so the computation, lives (already resolved: no "auto").
    trace: record where every pixel comes from (machines whose declaration says traceable).
    memory_budget: bytes of candidate keys a machine holds at once (None: its default).
    distributed: shard the machine's bank across the processes of the torch.distributed group.
    """

    data: Dataset
    seeds: tuple[int, ...]
    machine: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    denoiser: Any = None
    class_rule: str | int = "cycle"
    steps: int = 20
    sampler: Sampler | str = Sampler()
    schedule: Any = None
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    trace: bool = False
    memory_budget: int | None = None
    distributed: bool = False

    def __post_init__(self) -> None:
        # Frozen: the normalised values are set once, here.
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if not isinstance(self.data, Dataset):
            raise InputError(f"data must be a Dataset (elsmachine.load_dataset), got {type(self.data).__name__}")
        seeds = tuple(self.seeds) if not isinstance(self.seeds, numbers.Integral) else (self.seeds,)
        if not seeds:
            raise InputError("give at least one seed")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
                raise InputError(f"seeds must be non-negative integers, got {s!r}")
            if s >= SEED_LIMIT:  # before any machine is built
                raise InputError(f"seed {s} is too large: seeds must be below 2**63 = {SEED_LIMIT}")
        set_("seeds", tuple(int(s) for s in seeds))
        if (self.machine is None) == (self.denoiser is None):
            raise InputError("give a machine name or a denoiser, not both and not neither")
        if self.machine is not None:
            if self.machine not in MACHINES:
                raise InputError(f"unknown machine {self.machine!r}; choose one of {', '.join(MACHINES)}")
            if self.trace and not MACHINES[self.machine].declaration.traceable:
                raise InputError(f"the {self.machine} machine cannot be traced (no candidate with the largest weight "
                                 f"per pixel)")
        elif self.options:
            raise InputError(f"options {sorted(self.options)} are for a machine; a denoiser comes built")
        elif self.trace:
            raise InputError("trace needs a machine: a network has no candidates to trace")
        set_("options", dict(self.options))
        if isinstance(self.sampler, str):
            set_("sampler", Sampler(self.sampler))
        elif not isinstance(self.sampler, Sampler):
            raise InputError(f"sampler must be a Sampler or a name, got {type(self.sampler).__name__}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise InputError(f"steps must be a positive integer, got {self.steps!r}")
        dtype = _DTYPES.get(self.dtype, self.dtype) if isinstance(self.dtype, str) else self.dtype
        if dtype not in _DTYPES.values():
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        set_("dtype", dtype)
        try:
            set_("device", torch.device(self.device))
        except (RuntimeError, TypeError):
            raise InputError(f"unknown device {self.device!r}; give a resolved one (cpu, cuda, cuda:N)") from None
        if self.memory_budget is not None and (isinstance(self.memory_budget, bool) or
                                               not isinstance(self.memory_budget, numbers.Integral)):
            raise InputError(f"memory_budget must be a number of bytes, got {self.memory_budget!r}")


@dataclass
class SampleRun:
    """What a run made.

    images: [B, C, H, W] in the spec's dtype, on its device; seeds and labels (None when
    unconditional) one per image; trace: a SampleTrace when traced; denoiser: the machine (not
    its tracing wrapper) or the network; patch_sizes: the size at each step (None without one);
    seconds: the sampling time; meta: the record written with the samples.
    """

    images: torch.Tensor
    seeds: list[int]
    labels: list[int] | None
    trace: SampleTrace | None
    denoiser: Any
    patch_sizes: list[int] | None
    seconds: float
    meta: dict


def _labels(spec: SampleSpec) -> list[int] | None:
    if spec.machine is not None:
        return labels_for_seeds(spec.seeds, spec.class_rule, spec.data.classes, names=spec.data.class_names)
    net = spec.denoiser
    if not getattr(net, "takes_labels", False):
        if spec.class_rule not in ("cycle", "none", None):
            raise InputError(f"class {spec.class_rule}: the denoiser {net!r} is not class-conditional")
        return None
    return labels_for_seeds(spec.seeds, spec.class_rule, list(range(net.num_classes)))


def _recorded(value):
    """A patch schedule as the record keeps it: as given, a schedule by its times and sizes."""
    if isinstance(value, PatchSchedule):
        return {"ts": list(value.ts), "sizes": list(value.sizes)}
    if isinstance(value, (list, tuple)):
        return [int(k) for k in value]
    return value


def _build(spec: SampleSpec, grid: torch.Tensor):
    """The machine of ``spec``: its patch schedule and every per-step value read on this run's grid,
    so a one-per-step list belongs to these steps and means their noise levels under any sampler
    (and a list of the wrong length is refused naming both counts). It
    holds the training labels whatever the class rule: unconditional calls pass none."""
    options = timed_options(spec.machine, spec.options, grid, spec.schedule)
    return make_machine(spec.machine, spec.data.images, labels=spec.data.labels, schedule=spec.schedule,
                        memory_budget=DEFAULT_MEMORY_BUDGET if spec.memory_budget is None else spec.memory_budget,
                        distributed=spec.distributed,
                        **options)


def run_samples(spec: SampleSpec, *, on_step: Callable[[dict], None] | None = None,
                on_candidates: Callable[[int, int], None] | None = None) -> SampleRun:
    """Sample ``spec``: one image per seed through its deterministic sampler.

    on_step: called after each step with the sampler's callback info (see ``ddim_sample``,
        ``heun_sample``).
    on_candidates: called as (training images done, in all) while a machine streams its bank in
        one call (for progress on large banks).
    """
    labels = _labels(spec)
    schedule = spec.schedule
    if spec.denoiser is not None:
        schedule = getattr(spec.denoiser, "schedule", None)
    grid = spec.sampler.grid(schedule or CosineSchedule(), spec.steps)
    if spec.machine is not None:
        den = _build(spec, grid)
        if on_candidates is not None:
            den.on_candidates = on_candidates
    else:
        den = spec.denoiser
    runner = Traced(den) if spec.trace else den
    noise = seed_noise(spec.seeds, tuple(spec.data.images.shape[1:]), dtype=spec.dtype, device=spec.device)
    lab = None if labels is None else torch.tensor(labels, device=spec.device)
    sizes = spec.sampler.patch_sizes(den, schedule or CosineSchedule(), spec.steps)
    t0 = time.perf_counter()
    images = spec.sampler.run(runner, noise, spec.steps, labels=lab, callback=on_step)
    seconds = time.perf_counter() - t0
    trace = runner.sample_trace() if spec.trace else None
    opts = spec.options
    meta = {
        "model": None if spec.denoiser is None else str(getattr(den, "meta", {}).get("source", denoiser_name(den))),
        "machine": spec.machine if spec.machine is not None else "network",
        "padding": getattr(den, "padding", None),
        "patch_schedule": _recorded(opts.get("patch_size")) if sizes is not None and spec.machine is not None else None,
        "patch_sizes_used": sizes,
        "steps": spec.steps,
        "sampler": spec.sampler.to_dict(),
        "data": spec.data.describe(),
        "dtype": str(spec.dtype).removeprefix("torch."),
        "device": str(spec.device),
        "class": spec.class_rule,
        "seconds": round(seconds, 3),
        "denoiser": describe(den, how=True),
    }
    return SampleRun(images=images, seeds=list(spec.seeds), labels=labels, trace=trace, denoiser=den,
                     patch_sizes=sizes, seconds=seconds, meta=meta)
