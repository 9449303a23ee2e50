"""Single-image diffusion: speed, and the denoiser against the published code (docs/single.md).

    python benchmarks/single.py time [--sizes 256x256,512x512] [--image chelsea] [--out docs/single/bench.json]
    python benchmarks/single.py published --published /tmp/esid [--out docs/single/published.json]

``time``: seconds for one sample per output size with the default pyramid (els single's defaults),
on whatever device torch uses here (CPU; on a GPU the torch form runs).

``published``: the published code's exact denoiser (haojunqiu/efficient-SID-code: its
ExactClosedFormDenoiser inside its ImageDenoiser, patch 15, fold_rho 0.2) from PATH, a scratch
copy outside this project (a folder holding ``published_exact.py``), beside this package's fold
readout and its ELS (centre) readout on the same image, the same pyramid scale and the same noise,
at several noise levels, and the seconds of one call of each. Nothing of the published code enters
the package. The published kernel is exp(-|x - alpha y|^2 / (2 sigma^2)) on its own flow schedule
(alpha = 1 - sigma); the same call on the cosine schedule is the time t with the same alpha / sigma,
and the query scaled by a(t) / alpha, which leaves every logit unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from elsmachine.experiments.single import SingleImageDenoiser, load_source, pyramid_shapes, resize, sample_single
from elsmachine.noise import CosineSchedule


def run_time(args) -> dict:
    src = load_source(args.image)
    rows = []
    for text in args.sizes.split(","):
        H, W = (int(v) for v in text.split("x"))
        t0 = time.perf_counter()
        r = sample_single(src, size=(H, W), seeds=[0])
        sec = time.perf_counter() - t0
        rows.append({"size": [H, W], "seconds": sec, "pyramid": r.settings["output_pyramid"],
                     "patch_sizes": r.settings["patch_sizes"], "copy": r.copies[0].to_dict()})
        print(f"{H}x{W}: {sec:.1f} s, scales {r.settings['output_pyramid']}", flush=True)
    return {"image": args.image, "threads": torch.get_num_threads(), "device": "cpu", "rows": rows}


def _t_for_snr(snr: float, sch: CosineSchedule) -> float:
    lo, hi = 1e-6, 1.0
    for _ in range(200):  # a / s falls with t
        mid = 0.5 * (lo + hi)
        if sch.alpha(mid) / sch.sigma(mid) > snr:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def run_published(args) -> dict:
    sys.path.insert(0, str(Path(args.published).resolve()))
    import published_exact as pub  # the scratch copy

    src = load_source(args.image)
    shapes = pyramid_shapes(*src.shape[1:], 0.5, 4)
    sch = CosineSchedule()
    rows = []
    for shape in [tuple(s) for s in shapes[: args.scales]]:
        S = resize(src[None], shape)[0].float()
        k = 15
        cfg = SimpleNamespace(bottleneck_dtype="bfloat16", query_chunks=1, patch_size=k, query_stride=1, fold_rho=0.2)
        dataset = pub.extract_patches(S, k).flatten(1)
        theirs = pub.ImageDenoiser(cfg, pub.ExactClosedFormDenoiser(cfg, dataset))
        fold = SingleImageDenoiser(S, k, readout="fold", fold_rho=0.2, schedule=sch)
        fold64 = SingleImageDenoiser(S.double(), k, readout="fold", fold_rho=0.2, schedule=sch)
        centre = SingleImageDenoiser(S, 7, "zeros", schedule=sch)
        g = torch.Generator().manual_seed(0)
        x0 = resize(resize(S[None], (max(1, shape[0] // 2), max(1, shape[1] // 2))), shape)
        eps = torch.randn(x0.shape, generator=g)
        for sigma in (0.9, 0.5, 0.2, 0.05):
            alpha = 1.0 - sigma  # their flow_linear schedule
            xt = alpha * x0 + sigma * eps  # the same noisy image for both
            sched = SimpleNamespace(alphas={1: torch.tensor(alpha)}, sigmas={1: torch.tensor(sigma)})
            t = _t_for_snr(alpha / sigma, sch)
            xq = xt * (sch.alpha(t) / alpha)
            t0 = time.perf_counter()
            a = theirs(xt, 1, sched)
            t_pub = time.perf_counter() - t0
            t0 = time.perf_counter()
            b = fold.denoise(xq, t)
            t_fold = time.perf_counter() - t0
            ref = fold64.denoise(xq.double(), t)
            t0 = time.perf_counter()
            c = centre.denoise(xq, t)
            t_centre = time.perf_counter() - t0
            rows.append({"shape": list(shape), "sigma": sigma, "t_cosine": t,
                         "max_abs_published_vs_fold": float((a.double() - b.double()).abs().max()),
                         "max_abs_published_vs_float64": float((a.double() - ref).abs().max()),
                         "max_abs_fold_vs_float64": float((b.double() - ref).abs().max()),
                         "rms_published_vs_els_centre": float((a - c).pow(2).mean().sqrt()),
                         "seconds_published": t_pub, "seconds_fold": t_fold, "seconds_els_centre": t_centre})
            print(json.dumps(rows[-1]), flush=True)
    return {"image": args.image, "threads": torch.get_num_threads(), "device": "cpu",
            "published": "haojunqiu/efficient-SID-code 85381e3c, exact backend, patch 15, fold_rho 0.2", "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("time")
    a.add_argument("--sizes", default="256x256,512x512")
    a.add_argument("--image", default="chelsea")
    a.add_argument("--out", default=None)
    b = sub.add_parser("published")
    b.add_argument("--published", required=True)
    b.add_argument("--image", default="chelsea")
    b.add_argument("--scales", type=int, default=2, help="How many of the pyramid's scales, coarsest first.")
    b.add_argument("--out", default=None)
    args = p.parse_args()
    res = run_time(args) if args.cmd == "time" else run_published(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
