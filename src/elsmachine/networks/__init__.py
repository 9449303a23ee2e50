"""Trained networks: the paper's architectures, the adapter to the denoiser contract,
checkpoints (own, TorchScript, shipped), resumable training, a network's sensitivity, and the
edges to other tools: diffusers models both ways, EDM's sigma convention both ways."""

from .adapter import NetworkDenoiser
from .architectures import NetConfig, build_network
from .checkpoints import BUNDLED_MODELS, load_network
from .diffusers import as_diffusers_model, from_diffusers, load_diffusers, schedule_of
from .edm import as_sigma_denoiser, from_sigma_denoiser

__all__ = ["NetworkDenoiser", "NetConfig", "build_network", "BUNDLED_MODELS", "load_network", "from_diffusers",
           "load_diffusers", "as_diffusers_model", "schedule_of", "from_sigma_denoiser", "as_sigma_denoiser"]
