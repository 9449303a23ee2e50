"""What a denoiser call costs, counted: candidate pairs, the arithmetic the displacement form
does, and this machine's own fp32 matmul throughput to compare it with.

A candidate pair is one output pixel weighed against one candidate patch, the unit of work
every formulation must do: boundary-broken ELS pairs each pixel with the pixels of its own
padding footprint in every image, circular ELS with every pixel of every image, LS with the
same pixel of every image, and IS (whose candidates are whole images) with every image. Each
machine states its count and its arithmetic in its declaration (:class:`~elsmachine.machines.Cost`).
"""

from __future__ import annotations

import math
import time

import torch


__all__ = ["pairs_for", "flops_for", "matmul_gflops", "machine_kind", "bench_names"]


def bench_names() -> tuple[str, ...]:
    """The machines ``els bench`` times, from their declarations: each by its name, or once per
    padding it declares to be timed apart ("els-zeros", "els-circular")."""
    from ..machines import declarations

    return tuple(n for d in declarations() for n in ([f"{d.name}-{p}" for p in d.bench_paddings] or [d.name]))


def machine_kind(machine: str) -> tuple[str, str]:
    """A bench machine name (a machine's, or "name-padding" for one timed per padding) as
    (machine name, padding)."""
    from ..machines import MACHINES

    if machine in MACHINES:
        return machine, "zeros"
    name, _, padding = machine.rpartition("-")
    return name, padding or "zeros"


def pairs_for(machine: str, k: int, n: int, H: int = 32, W: int = 32, radius: int | None = None,
              t: float = 0.5) -> int:
    """Candidate pairs of one denoiser call at time ``t`` for one image: (output, candidate) pairs
    the machine weighs, by its declared cost model (``radius``: candidates within that many
    pixels of the query, for the patch machines)."""
    from ..machines import cost_of

    name, padding = machine_kind(machine)
    return int(cost_of(name).pairs(k, n, H, W, t, padding=padding, radius=radius))


def flops_for(machine: str, k: int, n: int, H: int = 32, W: int = 32, C: int = 1, radius: int | None = None,
              t: float = 0.5) -> float:
    """Arithmetic the formulation actually does for one denoiser call at time ``t`` and one image,
    by the machine's declared cost model (each machine's file states what it counts)."""
    from ..machines import cost_of

    name, padding = machine_kind(machine)
    return float(cost_of(name).flops(k, n, H, W, C, t, padding=padding, radius=radius))


def matmul_gflops(seconds: float = 2.0, size: int = 2048) -> float:
    """The machine's own fp32 matrix-multiply throughput (GFLOP/s), measured now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9
