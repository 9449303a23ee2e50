"""The GPU benchmark: both Triton forms of LS and ELS and the GPU paths of the other machines, on
synthetic sets the size of the real ones, timed and checked against float64 (docs/theory.md, "How
it computes"; docs/scale.md, "GPU kernels").

Sets (each built from a fixed seed, no download):
- colour-5k, colour-50k: 5,000 and 50,000 smooth random colour images of 3 x 32 x 32 (Gaussian
  noise at 8 x 8, upsampled bilinearly, squashed by tanh into [-1, 1]): CIFAR-10's shape and size;
- mnist-60k: the bundled 5,000 digits, each with 12 small random affine distortions (rotation,
  scale, shear; ``distorted`` of benchmarks/subset.py): 60,000 distinct 1 x 32 x 32 digits, full
  MNIST's size.

Per set, machine, engine form and batch (1 and 16): one 20-step DDIM sample from the same noise,
after one untimed call that compiles the kernels, timed with the device synchronised; the patch
schedules are the paper's (CIFAR-10 and MNIST ResNet, zero padding). Fidelity: the same sample in
float64 on a slice of the set (the first --fidelity-n images), and the largest difference of the
final float32 sample from it. A configuration whose time, estimated from its batch-1 run, would
pass --limit seconds is skipped and recorded as skipped. Results go to OUT/gpu-bench.json as
they come (rewritten atomically) and the table is printed at the end.

    bash benchmarks/gpu.sh OUT            (on a CUDA machine: installs, then runs this)
    python benchmarks/gpu.py OUT --device cpu --sets colour-5k --n-scale 0.01   (a dry run)

Targets (the issue this answers): 20 steps of boundary-broken ELS over 50,000 colour images at
batch 1 in under 1 s; over 5,000 MNIST digits in under 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import elsmachine as em
from subset import distorted  # benchmarks/subset.py: the same 60,000 distorted digits

SETS = {"colour-5k": (5000, 3), "colour-50k": (50000, 3), "mnist-60k": (60000, 1), "mnist-5k": (5000, 1)}
SCHEDULES = {3: "cifar10-resnet-zeros", 1: "mnist-resnet-zeros"}
# machine label -> (machine name, its options)
MACHINES = {
    "els-zeros": ("els", {"padding": "zeros"}),
    "els-circular": ("els", {"padding": "circular"}),
    "ls": ("ls", {}),
    "ideal": ("ideal", {}),
    "nearest": ("nearest", {}),
    "wiener": ("wiener", {}),
    "locality": ("locality", {}),
}
PATCH = {"els-zeros", "els-circular", "ls"}


def colour_set(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 8, 8, generator=g)
    return torch.tanh(F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False))


def make_set(name: str, scale: float) -> torch.Tensor:
    n, C = SETS[name]
    n = max(64, int(n * scale))
    if C == 3:
        return colour_set(n)
    if name == "mnist-5k":
        return em.load_dataset("mnist5k").images.float()[:n]
    return distorted(em.load_dataset("mnist5k").images, max(1, round(12 * scale)))[:n]


def sample(machine, noise, steps: int, device) -> tuple[torch.Tensor, float]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    t0 = time.perf_counter()
    out = em.ddim_sample(machine, noise, steps=steps)
    sync()
    return out, time.perf_counter() - t0


def build(label: str, images: torch.Tensor, backend: str | None):
    name, opts = MACHINES[label]
    if label in PATCH:
        opts = {**opts, "patch_size": SCHEDULES[images.shape[1]]}
    if backend is not None:
        opts = {**opts, "backend": backend}
    return em.make_machine(name, images, **opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sets", default="colour-5k,colour-50k,mnist-60k,mnist-5k")
    ap.add_argument("--machines", default=",".join(MACHINES))
    ap.add_argument("--forms", default="triton-direct,triton-displacement",
                    help="engine backends of LS and ELS; the other machines run on their own GPU path")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fidelity-n", type=int, default=2000)
    ap.add_argument("--limit", type=float, default=40.0, help="skip a configuration estimated to take longer (s)")
    ap.add_argument("--n-scale", type=float, default=1.0, help="shrink every set by this factor (dry runs)")
    args = ap.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu-bench.json"
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "torch": torch.__version__, "steps": args.steps}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    rows: list[dict] = []

    def save():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
        os.replace(tmp, path)

    batches = [int(b) for b in args.batch.split(",")]
    forms = [f for f in args.forms.split(",") if f]
    t_start = time.perf_counter()
    for set_name in args.sets.split(","):
        images = make_set(set_name, args.n_scale)
        Yd = images.to(device)
        C = images.shape[1]
        for label in args.machines.split(","):
            for backend in (forms if label in PATCH else [None]):
                single = None
                for B in batches:
                    row = {"set": set_name, "n": images.shape[0], "C": C, "machine": label,
                           "form": backend or "own", "batch": B}
                    if single is not None and single * B > args.limit and B > 1:
                        row["skipped"] = f"estimated {single * B:.0f} s from batch 1"
                        rows.append(row)
                        save()
                        continue
                    try:
                        m = build(label, Yd, backend)
                        noise = em.seed_noise(list(range(B)), (C, 32, 32), device=device)
                        em.ddim_sample(m, noise[:1], steps=2)  # compiles the kernels, fills caches
                        out, secs = sample(m, noise, args.steps, device)
                    except Exception as e:  # noqa: BLE001 - a form that fails is a result
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                        rows.append(row)
                        save()
                        print(row, flush=True)
                        break
                    row["seconds"] = secs
                    row["engine"] = m.describe().get("engine")
                    if B == 1:
                        single = secs
                        k = min(args.fidelity_n, images.shape[0])
                        m32 = build(label, Yd[:k], backend)
                        m64 = build(label, Yd[:k].double(), backend)
                        a32 = em.ddim_sample(m32, noise[:1], steps=args.steps)
                        a64 = em.ddim_sample(m64, noise[:1].double(), steps=args.steps)
                        row["fidelity_n"] = k
                        row["max_abs_vs_float64"] = float((a32.double() - a64).abs().max())
                    rows.append(row)
                    save()
                    print(f"{set_name:10s} {label:12s} {row['form']:20s} B={B:2d}: {secs:8.3f} s"
                          + (f"  |f32-f64| {row['max_abs_vs_float64']:.1e}" if "max_abs_vs_float64" in row else ""),
                          flush=True)
        del Yd
    info["total_seconds"] = time.perf_counter() - t_start
    save()
    print(f"total {info['total_seconds']:.0f} s; {path}")


if __name__ == "__main__":
    main()
