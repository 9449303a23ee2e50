"""Benchmark of the score machines: seconds per 20-step sample, candidate pairs per second,
achieved arithmetic against the machine's own fp32 matmul throughput, peak memory, and the
ratio to a straightforward implementation of the same math (:mod:`.baseline`), all measured in
one run.

The baseline is timed once per distinct patch size of the schedule, and its 20-step time is the
sum over the schedule's steps. Configurations timed against it are also sampled in float64, and
the report gives the largest difference of the float32 samples from those and their smallest
r^2 with them. With an approximate mode (``approx``: candidates from the nearest training images
only; ``radius``: candidates near the query pixel only) the exact machine is sampled from the
same noise for the speed-up and the fidelity (r^2).

Each configuration runs in a child process of its own, so its peak resident memory is its own;
the report also gives it less the peak of an idle child that only loads the data.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError
from .work import bench_names, flops_for, machine_kind, matmul_gflops, pairs_for

__all__ = ["BenchConfig", "bench_grid", "run_benchmark", "run_one", "pairs_per_sample", "BENCH_MACHINES"]

BENCH_MACHINES = bench_names()  # from the machines' declarations


@dataclass(frozen=True)
class BenchConfig:
    machine: str  # one of BENCH_MACHINES ("idle": load the data only)
    n: int
    batch: int
    steps: int = 20
    preset: str = "mnist-resnet-zeros"
    baseline: bool = False  # also time the straightforward implementation
    approx: int | None = None  # approximate mode: candidates from this many nearest images
    radius: int | None = None  # approximate mode: candidates within this many pixels of the query
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "auto"  # the engine of LS and ELS (auto, native, triton, triton-direct, triton-displacement, fused, explicit)


# The bench machines timed against a straightforward implementation: those run_one has one for.
def _declaration(bench_name: str):
    from ..machines import declaration_of

    return declaration_of(machine_kind(bench_name)[0])


BASELINE_MACHINES = tuple(m for m in BENCH_MACHINES if _declaration(m).baseline is not None)


def _check_configs(values: set[str], flag: str, machines: tuple[str, ...]) -> None:
    """Refuse an entry of ``flag`` that is not machine:n:batch with one of ``machines``: such an
    entry matches no configuration and would be dropped without a word."""
    for v in sorted(values):
        m, *rest = v.split(":")
        # Written as the grid spells them (no spaces, no leading zeros), else they would match nothing.
        if len(rest) != 2 or not all(p.isdigit() and str(int(p)) == p and int(p) > 0 for p in rest):
            raise InputError(f"{flag} {v!r} is not machine:n:batch (e.g. els-zeros:500:1; n and batch positive "
                             f"integers)")
        if m not in machines:
            why = f"no baseline for {m!r}" if m in BENCH_MACHINES else f"unknown machine {m!r}"
            raise InputError(f"{flag} {v!r}: {why}; machine:n:batch takes {', '.join(machines)}")


def bench_grid(machines: list[str], ns: list[int], batches: list[int], *, steps: int, baseline: set[str],
               skip: set[str], approx: list[int], radii: list[int], device: str = "cpu",
               backends: tuple[str, ...] = ("auto",)) -> list[BenchConfig]:
    """The configurations of one benchmark run: every machine x N x batch (less ``skip``; those
    named "machine:n:batch" in ``baseline`` also against the baseline), plus ELS zeros with
    each approximate setting (nearest images at batch 1, radius at batch 4)."""
    for m in machines:
        if m not in BENCH_MACHINES:
            raise InputError(f"unknown machine {m!r}; choose from {', '.join(BENCH_MACHINES)}")
    for what, vals in (("N", ns), ("batch", batches), ("--approx", approx)):
        if any(v < 1 for v in vals):
            raise InputError(f"{what} values must be positive integers, got {vals}")
    from ..machines import BACKENDS

    for be in backends:
        if be not in BACKENDS:
            raise InputError(f"unknown engine backend {be!r}; choose from {', '.join(BACKENDS)}")
    if any(r < 0 for r in radii):
        raise InputError(f"--approx-radius takes non-negative integers, got {radii}")
    gpu_only = [be for be in backends if be.startswith("triton")]
    if gpu_only and torch.device(device).type != "cuda":
        raise InputError(f"the {gpu_only[0]} backend needs a CUDA device; give --device cuda (not {device})")
    _check_configs(baseline, "--baseline", BASELINE_MACHINES)
    _check_configs(skip, "--skip", BENCH_MACHINES)
    cfgs = [BenchConfig(machine=m, n=n, batch=b, steps=steps, baseline=f"{m}:{n}:{b}" in baseline, device=device,
                        backend=be)
            for m in machines for be in (backends if set(backends) <= set(_declaration(m).backends) else ("auto",))
            for n in ns for b in batches if f"{m}:{n}:{b}" not in skip]
    for K in approx:
        if all(K >= n for n in ns):
            raise InputError(f"--approx {K}: no N is larger ({', '.join(map(str, ns))}), so there is nothing to approximate")
    approximated = next(m for m in BENCH_MACHINES if _declaration(m).default)  # ELS, zero padding
    cfgs += [BenchConfig(machine=approximated, n=n, batch=1, steps=steps, approx=K) for n in ns for K in approx if K < n]
    cfgs += [BenchConfig(machine=approximated, n=n, batch=4, steps=steps, radius=R) for n in ns for R in radii]
    if not cfgs:
        raise InputError("no configuration left to time")
    return cfgs


def _sizes(cfg: BenchConfig) -> list[int]:
    from ..noise import ddim_grid
    from ..patch_schedule import preset

    return preset(cfg.preset).sizes_for(ddim_grid(cfg.steps))


def _steps(cfg: BenchConfig) -> list[tuple[int, float]]:
    """(patch size, t) of each step of the run."""
    from ..noise import ddim_grid

    return list(zip(_sizes(cfg), ddim_grid(cfg.steps)[:-1].tolist()))


def pairs_per_sample(cfg: BenchConfig) -> int:
    """Pairs actually weighed: the approximate modes weigh only their nearest images or pixels."""
    n = min(cfg.n, cfg.approx) if cfg.approx else cfg.n
    return sum(pairs_for(cfg.machine, k, n, radius=cfg.radius, t=t) for k, t in _steps(cfg)) * cfg.batch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(cfg: BenchConfig) -> dict:
    """Time one configuration in this process (meant to run in a fresh child)."""
    from ..datasets import load_dataset
    from ..experiments.metrics import pearson
    from ..machines import MACHINES, declaration_of, make_machine, options_of
    from ..noise import ddim_grid
    from ..sampling import ddim_sample
    from ..seeds import seed_noise
    from .baseline import BASELINES

    ds = load_dataset("mnist5k")
    Y = ds.images[: cfg.n] if cfg.n <= len(ds) else ds.images.repeat(math.ceil(cfg.n / len(ds)), 1, 1, 1)[: cfg.n]
    if cfg.machine == "idle":  # the memory of a child that only loads the data
        return {**asdict(cfg), "peak_mb": _peak_rss_mb()}
    dt = getattr(torch, cfg.dtype)
    name, padding = machine_kind(cfg.machine)
    ks = cfg.preset if "patch_size" in options_of(name) else None

    decl = declaration_of(name)
    H, W = Y.shape[2:]

    def machine(**approx):
        takes = options_of(name)
        given = {"padding": padding, "patch_size": ks, **approx}
        if decl.bench_options is not None:  # a stand-in of the same cost for what a network would give
            given |= decl.bench_options(_sizes(cfg), ddim_grid(cfg.steps)[:-1].tolist(), H, W)
        given["backend"] = None if cfg.backend == "auto" else cfg.backend
        return make_machine(name, Y, **{k: v for k, v in given.items() if k in takes and v is not None})

    dev = torch.device(cfg.device)

    def sync():  # GPU work is asynchronous: time it to its end
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if cfg.radius is not None:  # candidates near the query: ELS within that radius
        radius_name = next(n for n in MACHINES if MACHINES[n].declaration.step_fields == ("radius",))
        m = make_machine(radius_name, Y, padding=padding, patch_size=ks, radii=cfg.radius,
                         **({} if cfg.backend == "auto" else {"backend": cfg.backend}))
    else:
        m = machine(approx_images=cfg.approx)
    noise = seed_noise(list(range(cfg.batch)), (1, 32, 32), dtype=dt, device=dev)
    ddim_sample(m, noise[:1], steps=2, patch_sizes=None if ks is None else [3, 3])  # warm up (compile, caches)
    sync()
    t0 = time.perf_counter()
    out = ddim_sample(m, noise, steps=cfg.steps)
    sync()
    seconds = time.perf_counter() - t0
    sizes = _sizes(cfg)
    flops = sum(flops_for(cfg.machine, k, min(cfg.n, cfg.approx or cfg.n), radius=cfg.radius, t=t)
                for k, t in _steps(cfg)) * cfg.batch
    pairs = pairs_per_sample(cfg)
    res = {**asdict(cfg), "seconds": seconds, "seconds_per_sample": seconds / cfg.batch, "pairs": pairs,
           "pairs_per_s": pairs / seconds, "gflops": flops / seconds / 1e9,
           "peak_mb": _peak_rss_mb(), "backend": _backend(m, noise)}
    how = m.engine_report() if hasattr(m, "engine_report") else {}
    if how:  # the Triton forms timed against each other at each patch size
        res["engine"] = how
    if decl.calibrates and decl.form == "softmax" and not decl.candidate and (
            dev.type != "cpu" or (cfg.baseline and decl.baseline is not None)):
        # Fidelity of the fast path: the same samples computed in float64 on the same engine
        # (on a GPU always; on the CPU beside the baseline).
        exact = ddim_sample(m, noise.double(), steps=cfg.steps)
        res["fidelity_max_abs"] = float((out.double() - exact).abs().max())
        res["fidelity_min_r2"] = float((pearson(out, exact) ** 2).min())
    if cfg.approx is not None or cfg.radius is not None:
        t1 = time.perf_counter()
        exact = ddim_sample(machine(), noise, steps=cfg.steps)
        exact_s = time.perf_counter() - t1
        r2 = pearson(out, exact) ** 2
        res.update({"exact_seconds": exact_s, "approx_speedup": exact_s / seconds,
                    "approx_min_r2": float(r2.min()), "approx_median_r2": float(r2.median()),
                    "approx_max_abs": float((out - exact).abs().max())})
    if cfg.baseline:
        res.update(BASELINES[decl.baseline](m, noise, Y, cfg, sizes, padding))
        res["speedup"] = res["baseline_seconds"] / seconds
    return res


def _backend(m, x) -> str:
    """Which engine form a machine ran on: the compiled kernel, attention by matrix products,
    or, for the peers, the formulation its cost model names (masked products, box sums, ...)."""
    if hasattr(m, "engine_name"):
        name = m.engine_name(x)
        if name.startswith("Triton"):
            return {"Triton": "triton-direct", "Triton displacement": "triton-displacement"}.get(name, "triton by size")
        return name
    from ..machines import cost_of

    return cost_of(m.name).form or m.declaration.form


def run_benchmark(configs: list[BenchConfig], *, on_result=None, timeout: float = 3600) -> dict:
    """Run every configuration in a child process; returns {"matmul_gflops", "results", ...}.
    A configuration that fails keeps its row, with the child's last line as "error"."""
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
