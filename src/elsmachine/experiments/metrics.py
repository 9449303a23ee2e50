"""Comparing images (docs/theory.md, "Metrics").

Per seed, between the network's final image F (the reference) and a machine's final image M,
both [C, H, W], over all pixels and channels:

    r    Pearson correlation: each image centred by its own mean, divided by its norm, dot
         product. The paper's tables call this per-image correlation "r^2" at times, so results
         always say which they show.
    r^2  r squared.
    R^2  the coefficient of determination 1 - sum (F - M)^2 / sum (F - mean F)^2, with the
         network's image as the reference (it is not symmetric).
    MSE  mean (F - M)^2.
"""

from __future__ import annotations

import torch

__all__ = ["pearson", "r2_score", "mse", "cosine", "nearest", "METRICS", "AS_REPORTED", "image_metrics"]

METRICS = {
    "r": "Pearson correlation of the final images (per image, over all pixels and channels)",
    "r2": "r squared",
    "R2": "coefficient of determination 1 - SSE / SST, the network's image as reference",
    "mse": "mean squared difference per pixel and channel",
}

# Which summary statistics each paper's tables report, under the name they give them, so that a row
# of a comparison can be set beside a row of theirs.
AS_REPORTED = {
    "Kamb and Ganguli (ICML 2025)": "median_r: the median over seeds of Pearson's r, which their tables call r^2",
    "GoldDiff (Shang et al., ICML 2026) and the Analytic Diffusion Studio": "mean_R2 and mean_mse: the mean over "
    "seeds of R^2 = 1 - SSE / SST (SST = Var(y) D, y the network's image) and of the MSE",
}


def _flat(a: torch.Tensor) -> torch.Tensor:
    return a.detach().to(torch.float64).flatten(1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation of a and b [B, ...] -> [B] (float64)."""
    a, b = _flat(a), _flat(b)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def r2_score(reference: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Per-image coefficient of determination of ``prediction`` against ``reference`` -> [B]."""
    f, m = _flat(reference), _flat(prediction)
    sst = ((f - f.mean(1, keepdim=True)) ** 2).sum(1)
    sse = ((f - m) ** 2).sum(1)
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), torch.full_like(sst, float("nan")))


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared difference -> [B]."""
    return ((_flat(a) - _flat(b)) ** 2).mean(1)


def image_metrics(reference: torch.Tensor, prediction: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric of :data:`METRICS`, each [B] float64."""
    r = pearson(reference, prediction)
    return {"r": r, "r2": r * r, "R2": r2_score(reference, prediction), "mse": mse(reference, prediction)}


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity of a and b [B, ...] -> [B] (float64), not centred."""
    a, b = _flat(a), _flat(b)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def nearest(x: torch.Tensor, images: torch.Tensor, *, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest training image in L2 for each x [B, ...]: (indices [B], distances [B])."""
    xf = _flat(x).cpu()
    best_d = torch.full((xf.shape[0],), float("inf"), dtype=torch.float64)
    best_i = torch.zeros(xf.shape[0], dtype=torch.long)
    for n0 in range(0, images.shape[0], chunk):
        y = images[n0 : n0 + chunk].to("cpu", torch.float64).flatten(1)
        d = torch.cdist(xf, y)  # [B, n]
        dmin, imin = d.min(1)
        better = dmin < best_d
        best_d = torch.where(better, dmin, best_d)
        best_i = torch.where(better, imin + n0, best_i)
    return best_i, best_d
