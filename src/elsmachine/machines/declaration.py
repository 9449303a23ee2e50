"""How a machine declares itself (docs/theory.md, "The score machines"): its name, its options,
which candidates a pixel sees and what it can do. The registry, ``make_machine``, the command
line's machine choices, options and help, ``els bench``'s machine list and ``describe()`` are all
read from these declarations; nothing lists machine names by hand.

A machine is one class with a ``declaration`` class attribute::

    class MyMachine(CandidateMachine):
        declaration = Declaration(
            name="mine", summary="...", candidates="...", form=SOFTMAX,
            options=(Option("width", int, 3, "How wide the window is.", flag="--width"),))

in one new file of :mod:`elsmachine.machines`; the registry imports every module of the package
and collects every class that declares itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Option", "Declaration", "Fit", "Cost", "SOFTMAX", "LINEAR", "COMPOSITE", "FORMS"]

SOFTMAX = "softmax"  # a softmax over candidates: x0_hat is a weighted average of training pixels
LINEAR = "linear"  # closed-form linear in x_t (Gaussian moments): no candidates
COMPOSITE = "composite"  # softmaxes over windows, averaged where windows overlap
FORMS = (SOFTMAX, LINEAR, COMPOSITE)


@dataclass(frozen=True)
class Option:
    """One option of a machine, beyond what every machine takes (images, labels, schedule,
    memory_budget, distributed).

    name: the keyword of the machine's constructor and of ``make_machine``.
    kind: the type a value has (int, float, str, or "path" for a file); ``choices`` the values
        allowed where there is a fixed set.
    default: the constructor's default (None: the machine needs it, or has no value then).
    help: one sentence, shown by ``--help`` and the docs.
    flag: the command-line flag (None: not offered there); ``aliases`` further spellings.
    recorded: whether the value enters ``describe()`` (the settings that decide the output);
        ``record`` turns the value into what is recorded (default: the value itself).
    required: the machine cannot be built without a value.
    step: the :class:`~.step.PatchStep` field a per-step option of an ELS-family machine sets
        (:mod:`.step`); the patch machine reads it at each step, with no code of the machine's own.
    domain: the numbers a per-step option takes (:func:`~elsmachine.patch_schedule.step_values`'s
        keywords: infinite, zero, share, whole).
    """

    name: str
    kind: Any
    default: Any
    help: str
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    choices: tuple | None = None
    recorded: bool = True
    record: Callable[[Any], Any] | None = field(default=None, compare=False)
    required: bool = False
    step: str | None = None
    domain: dict | None = field(default=None, compare=False)

    @property
    def per_step(self) -> bool:
        """Whether the option takes one value per step (a timed schedule, :mod:`elsmachine.patch_schedule`)."""
        return isinstance(self.kind, str) and self.kind.endswith("_schedule")

    def recorded_value(self, value):
        return self.record(value) if self.record is not None else value


@dataclass(frozen=True)
class Fit:
    """How a candidate is fitted to a network (``els fit``; docs/theory.md, "Candidates beyond ELS"):
    ``option`` takes each of ``values`` in turn on calibration seeds, and the value whose samples
    best match the network's is kept. A value is as the option takes it, or "w@t" (w at the steps
    with t or more, then the identity: a switch at t), "k+2" / "k-2" (the machine's patch size
    plus or minus 2 at each step) or "0.5*k" (a share of it). The identity value, at which the
    candidate is the machine it ``reduces_to``, is left out. ``keeps``: {option: candidate} whose
    value fitted on the same network this one keeps."""

    option: str
    values: tuple[str, ...]
    keeps: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Cost:
    """What one denoiser call costs for one query image (``els bench``): ``pairs(k, n, H, W, t,
    padding, radius)`` the candidate pairs it weighs (an output pixel against a candidate) and
    ``flops(k, n, H, W, C, t, padding, radius)`` the arithmetic its formulation does, at patch size
    k (where it has one), n training images, time t, and for the patch machines their padding and
    candidate radius (None: all); ``form`` the name of that formulation where it is not one of the
    shared engine's (distances, eigenbasis, ...)."""

    pairs: Callable
    flops: Callable
    form: str | None = None


@dataclass(frozen=True)
class Declaration:
    """What a machine is, stated once.

    name: the registry name (``make_machine(name, ...)``, ``--machine name``).
    summary: one line for help texts and lists.
    candidates: which candidates an output pixel sees, in words.
    form: SOFTMAX, LINEAR or COMPOSITE.
    options: its own :class:`Option` s.
    traceable: whether a candidate with the largest weight names each pixel's source.
    sizes_in_one_pass: whether ``denoise_sizes`` shares work between patch sizes.
    distributed: whether ``distributed=True`` shards its bank across processes.
    backends: the engine backends it takes ("auto" first).
    order: where it is listed (the paper's machines first, then the peers', then new ones).
    bench_paddings: paddings ``els bench`` times apart, as "name-padding" (empty: once, as "name").
    cost_like: the machine whose arithmetic ``els bench``'s pairs and flops model counts for this
        one (None: its own name).
    candidate: a candidate beyond the published theories, with parameters fitted to a network
        (docs/theory.md, "Candidates beyond ELS"): named explicitly, not part of ``--machines all``.
    reduces_to: the machine this one is at its options' defaults (its identity: every candidate
        is ELS there), checked by the contract tests.
    fit: how ``els fit`` fits it (:class:`Fit`; candidates only).
    cost: its cost model (:class:`Cost`; None: that of ``cost_like``).
    baseline: the straightforward implementation ``els bench --baseline`` times it against, by
        the formulation it computes ("patch softmax", "masked softmax"; None: none).
    default: the machine the commands sample when none is named (ELS), beside which comparisons
        give each machine's share of seeds beaten.
    exact: the exact denoiser of the training set (IS), the other machine comparisons measure
        each against.
    label: its short name in tables and figures (default: its name).
    bench_options: ``(sizes, ts, H, W) -> options`` that ``els bench`` builds it with where it
        needs what only a network gives (a stand-in of the same cost).
    needs_network: it reads a trained network's measurement (``sensitivity=``), which the
        comparison measures once for it.
    """

    name: str
    summary: str
    candidates: str
    form: str
    options: tuple[Option, ...] = ()
    traceable: bool = False
    sizes_in_one_pass: bool = False
    distributed: bool = True
    backends: tuple[str, ...] = ("auto",)
    order: int = 1000
    bench_paddings: tuple[str, ...] = ()
    cost_like: str | None = None
    candidate: bool = False
    reduces_to: str | None = None
    fit: Fit | None = None
    cost: Cost | None = field(default=None, compare=False)
    baseline: str | None = None
    default: bool = False
    needs_network: bool = False
    exact: bool = False
    label: str | None = None
    bench_options: Callable | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"machine {self.name!r}: form must be one of {FORMS}, got {self.form!r}")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"machine {self.name!r} declares an option twice: {names}")

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def has_patch_size(self) -> bool:
        return self.option("patch_size") is not None

    @property
    def short(self) -> str:
        return self.label or self.name

    @property
    def subset(self) -> bool:
        """Whether it takes ``subset=`` (the bound of :mod:`.subset`)."""
        return self.option("subset") is not None

    @property
    def calibrates(self) -> bool:
        """Every machine with a patch size calibrates it (``els calibrate``)."""
        return self.has_patch_size

    @property
    def step_fields(self) -> tuple[str, ...]:
        """The :class:`~.step.PatchStep` fields its options set."""
        return tuple(o.step for o in self.options if o.step is not None)


def _record_patch_size(ps):
    # A schedule's times and sizes decide the output; its meta is provenance only.
    return {"ts": list(ps.ts), "sizes": list(ps.sizes)} if hasattr(ps, "sizes") else ps


PATCH_SIZE = Option(
    "patch_size", "patch_schedule", None,
    "Patch schedule: one odd size ('5'), one per step ('3,5,...'), a preset name, or a schedule .json.",
    flag="--patch-schedule", aliases=("--patch-sizes", "-k"), record=_record_patch_size)
