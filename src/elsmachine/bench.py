"""Benchmark of the score machines: seconds per 20-step sample, candidate pairs per second,
achieved arithmetic against the machine's own fp32 matmul throughput, peak memory, and the
ratio to a straightforward implementation of the same math, all measured in one run.

A candidate pair is one output pixel weighed against one candidate patch, the unit of work
every formulation must do: boundary-broken ELS pairs each pixel with the pixels of its own
padding footprint in every image, circular ELS with every pixel of every image, LS with the
same pixel of every image, and IS (whose candidates are whole images) with every image.

The straightforward baseline ("per chunk: unfold the patches, full distance tensor,
softmax") is written here for the benchmark only: patches of a chunk of training images by
``unfold``, the full tensor of distances to every query patch by ``torch.cdist``, the
footprint mask, and a softmax merged across chunks. It is timed once per distinct patch size of the
schedule, and its 20-step time is the sum over the schedule's steps.

With ``approx``, the approximate mode (candidates from the nearest training images only) is
timed, and the exact machine sampled from the same noise for its speed-up and fidelity (r^2).

Configurations timed against the baseline are also sampled in float64, and the report gives
the largest difference of the float32 samples from those and their smallest r^2 with them.

Each configuration runs in a child process of its own, so its peak resident memory is its
own; the report also gives it less the peak of an idle child that only loads the data.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from .patches import row_classes

__all__ = ["BenchConfig", "run_benchmark", "pairs_per_sample", "matmul_gflops"]


@dataclass(frozen=True)
class BenchConfig:
    machine: str  # "els-zeros", "els-circular", "ls", "ideal" ("idle": load the data only)
    n: int
    batch: int
    steps: int = 20
    preset: str = "mnist-resnet-zeros"
    baseline: bool = False  # also time the straightforward implementation
    approx: int | None = None  # approximate mode: candidates from this many nearest images
    radius: int | None = None  # approximate mode: candidates within this many pixels of the query
    dtype: str = "float32"
    device: str = "cpu"


def _sizes(cfg: BenchConfig) -> list[int]:
    from .presets import preset
    from .schedule import ddim_grid

    return preset(cfg.preset).sizes_for(ddim_grid(cfg.steps))


def pairs_for(machine: str, k: int, n: int, H: int = 32, W: int = 32, radius: int | None = None) -> int:
    """Candidate pairs of one denoiser call for one image (``radius``: the approximate mode
    that keeps candidates within that many pixels of the query, ELS only)."""
    if radius is not None:
        return sum(rh * rw for rh, rw in _kernel_rectangles(machine, k, H, W, radius)) * n
    if machine == "els-zeros":
        return sum(((r1 - r0 + 1) * (c1 - c0 + 1)) ** 2 * n for r0, r1 in row_classes(H, k) for c0, c1 in row_classes(W, k))
    if machine == "els-circular":
        return (H * W) ** 2 * n
    if machine == "ls":
        return H * W * n
    return n  # ideal: one candidate (a whole image) per image


def pairs_per_sample(cfg: BenchConfig) -> int:
    """Pairs actually weighed: the approximate modes weigh only their nearest images or pixels."""
    n = min(cfg.n, cfg.approx) if cfg.approx else cfg.n
    return sum(pairs_for(cfg.machine, k, n, radius=cfg.radius) for k in _sizes(cfg)) * cfg.batch


def flops_for(machine: str, k: int, n: int, H: int = 32, W: int = 32, C: int = 1, radius: int | None = None) -> float:
    """Arithmetic the formulation actually does for one denoiser call and one image.

    Displacement form (LS, ELS), walking the kernel's groups and displacements: per
    displacement and image, the squared differences over the query rectangle grown by k - 1
    (3C flops a pixel); window sums down the columns and along the rows, k - 1 additions each
    when summed afresh (k < 7) or 3 by segments (prefix, suffix and their sum); then per pair
    the scale, max, exp (counted as 10), sum and weighted sum (2 + 2C). Attention form (IS):
    the logits' matrix product (2D flops a pair, D = C H W + 1), exp and weighted sum (2D)."""
    if machine == "ideal":
        D = C * H * W + 1
        return n * (4.0 * D + 10)
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
    from .displacement import groups_for

    kind, padding = ("ls", "zeros") if machine == "ls" else ("els", machine.split("-")[1])
    for qr0, qr1, qc0, qc1, dr0, dr1, dc0, dc1, pr0, pr1, pc0, pc1 in groups_for(kind, padding, H, W, k, radius).tolist():
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


# ----------------------------------------------------------------------------- baseline
def baseline_denoise(x, t, Y, k, padding="zeros", chunk_elems=1 << 25):
    """Straightforward boundary-broken or circular ELS: unfold, the full distance tensor,
    footprint mask, softmax merged across chunks of training images."""
    import torch.nn.functional as F

    from .schedule import CosineSchedule

    sch = CosineSchedule()
    a, s = sch.alpha(t), sch.sigma(t)
    B, C, H, W = x.shape
    h = k // 2

    def unfold(img):
        if padding == "circular":
            img = F.pad(img, (h, h, h, h), mode="circular") if h <= min(H, W) else img
            return F.unfold(img, k)
        return F.unfold(img, k, padding=h)

    q = unfold(x).transpose(1, 2)  # [B, HW, D]
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    fp = torch.stack([(h - ii).clamp(min=0), (ii + h - (H - 1)).clamp(min=0),
                      (h - jj).clamp(min=0), (jj + h - (W - 1)).clamp(min=0)], -1).view(H * W, 4)
    same = (fp[:, None, :] == fp[None, :, :]).all(-1) if padding == "zeros" else torch.ones(H * W, H * W, dtype=torch.bool)
    D = q.shape[-1]
    HW = H * W
    per = max(1, chunk_elems // (B * HW * HW))  # training images per chunk
    m = torch.full((B, HW), -math.inf)
    l = torch.zeros(B, HW)
    acc = torch.zeros(B, C, HW)
    for n0 in range(0, Y.shape[0], per):
        Yc = Y[n0 : n0 + per]
        c = unfold(Yc).transpose(1, 2)  # [n, HW, D]
        # The full distance tensor [B, HW, n * HW], by torch.cdist.
        dist = torch.cdist(q, (a * c).reshape(1, -1, D).expand(B, -1, -1)) ** 2
        logits = (-dist / (2 * s * s)).view(B, HW, c.shape[0], HW)
        logits = logits.masked_fill(~same[None, :, None, :], -math.inf).flatten(2)
        cm = logits.max(-1).values
        m_new = torch.maximum(m, cm)
        w = torch.exp(logits - m_new[..., None])
        r = torch.exp(m - m_new)
        vals = Yc.flatten(2).permute(1, 0, 2).reshape(C, -1)  # [C, n*HW]
        l = l * r + w.sum(-1)
        acc = acc * r[:, None] + torch.einsum("bqj,cj->bcq", w, vals)
        m = m_new
    return (acc / l[:, None]).view(B, C, H, W)


# ----------------------------------------------------------------------------- one config
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(cfg: BenchConfig) -> dict:
    """Time one configuration in this process (meant to run in a fresh child)."""
    from . import load_dataset, make_machine, seed_noise
    from .presets import preset
    from .sampler import ddim_sample
    from .schedule import ddim_grid

    ds = load_dataset("mnist5k")
    Y = ds.images[: cfg.n] if cfg.n <= len(ds) else ds.images.repeat(math.ceil(cfg.n / len(ds)), 1, 1, 1)[: cfg.n]
    if cfg.machine == "idle":  # the memory of a child that only loads the data
        return {**asdict(cfg), "peak_mb": _peak_rss_mb()}
    dt = getattr(torch, cfg.dtype)
    name, padding = (cfg.machine.split("-") + ["zeros"])[:2]
    m = make_machine(name, Y, padding=padding, approx_images=cfg.approx, approx_radius=cfg.radius)
    noise = seed_noise(list(range(cfg.batch)), (1, 32, 32), dtype=dt)
    ks = None if name == "ideal" else cfg.preset
    ddim_sample(m, noise[:1], steps=2, patch_sizes=None if ks is None else [3, 3])  # warm up (compile, caches)
    t0 = time.perf_counter()
    out = ddim_sample(m, noise, steps=cfg.steps, patch_sizes=ks)
    seconds = time.perf_counter() - t0
    sizes = _sizes(cfg)
    pairs = pairs_per_sample(cfg)
    flops = sum(flops_for(cfg.machine, k, min(cfg.n, cfg.approx or cfg.n), radius=cfg.radius) for k in sizes) * cfg.batch
    res = {**asdict(cfg), "seconds": seconds, "seconds_per_sample": seconds / cfg.batch, "pairs": pairs,
           "pairs_per_s": pairs / seconds, "gflops": flops / seconds / 1e9,
           "peak_mb": _peak_rss_mb(), "backend": _backend(m, noise)}
    if cfg.approx is not None or cfg.radius is not None:
        from .metrics import pearson

        exact_m = make_machine(name, Y, padding=padding)
        t1 = time.perf_counter()
        exact = ddim_sample(exact_m, noise, steps=cfg.steps, patch_sizes=ks)
        exact_s = time.perf_counter() - t1
        r2 = pearson(out, exact) ** 2
        res.update({"exact_seconds": exact_s, "approx_speedup": exact_s / seconds,
                    "approx_min_r2": float(r2.min()), "approx_median_r2": float(r2.median()),
                    "approx_max_abs": float((out - exact).abs().max())})
    if cfg.baseline and name == "els":
        per_k = {}
        grid = ddim_grid(cfg.steps)
        for k in sorted(set(sizes)):
            i = sizes.index(k)
            x = noise[:1] if cfg.batch == 1 else noise
            t1 = time.perf_counter()
            ref = baseline_denoise(x, float(grid[i]), Y, k, padding)
            per_k[k] = time.perf_counter() - t1
            fast = m.denoise(x, float(grid[i]), patch_size=k)
            res.setdefault("baseline_max_diff", 0.0)
            res["baseline_max_diff"] = max(res["baseline_max_diff"], float((fast - ref).abs().max()))
        base = sum(per_k[k] * c for k, c in Counter(sizes).items())
        res.update({"baseline_seconds": base, "baseline_per_k": per_k, "speedup": base / seconds})
        # Fidelity of the fast path: the same samples computed in float64.
        from .metrics import pearson

        exact = ddim_sample(m, noise.double(), steps=cfg.steps, patch_sizes=ks)
        res["fidelity_max_abs"] = float((out.double() - exact).abs().max())
        res["fidelity_min_r2"] = float((pearson(out, exact) ** 2).min())
    del out
    return res


def _backend(m, x) -> str:
    if m.name == "ideal":
        return "attention"
    return "native" if m._use_native(x) else "attention"


def run_benchmark(configs: list[BenchConfig], *, on_result=None, timeout: float = 3600) -> dict:
    """Run every configuration in a child process; returns {"matmul_gflops", "results"}."""
    peak = matmul_gflops()
    results = []
    idle = None
    for cfg in [BenchConfig(machine="idle", n=max(c.n for c in configs), batch=1)] + list(configs):
        cmd = [sys.executable, "-m", "elsmachine.bench", json.dumps(asdict(cfg))]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
        except subprocess.TimeoutExpired:
            res = {**asdict(cfg), "error": f"timed out after {timeout:.0f} s"}
        else:
            if proc.returncode != 0:
                res = {**asdict(cfg), "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            else:
                res = json.loads(proc.stdout.strip().splitlines()[-1])
        if cfg.machine == "idle":
            idle = res.get("peak_mb")
            continue
        if "gflops" in res:
            res["matmul_fraction"] = res["gflops"] / peak
        if idle is not None and "peak_mb" in res:
            res["peak_mb_over_idle"] = max(0.0, res["peak_mb"] - idle)
        results.append(res)
        if on_result is not None:
            on_result(res)
    return {"matmul_gflops": peak, "threads": torch.get_num_threads(), "results": results, "idle_peak_mb": idle,
            "cpu": _cpu_name(), "torch": torch.__version__}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    cfg = BenchConfig(**json.loads(sys.argv[1]))
    print(json.dumps(run_one(cfg)))
