"""Which candidate patches an output pixel sees, stated once (docs/theory.md, "The score
machines" and "Padding footprints").

The patch of an image at pixel q = (i, j) is the k x k window centred on q after padding the
image by h = k // 2 on every side, with zeros ("zeros") or periodically ("circular"). A circular
window wider than the image wraps around the torus more than once and sees those pixels more
than once: index (i + d) mod H for every offset d in [-h, h]. That keeps the machine equivariant
to circular shifts at every size, and at k = H (odd) it is the whole image once.

Which candidate pixels p an output pixel q sees is given as groups of rectangles, in image
coordinates, inclusive:

    query pixels [qr0, qr1] x [qc0, qc1], displacements [dr0, dr1] x [dc0, dc1],
    allowed candidate pixels [pr0, pr1] x [pc0, pc1],

so q sees p = q + d for every d of the group with q + d inside the allowed rectangle (for
circular padding the candidate coordinates run over the periodic extension 0..2H-2 and p is
taken mod H, W). The compiled kernel walks these rectangles directly; the attention form takes
:func:`pixel_classes`, the query pixels that see the same candidate pixels, derived from the
same rectangles.

- LS: displacement 0 only.
- ELS, circular: every displacement 0..H-1 x 0..W-1 (mod H, W).
- ELS, zeros: q and p must have the same padding footprint (how many padded rows and columns
  the window has on each side). Along one axis two indices share a footprint when they are
  equal or both interior (h..n-1-h), so the pairs of an axis are displacement 0 over the whole
  axis and the nonzero displacements over the interior; the groups are the products of the two
  axes' pairs, at most 3 x 3 of them.
- ``radius`` (ELS, approximate): only candidates at most that many pixels from q along each
  axis (around the torus for circular).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["rectangles", "sees", "pixel_classes", "gather_patches"]


def _axis_pairs(n: int, k: int, radius: int | None) -> list[tuple[int, int, int, int]]:
    """Zero-padded ELS along one axis: (query lo, hi, displacement lo, hi) segments."""
    lo, hi = k // 2, n - 1 - k // 2
    reach = hi - lo if radius is None else min(hi - lo, radius)
    segs = [(0, n - 1, 0, 0)]
    if reach > 0:
        segs += [(lo, hi, 1, reach), (lo, hi, -reach, -1)]
    return segs


def _circular_ranges(n: int, radius: int | None) -> list[tuple[int, int]]:
    """Displacements 0..n-1 (mod n) of a circular axis, or those within ``radius`` of 0."""
    if radius is None or 2 * radius + 1 >= n:
        return [(0, n - 1)]
    return [(0, radius), (n - radius, n - 1)]


@functools.lru_cache(maxsize=256)
def _rectangles(kind: str, padding: str, H: int, W: int, k: int, radius: int | None) -> tuple[tuple[int, ...], ...]:
    if kind == "ls":
        return ((0, H - 1, 0, W - 1, 0, 0, 0, 0, 0, H - 1, 0, W - 1),)
    if padding == "circular":
        return tuple((0, H - 1, 0, W - 1, dr0, dr1, dc0, dc1, 0, 2 * H - 2, 0, 2 * W - 2)
                     for dr0, dr1 in _circular_ranges(H, radius) for dc0, dc1 in _circular_ranges(W, radius))
    rows = []
    for qr0, qr1, dr0, dr1 in _axis_pairs(H, k, radius):
        for qc0, qc1, dc0, dc1 in _axis_pairs(W, k, radius):
            pr0, pr1 = (0, H - 1) if dr0 == 0 else (qr0, qr1)
            pc0, pc1 = (0, W - 1) if dc0 == 0 else (qc0, qc1)
            rows.append((qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1))
    return tuple(rows)


def rectangles(kind: str, padding: str, H: int, W: int, k: int, radius: int | None = None) -> torch.Tensor:
    """The candidate groups [G, 12] int32 of machine ``kind`` ("ls" or "els") and ``padding``."""
    return torch.tensor(_rectangles(kind, padding, H, W, k, radius), dtype=torch.int32)


@functools.lru_cache(maxsize=64)
def _sees(kind: str, padding: str, H: int, W: int, k: int, radius: int | None) -> np.ndarray:
    out = np.zeros((H, W, H, W), dtype=bool)
    for qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1 in _rectangles(kind, padding, H, W, k, radius):
        for dr in range(dr0, dr1 + 1):
            r = np.arange(max(qr0, pr0 - dr), min(qr1, pr1 - dr) + 1)
            for dc in range(dc0, dc1 + 1):
                c = np.arange(max(qc0, pc0 - dc), min(qc1, pc1 - dc) + 1)
                if r.size and c.size:
                    out[r[:, None], c[None, :], ((r + dr) % H)[:, None], ((c + dc) % W)[None, :]] = True
    out = out.reshape(H * W, H * W)
    out.setflags(write=False)
    return out


def sees(kind: str, padding: str, H: int, W: int, k: int, radius: int | None = None) -> np.ndarray:
    """bool [H*W, H*W]: entry (q, p) is whether output pixel q sees candidate pixel p (flat
    indices i * W + j) of every training image. Read-only, cached."""
    return _sees(kind, padding, H, W, k, radius)


@functools.lru_cache(maxsize=64)
def _classes(kind: str, padding: str, H: int, W: int, k: int, radius: int | None):
    rel = _sees(kind, padding, H, W, k, radius)
    _, first, inverse = np.unique(np.packbits(rel, axis=1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    out = []
    for c in np.argsort(first):  # classes in the order of their first query pixel
        queries = np.nonzero(inverse == c)[0]
        out.append((torch.from_numpy(queries), torch.from_numpy(np.nonzero(rel[queries[0]])[0])))
    return tuple(out)


def pixel_classes(kind: str, padding: str, H: int, W: int, k: int,
                  radius: int | None = None) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(query pixels, candidate pixels) of each class of output pixels that see the same
    candidate pixels, flat int64 indices, derived from :func:`rectangles`."""
    return _classes(kind, padding, H, W, k, radius)


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
