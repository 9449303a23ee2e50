"""Candidate machines against a trained network, variant by variant (docs/theory.md, "Candidates
beyond ELS"): the search that fits a candidate's parameters on calibration seeds before
``els compare`` measures it on the evaluation seeds.

Every variant samples by DDIM from the same noise as the network (seeds --seed .., classes by
seed); each prints the median and mean Pearson r of its final images with the network's and the
share of seeds on which it beats the first variant. With --per-step, also the median r of each
variant's x0_hat with the network's along the network's own trajectory, step by step.

A variant is a machine name and its options, "name key=value ...". A value "c*k" is c times the
patch size of each step of the network's calibrated schedule (one value per step; or a comma
list with one item per step, each a number or "c*k"); "k+d" is the step's patch size plus d (a
patch schedule relative to the network's, e.g. els-border's border_patch_size=k+2); the key
"grow=g" widens that schedule by 2g pixels a step (a soft window's support).

    python benchmarks/candidates.py --model mnist5k-resnet --seeds 10 --seed 1000 \\
        --variant els --variant "els-soft sigma=0.5*k grow=2" --variant "els-tempered temperatures=1.2"
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import elsmachine as em
from elsmachine.experiments.metrics import pearson
from elsmachine.machines.registry import declaration_of
from elsmachine.networks.checkpoints import patch_schedule_beside


def build(spec: str, ds, net, schedule: em.PatchSchedule):
    name, *pairs = spec.split()
    opts = dict(p.split("=", 1) for p in pairs)
    grow = int(opts.pop("grow", 0))
    sizes = [min(k + 2 * grow, 2 * max(ds.images.shape[-2:]) - 1) for k in schedule.sizes]
    decl = declaration_of(name)
    for key, v in opts.items():
        opt = decl.option(key)
        if "*k" in v:  # "c*k", or one item per step: "inf,inf,0.3*k,..."
            items = v.split(",") if "," in v else [v] * len(schedule.sizes)
            opts[key] = [float(c[:-2]) * k if c.endswith("*k") else float(c) for c, k in zip(items, schedule.sizes)]
        elif v.startswith("k+") or v.startswith("k-"):  # a patch size relative to each step's: "k+2"
            opts[key] = [max(1, k + int(v[1:])) for k in sizes]
        elif opt is not None and opt.kind in (int, float):
            opts[key] = opt.kind(v)
    return em.make_machine(name, ds.images, labels=ds.labels, schedule=net.schedule,
                           patch_size=em.PatchSchedule(ts=schedule.ts, sizes=tuple(sizes)), **opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist5k-resnet")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--per-step", action="store_true")
    args = ap.parse_args()
    net = em.load_network(args.model)
    ds = em.load_dataset("mnist5k")
    schedule = em.PatchSchedule.load(patch_schedule_beside(args.model))
    seeds = list(range(args.seed, args.seed + args.seeds))
    labels = torch.tensor([em.class_of_seed(s, ds.classes) for s in seeds])
    noise = em.seed_noise(seeds, (1, 32, 32))
    points = []
    ref = em.ddim_sample(net, noise, steps=args.steps, labels=labels,
                         callback=lambda i: points.append((i["t"], i["x"], i["x0_hat"])))
    rs, per_step = {}, {}
    for spec in args.variant:
        m = build(spec, ds, net, schedule)
        t0 = time.perf_counter()
        out = em.ddim_sample(m, noise, steps=args.steps, labels=labels)
        rs[spec] = pearson(out, ref).tolist()
        if args.per_step:
            per_step[spec] = [statistics.median(pearson(m.denoise(x, t, labels), x0).tolist()) for t, x, x0 in points]
        base = rs[args.variant[0]]
        beats = sum(r > b for r, b in zip(rs[spec], base)) / len(base)
        print(f"{spec:>48}: median r {statistics.median(rs[spec]):.4f}  mean r {statistics.mean(rs[spec]):.4f}  "
              f"beats first {beats:4.0%}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.per_step:
        print("median r of x0_hat with the network's along its trajectory (t, calibrated k, then each variant):")
        for j, (t, _, _) in enumerate(points):
            print(f"  t={float(t):.2f} k={schedule.sizes[j]:2d} " + " ".join(f"{per_step[s][j]:.4f}" for s in args.variant))


if __name__ == "__main__":
    main()
