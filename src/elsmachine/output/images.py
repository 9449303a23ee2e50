"""Images as files: [-1, 1] tensors to uint8, tiled grids, written atomically in the format the
file name asks for."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..files import atomic_write

__all__ = ["to_uint8", "image_grid", "image_format", "save_image"]


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


def image_format(path) -> str:
    """The image format a file name asks for (PNG, JPEG, ...), or an InputError where none is
    known or the suffix belongs to another kind of file."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or suffix in (".npz", ".json", ".pdf"):
        raise InputError(f"cannot write an image as {Path(path).name!r}: give a file name ending in .png (or .jpg, "
                         f".webp, .bmp, .tif)")
    return fmt


def save_image(img: Image.Image, path) -> None:
    """Write an image in the format its suffix names, atomically."""
    buf = io.BytesIO()
    img.save(buf, format=image_format(path))
    atomic_write(path, buf.getvalue())
