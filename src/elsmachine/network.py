"""Trained networks behind the one denoiser contract, and their checkpoints.

A network that predicts the noise eps of x_t = a x_0 + s eps answers
``denoise(x, t, labels) -> x0_hat = (x_t - s eps_hat) / a``, so samplers, calibration and
metrics treat it exactly like a score machine.

Checkpoints of the project's own networks are a folder holding ``model.safetensors`` (the
weights) and ``config.json`` (the network config, the training config, progress and the
format version). TorchScript files whose ``forward(x, t)`` or ``forward(x, t, labels)``
returns the predicted noise, with t in [0, 1] on the cosine schedule, load too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import _validate as check
from .errors import InputError
from .models import NetConfig, build_network
from .schedule import CosineSchedule

__all__ = ["NetworkDenoiser", "load_network", "save_json_atomic", "FORMAT_VERSION", "BUNDLED_MODELS", "bundled_model_path"]

FORMAT_VERSION = 1

# Networks shipped inside the package (folder under elsmachine/data/models), with the
# patch-size schedule calibrated against each (schedule.json in the same folder).
BUNDLED_MODELS = ("mnist5k-resnet",)


def bundled_model_path(name: str) -> Path:
    """Folder of a shipped network: model.safetensors, config.json, schedule.json."""
    from importlib import resources

    if name not in BUNDLED_MODELS:
        raise InputError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    return Path(str(resources.files("elsmachine") / "data" / "models" / name))


def save_json_atomic(path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class NetworkDenoiser:
    """Adapter: a noise-predicting network as ``denoise(x, t, labels=None) -> x0_hat``.

    Args:
        net: module called as net(x, t) or net(x, t, labels), returning eps_hat.
        takes_labels: whether to pass labels (class-conditional networks).
        schedule: noise schedule the network was trained on.
        padding: the network's padding ("zeros" / "circular"), used to pick the matching ELS.
        meta: provenance (config, path), carried into results.
    """

    def __init__(self, net, *, takes_labels: bool = False, schedule: CosineSchedule | None = None,
                 padding: str | None = None, num_classes: int = 0, meta: dict | None = None) -> None:
        self.net = net
        self.takes_labels = takes_labels
        self.schedule = schedule or CosineSchedule()
        self.padding = padding
        self.num_classes = num_classes
        self.meta = meta or {}

    @property
    def device(self) -> torch.device:
        for p in self.net.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device) -> "NetworkDenoiser":
        self.net.to(device)
        return self

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """The network's predicted noise for x [B, C, H, W] at t (float or [B])."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise InputError(f"x must be a [B, C, H, W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
        B = x.shape[0]
        tt = check.times(t, B)
        dev = self.device
        args = [x.to(dev, torch.float32), tt.to(dev, torch.float32)]
        if self.takes_labels:
            if labels is None:
                raise InputError("this network is class-conditional: labels are required")
            lab = check.labels_tensor(labels, B, "labels")
            if self.num_classes and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise InputError(f"labels must lie in 0..{self.num_classes - 1}, got {lab.tolist()}")
            args.append(lab.to(dev))
        elif labels is not None:
            raise InputError("labels were given but this network is not class-conditional")
        was_training = getattr(self.net, "training", False)
        if hasattr(self.net, "eval"):
            self.net.eval()
        try:
            out = self.net(*args)
        finally:
            if was_training:
                self.net.train()
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise InputError(f"the network returned {getattr(out, 'shape', type(out).__name__)}, expected {tuple(x.shape)}")
        return out.to(x.device, x.dtype)

    def denoise(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """x0_hat = (x_t - s eps_hat) / a, same dtype and device as x."""
        eps = self.eps(x, t, labels)
        tt = check.times(t, x.shape[0])
        a = self.schedule.alpha(tt).to(x.device, x.dtype).view(-1, 1, 1, 1)
        s = self.schedule.sigma(tt).to(x.device, x.dtype).view(-1, 1, 1, 1)
        return (x - s * eps) / a

    def __repr__(self) -> str:
        return f"NetworkDenoiser({self.meta.get('source', type(self.net).__name__)})"


def _checkpoint_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / "model.safetensors", path / "config.json"
    if path.suffix == ".safetensors":
        return path, path.with_name("config.json")
    raise InputError(f"{path} is neither a checkpoint folder nor a .safetensors file")


def load_network(path, *, device="cpu", padding: str | None = None) -> NetworkDenoiser:
    """Load a project checkpoint (folder or model.safetensors), a TorchScript file, or a
    bundled network by name (see :data:`BUNDLED_MODELS`).

    ``padding`` states a TorchScript network's padding (project checkpoints record their own).
    """
    from safetensors.torch import load_file

    if str(path) in BUNDLED_MODELS:
        path = bundled_model_path(str(path))
    path = Path(path)
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir() or path.suffix == ".safetensors":
        weights, cfg_path = _checkpoint_files(path)
        if not weights.exists():
            raise InputError(f"checkpoint {path} has no model.safetensors")
        if not cfg_path.exists():
            raise InputError(f"checkpoint {path} has no config.json beside its weights")
        try:
            meta = json.loads(cfg_path.read_text())
            cfg = NetConfig.from_dict(meta["network"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{cfg_path} is not a valid checkpoint config: {e}") from None
        if meta.get("version", 0) > FORMAT_VERSION:
            raise InputError(f"{cfg_path} has format version {meta['version']}; this elsmachine reads up to {FORMAT_VERSION}")
        net = build_network(cfg)
        try:
            state = load_file(str(weights))
            net.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - corrupt or mismatched weights
            raise InputError(f"cannot load weights {weights}: {e}") from None
        net.to(device).eval()
        sched = CosineSchedule.from_dict(meta.get("schedule", {}))
        return NetworkDenoiser(net, takes_labels=cfg.num_classes > 0, schedule=sched, padding=cfg.padding,
                               num_classes=cfg.num_classes, meta={"source": str(path), **meta})
    try:
        net = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path} is not a loadable TorchScript file: {e}") from None
    try:
        n_args = len(net.forward.schema.arguments) - 1  # minus self
    except AttributeError:
        n_args = 2
    if n_args not in (2, 3):
        raise InputError(f"TorchScript forward must take (x, t) or (x, t, labels); {path} takes {n_args} arguments")
    net.eval()
    return NetworkDenoiser(net, takes_labels=n_args == 3, padding=padding, meta={"source": str(path), "torchscript": True})
