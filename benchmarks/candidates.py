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

--fit fits one option per step: "name key=v1|v2|..." (other options fixed as in a variant) takes,
at each step of the network's own trajectory from the calibration seeds, the value whose x0_hat
has the largest median r with the network's x0_hat (ties to the first value), as a patch schedule
is calibrated. It prints the fitted per-step value, a --set item for els compare, and samples the
fitted variant beside the others. For wiener-els's weight, lambda W + (1 - lambda) E is scored
from the two denoisers' estimates, so any number of weights costs one ELS and one Wiener call.

    python benchmarks/candidates.py --model mnist5k-unet --seeds 10 --seed 1000 --variant els \\
        --fit "wiener-els wiener_weight=0|0.1|0.2|0.3|0.4|0.5|0.6|0.7|0.8|0.9|1"
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
        if "k" in v.replace("inf", ""):  # relative to each step's patch size; one item, or one per step
            items = v.split(",") if "," in v else [v] * len(sizes)
            opts[key] = [_relative(c, k, kk) for c, k, kk in zip(items, schedule.sizes, sizes)]
        elif opt is not None and opt.kind in (int, float):
            opts[key] = opt.kind(v)
    return em.make_machine(name, ds.images, labels=ds.labels, schedule=net.schedule,
                           patch_size=em.PatchSchedule(ts=schedule.ts, sizes=tuple(sizes)), **opts)


def _relative(item: str, k: int, grown: int):
    """One step's value: a number, "c*k" (c times the calibrated size k) or "k+d" / "k-d" (a patch
    size d from the step's own, grown by --grow)."""
    if item.endswith("*k"):
        return float(item[:-2]) * k
    if item.startswith(("k+", "k-")):
        return max(1, grown + int(item[1:]))
    if item == "k":
        return grown
    return float(item)


def fit(spec: str, ds, net, schedule, points, labels) -> str:
    """The variant ``spec`` with its one "key=v1|v2|..." option fitted per step (see --fit)."""
    name, *pairs = spec.split()
    fixed = [p for p in pairs if "|" not in p]
    grid = [p for p in pairs if "|" in p]
    if len(grid) != 1:
        raise SystemExit(f"--fit {spec!r}: give exactly one option with values a|b|c")
    key, _, text = grid[0].partition("=")
    values = text.split("|")
    if name == "wiener-els" and key == "wiener_weight":  # a mixture: two estimates serve every weight
        parts = [build(" ".join([name, *fixed, f"{key}={w}"]), ds, net, schedule) for w in (0, 1)]

        def estimates(x, t):
            e, w = (m.denoise(x, t, labels) for m in parts)
            return [float(v) * w + (1 - float(v)) * e for v in values]
    else:
        machines = [build(" ".join([name, *fixed, f"{key}={v}"]), ds, net, schedule) for v in values]

        def estimates(x, t):
            return [m.denoise(x, t, labels) for m in machines]

    chosen = []
    for j, (t, x, x0) in enumerate(points):
        scores = [statistics.median(pearson(e, x0).tolist()) for e in estimates(x, t)]
        best = max(range(len(values)), key=lambda i: (scores[i], -i))
        chosen.append(values[best])
        print(f"  fit t={float(t):.2f} k={schedule.sizes[j]:2d}: " + " ".join(
            f"{v}:{r:.4f}" for v, r in zip(values, scores)) + f"  -> {values[best]}", flush=True)
    fitted = " ".join([name, *fixed, f"{key}={','.join(chosen)}"])
    print(f"fitted: {fitted}\n  els compare --set {name}.{key}={','.join(chosen)}", flush=True)
    return fitted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist5k-resnet")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--fit", action="append", default=[], help='"name key=v1|v2|..." fitted per step')
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
    if not args.variant and not args.fit:
        ap.error("give at least one --variant or --fit")
    variants = list(args.variant)
    t0 = time.perf_counter()
    for spec in args.fit:
        variants.append(fit(spec, ds, net, schedule, points, labels))
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    rs, per_step = {}, {}
    for spec in variants:
        m = build(spec, ds, net, schedule)
        t0 = time.perf_counter()
        out = em.ddim_sample(m, noise, steps=args.steps, labels=labels)
        rs[spec] = pearson(out, ref).tolist()
        if args.per_step:
            per_step[spec] = [statistics.median(pearson(m.denoise(x, t, labels), x0).tolist()) for t, x, x0 in points]
        base = rs[variants[0]]
        beats = sum(r > b for r, b in zip(rs[spec], base)) / len(base)
        print(f"{spec:>48}: median r {statistics.median(rs[spec]):.4f}  mean r {statistics.mean(rs[spec]):.4f}  "
              f"beats first {beats:4.0%}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.per_step:
        print("median r of x0_hat with the network's along its trajectory (t, calibrated k, then each variant):")
        for j, (t, _, _) in enumerate(points):
            print(f"  t={float(t):.2f} k={schedule.sizes[j]:2d} " + " ".join(f"{per_step[s][j]:.4f}" for s in variants))


if __name__ == "__main__":
    main()
