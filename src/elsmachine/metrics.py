"""Comparing images and scores (DESIGN.md, "Metrics").

For a seed, the machine's final image M and the network's final image F ([C, H, W]) give
r = Pearson correlation over all pixels and channels (each image centred by its own mean,
divided by its norm, dot product); the paper's tables call this per-image correlation
"r^2" at times, so results always say which of r and r^2 they show.
"""

from __future__ import annotations

import torch

__all__ = ["pearson", "cosine", "nearest"]


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation of a and b [B, ...] -> [B] (float64)."""
    a = a.detach().to(torch.float64).flatten(1)
    b = b.detach().to(torch.float64).flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity of a and b [B, ...] -> [B] (float64), not centred."""
    a = a.detach().to(torch.float64).flatten(1)
    b = b.detach().to(torch.float64).flatten(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def nearest(x: torch.Tensor, images: torch.Tensor, *, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest training image in L2 for each x [B, ...]: (indices [B], distances [B])."""
    xf = x.detach().to(torch.float64).flatten(1)
    best_d = torch.full((xf.shape[0],), float("inf"), dtype=torch.float64)
    best_i = torch.zeros(xf.shape[0], dtype=torch.long)
    for n0 in range(0, images.shape[0], chunk):
        y = images[n0 : n0 + chunk].to(torch.float64).flatten(1)
        d = torch.cdist(xf, y)  # [B, n]
        dmin, imin = d.min(1)
        better = dmin < best_d
        best_d = torch.where(better, dmin, best_d)
        best_i = torch.where(better, imin + n0, best_i)
    return best_i, best_d
