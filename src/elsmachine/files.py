"""Files the project writes: one atomic writer, JSON, and sample files that carry their settings.

Every file is written to a temporary name in its own folder, flushed to disk and renamed into
place, so an interrupted or failed write leaves the previous file or nothing; the temporary
file is removed whatever goes wrong, and one left by a killed process (which runs no cleanup)
is removed by the next write of the same file. Missing parent folders are created.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError, RunError

__all__ = ["atomic_write", "write_json", "save_samples", "load_samples", "file_digest", "tensor_digest",
           "check_writable"]


def atomic_write(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. A folder that cannot be made is
    an InputError naming it; a write that fails (a full disk) a RunError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder {path.parent}: {e.strerror or e}") from None
    _clear_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def check_writable(path) -> Path:
    """Fail now, before any work, where ``path`` could not be written later, and leave nothing
    behind: the deepest folder of ``path`` that exists must be a folder that takes a new file
    (tried with a file made and removed at once); missing folders are made only when written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    base = path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise InputError(f"cannot write {path}: {base} is not a folder")
    probe = base / f".elsmachine-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise InputError(f"cannot write {path}: {base} does not take new files ({e.strerror or e})") from None
    probe.unlink()
    return path


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_digest(images: torch.Tensor, labels: torch.Tensor | None = None, block: int = 4096) -> str:
    """Hex digest (16 characters) of a set of images as stored (dtype, shape and bytes, block by
    block, so a memory-mapped set is never copied whole) and of its labels."""
    h = hashlib.sha256(f"{images.dtype} {tuple(images.shape)}".encode())
    for n0 in range(0, images.shape[0], block):
        h.update(images[n0 : n0 + block].detach().cpu().contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _clear_stale(path: Path) -> None:
    """Remove temporary files of ``path`` left by processes no longer running."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = old.name[len(path.name) + 2 : -len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            old.unlink(missing_ok=True)
        except OSError:
            pass  # alive, under another user: not ours to remove


def write_json(path, obj) -> Path:
    """``obj`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(obj, indent=1).encode())


def save_samples(path, images: torch.Tensor, *, seeds, labels=None, meta: dict | None = None, **arrays) -> Path:
    """Raw samples as .npz: ``images`` float32 [B, C, H, W], ``seeds`` int64 [B], ``labels``
    int64 [B] (-1 for unconditional), ``meta`` a JSON string with the settings that made them,
    plus any extra arrays given."""
    out = {
        "images": images.detach().to("cpu", torch.float32).numpy(),
        "seeds": np.asarray(seeds, dtype=np.int64),
        "labels": np.full(len(seeds), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64),
        "meta": np.array(json.dumps(meta or {})),
    }
    for k, v in arrays.items():
        out[k] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return atomic_write(path, buf.getvalue())


def load_samples(path) -> dict:
    """Read a file written by :func:`save_samples`; ``meta`` comes back as a dict."""
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise InputError(f"samples file {path} does not exist") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"samples file {path} is not a readable .npz: {e}") from None
    for k in ("images", "seeds", "meta"):
        if k not in d:
            raise InputError(f"samples file {path} has no array {k!r}")
    d["meta"] = json.loads(str(d["meta"]))
    return d
