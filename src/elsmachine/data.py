"""Training sets as float32 [N, C, H, W] in [-1, 1] (DESIGN.md: images live in [-1, 1]).

``load_dataset("mnist5k")`` is the bundled set of 5,000 MNIST digits (500 per class), padded
from 28x28 to 32x32 with background -1 as in the paper, which keeps every pixel exact.
``load_dataset(path)`` reads an ``.npz`` with ``images`` (uint8 [N, H, W] or [N, H, W, C], or
float in [-1, 1] [N, C, H, W]) and optional ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

__all__ = ["Dataset", "load_dataset", "BUNDLED"]

BUNDLED = ("mnist5k",)


@dataclass
class Dataset:
    """images: float32 [N, C, H, W] in [-1, 1]; labels: int64 [N] or None; name: where it came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def classes(self) -> list[int]:
        return [] if self.labels is None else sorted(torch.unique(self.labels).tolist())

    def subset(self, *, limit: int | None = None, per_class: int | None = None) -> "Dataset":
        """The first ``limit`` images, or the first ``per_class`` images of every class."""
        idx = torch.arange(len(self))
        if per_class is not None:
            if self.labels is None:
                raise InputError(f"dataset {self.name} has no labels, so per_class cannot be used")
            if per_class < 1:
                raise InputError(f"per_class must be >= 1, got {per_class}")
            keep = [torch.nonzero(self.labels == c).flatten()[:per_class] for c in self.classes]
            idx = torch.sort(torch.cat(keep)).values
        if limit is not None:
            if limit < 1:
                raise InputError(f"limit must be >= 1, got {limit}")
            idx = idx[:limit]
        return Dataset(self.images[idx], None if self.labels is None else self.labels[idx], self.name)


def pad_to(images: torch.Tensor, size: int, value: float = -1.0) -> torch.Tensor:
    """Pad [N, C, H, W] symmetrically to size x size with ``value`` (background)."""
    H, W = images.shape[-2:]
    if H > size or W > size:
        raise InputError(f"cannot pad images of {H}x{W} to {size}x{size}")
    top, left = (size - H) // 2, (size - W) // 2
    return torch.nn.functional.pad(images, (left, size - W - left, top, size - H - top), value=value)


def from_uint8(arr: np.ndarray, what: str) -> torch.Tensor:
    """uint8 [N, H, W] or [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1]."""
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    if arr.ndim != 4:
        raise InputError(f"{what}: uint8 images must be [N, H, W] or [N, H, W, C], got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).to(torch.float32)
    return (t / 127.5 - 1.0).contiguous()


def _read_npz(path: Path, what: str):
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f:
                raise InputError(f"{what} has no array named 'images' (found: {', '.join(f.files) or 'none'})")
            images = f["images"]
            labels = f["labels"] if "labels" in f else None
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"dataset file {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - zip or format errors of a corrupt file
        raise InputError(f"{what} is not a readable .npz file: {e}") from None
    if images.dtype == np.uint8:
        x = from_uint8(images, what)
    elif np.issubdtype(images.dtype, np.floating):
        if images.ndim != 4:
            raise InputError(f"{what}: float images must be [N, C, H, W], got shape {images.shape}")
        x = torch.from_numpy(images.astype(np.float32))
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{what}: images contain NaN or inf")
        if x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6:
            raise InputError(f"{what}: float images must lie in [-1, 1], found [{x.min():.3g}, {x.max():.3g}]")
    else:
        raise InputError(f"{what}: images must be uint8 or float, got {images.dtype}")
    if x.shape[0] == 0:
        raise InputError(f"{what} holds no images")
    y = None
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != x.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{what}: labels must be integers of shape [{x.shape[0]}], got {labels.dtype} {labels.shape}")
        y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_dataset(name_or_path, *, limit: int | None = None, per_class: int | None = None) -> Dataset:
    """Load a training set by name (``mnist5k``) or from an ``.npz`` file.

    ``limit`` keeps the first N images; ``per_class`` the first N of every class.
    """
    name = str(name_or_path)
    if name == "mnist5k":
        src = resources.files("elsmachine") / "data" / "mnist5k.npz"
        with resources.as_file(src) as p:
            x, y = _read_npz(Path(p), "bundled mnist5k")
        ds = Dataset(pad_to(x, 32), y, "mnist5k")
    else:
        path = Path(name)
        if path.suffix != ".npz" or not path.exists():
            if not path.exists():
                raise InputError(f"unknown dataset {name!r}: not a bundled set ({', '.join(BUNDLED)}) and no such file")
            raise InputError(f"dataset file {path} is not an .npz file")
        x, y = _read_npz(path, f"dataset file {path}")
        ds = Dataset(x, y, path.name)
    if limit is not None or per_class is not None:
        ds = ds.subset(limit=limit, per_class=per_class)
    return ds
