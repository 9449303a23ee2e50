"""Training sets as float32 [N, C, H, W] in [-1, 1] (docs/theory.md, "Data").

``load_dataset("mnist5k")`` is the bundled set of 5,000 MNIST digits (500 per class), padded
from 28x28 to 32x32 with background -1 as in the paper, which keeps every pixel exact.
``load_dataset(path)`` reads an ``.npz`` with ``images`` (uint8 [N, H, W] or [N, H, W, C], or
float in [-1, 1] [N, C, H, W]) and optional ``labels``.

The standard sets are read from their own file formats under a root folder: ``mnist`` and
``fashion-mnist`` (IDX files, gzipped or not; padded to 32x32 by default, or resized
bilinearly as the paper's code did), ``cifar10`` (the python batches), and any folder of
images (``celeba`` is one): centre-cropped to a square and resized to 32x32, labelled by
sub-folder when the images sit in class sub-folders. ``download=True`` fetches the
canonical files of mnist, fashion-mnist and cifar10 and checks their MD5 sums.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

__all__ = ["Dataset", "load_dataset", "reload_dataset", "BUNDLED", "KNOWN", "default_root"]

BUNDLED = ("mnist5k",)
KNOWN = ("mnist", "fashion-mnist", "cifar10", "celeba")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DOWNLOADS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
}


def default_root(name: str) -> Path:
    """Where a named dataset's files are looked for when no root is given."""
    base = os.environ.get("ELSMACHINE_DATA")
    if base:
        return Path(base) / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elsmachine" / "data" / name


@dataclass
class Dataset:
    """images: float32 [N, C, H, W] in [-1, 1]; labels: int64 [N] or None; name: where it came
    from; selection: the arguments of :func:`load_dataset` that made it (to load it again)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    selection: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def classes(self) -> list[int]:
        return [] if self.labels is None else sorted(torch.unique(self.labels).tolist())

    def fingerprint(self) -> str:
        """A hash of the images (as float32) and labels: two sets with the same fingerprint are
        the same training set, in the same order."""
        h = hashlib.sha256(self.images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """What results record of their training data: how it was selected, its size, classes and
        fingerprint."""
        return {**self.selection, "name": self.name, "n": len(self), "classes": self.classes,
                "sha256": self.fingerprint()}

    def subset(self, *, limit: int | None = None, per_class: int | None = None) -> "Dataset":
        """``per_class``: the first N images of every class. ``limit``: N images; for a labelled
        set taken in turn from each class in file order (the first image of every class, then
        the second, ...), so the classes stay balanced even where the file is sorted by class."""
        idx = torch.arange(len(self))
        if per_class is not None:
            if self.labels is None:
                raise InputError(f"dataset {self.name} has no labels, so per_class cannot be used")
            if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
                raise InputError(f"per_class must be a positive integer, got {per_class!r}")
            keep = [torch.nonzero(self.labels == c).flatten()[:per_class] for c in self.classes]
            idx = torch.sort(torch.cat(keep)).values
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise InputError(f"limit must be a positive integer, got {limit!r}")
            if self.labels is not None:
                classes, cls = torch.unique(self.labels[idx], return_inverse=True)
                rank = torch.empty_like(idx)  # the position of each image within its class
                for c in range(classes.numel()):
                    where = torch.nonzero(cls == c).flatten()
                    rank[where] = torch.arange(where.numel())
                order = torch.argsort(rank * classes.numel() + cls, stable=True)
                idx = torch.sort(idx[order[:limit]]).values
            else:
                idx = idx[:limit]
        return Dataset(self.images[idx], None if self.labels is None else self.labels[idx], self.name, self.selection)


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


def _download(name: str, root: Path) -> None:
    from .output.files import atomic_write, file_digest

    base, files = _DOWNLOADS[name]
    for fname, md5 in files.items():
        dest = root / fname
        if dest.exists() and file_digest(dest, "md5") == md5:
            continue
        try:
            with urllib.request.urlopen(base + fname, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise InputError(f"could not download {base + fname}: {e}") from None
        got = hashlib.md5(data).hexdigest()
        if got != md5:
            raise InputError(f"download of {fname} is corrupt: MD5 {got}, expected {md5}")
        atomic_write(dest, data)
        if fname.endswith(".tar.gz"):
            with tarfile.open(dest) as tf:
                tf.extractall(root, filter="data")


def _open_maybe_gz(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{path} is unreadable or not valid gzip: {e}") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic 0x0000 08 D (unsigned bytes, D dimensions)."""
    data = _open_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise InputError(f"{path}: only unsigned-byte IDX files are read, this one has type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise InputError(f"{path} is truncated (header)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims)) if dims else 0
    body = data[4 + 4 * ndim :]
    if len(body) != n:
        raise InputError(f"{path} is truncated or padded: {len(body)} bytes of data for shape {dims}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def _find(root: Path, stem: str, what: str) -> Path:
    for folder in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        for cand in (folder / stem, folder / (stem + ".gz")):
            if cand.exists():
                return cand
    raise InputError(f"{what}: no {stem} or {stem}.gz under {root} (pass root= or download=True)")


def _mnist_like(name: str, root: Path, train: bool, resize: str) -> Dataset:
    img_f, lab_f = (_find(root, f, name) for f in _IDX_FILES[train])
    imgs = read_idx(img_f)
    labs = read_idx(lab_f)
    if imgs.ndim != 3 or labs.ndim != 1 or imgs.shape[0] != labs.shape[0]:
        raise InputError(f"{name}: {img_f} holds {imgs.shape} and {lab_f} holds {labs.shape}; expected [N, H, W] and [N]")
    x = from_uint8(imgs, str(img_f))
    if resize == "pad":
        x = pad_to(x, 32)
    elif resize == "bilinear":
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(-1, 1)
    else:
        raise InputError(f"resize must be 'pad' or 'bilinear', got {resize!r}")
    return Dataset(x, torch.from_numpy(labs.astype(np.int64)), name)


class _ArrayUnpickler(pickle.Unpickler):
    """Reads the CIFAR-10 batches (dicts of bytes, lists and numpy arrays) and nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar10(root: Path, train: bool) -> Dataset:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for n in names:
        path = folder / n
        if not path.exists():
            raise InputError(f"cifar10: {path} is missing (pass root= or download=True)")
        try:
            with open(path, "rb") as f:
                d = _ArrayUnpickler(f, encoding="bytes").load()
            data = np.asarray(d[b"data"], dtype=np.uint8)
            labels = np.asarray(d[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError) as e:
            raise InputError(f"cifar10: {path} is not a CIFAR-10 python batch: {e}") from None
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape[0] != data.shape[0]:
            raise InputError(f"cifar10: {path} holds data {data.shape} and labels {labels.shape}; expected [N, 3072] and [N]")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    return Dataset(from_uint8(np.concatenate(xs), "cifar10"), torch.from_numpy(np.concatenate(ys)), "cifar10")


def _image_folder(root: Path, size: int, name: str) -> Dataset:
    """Every image under ``root``: centre-cropped to a square, resized to size x size, RGB.
    Labelled by class sub-folder when all images sit in two or more sub-folders."""
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise InputError(f"{name}: image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    tops = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    labelled = len(tops) >= 2 and all(len(p.relative_to(root).parts) > 1 for p in files)
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                m = min(w, h)
                left, top = (w - m) // 2, (h - m) // 2
                im = im.crop((left, top, left + m, top + m)).resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"{name}: cannot read image {p}: {e}") from None
    labels = None
    if labelled:
        index = {t: i for i, t in enumerate(tops)}
        labels = torch.tensor([index[p.relative_to(root).parts[0]] for p in files], dtype=torch.int64)
    return Dataset(from_uint8(out, name), labels, name)


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
) -> Dataset:
    """Load a training set.

    Args:
        name_or_path: ``mnist5k`` (bundled), ``mnist``, ``fashion-mnist``, ``cifar10``,
            ``celeba`` (an image folder given by ``root``), a folder of images, or an ``.npz``.
        root: folder with the set's standard files (default: ``default_root(name)``).
        train: the training split (else the test split) of mnist, fashion-mnist, cifar10.
        download: fetch the canonical files (MD5-checked) when they are missing.
        limit: keep N images (class-balanced for a labelled set, see :meth:`Dataset.subset`);
            per_class: the first N images of each class.
        keep_labels: False drops the labels (an unconditional set).
        resize: MNIST-like sets to 32x32 by "pad" (exact pixels) or "bilinear" (paper's code).
        image_size: side of image-folder images after centre crop and resize.
    """
    name = str(name_or_path)
    if name == "mnist5k":
        src = resources.files("elsmachine") / "data" / "mnist5k.npz"
        with resources.as_file(src) as p:
            x, y = _read_npz(Path(p), "bundled mnist5k")
        ds = Dataset(pad_to(x, 32), y, "mnist5k")
    elif name in KNOWN:
        r = Path(root) if root is not None else default_root(name)
        if name == "celeba":
            if root is None and not r.exists():
                raise InputError("celeba is read from a folder of images: pass root=<folder> (e.g. img_align_celeba)")
            ds = _image_folder(r, image_size, "celeba")
        else:
            if download:
                _download(name, r)
            ds = _cifar10(r, train) if name == "cifar10" else _mnist_like(name, r, train, resize)
    else:
        path = Path(name)
        if path.is_dir():
            ds = _image_folder(path, image_size, path.name)
        elif path.suffix == ".npz" and path.exists():
            x, y = _read_npz(path, f"dataset file {path}")
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
    return ds


def reload_dataset(record: dict) -> Dataset:
    """The training set a result recorded (``Dataset.describe()``), loaded again and checked
    against its fingerprint."""
    keys = ("root", "train", "limit", "per_class", "keep_labels", "resize", "image_size")
    if "dataset" not in record or "sha256" not in record:
        raise InputError("the result does not record how its training data was selected")
    ds = load_dataset(record["dataset"], **{k: record[k] for k in keys if k in record})
    if ds.fingerprint() != record["sha256"]:
        raise InputError(f"the training data {record['dataset']} (root {record.get('root')}) has changed since the "
                         f"result was made: fingerprint {ds.fingerprint()}, recorded {record['sha256']}")
    return ds
