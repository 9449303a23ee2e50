"""``load_dataset``: every kind of training set by name, path or object, and subsets of it."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import InputError
from .dataset import Dataset
from .formats import (
    BUNDLED,
    FASHION_CLASSES,
    KNOWN,
    _cifar10,
    _download,
    _image_folder,
    _mnist_like,
    _read_npz,
    check_layout,
    check_value_range,
    default_root,
    pad_to,
    warn_if_unit,
)
from .memory import from_objects

__all__ = ["load_dataset", "reload_dataset"]


def load_dataset(
    name_or_path,
    *,
    root=None,
    train: bool = True,
    download: bool = False,
    limit: int | None = None,
    per_class: int | None = None,
    keep_labels: bool = True,
    resize: str = "pad",
    image_size: int = 32,
    labels=None,
    value_range=(-1.0, 1.0),
    layout: str | None = None,
) -> Dataset:
    """Load a training set.

    Args:
        name_or_path: ``mnist5k`` or ``fmnist5k`` (bundled: the first 500 training images of each
            class of MNIST or Fashion-MNIST), ``mnist``, ``fashion-mnist``, ``cifar10``,
            ``celeba`` (an image folder given by ``root``), a folder of images, or an ``.npz``;
            or data in memory: a NumPy array or torch tensor of images ([N, H, W], [N, C, H, W]
            or [N, H, W, C], uint8 in 0..255 or float), a Hugging Face ``datasets.Dataset`` with
            an image column (and a label column), or any sequence or torch ``Dataset`` of images
            or (image, label) pairs (PIL images, arrays or tensors).
        root: folder with the set's standard files (default: ``default_root(name)``, which for
            fashion-mnist finds Debian's ``dataset-fashion-mnist`` files).
        train: the training split (else the test split) of mnist, fashion-mnist, cifar10.
        download: fetch the canonical files (MD5-checked) when they are missing.
        limit: keep N images (class-balanced for a labelled set, see :meth:`Dataset.subset`);
            per_class: the first N images of each class.
        keep_labels: False drops the labels (an unconditional set).
        resize: MNIST-like sets to 32x32 by "pad" (exact pixels) or "bilinear" (paper's code).
        image_size: side of image-folder images after centre crop and resize. A folder whose
            images are all gray loads with one channel, any other with three (celeba: three).
        labels: the labels of an array or tensor of images (integers).
        value_range: the range float images (in memory or in an ``.npz``) lie in ((0, 1) for
            torchvision's ``ToTensor``); they are mapped to [-1, 1].
        layout: where the channels of an array of images (in memory or in an ``.npz``) are:
            "nchw" ([N, C, H, W]) or "nhwc" ([N, H, W, C]), the same for uint8 and float. None
            infers it where only one reading has 1 or 3 channels, and refuses a shape both
            could mean. [N, H, W] is one channel either way.
    """
    value_range = check_value_range(value_range)
    check_layout(layout)
    if not isinstance(name_or_path, (str, os.PathLike)):
        ds, is_float = from_objects(name_or_path, labels, value_range, layout)
        warn_if_unit(ds.images, is_float, value_range, f"the {ds.name}")
        if not keep_labels:
            ds = Dataset(ds.images, None, ds.name)
        if limit is not None or per_class is not None:
            ds = ds.subset(limit=limit, per_class=per_class)
        ds.selection = {"dataset": f"<{ds.name} in memory>", "limit": limit, "per_class": per_class,
                        "keep_labels": keep_labels, "value_range": list(value_range)}
        if layout is not None:
            ds.selection["layout"] = layout
        return ds
    if labels is not None:
        raise InputError("labels= is for images given in memory; files and sets bring their own")
    name = str(name_or_path)
    path = Path(name)
    npz = name not in BUNDLED and name not in KNOWN and path.suffix == ".npz" and not path.is_dir()
    if layout is not None and not npz:
        raise InputError(f"layout= is for .npz files and arrays in memory; {name} brings its own")
    if name in BUNDLED:
        src = resources.files("elsmachine") / "data" / f"{name}.npz"
        with resources.as_file(src) as p:
            x, y, _ = _read_npz(Path(p), f"bundled {name}")
        ds = Dataset(pad_to(x, 32), y, name, class_names=FASHION_CLASSES if name == "fmnist5k" else None)
    elif name in KNOWN:
        r = Path(root) if root is not None else default_root(name)
        if name == "celeba":
            if root is None and not r.exists():
                raise InputError("celeba is read from a folder of images: pass root=<folder> (--root; e.g. img_align_celeba)")
            ds = _image_folder(r, image_size, "celeba", rgb=True)  # CelebA is a colour set
        else:
            if download:
                _download(name, r)
            ds = _cifar10(r, train) if name == "cifar10" else _mnist_like(name, r, train, resize)
    else:
        if path.is_dir():
            ds = _image_folder(path, image_size, path.name)
        elif path.suffix == ".npz" and path.exists():
            x, y, is_float = _read_npz(path, f"dataset file {path}", layout, value_range)
            warn_if_unit(x, is_float, value_range, f"dataset file {path}")
            ds = Dataset(x, y, path.name)
        elif path.exists():
            raise InputError(f"dataset file {path} is not an .npz file or a folder of images")
        else:
            raise InputError(
                f"unknown dataset {name!r}: not a bundled set ({', '.join(BUNDLED)}), a known set "
                f"({', '.join(KNOWN)}), a folder or an .npz file"
            )
    if not keep_labels:
        ds = Dataset(ds.images, None, ds.name)
    if limit is not None or per_class is not None:
        ds = ds.subset(limit=limit, per_class=per_class)
    ds.selection = {"dataset": name, "root": None if root is None else str(root), "train": train, "limit": limit,
                    "per_class": per_class, "keep_labels": keep_labels, "resize": resize, "image_size": image_size}
    # Recorded only where they change what was read, so records of sets loaded without them
    # stay as they were.
    if npz and value_range != (-1.0, 1.0):
        ds.selection["value_range"] = list(value_range)
    if layout is not None:
        ds.selection["layout"] = layout
    return ds


def reload_dataset(record: dict) -> Dataset:
    """The training set a result recorded (``Dataset.describe()``), loaded again and checked
    against its fingerprint."""
    keys = ("root", "train", "limit", "per_class", "keep_labels", "resize", "image_size", "value_range", "layout")
    if "dataset" not in record or "sha256" not in record:
        raise InputError("the result does not record how its training data was selected")
    if str(record["dataset"]).startswith("<"):
        raise InputError(f"the result was made from data in memory ({record['dataset']}); give that data again")
    ds = load_dataset(record["dataset"], **{k: record[k] for k in keys if k in record})
    if ds.fingerprint() != record["sha256"]:
        raise InputError(f"the training data {record['dataset']} (root {record.get('root')}) has changed since the "
                         f"result was made: fingerprint {ds.fingerprint()}, recorded {record['sha256']}")
    return ds
