"""How well each machine predicts a trained network, seed by seed (docs/theory.md, "Metrics";
the paper's case-by-case comparison).

For every seed the network and each machine run deterministic DDIM from the same noise on the
same grid, and the machine's final image is compared with the network's by r, r^2, R^2 and MSE
(:mod:`.metrics`). A conditional run gives seed s the class ``class_of_seed(s, classes)``.

Results are written as they come and a rerun resumes. Every finished seed is one file under
``seeds/``, written atomically, holding the network's image and each machine's image with a
key of the settings that made it; ``settings.json`` holds the settings every seed shares (the
network, steps, dtype, classes, data). A rerun with other shared settings is refused with a
message naming the difference; a machine whose own settings changed, or that is new, is
(re)computed for every seed. The CSV, the summary and the plots are rebuilt from the seed files,
so no seed is lost, counted twice, or reported under settings that did not produce it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..contract import denoiser_name
from ..errors import InputError
from ..files import atomic_write, write_json
from ..output.plots import comparison_plots
from ..sampling import ddim_sample
from ..engines.distributed import Group
from ..seeds import class_of_seed, seed_noise
from .metrics import METRICS, image_metrics, nearest

__all__ = ["compare", "check_resume", "summarize", "describe"]


def describe(denoiser) -> dict:
    """The settings that decide a denoiser's output, as recorded with results."""
    if hasattr(denoiser, "describe"):
        return denoiser.describe()
    return {"denoiser": denoiser_name(denoiser), "schedule": getattr(getattr(denoiser, "schedule", None), "to_dict",
                                                                      lambda: None)()}


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: saved {a!r}, now {b!r}")
    return out


def _seed_file(out: Path, seed: int) -> Path:
    return out / "seeds" / f"{seed:06d}.npz"


def _load(path: Path) -> dict:
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def check_resume(network, machines: dict, out_dir, *, steps: int, classes=None, dtype=torch.float32,
                 meta: dict | None = None) -> tuple[dict, dict, dict | None]:
    """Refuse, before any work, a comparison that cannot run or resume in ``out_dir``: no machine,
    a machine on another noise schedule than the network, or a folder holding results made with
    other shared settings. Returns (shared settings, each machine's settings, the saved ones)."""
    if not machines:
        raise InputError("give at least one machine to compare")
    for name, m in machines.items():
        if getattr(m, "schedule", None) != getattr(network, "schedule", None):
            raise InputError(f"machine {name!r} uses the noise schedule {m.schedule}, the network "
                             f"{getattr(network, 'schedule', None)}: they must agree to be compared")
    out = Path(out_dir)
    common = {"network": describe(network), "steps": steps, "dtype": str(dtype).replace("torch.", ""),
              "classes": None if classes is None else [int(c) for c in classes], **(meta or {})}
    common = json.loads(json.dumps(common, default=str))
    machine_settings = {name: json.loads(json.dumps(describe(m), default=str)) for name, m in machines.items()}
    settings_path = out / "settings.json"
    saved = json.loads(settings_path.read_text()) if settings_path.exists() else None
    if saved is None and (out / "seeds").is_dir() and any((out / "seeds").glob("*.npz")):
        raise InputError(f"{out} holds seed results without a settings.json; compare into a new folder")
    if saved is not None and saved.get("common") != common:
        diff = "; ".join(_differences(saved.get("common", {}), common))
        raise InputError(f"{out} holds a comparison made with other settings ({diff}); "
                         f"use another --out folder, or the same settings to resume")
    return common, machine_settings, saved


def compare(
    network,
    machines: dict,
    train_images: torch.Tensor,
    seeds: Sequence[int],
    out_dir,
    *,
    steps: int = 20,
    classes: Sequence[int] | None = None,
    dtype=torch.float32,
    device="cpu",
    montage: int = 8,
    meta: dict | None = None,
    on_seed: Callable[[dict], None] | None = None,
    group: Group | None = None,
    summary: bool = True,
) -> dict | None:
    """Compare ``machines`` ({name: machine}, each with its own patch schedule) with ``network``
    over ``seeds``; returns the summary. ``classes``: the classes a class-conditional run cycles
    through (None: unconditional). ``meta`` (data selection, model path, ...) is part of the
    shared settings. ``group``: the processes running the same seeds together (machines with a
    sharded bank): rank 0 reads and writes the files and tells the others what is left to do;
    the others return None. ``summary=False``: write the seed files only (the seeds split across
    processes; one of them summarises at the end)."""
    group = group or Group()
    common, machine_settings, saved = check_resume(network, machines, out_dir, steps=steps, classes=classes,
                                                   dtype=dtype, meta=meta)
    out = Path(out_dir)
    keys = {name: _key(s) for name, s in machine_settings.items()}
    settings_path = out / "settings.json"
    all_settings = {"common": common, "machines": {**(saved or {}).get("machines", {}), **machine_settings}}
    shape = tuple(train_images.shape[1:])
    for seed in seeds:
        path = _seed_file(out, seed)
        rec = group.read(path, _load)
        todo = [n for n in machines if rec is None or str(rec.get(f"key_{n}", "")) != keys[n]]
        if not todo:
            if on_seed is not None:
                on_seed({"seed": seed, "resumed": True})
            continue
        noise = seed_noise([seed], shape, dtype=dtype, device=device)
        lab = None if classes is None else torch.tensor([class_of_seed(seed, classes)], device=device)
        if rec is None:
            net_img = ddim_sample(network, noise, steps=steps, labels=lab)
            ni, nd = nearest(net_img, train_images)
            rec = {"seed": np.int64(seed), "label": np.int64(-1 if lab is None else int(lab)),
                   "network": net_img[0].cpu().float().numpy(), "nearest_index": np.int64(ni[0]),
                   "nearest_distance": np.float64(nd[0])}
        for name in todo:
            img = ddim_sample(machines[name], noise, steps=steps, labels=lab)
            rec[f"img_{name}"] = img[0].cpu().float().numpy()
            rec[f"key_{name}"] = np.array(keys[name])
        if group.main:
            write_json(settings_path, all_settings)
            buf = io.BytesIO()
            np.savez(buf, **rec)
            atomic_write(path, buf.getvalue())
        if on_seed is not None:
            on_seed({"seed": seed, "resumed": False, "computed": todo})
    if not (summary and group.main):
        return None
    return summarize(out, machines, train_images, seeds=seeds, montage=montage)


def summarize(out_dir, machines: dict, train_images: torch.Tensor, *, seeds=None, montage: int = 8) -> dict:
    """Rebuild results.csv, summary.json and the plots from the seed files, counting for each
    machine only the images made with its present settings."""
    out = Path(out_dir)
    settings = json.loads((out / "settings.json").read_text())
    keys = {name: _key(settings["machines"][name]) for name in machines}
    wanted = None if seeds is None else {int(s) for s in seeds}
    recs = []
    for f in sorted((out / "seeds").glob("*.npz")):
        rec = _load(f)
        if wanted is not None and int(rec["seed"]) not in wanted:
            continue
        if all(str(rec.get(f"key_{n}", "")) == keys[n] for n in machines):
            recs.append(rec)
    if not recs:
        raise InputError(f"no finished seeds in {out}/seeds for these machines")
    names = list(machines)
    for rec in recs:
        net = torch.from_numpy(rec["network"])[None]
        for n in names:
            for metric, v in image_metrics(net, torch.from_numpy(rec[f"img_{n}"])[None]).items():
                rec[f"{metric}_{n}"] = float(v[0])
    run_key = _key(settings["common"]) + _key([settings["machines"][n] for n in names])
    sio = io.StringIO()
    w = csv.writer(sio)
    w.writerow(["seed", "label"] + [f"{metric}_{n}" for n in names for metric in METRICS]
               + ["nearest_index", "nearest_distance", "settings"])
    for rec in recs:
        row = [int(rec["seed"]), int(rec["label"])]
        row += [f"{rec[f'{metric}_{n}']:.6f}" for n in names for metric in METRICS]
        w.writerow(row + [int(rec["nearest_index"]), f"{float(rec['nearest_distance']):.4f}", run_key])
    atomic_write(out / "results.csv", sio.getvalue().encode())
    summary: dict = {"seeds": len(recs), "reference": "the network's final image", "metrics": METRICS,
                     "machines": {}, "settings": {"common": settings["common"],
                                                  "machines": {n: settings["machines"][n] for n in names}}}
    r = {n: np.array([rec[f"r_{n}"] for rec in recs]) for n in names}
    for n in names:
        s = {}
        for metric in METRICS:
            v = np.array([rec[f"{metric}_{n}"] for rec in recs])
            s[f"median_{metric}"] = float(np.median(v))
            s[f"mean_{metric}"] = float(v.mean())
        for other in ("ideal", "els"):
            if other in r and other != n:
                s[f"beats_{other}"] = float(np.mean(r[n] > r[other]))
        summary["machines"][n] = s
    if "els" in r and "ideal" in r:
        summary["els_beats_is"] = float(np.mean(r["els"] > r["ideal"]))
    write_json(out / "summary.json", summary)
    summary["files"] = [str(p) for p in [out / "results.csv", out / "summary.json"]
                        + comparison_plots(out, recs, names, train_images, montage)]
    return summary
