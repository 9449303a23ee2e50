"""What a denoiser call costs, counted: candidate pairs, the arithmetic the displacement form
does, and this machine's own fp32 matmul throughput to compare it with.

A candidate pair is one output pixel weighed against one candidate patch, the unit of work
every formulation must do: boundary-broken ELS pairs each pixel with the pixels of its own
padding footprint in every image, circular ELS with every pixel of every image, LS with the
same pixel of every image, and IS (whose candidates are whole images) with every image.
"""

from __future__ import annotations

import math
import time

import torch

from ..machines.candidates import rectangles, sees

__all__ = ["pairs_for", "flops_for", "matmul_gflops", "machine_kind"]


SMOOTHED_COPIES = 10  # the smoothed machine's default num_noise, as the bench builds it


def bench_names() -> tuple[str, ...]:
    """The machines ``els bench`` times, from their declarations: each by its name, or once per
    padding it declares to be timed apart ("els-zeros", "els-circular")."""
    from ..machines import declarations

    return tuple(n for d in declarations() for n in ([f"{d.name}-{p}" for p in d.bench_paddings] or [d.name]))


def machine_kind(machine: str) -> tuple[str, str]:
    """A bench machine name ("els-zeros", "els-circular", "ls", "ideal", ...) as (machine name, padding)."""
    from ..machines import MACHINES

    if machine in MACHINES:
        return machine, "zeros"
    name, _, padding = machine.rpartition("-")
    return name, padding or "zeros"


def _cost_name(machine: str) -> str:
    """The bench name whose cost model counts ``machine``'s arithmetic (its declaration's ``cost_like``)."""
    from ..machines import MACHINES

    name, padding = machine_kind(machine)
    like = MACHINES[name].declaration.cost_like if name in MACHINES else None
    return machine if like is None else like


def _golddiff_sizes(n: int, t: float) -> tuple[int, int, int]:
    """GoldDiff's (pre-sample, screen, softmax) image counts at time t with its default k_min and
    k_max, on the paper's cosine schedule."""
    from ..machines.golddiff import GoldDiffMachine
    from ..noise import CosineSchedule

    return GoldDiffMachine.sizes_of(n, CosineSchedule().sigma(t), None, None)


def pairs_for(machine: str, k: int, n: int, H: int = 32, W: int = 32, radius: int | None = None,
              t: float = 0.5) -> int:
    """Candidate pairs of one denoiser call at time ``t`` for one image: (output, candidate) pairs
    each machine weighs (``radius``: the approximate mode that keeps candidates within that many
    pixels of the query, ELS only). The Gaussian machines weigh no candidates (0); the smoothed
    machine weighs every image for each of its 10 perturbed copies; GoldDiff screens its
    pre-sample on pooled proxies and the survivors at full size (one pair an image each), then
    pairs every output entry with the k_t images it keeps."""
    machine = _cost_name(machine)
    if machine in ("ideal", "nearest"):
        return n  # one candidate (a whole image) per image
    if machine == "smoothed":
        return SMOOTHED_COPIES * n
    if machine == "golddiff":
        m, k_max, k_t = _golddiff_sizes(n, t)
        return m + k_max + H * W * k_t
    if machine in ("wiener", "stationary"):
        return 0
    if machine == "locality":
        return H * W * n  # every output entry (one channel here) against every image
    if machine == "pspc":
        return (H - k + 1) * (W - k + 1) * n  # every window against every image
    if machine == "pspc-flex":
        return H * W * n  # one window per output pixel
    kind, padding = machine_kind(machine)
    return int(sees(kind, padding, H, W, k, radius).sum()) * n


def flops_for(machine: str, k: int, n: int, H: int = 32, W: int = 32, C: int = 1, radius: int | None = None,
              t: float = 0.5) -> float:
    """Arithmetic the formulation actually does for one denoiser call at time ``t`` and one image.

    Displacement form (LS, ELS), walking the kernel's groups and displacements: per
    displacement and image, the squared differences over the query rectangle grown by k - 1
    (3C flops a pixel); window sums down the columns and along the rows, k - 1 additions each
    when summed afresh (k < 7) or 3 by segments (prefix, suffix and their sum); then per pair
    the scale, max, exp (counted as 10), sum and weighted sum (2 + 2C). Attention form (IS):
    the logits' matrix product (2D flops a pair, D = C H W + 1), exp and weighted sum (2D).
    The peers: squared differences (3D an image); the locality and flex machines' masked sums
    by matrix product (2D a pair), their exp and weighted sums; PSPC's box sums, exp and its
    windows' weighted crops (2 C k^2 a pair); Wiener two products with the eigenbasis (4 D^2);
    stationary two FFTs and the C x C products per frequency; smoothed, IS once per copy;
    GoldDiff, squared differences on the pooled proxies (a quarter of the pixels at 32 x 32) and at
    full size, then the locality softmax over its k_t images."""
    D = C * H * W
    machine = _cost_name(machine)
    if machine == "ideal":
        return n * (4.0 * (D + 1) + 10)
    if machine == "smoothed":
        return SMOOTHED_COPIES * n * (4.0 * (D + 1) + 10)
    if machine == "golddiff":
        m, k_max, k_t = _golddiff_sizes(n, t)
        return m * 3.0 * D / 4 + k_max * 3.0 * D + k_t * (3.0 * D + H * W * (2.0 * D + 16))
    if machine == "nearest":
        return n * 3.0 * D
    if machine == "wiener":
        return 4.0 * D * D
    if machine == "stationary":
        return 2 * 5.0 * D * max(1.0, math.log2(H * W)) + 8.0 * C * C * H * W
    if machine in ("locality", "pspc-flex"):
        values = 2.0 * D if machine == "pspc-flex" else 2.0
        return n * (3.0 * D + H * W * (2.0 * D + 14 + values))
    if machine == "pspc":
        nw = (H - k + 1) * (W - k + 1)
        return n * (3.0 * D + 2.0 * (H - k + 1) * W * k + nw * (14 + 2.0 * C * k * k))
    h = k // 2
    box = 3 if k >= 7 else k - 1
    total = 0.0
    for rh, rw in _kernel_rectangles(machine, k, H, W, radius):
        total += (rh + 2 * h) * (rw + 2 * h) * 3 * C + rh * (rw + 2 * h) * box + rh * rw * box
        total += rh * rw * (14 + 2 * C)
    return total * n


def _kernel_rectangles(machine: str, k: int, H: int, W: int, radius: int | None = None):
    """(rows, columns) of the query rectangle of every displacement the kernel visits for LS or
    ELS, clipped to the candidates as csrc/displacement.c clips them."""
    kind, padding = machine_kind(machine)
    for qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1 in rectangles(kind, padding, H, W, k, radius).tolist():
        for dr in range(dr0, dr1 + 1):
            rh = min(qr1, pr1 - dr) - max(qr0, pr0 - dr) + 1
            if rh <= 0:
                continue
            for dc in range(dc0, dc1 + 1):
                rw = min(qc1, pc1 - dc) - max(qc0, pc0 - dc) + 1
                if rw > 0:
                    yield rh, rw


def matmul_gflops(seconds: float = 2.0, size: int = 2048) -> float:
    """The machine's own fp32 matrix-multiply throughput (GFLOP/s), measured now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9
