"""Images as files: [-1, 1] tensors to uint8, tiled grids, PNG written atomically."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .files import atomic_write

__all__ = ["to_uint8", "image_grid", "png_bytes", "save_png"]


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


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(img: Image.Image, path) -> None:
    atomic_write(path, png_bytes(img))
