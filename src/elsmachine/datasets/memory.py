"""Training sets held in memory: arrays and tensors of images, Hugging Face datasets, and any
sequence (a torch ``Dataset``) of images or (image, label) pairs, read with the same
normalisation and checks as files (docs/theory.md, "Data")."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset
from .formats import check_layout, check_value_range, images_from_array, image_layout, label_tensor

__all__ = ["from_objects"]


def _image_array(item, what: str, layout: str | None) -> np.ndarray:
    """One image as a [C, H, W] array, uint8 or float, as it was given: a PIL image is
    [H, W(, C)] by definition; an array or tensor of [H, W] is one channel and a 3-D one is read
    by the rule of :func:`~.formats.image_layout`, the same for every dtype."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(item, Image.Image):
        arr = np.asarray(item.convert("RGB") if item.mode not in ("L", "RGB") else item)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what}: cannot read an image from {type(item).__name__} of dtype {arr.dtype}")
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise InputError(f"{what}: an image must be [H, W], [C, H, W] or [H, W, C], got shape {arr.shape}")
    return arr if image_layout(arr.shape, what, layout) == "nchw" else arr.transpose(2, 0, 1)


def from_objects(obj, labels, value_range, layout: str | None = None) -> tuple[Dataset, bool]:
    """Images held in memory: an array or tensor of images, a Hugging Face datasets.Dataset, or
    any sequence (a torch Dataset) of images or (image, label) pairs. ``layout`` ("nchw",
    "nhwc", or None: inferred where the shape allows one reading) says where the channels of an
    array of images, or of each image of a sequence, are. Returns the set and whether its images
    were float (read through ``value_range``)."""
    name = type(obj).__name__
    check_layout(layout)
    value_range = check_value_range(value_range)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        x, float_images = images_from_array(arr, f"the {name}", layout, value_range)
        items_labels = labels
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
            imgs.append(_image_array(img, f"item {i} of the {name}", layout))
            labs.append(lab)
        kinds = {a.dtype == np.uint8 for a in imgs}
        shapes = {tuple(a.shape) for a in imgs}
        if len(kinds) > 1 or len(shapes) > 1:
            raise InputError(f"the images of the {name} differ in kind or size ({sorted(shapes)[:3]} ...)")
        # Each item is already [C, H, W], so the stack is [N, C, H, W] whatever ``layout`` said.
        x, float_images = images_from_array(np.stack(imgs), f"the {name}", "nchw", value_range)
        has = [lab is not None for lab in labs]
        if any(has) and not all(has):
            raise InputError(f"some items of the {name} have labels and some do not")
        items_labels = labs if all(has) else labels
    y = None if items_labels is None else label_tensor(items_labels, x.shape[0], f"the {name}")
    return Dataset(x.contiguous(), y, name), float_images
