"""The subset mode with its bound against the exact machines (docs/theory.md, "Subsets with a
bound"; docs/speed.md, "Subsets with a bound").

The training set: the bundled digits, each with ``--distortions`` small random affine
distortions (rotation up to 10 degrees, scale 0.9..1.1, shear up to 0.1, drawn from a fixed seed;
``F.affine_grid`` and ``grid_sample``, the background kept at -1), so 5,000 digits x 12 = 60,000
distinct images. Unconditional (as ``els bench``), or ``--conditional`` (each seed its class).
Boundary-broken ELS with the paper's MNIST-ResNet patch schedule, and IS, 20 DDIM steps, float32,
all seeds in one batch: each machine runs exactly, then once per setting of ``--subsets`` (counts
or shares of the class) and ``--bounds`` (subset_bound). For each it reports the speed-up over
exact, the median and smallest Pearson r between the subset's and the exact final samples, and per
step the subset size and the bound reached (the largest over the seeds and pixels, and the mean);
with ``--shares`` also the exact left-out share per step on the subset's own trajectory (one more
exact pass per step, after the timing), which says how loose the bound is.

    python benchmarks/subset.py --seeds 20                                   # 60,000 images
    python benchmarks/subset.py --digits 500 --distortions 4 --seeds 2 --shares
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

import elsmachine as em
from elsmachine.experiments.metrics import pearson


def distorted(images: torch.Tensor, copies: int, seed: int = 0) -> torch.Tensor:
    """``copies`` affine distortions of every image [n, C, H, W] in [-1, 1]: [n * copies, C, H, W],
    copy j of image i at row i * copies + j."""
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    m = n * copies
    angle = (torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(m, generator=g, dtype=torch.float64)
    shear = (torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1) * 0.1
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    sh = torch.eye(2, dtype=torch.float64).repeat(m, 1, 1)
    sh[:, 0, 1] = shear
    A = rot @ sh / scale.view(-1, 1, 1)  # the grid samples the source: dividing by the scale enlarges
    theta = torch.cat([A, torch.zeros(m, 2, 1, dtype=torch.float64)], -1).float()
    src = images.float().repeat_interleave(copies, 0) + 1.0  # background 0, so zeros outside stay background
    out = []
    for i0 in range(0, m, 4096):
        grid = F.affine_grid(theta[i0 : i0 + 4096], list(src[i0 : i0 + 4096].shape), align_corners=False)
        out.append(F.grid_sample(src[i0 : i0 + 4096], grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False))
    return (torch.cat(out) - 1.0).clamp(-1.0, 1.0)


def run(machine, noise, labels, steps, shares: bool):
    """(final samples, seconds, per-step report, per-step exact left-out share or None). The
    shares are measured after the timing, at each step's input as the sampler passed it."""
    inputs = []

    def keep(info):  # each step's input, to measure the share the bound bounds after the timing
        inputs.append((info["x"].clone(), info["t"]))

    t0 = time.perf_counter()
    out = em.ddim_sample(machine, noise, steps=steps, labels=labels, callback=keep if shares else None)
    seconds = time.perf_counter() - t0
    steps_report = list(getattr(machine, "subset_report", []))
    measured = None
    if shares:  # the largest over the seeds (and pixels), and the mean
        got = [machine.left_out_share(x, t, labels) for x, t in inputs]
        measured = [(float(g.max()), float(g.mean())) for g in got]
    return out, seconds, steps_report, measured


def settings(text: str, kind):
    return [kind(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", type=int, default=5000, help="Bundled digits to distort (at most 5,000; the same "
                    "number of each class).")
    ap.add_argument("--distortions", type=int, default=12, help="Random affine copies of each digit.")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--machines", default="els,ideal", help="Comma list of els and ideal.")
    ap.add_argument("--subsets", default="0.01,0.05", help="subset= settings: counts (100) or shares (0.05).")
    ap.add_argument("--bounds", default="", help="subset_bound= settings, e.g. 0.1,0.5.")
    ap.add_argument("--pool", type=int, default=4, help="subset_pool: the side of the pooled blocks.")
    ap.add_argument("--conditional", action="store_true", help="Each seed denoised against its class only.")
    ap.add_argument("--shares", action="store_true", help="Also measure the exact left-out share per step.")
    ap.add_argument("--out", default=None, help="Also write the figures as JSON.")
    a = ap.parse_args()
    t_start = time.perf_counter()
    ds = em.load_dataset("mnist5k")
    classes = sorted(set(ds.labels.tolist()))
    per = -(-a.digits // len(classes))  # the same number of every class (the bundled set is sorted by class)
    pick = torch.stack([torch.nonzero(ds.labels == c).flatten()[:per] for c in classes], 1).flatten()[: a.digits]
    Y = distorted(ds.images[pick], a.distortions)
    labels_all = ds.labels[pick].repeat_interleave(a.distortions)
    seeds = list(range(a.seeds))
    noise = em.seed_noise(seeds, tuple(Y.shape[1:]))
    labels = (torch.tensor([em.class_of_seed(s, sorted(set(labels_all.tolist()))) for s in seeds])
              if a.conditional else None)
    grid = em.ddim_grid(a.steps)
    report = {"n": Y.shape[0], "digits": a.digits, "distortions": a.distortions, "seeds": a.seeds, "steps": a.steps,
              "conditional": a.conditional, "pool": a.pool, "t": [float(v) for v in grid[:-1]], "runs": []}
    print(f"{Y.shape[0]} distorted digits, {a.seeds} seeds, {a.steps} steps, "
          f"{'conditional' if a.conditional else 'unconditional'}, float32")
    for name in settings(a.machines, str):
        opts = {"patch_size": "mnist-resnet-zeros", "padding": "zeros"} if name == "els" else {}

        def machine(name=name, opts=opts, **subset):
            return em.make_machine(name, Y, labels=labels_all if a.conditional else None, **opts, **subset)

        em.ddim_sample(machine(), noise[:1], steps=2, labels=None if labels is None else labels[:1],
                       **({"patch_sizes": [3, 3]} if name == "els" else {}))  # warm up (compile, caches)
        exact, exact_s, _, _ = run(machine(), noise, labels, a.steps, False)
        print(f"{name}: exact {exact_s:.1f} s")
        tried = [{"subset": v} for v in settings(a.subsets, lambda v: float(v) if "." in v else int(v))]
        tried += [{"subset_bound": v} for v in settings(a.bounds, float)]
        for setting in tried:
            m = machine(subset_pool=a.pool, **setting)
            out, secs, steps, measured = run(m, noise, labels, a.steps, a.shares)
            r = pearson(out, exact)
            row = {"machine": name, **setting, "seconds": secs, "exact_seconds": exact_s, "speedup": exact_s / secs,
                   "median_r": float(r.median()), "min_r": float(r.min()), "r": r.tolist(),
                   "size": [s["size"] for s in steps], "mean_size": [s["mean_size"] for s in steps],
                   "bound": [s["bound"] for s in steps], "mean_bound": [s["mean_bound"] for s in steps],
                   "left_out_share": None if measured is None else [v[0] for v in measured],
                   "mean_left_out_share": None if measured is None else [v[1] for v in measured]}
            report["runs"].append(row)
            what = ", ".join(f"{k}={v}" for k, v in setting.items())
            print(f"  {what}: {secs:.1f} s, {row['speedup']:.2f}x, r median {row['median_r']:.4f} "
                  f"(smallest {row['min_r']:.4f}, largest {float(r.max()):.4f})")
            for i, s in enumerate(steps):
                share = "" if measured is None else (f"; exact left-out share {measured[i][0]:.3g} "
                                                     f"(mean {measured[i][1]:.3g})")
                print(f"    t={s['t']:.2f}: size {s['size']} (mean {s['mean_size']:.0f}) of {s['of']}, "
                      f"bound {s['bound']:.3g} (mean {s['mean_bound']:.3g}){share}")
    report["seconds"] = time.perf_counter() - t_start
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
