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

__all__ = ["Option", "Declaration", "SOFTMAX", "LINEAR", "COMPOSITE", "FORMS"]

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

    def recorded_value(self, value):
        return self.record(value) if self.record is not None else value


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


def _record_patch_size(ps):
    # A schedule's times and sizes decide the output; its meta is provenance only.
    return {"ts": list(ps.ts), "sizes": list(ps.sizes)} if hasattr(ps, "sizes") else ps


PATCH_SIZE = Option(
    "patch_size", "patch_schedule", None,
    "Patch schedule: one odd size ('5'), one per step ('3,5,...'), a preset name, or a schedule .json.",
    flag="--patch-schedule", aliases=("--patch-sizes", "-k"), record=_record_patch_size)
