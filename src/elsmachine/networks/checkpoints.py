"""Network checkpoints: the project's own, TorchScript files, and the networks it ships.

A project checkpoint is a folder holding ``model.safetensors`` (the weights) and ``config.json``
(the network config, the training config, the noise schedule, progress and the format
version); it is rebuilt from its config, never unpickled. TorchScript files whose
``forward(x, t)`` or ``forward(x, t, labels)`` returns the predicted noise, with t in [0, 1] on
the cosine schedule, load too. The patch schedule calibrated against a network lives beside
it as ``patch_schedule.json``.
"""

from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path

import torch

from ..errors import InputError
from ..noise import schedule_from_dict
from ..files import file_digest
from .adapter import NetworkDenoiser
from .architectures import NetConfig, build_network

__all__ = ["load_network", "check_data_fits", "FORMAT_VERSION", "BUNDLED_MODELS", "bundled_model_path",
           "patch_schedule_beside", "PATCH_SCHEDULE_FILE"]

FORMAT_VERSION = 1
PATCH_SCHEDULE_FILE = "patch_schedule.json"

# Networks shipped inside the package: every folder under elsmachine/data/models holding a
# config.json, each with the patch schedule calibrated against it.
_MODELS = resources.files("elsmachine") / "data" / "models"
BUNDLED_MODELS = tuple(sorted(p.name for p in _MODELS.iterdir() if (p / "config.json").is_file()))


def bundled_model_path(name: str) -> Path:
    """Folder of a shipped network: model.safetensors, config.json, patch_schedule.json."""
    if name not in BUNDLED_MODELS:
        raise InputError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    return Path(str(_MODELS / name))


def _resolve(path) -> Path:
    return bundled_model_path(str(path)) if str(path) in BUNDLED_MODELS else Path(path)


def patch_schedule_beside(model) -> Path | None:
    """The patch schedule file calibrated against ``model`` (a checkpoint folder, a weights or
    TorchScript file, or a bundled name), or None when there is none."""
    path = _resolve(model)
    folder = path if path.is_dir() else path.parent
    for name in (PATCH_SCHEDULE_FILE, "schedule.json"):  # the second: folders made by older versions
        if (folder / name).exists():
            return folder / name
    return None


def _is_diffusers(path: Path) -> bool:
    if (path / "unet" / "config.json").exists() or (path / "model_index.json").exists():
        return True
    try:
        return json.loads((path / "config.json").read_text()).get("_class_name") == "UNet2DModel"
    except (OSError, ValueError, AttributeError):
        return False


def load_network(path, *, device="cpu", padding: str | None = None, num_classes: int | None = None,
                 noise_schedule=None) -> NetworkDenoiser:
    """Load a project checkpoint (folder or model.safetensors), a TorchScript file, a folder
    written by diffusers' ``save_pretrained`` (a pipeline, or a bare UNet with its
    ``noise_schedule``), or a bundled network by name (see :data:`BUNDLED_MODELS`).

    ``padding`` states a TorchScript network's padding (project checkpoints record their own);
    ``num_classes`` a class-conditional TorchScript network's number of classes;
    ``noise_schedule`` the schedule of a TorchScript network or a bare diffusers UNet (a name,
    a file, or a schedule; project checkpoints and pipelines record their own).
    """
    from safetensors.torch import load_file

    from ..noise import noise_schedule as as_schedule

    path = _resolve(path)
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir() and _is_diffusers(path):
        from .diffusers import load_diffusers

        return load_diffusers(path, noise_schedule_spec=noise_schedule, device=device)
    if path.is_dir() or path.suffix == ".safetensors":
        weights = path / "model.safetensors" if path.is_dir() else path
        cfg_path = weights.with_name("config.json")
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
            net.load_state_dict(load_file(str(weights)))
        except Exception as e:  # noqa: BLE001 - corrupt or mismatched weights
            raise InputError(f"cannot load weights {weights}: {e}") from None
        net.to(device).eval()
        if noise_schedule is not None:
            raise InputError(f"{path} records its own noise schedule; leave out --noise-schedule")
        return NetworkDenoiser(net, takes_labels=cfg.num_classes > 0, schedule=schedule_from_dict(meta.get("schedule", {})),
                               padding=cfg.padding, num_classes=cfg.num_classes,
                               meta={"source": str(path), "weights_sha256": file_digest(weights), **meta})
    try:
        with warnings.catch_warnings():  # torch.jit's own deprecation notice says nothing about this file
            warnings.simplefilter("ignore", DeprecationWarning)
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
    return NetworkDenoiser(net, takes_labels=n_args == 3, padding=padding, num_classes=num_classes or 0,
                           schedule=None if noise_schedule is None else as_schedule(noise_schedule),
                           meta={"source": str(path), "torchscript": True, "weights_sha256": file_digest(path)})


def _image_shape(network) -> tuple[int, int, int] | None:
    """(C, H, W) of the images ``network`` takes, where its checkpoint records them."""
    cfg = network.meta.get("network")
    if isinstance(cfg, dict) and "channels" in cfg and "image_size" in cfg:
        return int(cfg["channels"]), int(cfg["image_size"]), int(cfg["image_size"])
    unet = network.meta.get("diffusers")
    if isinstance(unet, dict) and unet.get("in_channels") and unet.get("sample_size"):
        size = unet["sample_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return int(unet["in_channels"]), int(h), int(w)
    return None  # a TorchScript file does not say


def check_data_fits(network: NetworkDenoiser, dataset) -> None:
    """Refuse, naming both, a dataset whose images (channels, size) or classes ``network`` cannot
    take; a network that does not record its image shape is checked for its classes only.
    Meant to run before any work: otherwise the first network call fails, deep inside it."""
    source = network.meta.get("source", "(in memory)")
    C, H, W = dataset.images.shape[1:]
    shape = _image_shape(network)
    if shape is not None and shape != (C, H, W):
        raise InputError(f"dataset {dataset.name} has {C}x{H}x{W} images; the network {source} takes "
                         f"{shape[0]}x{shape[1]}x{shape[2]} (channels x height x width)")
    if network.takes_labels:
        if dataset.labels is None:
            raise InputError(f"the network {source} is class-conditional but dataset {dataset.name} has no labels")
        top = max(dataset.classes)
        if network.num_classes and top >= network.num_classes:
            raise InputError(f"dataset {dataset.name} has classes up to {top}; the network {source} knows "
                             f"{network.num_classes} classes (0..{network.num_classes - 1})")
