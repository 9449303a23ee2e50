"""Training sets in their standard file formats (docs/theory.md, "Data").

``mnist`` and ``fashion-mnist`` (IDX files, gzipped or not; padded to 32x32 by default, or resized
bilinearly as the paper's code did), ``cifar10`` (the python batches), any folder of images
(``celeba`` is one: centre-cropped to a square and resized; labelled by sub-folder when the images
sit in class sub-folders), and ``.npz`` files with ``images`` and optional ``labels``.
``download`` fetches the canonical files of mnist, fashion-mnist and cifar10 and checks their MD5
sums.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset

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


def _download_failure(e: Exception) -> str:
    """Why a download failed, in a few words (urllib wraps the socket's error in its own)."""
    if isinstance(e, http.client.IncompleteRead):
        if e.expected is None:
            return "the connection closed early"
        return f"the connection closed after {len(e.partial)} of {len(e.partial) + e.expected} bytes"
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP error {e.code} ({e.reason})"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _download(name: str, root: Path) -> None:
    from ..files import atomic_write, file_digest

    base, files = _DOWNLOADS[name]
    for fname, md5 in files.items():
        dest = root / fname
        if dest.exists() and file_digest(dest, "md5") == md5:
            continue
        try:
            with urllib.request.urlopen(base + fname, timeout=60) as r:
                data = r.read()
        except (OSError, http.client.HTTPException) as e:  # a body cut short is no OSError
            raise InputError(f"could not download {base + fname}: {_download_failure(e)}") from None
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
