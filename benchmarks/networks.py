"""Which closed-form machine predicts which network: the candidates beyond ELS (docs/theory.md,
"Candidates beyond ELS") fitted to each shipped network on calibration seeds, then every machine
and the fitted candidates compared with it on the evaluation seeds, and one table across the
networks.

Three steps, each resumable (a rerun does only what is missing):

    python benchmarks/networks.py fit        # per network and candidate, each value of its grid
                                             # sampled on seeds 1000-1009; docs/networks/fits.json
    python benchmarks/networks.py compare    # els compare --machines all plus the fitted
                                             # candidates, seeds 0-99, one folder per network
    python benchmarks/networks.py table      # the tables across the networks in docs/results.md
    python benchmarks/networks.py montage    # docs/networks/montage.png

A candidate's value is the one of its grid whose DDIM samples have the largest median Pearson r
with the network's on the calibration seeds (the grid leaves out the value at which the
candidate is ELS; wiener-els-radius keeps wiener-els's fitted weight and fits its radius, leaving
out inf, at which it is wiener-els). A candidate of ``--screened`` (default: all) is compared on the evaluation
seeds only where its fitted median r on the calibration seeds exceeds ELS's by 0.01 or more (a
third of the margin the comparison looks for), so that the evaluation seeds go to the candidates
that survived their fit; the table gives the others' calibration figures. ``--screened ""``
compares every candidate everywhere. ``--networks`` and ``--candidates`` take comma lists;
``--seeds`` the number of evaluation seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from itertools import islice
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
    # one weight at every step, or "w@t": w at the steps with t or more, then 0 (Wiener at high
    # noise, ELS at low noise)
    "wiener-els": ("wiener_weight", ["0.1", "0.2", "0.35", "0.5", "0.65", "0.8",
                                     "1@0.85", "1@0.7", "1@0.5", "1@0.3", "0.5@0.5"]),
    "els-tempered": ("temperatures", ["0.7", "1.4"]),
    "els-border": ("border_patch_size", ["k-2", "k+2", "k+4"]),
    "els-attention": ("attention_weight", ["0.3"]),
    "els-soft": ("sigma", ["0.5*k"]),
    # pixel q meets only the candidates within R pixels (0 is LS at ELS's sizes; inf, ELS, is left out)
    "els-radius": ("radii", ["0", "1", "2", "3", "5", "8"]),
    # wiener-els's fitted weight, its ELS cut to a radius (inf, wiener-els itself, is left out)
    "wiener-els-radius": ("radii", ["1", "2", "3"]),
}
# candidate -> {option: the candidate whose value fitted on the same network it keeps}
FIXED = {"wiener-els-radius": {"wiener_weight": "wiener-els"}}
FITS = ROOT / "docs" / "networks" / "fits.json"
CAL_SEEDS = list(range(1000, 1010))


def _per_step(v: str, steps: int) -> str:
    """A grid value as candidates.py reads it: "w@t" becomes one weight per step of the default
    grid (highest t first), w where the step's t >= t, else 0; anything else as it is."""
    if "@" not in v:
        return v
    from elsmachine.patch_schedule import default_grid_times

    w, t = (float(x) for x in v.split("@"))
    return ",".join(str(w if ti >= t - 1e-9 else 0.0) for ti in default_grid_times(steps))


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _save_entry(name: str, entry: dict) -> None:
    """Write one network's fits into FITS, keeping the other networks' as the file has them (fit
    processes for different networks may run side by side)."""
    import fcntl

    FITS.parent.mkdir(parents=True, exist_ok=True)
    with open(FITS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fits = _load(FITS)
        fits[name] = entry
        _save(FITS, fits)


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
            fixed = {opt: entry["candidates"][src]["chosen"] for opt, src in FIXED.get(cand, {}).items()}
            rec = entry["candidates"].setdefault(cand, {"option": key, "values": {}})
            if rec.get("fixed", {}) != fixed:  # fitted beside another value: fitted again
                rec.update(values={}, fixed=fixed)
                rec.pop("chosen", None)
            kept = "".join(f" {opt}={_per_step(v, steps)}" for opt, v in fixed.items())
            for v in values or [None]:
                label = "els" if v is None else v
                if label in rec["values"]:
                    continue
                if ref is None:
                    ref = em.ddim_sample(net, noise, steps=steps, labels=labels)
                spec = cand if v is None else f"{cand} {key}={_per_step(v, steps)}{kept}"  # as candidates.py reads it
                machine = build(spec, ds, net, schedule)
                t0 = time.perf_counter()
                out = em.ddim_sample(machine, noise, steps=steps, labels=labels)
                rs = pearson(out, ref).tolist()
                rec["values"][label] = {"median_r": statistics.median(rs), "mean_r": statistics.mean(rs), "r": rs,
                                        "seconds": time.perf_counter() - t0}
                _save_entry(name, entry)
                what = cand if v is None else f"{cand} {key}={v}"
                print(f"{name} {what}: median r {statistics.median(rs):.4f} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            if values:
                rec["chosen"] = max(values, key=lambda v: rec["values"][v]["median_r"])
                _save_entry(name, entry)


def _settings(name: str, cand: str, fits: dict) -> list[str]:
    """The --set items of a fitted candidate, its fitted value and those it keeps from another
    candidate's fit, each spelled per step as els compare takes it."""
    import elsmachine as em
    from candidates import _relative
    from elsmachine.networks.checkpoints import patch_schedule_beside

    rec = fits[name]["candidates"][cand]
    out = []
    for opt, chosen in [(rec["option"], rec["chosen"]), *rec.get("fixed", {}).items()]:
        v = _per_step(chosen, fits[name]["steps"])
        if "k" in v.replace("inf", ""):
            sizes = em.PatchSchedule.load(patch_schedule_beside(name)).sizes
            v = ",".join(str(_relative(v, k, k)) for k in sizes)
        out += ["--set", f"{cand}.{opt}={v}"]
    return out


SCREEN_MARGIN = 0.01  # a third of the goal's 0.03


def _fitted_r(fits: dict, name: str, cand: str) -> float:
    """Median r on the calibration seeds of ``cand``'s chosen value (ELS's own for "els")."""
    rec = fits[name]["candidates"][cand]
    return rec["values"]["els" if cand == "els" else rec["chosen"]]["median_r"]


def _beats_els_on_calibration(name: str, cand: str, fits: dict) -> bool:
    return _fitted_r(fits, name, cand) >= _fitted_r(fits, name, "els") + SCREEN_MARGIN


def compare(networks, candidates, seeds: int, screened) -> None:
    """els compare per network with every machine and the fitted candidates; a candidate of
    ``screened`` joins only where its fitted value's median r on the calibration seeds exceeds
    ELS's by SCREEN_MARGIN or more."""
    fits = _load(FITS)
    for name in networks:
        fitted = [c for c in candidates if "chosen" in fits.get(name, {}).get("candidates", {}).get(c, {})]
        fitted = [c for c in fitted if c not in screened or _beats_els_on_calibration(name, c, fits)]
        cmd = ["els", "compare", "--model", name, "--machines", ",".join(["all", *fitted]),
               "--seeds", str(seeds), "--out", str(ROOT / NETWORKS[name])]
        for c in fitted:
            cmd += _settings(name, c, fits)
        print(" ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


LABELS = {"els": "ELS (calibrated)", "ideal": "IS", "ls": "LS", "nearest": "nearest neighbour", "wiener": "Wiener",
          "stationary": "stationary Gaussian", "locality": "analytic locality", "pspc": "PSPC square",
          "pspc-flex": "PSPC flex", "golddiff": "GoldDiff", "smoothed": "smoothed closed-form"}


def _comparisons(networks) -> dict:
    """{network: its Comparison} for the networks whose folder holds a summarised comparison."""
    from elsmachine.results import Comparison

    found = {n: Comparison.load(ROOT / NETWORKS[n]) for n in networks
             if (ROOT / NETWORKS[n] / "summary.json").exists()}
    if not found:
        raise SystemExit("no comparison has a summary.json yet: run the compare step")
    return found


def fitted_table(networks, candidates) -> None:
    """Per network, on the calibration seeds: ELS's median r and each candidate's fitted value
    with its median r."""
    fits = _load(FITS)
    shown = [n for n in networks if n in fits]
    if not shown:
        raise SystemExit(f"{FITS} holds no fits yet: run the fit step")
    print("Fitted on the calibration seeds (median r; the chosen value):\n")
    print("| machine | " + " | ".join(n.replace("mnist5k-", "") for n in shown) + " |")
    print("| --- |" + " --- |" * len(shown))
    for c in ["els", *candidates]:
        cells = []
        for n in shown:
            rec = fits[n]["candidates"].get(c)
            if rec is None or (c != "els" and "chosen" not in rec):
                cells.append("")
            else:
                kept = "".join(f", {v} kept" for v in rec.get("fixed", {}).values())
                cells.append(f"{_fitted_r(fits, n, c):.3f}" + ("" if c == "els" else f" ({rec['chosen']}{kept})"))
        print(f"| {LABELS.get(c, c)} | " + " | ".join(cells) + " |")


def table(networks, candidates) -> None:
    """Median r per machine and network with the share of seeds on which it beats ELS; mean r^2
    and median MSE; and per candidate the issue's goal: its median r minus ELS's on every network,
    the share of seeds it beats ELS on, and on how many it is worse."""
    comps = _comparisons(networks)
    machines: list[str] = []
    for c in comps.values():
        machines += [m for m in c.names if m not in machines]
    short = [n.replace("mnist5k-", "") for n in comps]

    def grid(title, cell):
        print(f"\n{title}\n")
        print("| machine | " + " | ".join(short) + " |")
        print("| --- |" + " --- |" * len(comps))
        for m in machines:
            cells = [cell(m, c.machines[m]) if m in c.machines else "" for c in comps.values()]
            print(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")

    grid("Median r with the network's final images (share of seeds on which it beats calibrated ELS):",
         lambda m, s: f"{s.median['r']:.3f}" + ("" if m == "els" or "els" not in s.beats
                                                else f" ({s.beats['els']:.0%})"))
    grid("Mean r^2:", lambda m, s: f"{s.mean['r2']:.3f}")
    grid("Median MSE per pixel:", lambda m, s: f"{s.median['mse']:.4f}")

    print("\nThe goal per candidate (median r minus ELS's; share of seeds beating ELS; seeds worse than ELS):\n")
    print("| candidate | " + " | ".join(short) + " | goal met |")
    print("| --- |" + " --- |" * (len(comps) + 1))
    for cand in candidates:
        cells, met = [], len(comps) == len(NETWORKS)
        for c in comps.values():
            if cand not in c.machines:
                cells.append("")
                met = False
                continue
            gain = c.machines[cand].median["r"] - c.machines["els"].median["r"]
            beats = c.machines[cand].beats["els"]
            worse = int((c.values(cand) < c.values("els")).sum())
            cells.append(f"{gain:+.3f}, {beats:.0%}, {worse} worse")
            met = met and gain >= 0.03 and beats >= 0.7 and worse == 0
        print(f"| {cand} | " + " | ".join(cells) + f" | {'yes' if met else 'no'} |")
    fits = _load(FITS)
    for cand in candidates:
        for name, c in comps.items():
            rec = fits.get(name, {}).get("candidates", {}).get(cand, {})
            if cand not in c.machines and "chosen" in rec:
                print(f"\n{cand} on {name}: not compared; on the calibration seeds median r "
                      f"{_fitted_r(fits, name, cand):.3f} at {rec['option']} = {rec['chosen']} "
                      f"against ELS's {_fitted_r(fits, name, 'els'):.3f}")


def montage(networks, seeds: int = 4) -> Path:
    """docs/networks/montage.png: per network (a row) and for its first evaluation seeds, the
    network's image, calibrated ELS's and that of the machine with the best median r on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from elsmachine.output.plots import shown_image

    comps = _comparisons(networks)
    fig, axes = plt.subplots(len(comps), 3 * seeds, figsize=(1.0 * 3 * seeds, 1.2 * len(comps) + 0.3), dpi=110,
                             squeeze=False)
    for i, (name, c) in enumerate(comps.items()):
        best = max((m for m in c.names if m != "els"), key=lambda m: c.machines[m].median["r"])
        for j, (row, rec) in enumerate(islice(c.records(ROOT / NETWORKS[name]), seeds)):
            shown = [("network", rec.network, None), ("ELS", rec.machines["els"].image, "els"),
                     (LABELS.get(best, best), rec.machines[best].image, best)]
            for k, (title, img, m) in enumerate(shown):
                ax = axes[i, 3 * j + k]
                ax.imshow(shown_image(torch.from_numpy(img)), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if m is not None:
                    ax.set_xlabel(f"r = {row.values[m]['r']:.2f}", fontsize=6, labelpad=1)
                ax.set_title(title if i == 0 or k == 2 else "", fontsize=6, pad=2)
            axes[i, 3 * j].set_ylabel(f"{name.replace('mnist5k-', '')}\nseed {row.seed}", fontsize=6)
    fig.tight_layout(pad=0.3)
    out = FITS.parent / "montage.png"
    fig.savefig(out)
    plt.close(fig)
    print(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["fit", "compare", "table", "montage"])
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--candidates", default=",".join(GRIDS))
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--screened", default=",".join(GRIDS),
                    help="candidates compared only where their fit beats ELS by 0.01 on the calibration seeds")
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
        compare(networks, candidates, args.seeds, [c for c in args.screened.split(",") if c])
    elif args.step == "table":
        fitted_table(networks, candidates)
        table(networks, candidates)
    else:
        montage(networks)


if __name__ == "__main__":
    main()
