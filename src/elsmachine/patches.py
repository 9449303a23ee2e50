"""Patches and padding footprints (DESIGN.md, "The score machines").

The patch of an image at pixel q = (i, j) is the k x k window centred on q after padding the
image by h = k // 2 on every side, with zeros ("zeros") or periodically ("circular"). A circular
window wider than the image wraps around the torus more than once and sees those pixels more
than once: index (i + d) mod H for every offset d in [-h, h]. That keeps the machine equivariant
to circular shifts at every size, and at k = H (odd) it is the whole image once.

The footprint of pixel (i, j) is (max(0, h - i), max(0, i + h - (H - 1)), max(0, h - j),
max(0, j + h - (W - 1))). Rows with the same row footprint form a row class: each edge row is a
class of its own, the interior rows h..H-1-h form one class; columns likewise. Pixels with the
same footprint are exactly a row class times a column class.
"""

from __future__ import annotations

import torch

__all__ = ["PADDINGS", "gather_patches", "footprint_classes", "footprint", "row_classes"]

PADDINGS = ("zeros", "circular")


def gather_patches(x: torch.Tensor, k: int, padding: str, positions: torch.Tensor) -> torch.Tensor:
    """Patches of ``x`` [B, C, H, W] at flat pixel indices ``positions`` [P]: [B, P, C*k*k].

    The patch vector is laid out channel-major, then window row, then window column, so the
    centre pixel of channel c sits at column c*k*k + h*k + h.
    """
    B, C, H, W = x.shape
    h = k // 2
    pos = positions.to(x.device)
    i = (pos // W).view(-1, 1, 1)  # [P, 1, 1]
    j = (pos % W).view(-1, 1, 1)
    d = torch.arange(-h, h + 1, device=x.device)
    rows = i + d.view(1, -1, 1)  # [P, k, 1]
    cols = j + d.view(1, 1, -1)  # [P, 1, k]
    if padding == "circular":
        src = x
        rows = rows % H
        cols = cols % W
    else:
        # Pad once by h with zeros; indices then shift into the padded frame.
        src = torch.nn.functional.pad(x, (h, h, h, h))
        rows = rows + h
        cols = cols + h
    p = src[:, :, rows, cols]  # [B, C, P, k, k]
    return p.permute(0, 2, 1, 3, 4).reshape(B, pos.numel(), C * k * k)


def row_classes(n: int, k: int) -> list[tuple[int, int]]:
    """Indices 0..n-1 along one axis grouped by footprint, as inclusive ranges: each edge index
    alone, the interior h..n-1-h together."""
    h = k // 2
    lo, hi = h, n - 1 - h
    if lo > hi:
        return [(i, i) for i in range(n)]
    return [(i, i) for i in range(lo)] + [(lo, hi)] + [(i, i) for i in range(hi + 1, n)]


def footprint(i: int, j: int, H: int, W: int, k: int) -> tuple[int, int, int, int]:
    """Padding footprint of pixel (i, j): padded rows above, below, padded columns left, right."""
    h = k // 2
    return (max(0, h - i), max(0, i + h - (H - 1)), max(0, h - j), max(0, j + h - (W - 1)))


def footprint_classes(H: int, W: int, k: int) -> list[torch.Tensor]:
    """Flat pixel indices grouped by padding footprint (row class x column class)."""
    out = []
    for r0, r1 in row_classes(H, k):
        for c0, c1 in row_classes(W, k):
            r = torch.arange(r0, r1 + 1).view(-1, 1)
            c = torch.arange(c0, c1 + 1).view(1, -1)
            out.append((r * W + c).reshape(-1))
    return out
