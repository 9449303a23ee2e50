"""Calibrating the patch schedule k(t) against a trained network (docs/theory.md, "Patch
schedules"; the paper's calibration).

From each seed, the network's own deterministic DDIM trajectory is run (by :func:`ddim_sample`).
At every step, on the network's x_t, each candidate size k gives the machine's score
-(x_t - a x0_hat_k) / s^2, which is compared with the network's score: by cosine similarity
(default) or by L2 distance. The best size per (step, seed) is kept, and the schedule takes,
per step, the median over seeds (the lower median, so the size is one that was actually
chosen). The schedule records its grid, so a sampler reading it uses size j at exactly the time
it was calibrated for.
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch

from .. import checks
from ..contract import denoiser_name, takes_patch_size
from ..errors import InputError
from ..noise import ddim_grid
from ..patch_schedule import PatchSchedule
from ..sampling import ddim_sample
from ..seeds import seed_noise
from .metrics import cosine

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
    """Return (patch schedule, best [steps, seeds] chosen sizes, similarity [steps, sizes, seeds]).

    ``network`` and ``machine`` both follow the denoiser contract; the machine also takes
    ``patch_size=``. Similarity is cosine (higher is better) or minus the L2 distance.
    """
    if criterion not in CRITERIA:
        raise InputError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if not takes_patch_size(machine):
        raise InputError(f"{denoiser_name(machine)} has no patch size to calibrate")
    sizes = [checks.patch_size(k, "candidate patch sizes") for k in sizes]
    if not sizes:
        raise InputError("give at least one candidate patch size")
    if machine.schedule != network.schedule:
        raise InputError(f"the machine uses the noise schedule {machine.schedule}, the network {network.schedule}: "
                         f"they must agree to be calibrated against each other")
    x = seed_noise(list(seeds), machine.image_shape, dtype=dtype, device=device)
    sched = network.schedule
    best = torch.zeros(steps, len(seeds), dtype=torch.long)
    sim = torch.zeros(steps, len(sizes), len(seeds), dtype=torch.float64)

    def at_step(info: dict) -> None:
        i, t, x_t = info["i"], info["t"], info["x"]
        a, s = sched.alpha(t), sched.sigma(t)
        score_net = -(x_t - a * info["x0_hat"]) / (s * s)
        for j, k in enumerate(sizes):
            score_m = -(x_t - a * machine.denoise(x_t, t, labels=labels, patch_size=k)) / (s * s)
            if criterion == "cosine":
                sim[i, j] = cosine(score_m, score_net)
            else:
                sim[i, j] = -(score_m - score_net).flatten(1).to(torch.float64).norm(dim=1)
        best[i] = torch.tensor(sizes)[sim[i].argmax(0)]
        if on_step is not None:
            on_step({"i": i, "t": t, "best": best[i].tolist()})

    ddim_sample(network, x, steps=steps, labels=labels, callback=at_step)  # the network's own trajectory
    chosen = [int(statistics.median_low(best[i].tolist())) for i in range(steps)]
    ts = tuple(float(t) for t in ddim_grid(steps)[:-1])
    info = {"criterion": criterion, "sizes_tried": sizes, "seeds": list(seeds), "steps": steps,
            "per_seed": best.tolist(), "schedule": sched.to_dict(), **(meta or {})}
    return PatchSchedule(ts=ts, sizes=tuple(chosen), meta=info), best, sim
