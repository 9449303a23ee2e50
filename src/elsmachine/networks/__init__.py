"""Trained networks: the paper's architectures, the adapter to the denoiser contract,
checkpoints (own, TorchScript, shipped) and resumable training."""

from .adapter import NetworkDenoiser
from .architectures import NetConfig, build_network
from .checkpoints import BUNDLED_MODELS, load_network

__all__ = ["NetworkDenoiser", "NetConfig", "build_network", "BUNDLED_MODELS", "load_network"]
