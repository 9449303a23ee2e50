"""How well each machine predicts a trained network, seed by seed (docs/theory.md, "Metrics";
the paper's case-by-case comparison).

For every seed the network and each machine run the same deterministic sampler (DDIM, or EDM's
Heun) from the same noise on the same grid, and the machine's final image is compared with the network's by r, r^2, R^2 and MSE
(:mod:`.metrics`). A conditional run gives seed s the class ``class_of_seed(s, classes)``.

Results are written as they come and a rerun resumes. Every finished seed is one
:class:`~elsmachine.results.SeedRecord` under ``seeds/``, written atomically, holding the
network's image and each machine's image with a key of the settings that made it, and the key of
the shared settings;
``settings.json`` (:class:`~elsmachine.results.ComparisonSettings`) holds the settings every seed
shares (the network, sampler, steps, dtype, classes, data) and each machine's. :func:`prepare` checks a
folder once, before any work: a rerun with other shared settings is refused with a message naming
the difference; a machine whose own settings changed, or that is new, is (re)computed for every
seed. A seed file that does not belong in the folder (made with other shared settings, under
another seed's name, with NaN or inf in an image) is refused by name, by a resumed run and by the
summary alike, rather than recomputed: the folder is the user's, and a file they put there is not
overwritten on a guess. The CSV and the summary (:class:`~elsmachine.results.Comparison`) are
rebuilt from the seed files, so no seed is lost, counted twice, or reported under settings that did
not produce it. The plots are the caller's (``elsmachine.output.plots.comparison_plots``):
experiments draw nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..contract import denoiser_name
from ..engines.distributed import Group
from ..errors import InputError
from ..machines import DEFAULT_MACHINE, EXACT_MACHINE
from ..results import Comparison, ComparisonSettings, MachineImage, MachineSummary, SeedMetrics, SeedRecord, seed_path
from ..sampling import Sampler
from ..seeds import class_of_seed, seed_noise
from .metrics import AS_REPORTED, METRICS, image_metrics, nearest

__all__ = ["ComparisonRun", "prepare", "compare", "run_comparison", "summarize", "describe"]


def describe(denoiser, *, how: bool = False) -> dict:
    """The settings that decide a denoiser's output, as recorded with results; ``how`` keeps what
    a machine states about how it ran ("engine": the GPU forms timed against each other), which
    decides nothing beyond rounding and so stays out of settings keys."""
    if hasattr(denoiser, "describe"):
        d = denoiser.describe()
        return d if how else {k: v for k, v in d.items() if k != "engine"}
    return {"denoiser": denoiser_name(denoiser), "schedule": getattr(getattr(denoiser, "schedule", None), "to_dict",
                                                                      lambda: None)()}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: saved {a!r}, now {b!r}")
    return out


def _plain(obj):
    """``obj`` as the JSON values it is saved as, so that what is compared is what was saved."""
    return json.loads(json.dumps(obj, default=str))


@dataclass(frozen=True)
class ComparisonRun:
    """A comparison checked against its folder by :func:`prepare`, ready to run: the folder
    ``out``, the ``sampler`` and its ``steps``, the ``classes`` a conditional run cycles through (None:
    unconditional), the ``dtype`` of the noise, the machines' ``names`` and ``settings``, what
    settings.json is to hold (the saved machines' settings with this run's on top). Plain values
    only, so that one process can check and hand it to the others."""

    out: Path
    steps: int
    classes: tuple[int, ...] | None
    dtype: torch.dtype
    names: tuple[str, ...]
    settings: ComparisonSettings
    sampler: Sampler = Sampler()


def prepare(network, machines: dict, out_dir, *, steps: int, classes: Sequence[int] | None = None,
            dtype=torch.float32, meta: dict | None = None, sampler: Sampler | str = "ddim") -> ComparisonRun:
    """Refuse, before any work, a comparison that cannot run or resume in ``out_dir``: no machine,
    a machine on another noise schedule than the network, or a folder holding results made with
    other shared settings. ``meta`` (data selection, model path, ...) is part of the shared
    settings. Reads the folder, writes nothing."""
    sampler = Sampler(sampler) if isinstance(sampler, str) else sampler
    if not machines:
        raise InputError("give at least one machine to compare")
    for name, m in machines.items():
        if getattr(m, "schedule", None) != getattr(network, "schedule", None):
            raise InputError(f"machine {name!r} uses the noise schedule {m.schedule}, the network "
                             f"{getattr(network, 'schedule', None)}: they must agree to be compared")
    out = Path(out_dir)
    common = _plain({"network": describe(network), "sampler": sampler.to_dict(), "steps": steps,
                     "dtype": str(dtype).replace("torch.", ""),
                     "classes": None if classes is None else [int(c) for c in classes], **(meta or {})})
    own = {name: _plain(describe(m)) for name, m in machines.items()}
    saved = ComparisonSettings.load(out, missing_ok=True)
    if saved is not None and "sampler" not in saved.common:  # made before results named their sampler: DDIM's
        saved = ComparisonSettings({"sampler": Sampler().to_dict(), **saved.common}, saved.machines)
    if saved is None and (out / "seeds").is_dir() and any((out / "seeds").glob("*.npz")):
        raise InputError(f"{out} holds seed results without a settings.json; compare into a new folder")
    if saved is not None and saved.common != common:
        diff = "; ".join(_differences(saved.common, common))
        raise InputError(f"{out} holds a comparison made with other settings ({diff}); "
                         f"use another --out folder, or the same settings to resume")
    settings = ComparisonSettings(common, {**(saved.machines if saved else {}), **own})
    return ComparisonRun(out=out, steps=steps, sampler=sampler, classes=None if classes is None else tuple(int(c) for c in classes),
                         dtype=dtype, names=tuple(machines), settings=settings)


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
    meta: dict | None = None,
    sampler: Sampler | str = "ddim",
    on_seed: Callable[[dict], None] | None = None,
    group: Group | None = None,
    summary: bool = True,
) -> Comparison | None:
    """Compare ``machines`` ({name: machine}, each with its own patch schedule) with ``network``
    over ``seeds`` in the folder ``out_dir``: :func:`prepare`, then :func:`run_comparison` (whose
    arguments these are). Returns the summary."""
    run = prepare(network, machines, out_dir, steps=steps, classes=classes, dtype=dtype, meta=meta, sampler=sampler)
    return run_comparison(run, network, machines, train_images, seeds, device=device, on_seed=on_seed, group=group,
                          summary=summary)


def run_comparison(
    run: ComparisonRun,
    network,
    machines: dict,
    train_images: torch.Tensor,
    seeds: Sequence[int],
    *,
    device="cpu",
    on_seed: Callable[[dict], None] | None = None,
    group: Group | None = None,
    summary: bool = True,
) -> Comparison | None:
    """Run the comparison ``run`` (from :func:`prepare`, for these ``network`` and ``machines``)
    over ``seeds``, computing for each seed only the machines its record lacks with their present
    settings; returns the summary (:func:`summarize`). ``train_images`` [N, C, H, W]: where the
    nearest image to the network's is looked for. ``on_seed`` is told of every seed, resumed or
    computed. ``group``: the processes running the same seeds together (machines with a sharded
    bank): rank 0 reads and writes the files and tells the others what is left to do; the others
    return None. ``summary=False``: write the seed files only (the seeds split across processes;
    one of them summarises at the end)."""
    if tuple(machines) != run.names:
        raise InputError(f"the comparison was prepared for the machines {list(run.names)}, not {list(machines)}")
    group = group or Group()
    out, classes = run.out, run.classes
    keys = {name: run.settings.key(name) for name in machines}
    common_key = run.settings.common_key()
    settings_saved = False
    shape = tuple(train_images.shape[1:])
    for seed in seeds:
        path = seed_path(out, seed)
        rec = group.read(path, SeedRecord.load)
        if rec is not None:  # on every process, which all hold the same record: all refuse alike
            rec.check(path, common_key=common_key, shape=shape)
        todo = [n for n in machines if rec is None or not rec.made_with(n, keys[n])]
        if not todo:
            if on_seed is not None:
                on_seed({"seed": seed, "resumed": True})
            continue
        noise = seed_noise([seed], shape, dtype=run.dtype, device=device)
        lab = None if classes is None else torch.tensor([class_of_seed(seed, classes)], device=device)
        if rec is None:
            net_img = run.sampler.run(network, noise, run.steps, labels=lab)
            ni, nd = nearest(net_img, train_images)
            rec = SeedRecord(seed=int(seed), label=-1 if lab is None else int(lab), network=_numpy(net_img),
                             nearest_index=int(ni[0]), nearest_distance=float(nd[0]), common_key=common_key)
        for name in todo:
            img = run.sampler.run(machines[name], noise, run.steps, labels=lab)
            rec.machines[name] = MachineImage(_numpy(img), keys[name])
        if group.main:
            # Once per run, and before the first seed file, so that a seed on disk always has its
            # settings beside it (an interrupted run resumes against them).
            if not settings_saved:
                _save_settings(run)
                settings_saved = True
            rec.save(path)
        if on_seed is not None:
            on_seed({"seed": seed, "resumed": False, "computed": todo})
    if not (summary and group.main):
        return None
    if not settings_saved:  # nothing computed: the summary's settings go to disk only if they differ
        _save_settings(run)
    return summarize(out, list(machines), seeds=seeds, settings=run.settings)


def _numpy(img: torch.Tensor) -> np.ndarray:
    """The first image of a batch [B, C, H, W] as float32 [C, H, W], as seed records keep it."""
    return img[0].cpu().float().numpy()


def _save_settings(run: ComparisonRun) -> None:
    """Write the run's settings.json unless the folder already holds the same (a rerun that
    resumes, or the summarising pass after the seeds were split across processes)."""
    if ComparisonSettings.load(run.out, missing_ok=True) != run.settings:
        run.settings.save(run.out)


def summarize(out_dir, names: Sequence[str], *, seeds=None, settings: ComparisonSettings | None = None) -> Comparison:
    """Rebuild results.csv and summary.json from the seed files of ``out_dir`` and return them as
    a :class:`~elsmachine.results.Comparison`, counting for each machine of ``names`` only the
    images made with its present ``settings`` (default: the folder's settings.json). ``seeds``:
    only these (default: every seed file). A seed file that does not belong in the folder
    (:meth:`~elsmachine.results.SeedRecord.check`) is an InputError naming it."""
    out = Path(out_dir)
    names = list(names)
    settings = (settings or ComparisonSettings.load(out)).only(names)
    keys = {n: settings.key(n) for n in names}
    common_key = settings.common_key()
    wanted = None if seeds is None else {int(s) for s in seeds}
    rows = []
    for f in sorted((out / "seeds").glob("*.npz")):
        rec = SeedRecord.load(f)
        if wanted is not None and rec.seed not in wanted:
            continue
        rec.check(f, common_key=common_key)
        if not all(rec.made_with(n, keys[n]) for n in names):
            continue
        net = torch.from_numpy(rec.network)[None]
        values = {n: {metric: float(v[0]) for metric, v in
                      image_metrics(net, torch.from_numpy(rec.machines[n].image)[None]).items()} for n in names}
        rows.append(SeedMetrics(seed=rec.seed, label=rec.label, values=values, nearest_index=rec.nearest_index,
                                nearest_distance=rec.nearest_distance))
    if not rows:
        raise InputError(f"no finished seeds in {out}/seeds for these machines")
    r = {n: np.array([row.values[n]["r"] for row in rows]) for n in names}
    summaries = {}
    for n in names:
        v = {metric: np.array([row.values[n][metric] for row in rows]) for metric in METRICS}
        summaries[n] = MachineSummary(median={m: float(np.median(v[m])) for m in METRICS},
                                      mean={m: float(v[m].mean()) for m in METRICS},
                                      beats={other: float(np.mean(r[n] > r[other]))
                                             for other in (EXACT_MACHINE, DEFAULT_MACHINE) if other in r and other != n})
    both = DEFAULT_MACHINE in r and EXACT_MACHINE in r
    result = Comparison(metrics=dict(METRICS), machines=summaries, settings=settings, rows=tuple(rows),
                        as_reported=dict(AS_REPORTED),
                        els_beats_is=float(np.mean(r[DEFAULT_MACHINE] > r[EXACT_MACHINE])) if both else None)
    result.save(out)
    return result
