"""elsmachine: the equivariant local score machine of Kamb & Ganguli (ICML 2025).

Closed-form denoisers (IS, LS, ELS, boundary-broken ELS, and the peers' theories: nearest
neighbour, Gaussian, analytic locality, patch posterior composites) that predict what
convolutional diffusion models generate, a deterministic DDIM sampler, trained networks behind
the same contract, and the experiments that compare them. docs/theory.md states what every piece computes.
"""

from .contract import Denoiser
from .datasets import Dataset, load_dataset
from .errors import InputError, RunError
from .machines import (
    DEFAULT_MEMORY_BUDGET,
    MACHINES,
    CandidateMachine,
    Declaration,
    Option,
    ELSMachine,
    FlexCompositeMachine,
    GoldDiffMachine,
    IdealMachine,
    LocalityMachine,
    LocalMachine,
    NearestMachine,
    PatchCompositeMachine,
    SampleTrace,
    ScoreMachine,
    SmoothedMachine,
    StationaryMachine,
    Trace,
    Traced,
    WienerMachine,
    make_machine,
    timed_options,
)
from .networks import (
    NetworkDenoiser,
    as_diffusers_model,
    as_sigma_denoiser,
    from_diffusers,
    from_sigma_denoiser,
    load_diffusers,
    load_network,
    schedule_of,
)
from .networks.sensitivity import Sensitivity, measure_sensitivity
from .noise import CosineSchedule, DiscreteSchedule, NoiseSchedule, ddim_grid, noise_schedule
from .patch_schedule import PRESETS, PatchSchedule, StepSchedule, preset
from .sampling import Sampler, ddim_sample, heun_sample
from .seeds import class_of_seed, seed_noise

__version__ = "0.2.0"

__all__ = [
    "DiscreteSchedule",
    "NoiseSchedule",
    "as_diffusers_model",
    "as_sigma_denoiser",
    "from_diffusers",
    "from_sigma_denoiser",
    "load_diffusers",
    "noise_schedule",
    "schedule_of",
    "FlexCompositeMachine",
    "GoldDiffMachine",
    "SmoothedMachine",
    "LocalityMachine",
    "NearestMachine",
    "PatchCompositeMachine",
    "Sensitivity",
    "StationaryMachine",
    "WienerMachine",
    "measure_sensitivity",
    "CosineSchedule",
    "DEFAULT_MEMORY_BUDGET",
    "Dataset",
    "Denoiser",
    "ELSMachine",
    "IdealMachine",
    "InputError",
    "LocalMachine",
    "MACHINES",
    "CandidateMachine",
    "Declaration",
    "Option",
    "NetworkDenoiser",
    "PRESETS",
    "PatchSchedule",
    "StepSchedule",
    "RunError",
    "SampleTrace",
    "ScoreMachine",
    "Trace",
    "Traced",
    "class_of_seed",
    "ddim_grid",
    "ddim_sample",
    "heun_sample",
    "Sampler",
    "load_dataset",
    "load_network",
    "make_machine",
    "timed_options",
    "preset",
    "seed_noise",
]
