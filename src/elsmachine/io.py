"""Writing results: image grids as PNG and raw samples as .npz, each written atomically
(temporary file, then rename) so an interrupted run never leaves half a file behind."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import InputError

__all__ = ["to_uint8", "image_grid", "save_png", "save_samples", "load_samples", "atomic_write_bytes"]


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C] (values outside are clipped)."""
    x = images.detach().to("cpu", torch.float64).clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, *, ncol: int | None = None, scale: int = 4, pad: int = 2) -> Image.Image:
    """Tile [B, C, H, W] images in [-1, 1] into one PIL image, each enlarged ``scale`` times."""
    arr = to_uint8(images)
    B, H, W, C = arr.shape
    ncol = ncol or (B if B <= 10 else int(np.ceil(np.sqrt(B))))
    nrow = int(np.ceil(B / ncol))
    canvas = np.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad, C), 255, dtype=np.uint8)
    for b in range(B):
        r, c = divmod(b, ncol)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        canvas[y : y + H, x : x + W] = arr[b]
    img = Image.fromarray(canvas[..., 0] if C == 1 else canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_png(img: Image.Image, path) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_samples(path, images: torch.Tensor, *, seeds, labels=None, meta: dict | None = None, **arrays) -> None:
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
    atomic_write_bytes(path, buf.getvalue())


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
