"""Training sets held in memory: arrays and tensors of images, Hugging Face datasets, and any
sequence (a torch ``Dataset``) of images or (image, label) pairs, read with the same
normalisation and checks as files (docs/theory.md, "Data")."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset
from .formats import from_uint8

__all__ = ["from_objects"]


def _image_array(item, what: str, value_range) -> np.ndarray | torch.Tensor:
    """One image as uint8 [H, W(, C)] (PIL, numpy, uint8 tensor) or float [C, H, W] in [-1, 1]."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB") if item.mode not in ("L", "RGB") else item)
    if isinstance(item, torch.Tensor):
        if item.dtype == torch.uint8:
            return item.numpy() if item.dim() == 2 else item.permute(1, 2, 0).numpy()
        item = item.detach().cpu().numpy()
    arr = np.asarray(item)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InputError(f"{what}: a float image must be [C, H, W], got shape {arr.shape}")
        lo, hi = value_range
        return torch.from_numpy((arr.astype(np.float64) - lo) / (hi - lo) * 2 - 1).to(torch.float32)
    raise InputError(f"{what}: cannot read an image from {type(item).__name__} of dtype {arr.dtype}")


def from_objects(obj, labels, value_range) -> Dataset:
    """Images held in memory: an array or tensor of images, a Hugging Face datasets.Dataset, or
    any sequence (a torch Dataset) of images or (image, label) pairs."""
    name = type(obj).__name__
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        if arr.dtype == np.uint8:
            x = from_uint8(arr, f"{name} of images")
        elif np.issubdtype(arr.dtype, np.floating):
            if arr.ndim != 4:
                raise InputError(f"float images must be [N, C, H, W], got shape {arr.shape}")
            lo, hi = value_range
            x = torch.from_numpy((arr.astype(np.float64) - lo) / (hi - lo) * 2 - 1).to(torch.float32)
        else:
            raise InputError(f"images must be uint8 or float, got {arr.dtype}")
        items_labels = labels
        float_images = arr.dtype != np.uint8
    else:
        image_col = label_col = None
        if hasattr(obj, "features") and hasattr(obj, "column_names"):  # a Hugging Face dataset
            feats = obj.features
            image_col = next((c for c in obj.column_names if type(feats[c]).__name__ == "Image"), None)
            image_col = image_col or next((c for c in ("image", "img", "pixel_values") if c in obj.column_names), None)
            if image_col is None:
                raise InputError(f"the dataset has no image column (columns: {', '.join(obj.column_names)})")
            label_col = next((c for c in obj.column_names if type(feats[c]).__name__ == "ClassLabel"), None)
            label_col = label_col or next((c for c in ("label", "labels") if c in obj.column_names), None)
        try:
            n = len(obj)
        except TypeError:
            raise InputError(f"cannot read a training set from {name}: give a file, a folder, an array, or a "
                             f"sequence of images") from None
        if n == 0:
            raise InputError(f"the {name} holds no images")
        imgs, labs = [], []
        for i in range(n):
            item = obj[i]
            if image_col is not None:
                img, lab = item[image_col], (item[label_col] if label_col is not None else None)
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                img, lab = item
            else:
                img, lab = item, None
            imgs.append(_image_array(img, f"item {i} of the {name}", value_range))
            labs.append(lab)
        kinds = {type(a) for a in imgs}
        shapes = {tuple(a.shape) for a in imgs}
        if len(kinds) > 1 or len(shapes) > 1:
            raise InputError(f"the images of the {name} differ in kind or size ({sorted(shapes)[:3]} ...)")
        x = torch.stack(imgs) if isinstance(imgs[0], torch.Tensor) else from_uint8(np.stack(imgs), name)
        has = [lab is not None for lab in labs]
        if any(has) and not all(has):
            raise InputError(f"some items of the {name} have labels and some do not")
        items_labels = labs if all(has) else labels
        float_images = isinstance(imgs[0], torch.Tensor)
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"the {name}'s images contain NaN or inf")
    if float_images and tuple(value_range) == (-1.0, 1.0) and float(x.min()) >= 0.0:
        warnings.warn(f"the {name}'s float images all lie in [0, 1]; they are read as lying in [-1, 1]. If they are "
                      f"in [0, 1] (as torchvision's ToTensor makes them), pass value_range=(0, 1)", stacklevel=3)
    if x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6:
        raise InputError(f"the {name}'s images lie in [{float(x.min()):.3g}, {float(x.max()):.3g}]: float images "
                         f"are read as lying in value_range={tuple(value_range)}")
    y = None
    if items_labels is not None:
        y = torch.as_tensor(np.asarray([int(v) for v in items_labels]), dtype=torch.int64)
        if y.shape != (x.shape[0],):
            raise InputError(f"labels must be one integer per image ({x.shape[0]}), got {tuple(y.shape)}")
    return Dataset(x.contiguous(), y, name)
