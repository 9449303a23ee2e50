"""How close float32 sampling stays to float64, and why (docs/speed.md, "Fidelity").

Boundary-broken ELS on the first N bundled digits (unconditional, as ``els bench`` runs it),
the paper's MNIST-ResNet patch schedule, 20 steps:

1. one float32 denoiser call against float64, at every step of the float64 trajectory;
2. final float32 samples against float64 ones, with the sampler's float64 update (the default)
   and with the whole state and update in float32;
3. how far the sampler carries a tiny error: float64 samples whose every denoiser output gets
   uniform noise of +-``--jitter``, against the exact float64 samples.

    python benchmarks/fidelity.py --n 500 --seeds 8
"""

from __future__ import annotations

import argparse
import time

import torch

import elsmachine as em
from elsmachine.experiments.metrics import pearson


class Jittered:
    """A denoiser whose outputs get uniform noise of +-eps (seeded)."""

    def __init__(self, m, eps, seed=0):
        self.m, self.eps, self.schedule = m, eps, m.schedule
        self.g = torch.Generator().manual_seed(seed)

    def denoise(self, x, t, labels=None):
        out = self.m.denoise(x, t, labels=labels)
        return out + (torch.rand(out.shape, generator=self.g, dtype=out.dtype) * 2 - 1) * self.eps


def float32_update(m, noise, steps):
    """DDIM with the state and the update in float32 (the sampler before its float64 update)."""
    sch, grid, x = m.schedule, em.ddim_grid(steps), noise.float()
    for t, tn in zip(grid[:-1].tolist(), grid[1:].tolist()):
        x0 = m.denoise(x, t)
        x = x0 if tn == 0 else sch.alpha(tn) * x0 + sch.sigma(tn) * (x - sch.alpha(t) * x0) / sch.sigma(t)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--jitter", type=float, default=1e-6)
    ap.add_argument("--out", default=None, help="Also write the figures as JSON.")
    a = ap.parse_args()
    t0 = time.perf_counter()
    Y = em.load_dataset("mnist5k").images[: a.n]
    m = em.ELSMachine(Y, patch_size="mnist-resnet-zeros")
    noise = em.seed_noise(list(range(a.seeds)), (1, 32, 32), dtype=torch.float64)
    calls = []
    x64 = em.ddim_sample(m, noise, steps=a.steps, callback=lambda i: calls.append(
        float((m.denoise(i["x"].float(), i["t"]).double() - i["x0_hat"]).abs().max())))
    x32 = em.ddim_sample(m, noise.float(), steps=a.steps)
    x32_old = float32_update(m, noise.float(), a.steps)
    jit = em.ddim_sample(Jittered(m, a.jitter), noise, steps=a.steps)

    def spread(x):
        d = (x.double() - x64).flatten(1).abs().max(1).values
        return {"min": float(d.min()), "median": float(d.median()), "max": float(d.max()),
                "min_r2": float((pearson(x, x64) ** 2).min())}

    report = {"n": a.n, "seeds": a.seeds, "steps": a.steps, "per_call_max": max(calls),
              "per_call_by_step": calls, "float32_samples": spread(x32),
              "float32_samples_float32_update": spread(x32_old), "jitter": a.jitter,
              "float64_jittered_samples": spread(jit), "seconds": time.perf_counter() - t0}
    print(f"one float32 denoiser call against float64 on the float64 trajectory: at most {report['per_call_max']:.2e}")
    for key, what in (("float32_samples", "float32 samples (float64 update)"),
                      ("float32_samples_float32_update", "float32 samples (float32 update)"),
                      ("float64_jittered_samples", f"float64 samples with +-{a.jitter:g} on every denoiser output")):
        s = report[key]
        print(f"{what} against float64, {a.seeds} seeds: max |difference| {s['min']:.2e} to {s['max']:.2e} "
              f"(median {s['median']:.2e}), 1 - r^2 at most {1 - s['min_r2']:.1e}")
    print(f"({report['seconds']:.0f} s)")
    if a.out:
        from elsmachine.files import write_json

        write_json(a.out, report)


if __name__ == "__main__":
    main()
