"""``els bench``: speed of the machines against this machine's matmul and a straightforward baseline."""

from __future__ import annotations

from pathlib import Path

import typer

from ..bench import BENCH_MACHINES
from ..errors import InputError
from .common import flag, out_console, parse_int_list, progress, resolve_device


def bench(
    machines: str = typer.Option("els-zeros,els-circular,ls,ideal", help="Comma list of " + ", ".join(BENCH_MACHINES) + "."),
    n: str = typer.Option("500,5000", help="Training-set sizes (bundled MNIST; repeated beyond 5,000)."),
    batch: str = typer.Option("1,16", help="Batch sizes."),
    steps: int = typer.Option(20, help="Steps of the paper's MNIST ResNet patch schedule."),
    baseline: str = typer.Option("els-zeros:500:1,locality:500:1", help="Configurations (machine:n:batch, comma list) also timed against a straightforward implementation (ELS and locality have one); 'none' for none."),
    skip: str = typer.Option("", help="Configurations (machine:n:batch, comma list) to leave out."),
    approx: str = typer.Option("", help="Approximate mode: also run ELS zeros, batch 1, for each N larger than K, with candidates from the K nearest images (comma list of K, e.g. 64,256; multiples of 64 fill the kernel blocks), against exact."),
    approx_radius: str = typer.Option("", help="Approximate mode: also run ELS zeros, batch 4, with candidates only within this many pixels of the query along each axis (comma list, e.g. 4,8), against exact."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N: where the machines run."),
    backend: str = typer.Option("auto", help="Engines of LS and ELS to time, comma list of auto, native, triton, triton-direct, triton-displacement, fused, explicit (each is a row; triton times its two forms per patch size and keeps the faster)."),
    quick: bool = flag("--quick", help="A tiny run (N = 64, batch 1 and 2, 4 steps) that checks the benchmark itself."),
    out: Path = typer.Option(Path("bench.json"), "--out", "-o", help="The JSON report to write."),
):
    """Time the machines: seconds per sample, candidate pairs per second, GFLOP/s against this
    machine's own fp32 matmul, peak memory, and the speed-up over a straightforward implementation."""
    from rich.table import Table

    from ..bench import bench_grid, run_benchmark
    from ..files import check_writable, write_json

    check_writable(out)
    names = [m.strip() for m in machines.split(",") if m.strip()]
    ns = [64] if quick else parse_int_list(n, "--n")
    bs = [1, 2] if quick else parse_int_list(batch, "--batch")
    st = 4 if quick else steps
    if st < 1:
        raise InputError(f"--steps must be >= 1, got {st}")
    base = set() if baseline == "none" else {v.strip() for v in baseline.split(",") if v.strip()}
    if quick and baseline != "none":
        base = {"els-zeros:64:1"}
    cfgs = bench_grid(names, ns, bs, steps=st, baseline=base, skip={v.strip() for v in skip.split(",") if v.strip()},
                      approx=parse_int_list(approx, "--approx") if approx.strip() else [],
                      radii=parse_int_list(approx_radius, "--approx-radius") if approx_radius.strip() else [],
                      device=str(resolve_device(device)),
                      backends=tuple(b.strip() for b in backend.split(",") if b.strip()) or ("auto",))
    with progress() as prog:
        task = prog.add_task("benchmark", total=len(cfgs))
        report = run_benchmark(cfgs, on_result=lambda r: prog.advance(task))
    write_json(out, report)
    tab = Table(title=f"{st}-step samples on {report['cpu']}, {report['threads']} threads; "
                      f"fp32 matmul {report['matmul_gflops']:.0f} GFLOP/s")
    for col in ("machine", "N", "batch", "s / sample", "pairs / s", "GFLOP/s", "of matmul", "+MB peak", "backend",
                "baseline s", "speed-up"):
        tab.add_column(col, justify="right")
    failed = []
    for r in report["results"]:
        if "error" in r:
            failed.append(r)
            continue
        label = r["machine"] + (f" approx {r['approx']}" if r.get("approx") else "") + (
            f" radius {r['radius']}" if r.get("radius") is not None else "")
        tab.add_row(label, str(r["n"]), str(r["batch"]), f"{r['seconds_per_sample']:.3f}",
                    f"{r['pairs_per_s']:.3g}", f"{r['gflops']:.1f}", f"{r['matmul_fraction']:.0%}",
                    f"{r.get('peak_mb_over_idle', r['peak_mb']):.0f}", r["backend"],
                    f"{r['baseline_seconds']:.1f}" if "baseline_seconds" in r else "",
                    f"{r['speedup']:.0f}x" if "speedup" in r else "")
    out_console().print(tab)
    for r in report["results"]:
        if "approx_speedup" in r:
            what = (f"{r['approx']} nearest of N={r['n']} images" if r.get("approx") else
                    f"candidates within {r['radius']} pixels, N={r['n']}, batch {r['batch']}")
            print(f"approximate ELS ({what}): {r['approx_speedup']:.1f}x faster than exact; "
                  f"final samples against exact: median r^2 {r['approx_median_r2']:.5f}, smallest {r['approx_min_r2']:.5f}"
                  + ("" if r["approx_min_r2"] >= 0.999 else " (below 0.999: not recommended)"))
        for where, how in r.get("engine", {}).items():
            for k, rec in how.get("triton", {}).items():
                times = ", ".join(f"{form} {1e3 * sec:.2f} ms" for form, sec in rec["seconds"].items())
                print(f"{r['machine']} N={r['n']} batch {r['batch']} on {where}, patch size {k}: Triton forms on "
                      f"{rec['probe_images']} images: {times}; kept {rec['form']}")
        if "fidelity_max_abs" in r:
            print(f"{r['machine']} ({r['backend']}) N={r['n']} batch {r['batch']}: float32 samples against float64: "
                  f"max |difference| {r['fidelity_max_abs']:.2e}, smallest r^2 {r['fidelity_min_r2']:.8f}"
                  + (f"; against the baseline: max |difference| {r['baseline_max_diff']:.2e}"
                     if "baseline_max_diff" in r else ""))
    print(f"wrote {out}")
    if failed:
        for r in failed:
            print(f"failed: {r['machine']} N={r['n']} batch {r['batch']}: {r['error']}")
        raise typer.Exit(1)
