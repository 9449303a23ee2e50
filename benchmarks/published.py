"""The authors' published ELS machine against this package's, timed in one run on the same case.

The published code is Kamb & Ganguli's own repository (github.com/Kambm/convolutional_diffusion,
MIT licence), read from a local checkout given by ``--published``; nothing of it is copied here.
Its machine comes from ``utils/idealscore.py`` of that checkout, loaded by path. That module
imports torchvision (and matplotlib) at module level. Where torchvision does not import, this
script puts an empty stand-in for ``torchvision``, ``torchvision.transforms``,
``torchvision.datasets`` and ``torchvision.models`` into ``sys.modules`` while the module loads
(the machine uses none of them) and takes the stand-in out again. The published dataset loader
(``utils/data.py``, torchvision's MNIST) is bypassed: the published machine gets the same
training tensors as ours, through a ``TensorDataset``.

The case is the published code's boundary-broken ELS on MNIST, batch 1, unconditional:

- the published machine: ``LocalEquivBordersScoreModule`` ("bbELS") with ``batch_size=256``
  (the default ``--scorebatchsize`` of its ``els_script.py``; ``--chunk`` changes it, and its demo
  notebook uses the module's own default, 64), ``cosine_noise_schedule`` (its "legacy" cosine),
  inside ``ScheduledScoreMachine(score_backbone=True, scales=...)``, called as
  ``machine(seed.clone(), device=cpu)`` (the script forces ``device``, which the published code
  would otherwise set to CUDA where CUDA exists). These are the objects ``els_script.py`` builds. The
  script itself does not run as published (it reads ``args.reduce_size`` and ``args.sfile``,
  which its parser never defines), so they are built here directly;
- its scales: ``files/scales_MNIST_ResNet_zeros.pt`` of the checkout (the calibrated patch
  sizes for MNIST ResNet with zero padding), [3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15,
  15, 15, 15, 15], the same list as this package's preset ``mnist-resnet-zeros``;
- its grid: ``ScheduledScoreMachine.forward`` with n = len(scales) = 20 takes the noise as x at
  t = 19/20 and makes 19 DDIM (eta = 0) steps t = i/20 -> (i - 1)/20, i = 19..1, the last one to
  t = 0, where abar = 1 and the step returns x0_hat. At t = i/20 it uses ``scales[i]``;
  ``scales[0]`` is never used.

This package's machine is configured to the same case:
``em.make_machine("els", images, patch_size=em.PatchSchedule(ts=(1/20, ..., 19/20),
sizes=(scales[1], ..., scales[19])), padding="zeros", schedule=em.CosineSchedule())``, sampled by
``em.ddim_sample(m, noise, ts=[19/20, ..., 1/20, 0])``. Its own defaults differ in two ways that
are overridden here (docs/theory.md, "Forward process and time grid"): it starts at t = 1 on 20
steps, and its preset gives the size sizes[i - 1] to t = i/20, where the published code reads
``scales[i]`` (one step off). The schedule is the same: ``em.CosineSchedule()`` is abar(t) =
cos(t / 1.008 * pi / 2)^2, which is the published ``cosine_noise_schedule`` (mode "legacy").

Where the math is the same, and where it is not:

- Candidates: the same. The published bbELS compares an interior pixel with every interior
  patch of every image, an edge pixel with the patches at the same distance from that edge, a
  corner pixel with the same corner, all zero padded. That is this package's footprint rule
  (docs/theory.md, "Padding footprints"). One denoiser call agrees with ours to about 6e-6 in
  x0_hat (float32, checked at k = 3, 11, 15). The published bbELS sums its chunks with a running max, so its
  chunking does not change its result; the per-chunk averaging that docs/theory.md notes is in its other modules
  (circular ELS, LS, IS), not here. Its LS fallback (for k >= 32) is never reached (the largest
  size is 15).
- Sampler: the same DDIM step. The published one is written on the noise estimate, in float32
  throughout, with a and s computed from a float32 t. Ours keeps the state and the update in
  float64 and feeds the float32 machine x in float32 (docs/theory.md, "Sampling"). The two
  float32 runs therefore differ by rounding only, which 19 steps carry to the figures below.
- Data: the published code reads torchvision's MNIST at 28x28 and resizes it to 32x32 (PIL
  bilinear on uint8, then to [-1, 1]). The bundled digits (``em.load_dataset('mnist5k')``, the
  first ``--n`` of them, unconditional) are padded to 32x32 with the background value -1 instead. Both
  machines get the same tensors, so this does not affect agreement. ``--resize bilinear``
  crops the padding off and resizes the 28x28 digits bilinearly in float (as
  ``em.load_dataset('mnist', resize='bilinear')`` does). That is closer to the published data,
  but it is not PIL's uint8 path.

What is timed: one batch-1 sample from the same noise (``em.seed_noise``, float32) per seed,
published and ours alternating, ``--repeats`` times. Before timing, one untimed call of ours
compiles or loads its kernel. Both run in float32 on the CPU with ``--threads`` threads (default
1). Our compiled kernel takes its thread count from torch, as the published code's torch calls
do, so the ratio compares like with like. Also, untimed in the ratio: our float64 machine from the same noise,
as the reference both float32 runs are compared with. Agreement of the final samples: max abs
difference and Pearson r per seed.

    python benchmarks/published.py --published /tmp/convdiff --seeds 0,1 --out /tmp/published.json

The checkout needs ``utils/idealscore.py`` and ``files/scales_MNIST_ResNet_zeros.pt`` only. A stored
copy of the repository may lack its network checkpoints (``files/backbone_*.pt``, kept out of
git's objects), so a plain clone fails at checkout. Clone without checking out, then check out
everything else:

    git clone --no-checkout <repository or mirror> /tmp/convdiff && cd /tmp/convdiff
    git ls-tree -r --name-only HEAD | grep -v '^files/backbone_' | xargs -d '\\n' git checkout HEAD --

Measured on this project's 2-core AMD EPYC with nothing else running, float32, both cores each
(``--threads 2``), Kambm/convolutional_diffusion at 6a87f3f (2025-06-19), N = 500, seeds 0 and 1,
one repeat (``python benchmarks/published.py --published /tmp/convdiff --seeds 0,1 --threads 2
--out docs/bench/published.json``, 10 min):

| seed | published s | ours s | ratio | max abs diff | 1 - Pearson r | published - f64 | ours - f64 |
| --- | --- | --- | --- | --- | --- | --- | --- |
| 0 | 137.2 | 3.80 | 36.1x | 1.52e-05 | 8.9e-13 | 1.57e-05 | 1.80e-06 |
| 1 | 134.7 | 3.96 | 34.0x | 1.05e-05 | 7.6e-13 | 1.07e-05 | 6.23e-06 |

(max abs diff and 1 - Pearson r: published against ours; the last two columns: max abs
difference of each from our float64 run.) Mean seconds per sample: published 136.0, ours 3.88,
ratio 35.0x. Each final sample is the last x0_hat, a weighted average of training pixels, so it
lies in [-1, 1]; ours stays within 6.2e-6 of float64, the published float32 run within 1.6e-5.
With 1 thread each, beside two other long jobs, the ratio was 29.2x and 39.1x (published 246 and
313 s, ours 6.3 and 10.8 s); with the demo notebook's chunk of 64, 26.5x under heavier load. Most
of the published time goes to the small sizes, where it forms the full [candidates x pixels]
tensors: one k = 3 call took 36 s at chunk 256 (1 thread, loaded), one k = 15 call 6 s.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

import elsmachine as em
from elsmachine.experiments.metrics import pearson

SCALES_FILE = "files/scales_MNIST_ResNet_zeros.pt"


def load_published(root: Path):
    """The published ``utils/idealscore.py``, loaded by path (a stand-in torchvision while it loads
    where the real one does not import)."""
    src = root / "utils" / "idealscore.py"
    if not src.exists():
        sys.exit(f"{src} does not exist: --published must be a checkout of Kambm/convolutional_diffusion")
    stubbed = []
    try:
        importlib.import_module("torchvision")
    except (ImportError, OSError, RuntimeError, AttributeError):  # not installed, or broken against this torch
        tv = types.ModuleType("torchvision")
        stubbed.append("torchvision")
        sys.modules["torchvision"] = tv
        for sub in ("transforms", "datasets", "models"):
            m = types.ModuleType(f"torchvision.{sub}")
            setattr(tv, sub, m)
            sys.modules[m.__name__] = m
            stubbed.append(m.__name__)
    try:
        spec = importlib.util.spec_from_file_location("convdiff_idealscore", src)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)
    return mod, bool(stubbed)


def revision(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def training_set(n: int, resize: str) -> torch.Tensor:
    Y = em.load_dataset("mnist5k").images[:n].float()
    if resize == "bilinear":  # undo the bundled 2-pixel pad, then resize 28 -> 32 as the paper's code did
        Y = torch.nn.functional.interpolate(Y[:, :, 2:30, 2:30], size=(32, 32), mode="bilinear",
                                            align_corners=False).clamp(-1, 1)
    return Y.contiguous()


def agreement(x: torch.Tensor, ref: torch.Tensor) -> dict:
    return {"max_abs": float((x.double() - ref.double()).abs().max()), "pearson_r": float(pearson(x, ref)[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--published", required=True, type=Path, help="Checkout of Kambm/convolutional_diffusion.")
    ap.add_argument("--n", type=int, default=500, help="Training digits (the first N bundled ones).")
    ap.add_argument("--seeds", default="0,1", help="Comma-separated noise seeds, one batch-1 sample each.")
    ap.add_argument("--repeats", type=int, default=1, help="Timed repetitions of every seed, alternating.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both machines.")
    ap.add_argument("--chunk", type=int, default=256, help="The published machine's batch_size (els_script: 256).")
    ap.add_argument("--resize", choices=("pad", "bilinear"), default="pad")
    ap.add_argument("--no-float64", action="store_true", help="Skip our float64 reference run.")
    ap.add_argument("--out", default=None, help="Also write the figures as JSON.")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")

    ids, stubbed = load_published(a.published)
    scales = [int(s) for s in torch.load(a.published / SCALES_FILE)]
    nsteps = len(scales)
    # The published grid: noise as x at (n-1)/n, then i/n -> (i-1)/n for i = n-1..1; scales[i] at t = i/n.
    grid = torch.tensor([i / nsteps for i in range(nsteps - 1, 0, -1)] + [0.0], dtype=torch.float64)
    pschedule = em.PatchSchedule(ts=tuple(i / nsteps for i in range(1, nsteps)), sizes=tuple(scales[1:]))

    Y = training_set(a.n, a.resize)
    ds = torch.utils.data.TensorDataset(Y, torch.zeros(len(Y), dtype=torch.long))
    backbone = ids.LocalEquivBordersScoreModule(ds, batch_size=a.chunk, image_size=32, channels=1,
                                                schedule=ids.cosine_noise_schedule)
    theirs = ids.ScheduledScoreMachine(backbone, in_channels=1, noise_schedule=ids.cosine_noise_schedule,
                                       score_backbone=True, scales=scales).to(cpu)
    ours = em.make_machine("els", Y, patch_size=pschedule, padding="zeros", schedule=em.CosineSchedule())
    noise = em.seed_noise(seeds, (1, 32, 32))
    ours.denoise(noise[:1], float(grid[0]))  # untimed: compiles or loads the kernel

    times = {"published": {s: [] for s in seeds}, "ours": {s: [] for s in seeds}}
    out = {"published": {}, "ours": {}}
    for r in range(a.repeats):
        for s, x in zip(seeds, noise):
            x = x[None]
            t0 = time.perf_counter()
            y = theirs(x.clone(), device=cpu)
            times["published"][s].append(time.perf_counter() - t0)
            out["published"][s] = y.detach()
            t0 = time.perf_counter()
            y = em.ddim_sample(ours, x, ts=grid)
            times["ours"][s].append(time.perf_counter() - t0)
            out["ours"][s] = y
            print(f"repeat {r} seed {s}: published {times['published'][s][-1]:.1f} s, "
                  f"ours {times['ours'][s][-1]:.2f} s", flush=True)

    ref = {}
    if not a.no_float64:
        m64 = em.make_machine("els", Y.double(), patch_size=pschedule, padding="zeros", schedule=em.CosineSchedule())
        for s, x in zip(seeds, noise):
            ref[s] = em.ddim_sample(m64, x[None].double(), ts=grid)

    def mean(v):
        return sum(v) / len(v)

    per = {k: mean([t for s in seeds for t in times[k][s]]) for k in times}
    rows = []
    for s in seeds:
        row = {"seed": s, "published_s": mean(times["published"][s]), "ours_s": mean(times["ours"][s]),
               "published_vs_ours": agreement(out["published"][s], out["ours"][s])}
        if ref:
            row["published_vs_float64"] = agreement(out["published"][s], ref[s])
            row["ours_vs_float64"] = agreement(out["ours"][s], ref[s])
        rows.append(row)

    print(f"\nboundary-broken ELS, N = {a.n} MNIST digits ({a.resize}), batch 1, {len(grid) - 1} steps "
          f"t = {float(grid[0]):g} .. {float(grid[-2]):g} -> 0, sizes {list(pschedule.sizes)[::-1]} (highest t first), "
          f"float32, {a.threads} thread(s), published chunk {a.chunk}\n")
    head = "| seed | published s | ours s | ratio | max abs diff | 1 - Pearson r |"
    if ref:
        head += " published - f64 | ours - f64 |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for row in rows:
        line = (f"| {row['seed']} | {row['published_s']:.1f} | {row['ours_s']:.2f} | "
                f"{row['published_s'] / row['ours_s']:.1f}x | {row['published_vs_ours']['max_abs']:.2e} | "
                f"{1 - row['published_vs_ours']['pearson_r']:.1e} |")
        if ref:
            line += f" {row['published_vs_float64']['max_abs']:.2e} | {row['ours_vs_float64']['max_abs']:.2e} |"
        print(line)
    print(f"\nmean s / sample: published {per['published']:.1f}, ours {per['ours']:.2f}, "
          f"ratio {per['published'] / per['ours']:.1f}x")

    if a.out:
        from elsmachine.files import write_json

        write_json(a.out, {
            "published": {"path": str(a.published), "commit": revision(a.published), "scales_file": SCALES_FILE,
                          "chunk": a.chunk, "torchvision_stubbed": stubbed},
            "n": a.n, "resize": a.resize, "seeds": seeds, "repeats": a.repeats, "threads": a.threads,
            "dtype": "float32", "grid": grid.tolist(), "scales": scales,
            "patch_schedule": pschedule.to_dict(), "schedule": em.CosineSchedule().to_dict(),
            "seconds_per_sample": {"published": per["published"], "ours": per["ours"],
                                   "ratio": per["published"] / per["ours"]},
            "times": {k: {str(s): v for s, v in d.items()} for k, d in times.items()},
            "per_seed": rows,
        })


if __name__ == "__main__":
    main()
