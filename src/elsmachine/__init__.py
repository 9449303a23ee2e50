"""elsmachine: the equivariant local score machine of Kamb & Ganguli (ICML 2025).

Closed-form denoisers (IS, LS, ELS, boundary-broken ELS) that predict what convolutional
diffusion models generate, a deterministic DDIM sampler, and the bundled MNIST set.
"""

from .data import Dataset, load_dataset
from .engine import Attended, attend
from .errors import InputError
from .machines import (
    DEFAULT_MEMORY_BUDGET,
    MACHINES,
    ELSMachine,
    IdealMachine,
    LocalMachine,
    ScoreMachine,
    Trace,
    make_machine,
)
from .presets import PRESETS, PatchSchedule, preset
from .sampler import ddim_sample, seed_noise
from .schedule import CosineSchedule, ddim_grid

__version__ = "0.1.0"

__all__ = [
    "Attended",
    "CosineSchedule",
    "DEFAULT_MEMORY_BUDGET",
    "Dataset",
    "ELSMachine",
    "IdealMachine",
    "InputError",
    "LocalMachine",
    "MACHINES",
    "PRESETS",
    "PatchSchedule",
    "ScoreMachine",
    "Trace",
    "attend",
    "ddim_grid",
    "ddim_sample",
    "load_dataset",
    "make_machine",
    "preset",
    "seed_noise",
]
