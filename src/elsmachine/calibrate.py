"""Calibrating the patch-size schedule k(t) against a trained network (DESIGN.md, "The score
machines", last bullet; paper, Section 5).

From each seed, the network's own deterministic DDIM trajectory is run. At every step, on the
network's x_t, each candidate size k gives the machine's score -(x_t - a x0_hat_k) / s^2, which
is compared with the network's score: by cosine similarity (default) or by L2 distance. The
best size per (step, seed) is kept, and the schedule takes, per step, the median over seeds
(the lower median, so the size is one that was actually chosen). The schedule records its
grid, so a sampler reading it uses size j at exactly the time it was calibrated for.
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch

from .errors import InputError
from .metrics import cosine
from .presets import PatchSchedule
from .sampler import seed_noise
from .schedule import ddim_grid

__all__ = ["calibrate", "CRITERIA"]

CRITERIA = ("cosine", "l2")


def calibrate(
    network,
    machine,
    sizes: Sequence[int],
    seeds: Sequence[int],
    *,
    steps: int = 20,
    labels: torch.Tensor | None = None,
    criterion: str = "cosine",
    dtype=torch.float32,
    device="cpu",
    meta: dict | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> tuple[PatchSchedule, torch.Tensor, torch.Tensor]:
    """Return (schedule, best [steps, seeds] chosen sizes, similarity [steps, sizes, seeds]).

    ``network`` and ``machine`` both answer denoise(x, t, labels=...); the machine also takes
    patch_size=. Similarity is cosine (higher is better) or minus the L2 distance.
    """
    if criterion not in CRITERIA:
        raise InputError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    sizes = [int(k) for k in sizes]
    if not sizes:
        raise InputError("give at least one candidate patch size")
    for k in sizes:
        if k < 1 or k % 2 == 0:
            raise InputError(f"patch sizes must be odd positive integers, got {k}")
    if len(seeds) < 1:
        raise InputError("give at least one seed")
    C, H, W = machine.image_shape
    x = seed_noise(list(seeds), (C, H, W), dtype=dtype, device=device)
    grid = ddim_grid(steps)
    sched = network.schedule
    best = torch.zeros(steps, len(seeds), dtype=torch.long)
    sim = torch.zeros(steps, len(sizes), len(seeds), dtype=torch.float64)
    for i in range(steps):
        t, t_next = float(grid[i]), float(grid[i + 1])
        a, s = sched.alpha(t), sched.sigma(t)
        x0_net = network.denoise(x, t, labels=labels)
        score_net = -(x - a * x0_net) / (s * s)
        for j, k in enumerate(sizes):
            x0_m = machine.denoise(x, t, patch_size=k, labels=labels)
            score_m = -(x - a * x0_m) / (s * s)
            if criterion == "cosine":
                sim[i, j] = cosine(score_m, score_net)
            else:
                sim[i, j] = -(score_m - score_net).flatten(1).to(torch.float64).norm(dim=1)
        best[i] = torch.tensor(sizes)[sim[i].argmax(0)]
        # The network's own trajectory: DDIM with its x0_hat.
        eps = (x - a * x0_net) / s
        x = x0_net if t_next == 0.0 else sched.alpha(t_next) * x0_net + sched.sigma(t_next) * eps
        if on_step is not None:
            on_step({"i": i, "t": t, "best": best[i].tolist()})
    chosen = [int(statistics.median_low(best[i].tolist())) for i in range(steps)]
    ts = tuple(float(t) for t in grid[:-1])
    info = {"criterion": criterion, "sizes_tried": sizes, "seeds": list(seeds), "steps": steps,
            "per_seed": best.tolist(), **(meta or {})}
    return PatchSchedule(ts=ts, sizes=tuple(chosen), meta=info), best, sim
