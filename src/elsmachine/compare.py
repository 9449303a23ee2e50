"""How well each machine predicts a trained network, seed by seed (paper, Section 5; DESIGN.md,
"Metrics").

For every seed, the network and each machine run deterministic DDIM from the same noise on
the same grid (ELS with the network's padding: boundary-broken for zeros), and r = Pearson
correlation of each machine's final image with the network's is recorded, with r^2. A
conditional network's seed s is given class s mod (number of classes).

Results are written as they come and a rerun resumes: every finished seed is one file under
``seeds/``, written atomically, and the CSV and summary are rebuilt from those files, so no
seed is lost or counted twice.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import InputError
from .io import atomic_write_bytes, image_grid, save_png
from .metrics import nearest, pearson
from .sampler import ddim_sample, seed_noise

__all__ = ["compare", "summarize"]


def _seed_file(out: Path, seed: int) -> Path:
    return out / "seeds" / f"{seed:06d}.npz"


def compare(
    network,
    machines: dict,
    train_images: torch.Tensor,
    seeds: Sequence[int],
    out_dir,
    *,
    schedule,
    steps: int = 20,
    num_classes: int = 0,
    dtype=torch.float32,
    device="cpu",
    montage: int = 8,
    meta: dict | None = None,
    on_seed: Callable[[dict], None] | None = None,
) -> dict:
    """Compare ``machines`` ({name: machine}) with ``network`` over ``seeds``; returns the summary.

    ``schedule`` is the patch sizes of LS and ELS in any form ddim_sample takes (a
    PatchSchedule, a schedule file, a preset name, one size or one per step).
    """
    out = Path(out_dir)
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    shape = tuple(train_images.shape[1:])
    for seed in seeds:
        path = _seed_file(out, seed)
        if path.exists():
            if on_seed is not None:
                on_seed({"seed": seed, "resumed": True})
            continue
        noise = seed_noise([seed], shape, dtype=dtype, device=device)
        lab = torch.tensor([seed % num_classes], device=device) if num_classes else None
        net_img = ddim_sample(network, noise, steps=steps, labels=lab)
        rec = {"seed": np.int64(seed), "label": np.int64(-1 if lab is None else int(lab)),
               "network": net_img[0].cpu().float().numpy()}
        for name, m in machines.items():
            ks = None if name == "ideal" else schedule
            img = ddim_sample(m, noise, steps=steps, patch_sizes=ks, labels=lab)
            rec[f"img_{name}"] = img[0].cpu().float().numpy()
            rec[f"r_{name}"] = np.float64(pearson(img, net_img)[0])
        ni, nd = nearest(net_img.cpu(), train_images)
        rec["nearest_index"] = np.int64(ni[0])
        rec["nearest_distance"] = np.float64(nd[0])
        buf = io.BytesIO()
        np.savez(buf, **rec)
        atomic_write_bytes(path, buf.getvalue())
        if on_seed is not None:
            on_seed({"seed": seed, "resumed": False, **{k: float(v) for k, v in rec.items() if k.startswith("r_")}})
    return summarize(out, list(machines), train_images, seeds=seeds, montage=montage, meta=meta)


def summarize(out_dir, machine_names: Sequence[str], train_images: torch.Tensor, *, seeds=None,
              montage: int = 8, meta: dict | None = None) -> dict:
    """Rebuild results.csv, summary.json, scatter.png and montage.png from the seed files."""
    out = Path(out_dir)
    files = sorted((out / "seeds").glob("*.npz"))
    recs = []
    for f in files:
        with np.load(f) as d:
            rec = {k: d[k] for k in d.files}
        if seeds is None or int(rec["seed"]) in set(seeds):
            recs.append(rec)
    if not recs:
        raise InputError(f"no finished seeds in {out}/seeds")
    # CSV: one row per seed, r and r^2 for each machine.
    sio = io.StringIO()
    w = csv.writer(sio)
    w.writerow(["seed", "label"] + [f"{p}_{m}" for m in machine_names for p in ("r", "r2")] + ["nearest_index", "nearest_distance"])
    for rec in recs:
        row = [int(rec["seed"]), int(rec["label"])]
        for m in machine_names:
            r = float(rec[f"r_{m}"])
            row += [f"{r:.6f}", f"{r * r:.6f}"]
        w.writerow(row + [int(rec["nearest_index"]), f"{float(rec['nearest_distance']):.4f}"])
    atomic_write_bytes(out / "results.csv", sio.getvalue().encode())
    summary: dict = {"seeds": len(recs), "metric": "per-image Pearson r of final images (and r^2)", "machines": {}}
    for m in machine_names:
        r = np.array([float(rec[f"r_{m}"]) for rec in recs])
        summary["machines"][m] = {"median_r": float(np.median(r)), "median_r2": float(np.median(r * r)),
                                  "mean_r": float(r.mean())}
    if "els" in machine_names and "ideal" in machine_names:
        r_els = np.array([float(rec["r_els"]) for rec in recs])
        r_is = np.array([float(rec["r_ideal"]) for rec in recs])
        summary["els_beats_is"] = float(np.mean(r_els > r_is))
    if meta:
        summary["meta"] = meta
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    _plots(out, recs, machine_names, train_images, montage)
    return summary


def _plots(out: Path, recs, names, train_images, montage: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "els" in names and "ideal" in names:
        r_els = [float(r["r_els"]) for r in recs]
        r_is = [float(r["r_ideal"]) for r in recs]
        fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
        ax.scatter(r_is, r_els, s=12, alpha=0.7)
        lo = min(min(r_is), min(r_els), 0.0)
        ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
        ax.set_xlabel("IS: r with the network")
        ax.set_ylabel("ELS: r with the network")
        ax.set_title(f"{len(recs)} seeds; ELS beats IS on {np.mean(np.array(r_els) > np.array(r_is)):.0%}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        atomic_write_bytes(out / "scatter.png", buf.getvalue())
    rows = []
    order = [n for n in ("els", "ls", "ideal") if n in names] + [n for n in names if n not in ("els", "ls", "ideal")]
    for rec in recs[:montage]:
        row = [torch.from_numpy(rec["network"])] + [torch.from_numpy(rec[f"img_{n}"]) for n in order]
        row.append(train_images[int(rec["nearest_index"])].float())
        rows.append(torch.stack(row))
    if rows:
        grid = torch.cat(rows)
        save_png(image_grid(grid, ncol=len(order) + 2, scale=3), out / "montage.png")
