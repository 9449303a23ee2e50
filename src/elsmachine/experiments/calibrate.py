"""Calibrating the patch schedule k(t) against a trained network (docs/theory.md, "Patch
schedules"; the paper's calibration).

From each seed, the network's own deterministic trajectory is run (DDIM, or EDM's Heun: a
:class:`~elsmachine.sampling.Sampler`). At every step (Heun: at each step's first call), on the network's x_t, each candidate size k gives the machine's score (all sizes
from one pass over the candidates where the machine's engine allows: ``denoise_sizes``)
-(x_t - a x0_hat_k) / s^2, which is compared with the network's score: by cosine similarity
(default) or by L2 distance. The best size per (step, seed) is kept, and the schedule takes,
per step, the median over seeds (the lower median, so the size is one that was actually
chosen). The schedule records the sampler's times, so a sampler reading it uses size j at exactly
the time it was calibrated for (Heun's second call of a step is at the next step's time).

With a ``work_dir`` the seeds run one at a time and each finished seed is saved there (its file
named by the settings), so an interrupted calibration rerun with the same settings picks up
where it stopped, repeating no seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import statistics
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import checks
from ..contract import denoiser_name, takes_patch_size
from ..engines.distributed import Group
from ..errors import InputError
from ..files import atomic_write
from ..patch_schedule import PatchSchedule
from ..sampling import Sampler
from ..seeds import seed_noise
from .metrics import cosine

__all__ = ["calibrate", "CRITERIA"]

CRITERIA = ("cosine", "l2")


def _similarities(network, machine, noise, labels, sizes, steps, criterion, on_step,
                  sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
    """best [steps, B] and similarity [steps, sizes, B] along the network's trajectories from ``noise``."""
    sched = network.schedule
    B = noise.shape[0]
    best = torch.zeros(steps, B, dtype=torch.long)
    sim = torch.zeros(steps, len(sizes), B, dtype=torch.float64)

    def at_step(info: dict) -> None:
        i, t, x_t = info["i"], info["t"], info["x"]
        a, s = sched.alpha(t), sched.sigma(t)
        score_net = -(x_t - a * info["x0_hat"]) / (s * s)
        if hasattr(machine, "denoise_sizes"):  # every size from one pass over the candidates
            x0s = machine.denoise_sizes(x_t, t, sizes, labels=labels)
        else:
            x0s = [machine.denoise(x_t, t, labels=labels, patch_size=k) for k in sizes]
        for j, x0 in enumerate(x0s):
            score_m = -(x_t - a * x0) / (s * s)
            if criterion == "cosine":
                sim[i, j] = cosine(score_m, score_net)
            else:
                sim[i, j] = -(score_m - score_net).flatten(1).to(torch.float64).norm(dim=1)
        best[i] = torch.tensor(sizes)[sim[i].argmax(0)]
        if on_step is not None:
            on_step({"i": i, "t": t, "best": best[i].tolist()})

    sampler.run(network, noise, steps, labels=labels, callback=at_step)  # the network's own trajectory
    return best, sim


def _load_seed(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A finished seed's best sizes [steps, 1] and similarities [steps, sizes, 1]."""
    with np.load(path) as d:
        return torch.from_numpy(d["best"]), torch.from_numpy(d["sim"])


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
    sampler: Sampler | str = "ddim",
    on_step: Callable[[dict], None] | None = None,
    work_dir=None,
    group: Group | None = None,
) -> tuple[PatchSchedule, torch.Tensor, torch.Tensor]:
    """Return (patch schedule, best [steps, seeds] chosen sizes, similarity [steps, sizes, seeds]).

    ``network`` and ``machine`` both follow the denoiser contract; the machine also takes
    ``patch_size=``. ``sampler``: the sampler whose trajectory is followed (a
    :class:`~elsmachine.sampling.Sampler` or its name). Similarity is cosine (higher is better) or minus the L2 distance.
    ``labels`` [seeds]: the class of each seed for class-conditional denoisers. ``work_dir``:
    where finished seeds are kept until the calibration completes (see the module docstring).
    ``group``: processes calibrating the same seeds together (a machine with a sharded bank):
    rank 0 reads and writes ``work_dir`` and tells the others which seeds are done.
    """
    from .compare import describe

    group = group or Group()
    sampler = Sampler(sampler) if isinstance(sampler, str) else sampler
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
    seeds = list(seeds)
    noise = seed_noise(seeds, machine.image_shape, dtype=dtype, device=device)
    if work_dir is None:
        best, sim = _similarities(network, machine, noise, labels, sizes, steps, criterion, on_step, sampler)
    else:
        key = hashlib.sha256(json.dumps([describe(network), describe(machine), sizes, steps, criterion, str(dtype),
                                         *([] if sampler.name == "ddim" else [sampler.to_dict()])],
                                        sort_keys=True, default=str).encode()).hexdigest()[:12]
        work = Path(work_dir)
        per_seed = []
        for b, seed in enumerate(seeds):
            lab = None if labels is None else labels[b : b + 1]
            label_tag = "" if lab is None else f"-class{int(lab)}"
            path = work / f"seed{seed:06d}{label_tag}-{key}.npz"
            done = group.read(path, _load_seed)
            if done is not None:
                per_seed.append(done)
                if on_step is not None:
                    for i in range(steps):
                        on_step({"i": i, "seed": seed, "resumed": True})
                continue
            bs, sm = _similarities(network, machine, noise[b : b + 1], lab, sizes, steps, criterion, on_step,
                                   sampler)
            buf = io.BytesIO()
            np.savez(buf, best=bs.numpy(), sim=sm.numpy())
            if group.main:
                atomic_write(path, buf.getvalue())
            per_seed.append((bs, sm))
        best = torch.cat([bs for bs, _ in per_seed], dim=1)
        sim = torch.cat([sm for _, sm in per_seed], dim=2)
    chosen = [int(statistics.median_low(best[i].tolist())) for i in range(steps)]
    ts = tuple(float(t) for t in sampler.grid(network.schedule, steps)[:-1])
    at_edge = [t for t, k in zip(ts, chosen) if k == max(sizes)]
    if at_edge and len(sizes) > 1:
        warnings.warn(f"calibration chose the largest size tried ({max(sizes)}) at t = "
                      f"{', '.join(f'{t:g}' for t in at_edge)}: the network may prefer larger windows there; "
                      f"try larger sizes", stacklevel=2)
    info = {"criterion": criterion, "sizes_tried": sizes, "seeds": seeds, "steps": steps,
            "per_seed": best.tolist(), "criterion_by_size": sim.median(dim=2).values.tolist(),
            "schedule": network.schedule.to_dict(), "sampler": sampler.to_dict(), **(meta or {})}
    return PatchSchedule(ts=ts, sizes=tuple(chosen), meta=info), best, sim


def finish(work_dir) -> None:
    """Remove the finished seeds once the calibration they served is written."""
    shutil.rmtree(work_dir, ignore_errors=True)
