"""Which closed-form machine predicts which network: the candidates beyond ELS (docs/theory.md,
"Candidates beyond ELS") fitted to each shipped network on calibration seeds, then every machine
and the fitted candidates compared with it on the evaluation seeds, and one table across the
networks.

Three steps, each resumable (a rerun does only what is missing):

    python benchmarks/networks.py fit        # per network and candidate, each value of its grid
                                             # sampled on seeds 1000-1009; docs/networks/fits.json
    python benchmarks/networks.py compare    # els compare --machines all plus the fitted
                                             # candidates, seeds 0-99, one folder per network
    python benchmarks/networks.py table      # the README's table across the networks

A candidate's value is the one of its grid whose DDIM samples have the largest median Pearson r
with the network's on the calibration seeds (the grid leaves out the value at which the
candidate is ELS). ``--networks`` and ``--candidates`` take comma lists; ``--seeds`` the number
of evaluation seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# network -> comparison folder
NETWORKS = {
    "mnist5k-resnet": "docs/compare",
    "mnist5k-resnet-s1": "docs/compare-resnet-s1",
    "mnist5k-unet": "docs/compare-unet",
    "mnist5k-unet-s1": "docs/compare-unet-s1",
    "mnist5k-attn-unet": "docs/compare-attn-unet",
    "mnist5k-attn-unet-s1": "docs/compare-attn-unet-s1",
}
# candidate -> (option, grid of values as benchmarks/candidates.py reads them)
GRIDS = {
    "wiener-els": ("wiener_weight", ["0.2", "0.35", "0.5"]),
    "els-tempered": ("temperatures", ["0.7", "1.4"]),
    "els-border": ("border_patch_size", ["k-2", "k+2", "k+4"]),
    "els-attention": ("attention_weight", ["0.3"]),
    "els-soft": ("sigma", ["0.5*k"]),
}
FITS = ROOT / "docs" / "networks" / "fits.json"
CAL_SEEDS = list(range(1000, 1010))


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def fit(networks, candidates, steps: int) -> None:
    import torch

    import elsmachine as em
    from candidates import build
    from elsmachine.experiments.metrics import pearson
    from elsmachine.networks.checkpoints import patch_schedule_beside

    fits = _load(FITS)
    ds = em.load_dataset("mnist5k")
    for name in networks:
        net = em.load_network(name)
        schedule = em.PatchSchedule.load(patch_schedule_beside(name))
        labels = torch.tensor([em.class_of_seed(s, ds.classes) for s in CAL_SEEDS])
        noise = em.seed_noise(CAL_SEEDS, ds.images.shape[1:])
        ref = None
        entry = fits.setdefault(name, {"seeds": CAL_SEEDS, "steps": steps, "candidates": {}})
        todo = [("els", None, None)] + [(c, *GRIDS[c]) for c in candidates]
        for cand, key, values in todo:
            rec = entry["candidates"].setdefault(cand, {"option": key, "values": {}})
            for v in values or [None]:
                label = "els" if v is None else v
                if label in rec["values"]:
                    continue
                if ref is None:
                    ref = em.ddim_sample(net, noise, steps=steps, labels=labels)
                spec = cand if v is None else f"{cand} {key}={v}"
                machine = build(spec, ds, net, schedule)
                t0 = time.perf_counter()
                out = em.ddim_sample(machine, noise, steps=steps, labels=labels)
                rs = pearson(out, ref).tolist()
                rec["values"][label] = {"median_r": statistics.median(rs), "mean_r": statistics.mean(rs), "r": rs,
                                        "seconds": time.perf_counter() - t0}
                _save(FITS, fits)
                print(f"{name} {spec}: median r {statistics.median(rs):.4f} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            if values:
                rec["chosen"] = max(values, key=lambda v: rec["values"][v]["median_r"])
                _save(FITS, fits)


def _setting(name: str, cand: str, fits: dict) -> str:
    """The --set item of a fitted candidate: its value spelled per step as els compare takes it."""
    import elsmachine as em
    from candidates import _relative
    from elsmachine.networks.checkpoints import patch_schedule_beside

    rec = fits[name]["candidates"][cand]
    v = rec["chosen"]
    if "k" in v.replace("inf", ""):
        sizes = em.PatchSchedule.load(patch_schedule_beside(name)).sizes
        v = ",".join(str(_relative(v, k, k)) for k in sizes)
    return f"{cand}.{rec['option']}={v}"


def compare(networks, candidates, seeds: int) -> None:
    fits = _load(FITS)
    for name in networks:
        fitted = [c for c in candidates if "chosen" in fits.get(name, {}).get("candidates", {}).get(c, {})]
        cmd = ["els", "compare", "--model", name, "--machines", ",".join(["all", *fitted]),
               "--seeds", str(seeds), "--out", str(ROOT / NETWORKS[name])]
        for c in fitted:
            cmd += ["--set", _setting(name, c, fits)]
        print(" ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


LABELS = {"els": "ELS (calibrated)", "ideal": "IS", "ls": "LS", "nearest": "nearest neighbour", "wiener": "Wiener",
          "stationary": "stationary Gaussian", "locality": "analytic locality", "pspc": "PSPC square",
          "pspc-flex": "PSPC flex", "golddiff": "GoldDiff", "smoothed": "smoothed closed-form"}


def table(networks) -> None:
    """Median r per machine and network, and for each machine the share of seeds it beats ELS on."""
    sums = {}
    for name in networks:
        path = ROOT / NETWORKS[name] / "summary.json"
        if path.exists():
            sums[name] = json.loads(path.read_text())
    if not sums:
        raise SystemExit("no comparison has a summary.json yet: run the compare step")
    machines: list[str] = []
    for s in sums.values():
        for m in s["machines"]:
            if m not in machines:
                machines.append(m)
    short = [n.replace("mnist5k-", "") for n in sums]
    print("| machine | " + " | ".join(f"{n} median r (beats ELS)" for n in short) + " |")
    print("| --- |" + " --- |" * len(sums))
    for m in machines:
        cells = []
        for s in sums.values():
            rec = s["machines"].get(m)
            if rec is None:
                cells.append("")
                continue
            beats = rec.get("beats_els")
            cells.append(f"{rec['median_r']:.3f}" + ("" if m == "els" or beats is None else f" ({beats:.0%})"))
        print(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["fit", "compare", "table"])
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--candidates", default=",".join(GRIDS))
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    networks = [n for n in args.networks.split(",") if n]
    for n in networks:
        if n not in NETWORKS:
            raise SystemExit(f"unknown network {n!r}; choose from {', '.join(NETWORKS)}")
    candidates = [c for c in args.candidates.split(",") if c]
    for c in candidates:
        if c not in GRIDS:
            raise SystemExit(f"unknown candidate {c!r}; choose from {', '.join(GRIDS)}")
    if args.step == "fit":
        fit(networks, candidates, args.steps)
    elif args.step == "compare":
        compare(networks, candidates, args.seeds)
    else:
        table(networks)


if __name__ == "__main__":
    main()
