"""Training sets in their standard file formats (docs/theory.md, "Data").

``mnist`` and ``fashion-mnist`` (IDX files, gzipped or not; padded to 32x32 by default, or resized
bilinearly as the paper's code did), ``cifar10`` (the python batches), any folder of images
(``celeba`` is one: centre-cropped to a square and resized; one channel when every image is gray;
labelled by sub-folder when the images sit in class sub-folders), and ``.npz`` files with
``images`` and optional ``labels``. The rule that reads an array of images in either layout
(:func:`image_layout`), and the checks of labels and value ranges, are here for files and for
data in memory alike.
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
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .dataset import Dataset

BUNDLED = ("mnist5k", "fmnist5k")
# Fashion-MNIST's label names (Xiao, Rasul and Vollgraf 2017), so that --class takes "sneaker".
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
# Where Debian's dataset-fashion-mnist package installs the standard files.
SYSTEM_ROOTS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
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
    """Where a named dataset's files are looked for when no root is given: $ELSMACHINE_DATA/<name>,
    else the user's cache folder, else (fashion-mnist) where Debian's package installs them, when
    the cache holds none and that folder exists. Downloads go to the first two."""
    base = os.environ.get("ELSMACHINE_DATA")
    if base:
        return Path(base) / name
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elsmachine" / "data" / name
    system = SYSTEM_ROOTS.get(name)
    if system is not None and system.is_dir() and not _has_idx(cache, True):
        return system
    return cache


def _has_idx(root: Path, train: bool) -> bool:
    return all(any((f / stem).exists() or (f / (stem + ".gz")).exists() for f in _idx_folders(root))
               for stem in _IDX_FILES[train])


def _idx_folders(root: Path):
    return (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw")


def pad_to(images: torch.Tensor, size: int, value: float = -1.0) -> torch.Tensor:
    """Pad [N, C, H, W] symmetrically to size x size with ``value`` (background)."""
    H, W = images.shape[-2:]
    if H > size or W > size:
        raise InputError(f"cannot pad images of {H}x{W} to {size}x{size}")
    top, left = (size - H) // 2, (size - W) // 2
    return torch.nn.functional.pad(images, (left, size - W - left, top, size - H - top), value=value)


LAYOUTS = ("nchw", "nhwc")
# The channel counts a layout is inferred from: gray and colour, what training sets hold. Images
# of 4 or more channels name their layout: sides of 4 pixels and more are common, so such counts
# would often fit both positions.
_CHANNELS = (1, 3)


def check_layout(layout) -> str | None:
    """``layout`` as given: "nchw", "nhwc" or None (inferred from the shape)."""
    if layout is not None and layout not in LAYOUTS:
        raise InputError(f"layout must be 'nchw', 'nhwc' or None, got {layout!r}")
    return layout


def check_value_range(value_range) -> tuple[float, float]:
    """``value_range`` as two finite floats (low, high) with low < high."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"value_range must be (low, high) with low < high, got {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"value_range must be (low, high) with low < high, got {tuple(value_range)!r}")
    return lo, hi


def image_layout(shape: tuple, what: str, layout: str | None) -> str:
    """The layout of images of ``shape``, [N, C, H, W] or [N, H, W, C] (or one image, [C, H, W]
    or [H, W, C]): ``layout`` when given, else the one reading whose channel position holds 1 or
    3. The same rule for every dtype: a uint8 array is not assumed to be [N, H, W, C] nor a float
    one [N, C, H, W]. Where both positions hold 1 or 3, the reading that makes square images wins
    ([N, 1, 3, 3] is 3x3 gray, not 1x3 colour); a shape that leaves both or neither is refused."""
    if layout is not None:
        return layout
    c, h, w = shape[-3:]
    readings = {"nchw": (c, h, w), "nhwc": (w, c, h)}  # (channels, height, width) of each reading
    fits = [k for k, (ch, _, _) in readings.items() if ch in _CHANNELS]
    square = [k for k in fits if readings[k][1] == readings[k][2]]
    if len(fits) == 1 or len(square) == 1:
        return fits[0] if len(fits) == 1 else square[0]
    forms = "[N, C, H, W] or [N, H, W, C]" if len(shape) == 4 else "[C, H, W] or [H, W, C]"
    why = f"could be {forms}" if fits else "have no channel dimension of 1 or 3 first or last"
    raise InputError(f"{what}: images of shape {tuple(shape)} {why}: pass layout='nchw' or layout='nhwc' (--layout)")


def to_nchw(arr: np.ndarray, what: str, layout: str | None) -> np.ndarray:
    """Images [N, H, W] (one channel), [N, C, H, W] or [N, H, W, C] as a [N, C, H, W] view."""
    if arr.ndim not in (3, 4):
        raise InputError(f"{what}: images must be [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{what} holds no images (shape {arr.shape})")
    if arr.size == 0:
        raise InputError(f"{what}: images of shape {arr.shape} are empty")
    if arr.ndim == 3:
        return arr[:, None]
    return arr if image_layout(arr.shape, what, layout) == "nchw" else arr.transpose(0, 3, 1, 2)


def from_uint8(arr: np.ndarray, what: str, layout: str | None = "nhwc") -> torch.Tensor:
    """uint8 images (see :func:`to_nchw`) -> float32 [N, C, H, W] in [-1, 1]. The standard sets
    and image folders hold [N, H, W(, C)], the default here."""
    t = torch.from_numpy(np.ascontiguousarray(to_nchw(arr, what, layout))).to(torch.float32)
    return (t / 127.5 - 1.0).contiguous()


def from_float(arr: np.ndarray, what: str, value_range=(-1.0, 1.0)) -> torch.Tensor:
    """Float images [N, C, H, W] lying in ``value_range`` -> float32 in [-1, 1]."""
    if not bool(np.isfinite(arr).all()):
        raise InputError(f"{what}: images contain NaN or inf")
    lo, hi = check_value_range(value_range)
    if (lo, hi) == (-1.0, 1.0):  # already in [-1, 1]: kept bit for bit
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        x = torch.from_numpy((arr.astype(np.float64) - lo) / (hi - lo) * 2 - 1).to(torch.float32)
    if x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6:
        raise InputError(f"{what}: float images must lie in value_range=({lo:g}, {hi:g}), which is mapped to "
                         f"[-1, 1]; found [{float(arr.min()):.3g}, {float(arr.max()):.3g}]")
    return x


def warn_if_unit(x: torch.Tensor, is_float: bool, value_range, what: str) -> None:
    """Warn when float images read as lying in [-1, 1] all lie in [0, 1]: most likely they are
    in [0, 1] (torchvision's ToTensor) and would be read as a set of only bright images."""
    if is_float and check_value_range(value_range) == (-1.0, 1.0) and float(x.min()) >= 0.0:
        warnings.warn(f"{what}: float images all lie in [0, 1]; they are read as lying in [-1, 1]. If they are in "
                      f"[0, 1] (as torchvision's ToTensor makes them), pass value_range=(0, 1) (--value-range 0,1)", stacklevel=3)


def images_from_array(arr: np.ndarray, what: str, layout: str | None, value_range=(-1.0, 1.0)):
    """An array of images of any layout -> (float32 [N, C, H, W] in [-1, 1], whether they were
    float): uint8 v is v / 127.5 - 1, float images lie in ``value_range``."""
    check_layout(layout)
    if arr.dtype == np.uint8:
        return from_uint8(arr, what, layout), False
    if np.issubdtype(arr.dtype, np.floating):
        return from_float(to_nchw(arr, what, layout), what, value_range), True
    raise InputError(f"{what}: images must be uint8 or float, got {arr.dtype}")


def _scalar(v):
    """A label held in a one-element tensor or array (as torch Datasets often give it) as a number."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    return v.reshape(()).item() if isinstance(v, np.ndarray) and v.size == 1 else v


def label_tensor(labels, n: int, what: str) -> torch.Tensor:
    """Class labels: int64 [n] from a sequence, array or tensor of integers. Strings, floats and
    bools are refused, not converted: int(0.5) and int("3") would pass as labels silently."""
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        try:
            arr = labels if isinstance(labels, np.ndarray) else np.asarray([_scalar(v) for v in labels])
        except (TypeError, ValueError):  # ragged or mixed items: shown as they are below
            arr = np.asarray(list(labels), dtype=object)
    if arr.dtype.kind not in "iu":
        shown = arr.ravel()[:5].tolist()
        more = f" ... ({arr.size} in all)" if arr.size > 5 else ""
        raise InputError(f"{what}: labels must be integers (class indices), got {shown}{more}")
    if arr.shape != (n,):
        raise InputError(f"{what}: labels must be one integer per image ({n}), got shape {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def _read_npz(path: Path, what: str, layout: str | None = None, value_range=(-1.0, 1.0)):
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
    x, is_float = images_from_array(images, what, layout, value_range)
    y = None if labels is None else label_tensor(labels, x.shape[0], what)
    return x, y, is_float


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
    for folder in _idx_folders(root):
        for cand in (folder / stem, folder / (stem + ".gz")):
            if cand.exists():
                return cand
    also = f" or {SYSTEM_ROOTS[what]}" if what in SYSTEM_ROOTS and SYSTEM_ROOTS[what] != root else ""
    debian = " `apt-get install dataset-fashion-mnist`," if what == "fashion-mnist" else ""
    raise InputError(f"{what}: no {stem} or {stem}.gz under {root}{also}; get them with{debian} "
                     f"root=<folder> (--root) or download=True (--download)")


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
    return Dataset(x, torch.from_numpy(labs.astype(np.int64)), name,
                   class_names=FASHION_CLASSES if name == "fashion-mnist" else None)


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
            raise InputError(f"cifar10: {path} is missing (pass root= or download=True; --root, --download)")
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


# PIL modes with one value per pixel (alpha aside). 16- and 32-bit gray is read through the same
# conversion to RGB as colour images are, so its values are what they always were.
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def _image_folder(root: Path, size: int, name: str, rgb: bool = False) -> Dataset:
    """Every image under ``root``: centre-cropped to a square, resized to size x size. One
    channel when every image is gray (``rgb`` False), else RGB. Labelled by class sub-folder
    when all images sit in two or more sub-folders; the sub-folders' names are the class names."""
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise InputError(f"{name}: image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    tops = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    labelled = len(tops) >= 2 and all(len(p.relative_to(root).parts) > 1 for p in files)
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    gray = not rgb
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                gray = gray and im.mode in _GRAY_MODES
                im = im.convert("RGB")
                w, h = im.size
                m = min(w, h)
                left, top = (w - m) // 2, (h - m) // 2
                im = im.crop((left, top, left + m, top + m)).resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"{name}: cannot read image {p}: {e}") from None
    # A gray image converted to RGB holds the same values in its three channels, so keeping one
    # of them is exactly the gray image; the resize works channel by channel.
    if gray:
        out = out[..., :1]
    labels = names = None
    if labelled:
        index = {t: i for i, t in enumerate(tops)}
        labels = torch.tensor([index[p.relative_to(root).parts[0]] for p in files], dtype=torch.int64)
        names = list(tops)
    return Dataset(from_uint8(out, name, "nhwc"), labels, name, class_names=names)
