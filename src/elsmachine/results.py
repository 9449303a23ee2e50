"""The records a comparison of machines with a network leaves in its folder (docs/theory.md,
"Metrics"), as typed values with their load and save, so that the comparison that writes them and
the plots and pages that read them agree through one place, not through string keys.

A comparison folder holds:

- ``settings.json``: :class:`ComparisonSettings`, the settings every seed shares (``common``) and
  each machine's own (``machines``);
- ``seeds/NNNNNN.npz``: one :class:`SeedRecord` per finished seed, the network's final image and
  each machine's with the key of the settings that made it;
- ``results.csv`` and ``summary.json``: one :class:`Comparison`, the metrics per seed
  (:class:`SeedMetrics`, one CSV row each) and per machine over the seeds (:class:`MachineSummary`).

Images are float32 [C, H, W] in [-1, 1]. Nothing here computes a metric: the numbers arrive
computed and are kept as given.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import InputError
from .files import atomic_write, write_json

__all__ = ["settings_key", "seed_path", "MachineImage", "SeedRecord", "ComparisonSettings", "SeedMetrics",
           "MachineSummary", "Comparison"]

SETTINGS_JSON = "settings.json"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
REFERENCE = "the network's final image"


def settings_key(obj) -> str:
    """A short digest of JSON-like settings, independent of key order: two records made with
    the same settings carry the same key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def seed_path(folder, seed: int) -> Path:
    """Where a comparison folder keeps the record of ``seed``."""
    return Path(folder) / "seeds" / f"{int(seed):06d}.npz"


# ----------------------------------------------------------------------------- one seed
@dataclass(frozen=True, eq=False)
class MachineImage:
    """A machine's final image for one seed, float32 [C, H, W], and the key of the settings
    (:func:`settings_key`) that made it."""

    image: np.ndarray
    key: str

    def __eq__(self, other) -> bool:
        if not isinstance(other, MachineImage):
            return NotImplemented
        return self.key == other.key and _same_array(self.image, other.image)


@dataclass(eq=False)
class SeedRecord:
    """One finished seed: its ``label`` (-1 when unconditional), the network's final image
    ``network`` float32 [C, H, W], the training image nearest to it (index, L2 distance) and, per
    machine name, that machine's :class:`MachineImage`.

    On disk (:meth:`save`) one .npz with the arrays ``seed``, ``label``, ``network``,
    ``nearest_index``, ``nearest_distance`` and per machine ``img_<name>`` and ``key_<name>``."""

    seed: int
    label: int
    network: np.ndarray
    nearest_index: int
    nearest_distance: float
    machines: dict[str, MachineImage] = field(default_factory=dict)

    def made_with(self, name: str, key: str) -> bool:
        """Whether this record holds machine ``name``'s image made with the settings of ``key``."""
        m = self.machines.get(name)
        return m is not None and m.key == key

    def __eq__(self, other) -> bool:
        if not isinstance(other, SeedRecord):
            return NotImplemented
        return ((self.seed, self.label, self.nearest_index, self.nearest_distance)
                == (other.seed, other.label, other.nearest_index, other.nearest_distance)
                and _same_array(self.network, other.network) and self.machines == other.machines)

    def save(self, path) -> Path:
        """Write the record atomically as .npz; returns the path."""
        arrays = {"seed": np.int64(self.seed), "label": np.int64(self.label),
                  "network": np.asarray(self.network, dtype=np.float32),
                  "nearest_index": np.int64(self.nearest_index), "nearest_distance": np.float64(self.nearest_distance)}
        for name, m in self.machines.items():
            arrays[f"img_{name}"] = np.asarray(m.image, dtype=np.float32)
            arrays[f"key_{name}"] = np.array(m.key)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "SeedRecord":
        """Read a record written by :meth:`save`; a missing or unreadable file, or one without the
        arrays of a record, is an InputError naming it."""
        try:
            with np.load(path, allow_pickle=False) as d:
                arrays = {k: d[k] for k in d.files}
        except FileNotFoundError:
            raise InputError(f"seed record {path} does not exist") from None
        except Exception as e:  # noqa: BLE001
            raise InputError(f"seed record {path} is not a readable .npz: {e}") from None
        missing = [k for k in ("seed", "label", "network", "nearest_index", "nearest_distance") if k not in arrays]
        if missing:
            raise InputError(f"seed record {path} has no array {missing[0]!r}")
        machines = {}
        for k in arrays:  # in the order written, so that a record saved again reads back the same
            if k.startswith("img_"):
                name = k[len("img_"):]
                if f"key_{name}" not in arrays:
                    raise InputError(f"seed record {path} holds the image of {name!r} without its settings key")
                machines[name] = MachineImage(arrays[k], str(arrays[f"key_{name}"]))
        return cls(seed=int(arrays["seed"]), label=int(arrays["label"]), network=arrays["network"],
                   nearest_index=int(arrays["nearest_index"]), nearest_distance=float(arrays["nearest_distance"]),
                   machines=machines)


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and np.array_equal(a, b)


# ----------------------------------------------------------------------------- the settings
@dataclass(frozen=True)
class ComparisonSettings:
    """What made a comparison's results, as plain JSON values: ``common``, the settings every seed
    shares (network, steps, dtype, classes, data, ...), and ``machines``, each machine's own."""

    common: dict
    machines: dict[str, dict]

    def key(self, name: str) -> str:
        """The settings key machine ``name``'s images carry."""
        return settings_key(self.machines[name])

    def run_key(self, names: Sequence[str]) -> str:
        """The key every row of results.csv carries: the shared settings and those of ``names``."""
        return settings_key(self.common) + settings_key([self.machines[n] for n in names])

    def only(self, names: Sequence[str]) -> "ComparisonSettings":
        """These settings restricted to the machines ``names``, in that order."""
        return ComparisonSettings(self.common, {n: self.machines[n] for n in names})

    def to_json(self) -> dict:
        return {"common": self.common, "machines": self.machines}

    @classmethod
    def from_json(cls, obj: dict) -> "ComparisonSettings":
        return cls(dict(obj.get("common", {})), dict(obj.get("machines", {})))

    def save(self, folder) -> Path:
        """Write ``settings.json`` into ``folder``; returns its path."""
        return write_json(Path(folder) / SETTINGS_JSON, self.to_json())

    @classmethod
    def load(cls, folder, *, missing_ok: bool = False) -> "ComparisonSettings | None":
        """Read ``folder``'s settings.json; where there is none, None if ``missing_ok``, else an
        InputError."""
        path = Path(folder) / SETTINGS_JSON
        if not path.exists():
            if missing_ok:
                return None
            raise InputError(f"{folder} holds no {SETTINGS_JSON}: it is not a comparison folder")
        return cls.from_json(_read_json(path))


# ----------------------------------------------------------------------------- the summary
@dataclass(frozen=True)
class SeedMetrics:
    """The metrics of one seed (one row of results.csv): ``values[machine][metric]``, the metric
    of that machine's image against the network's, and the training image nearest to the
    network's (index, L2 distance)."""

    seed: int
    label: int
    values: dict[str, dict[str, float]]
    nearest_index: int
    nearest_distance: float


@dataclass(frozen=True)
class MachineSummary:
    """One machine over the seeds of a comparison: the median and mean of every metric, and
    ``beats[other]``, the share of seeds on which its r exceeds that of machine ``other``."""

    median: dict[str, float]
    mean: dict[str, float]
    beats: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {}
        for metric in self.median:
            out[f"median_{metric}"] = self.median[metric]
            out[f"mean_{metric}"] = self.mean[metric]
        return out | {f"beats_{other}": v for other, v in self.beats.items()}

    @classmethod
    def from_json(cls, obj: dict, metrics: Sequence[str]) -> "MachineSummary":
        try:
            median = {m: float(obj[f"median_{m}"]) for m in metrics}
            mean = {m: float(obj[f"mean_{m}"]) for m in metrics}
        except KeyError as e:
            raise InputError(f"the summary of a machine has no {e.args[0]!r}") from None
        return cls(median, mean, {k[len("beats_"):]: float(v) for k, v in obj.items() if k.startswith("beats_")})


@dataclass(frozen=True)
class Comparison:
    """A summarised comparison: ``metrics`` ({name: description}, in the order reported),
    ``machines`` ({name: :class:`MachineSummary`}, in the order compared), the ``settings`` of
    those machines, ``rows`` (one :class:`SeedMetrics` per seed, by seed) and ``els_beats_is``,
    the share of seeds on which ELS's r exceeds IS's (None unless both ran), and ``as_reported``,
    {paper: which summary statistics its tables report, under what name}.

    On disk (:meth:`save`) ``results.csv``, the rows with their metrics to 6 decimals, and
    ``summary.json``; :meth:`load` reads both. For callers that know summary.json's layout a
    Comparison also reads like it: ``c["machines"]["els"]["median_r"]``."""

    metrics: dict[str, str]
    machines: dict[str, MachineSummary]
    settings: ComparisonSettings
    rows: tuple[SeedMetrics, ...]
    els_beats_is: float | None = None
    reference: str = REFERENCE
    as_reported: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        """The number of seeds summarised."""
        return len(self.rows)

    @property
    def names(self) -> list[str]:
        """The machines compared, in order."""
        return list(self.machines)

    def values(self, name: str, metric: str = "r") -> np.ndarray:
        """``metric`` of machine ``name`` on every seed, in the order of :attr:`rows` -> [seeds] float64."""
        return np.array([row.values[name][metric] for row in self.rows], dtype=np.float64)

    def to_json(self) -> dict:
        """What summary.json holds."""
        out = {"seeds": self.seeds, "reference": self.reference, "metrics": self.metrics,
               **({"as_reported": self.as_reported} if self.as_reported else {}), "machines": {n: s.to_json() for n, s in self.machines.items()}, "settings": self.settings.to_json()}
        if self.els_beats_is is not None:
            out["els_beats_is"] = self.els_beats_is
        return out

    def __getitem__(self, key: str):
        return self.to_json()[key]

    @staticmethod
    def paths(folder) -> list[Path]:
        """The files :meth:`save` writes into ``folder``."""
        return [Path(folder) / RESULTS_CSV, Path(folder) / SUMMARY_JSON]

    def save(self, folder) -> list[Path]:
        """Write results.csv, then summary.json, into ``folder``; returns their paths."""
        csv_path, json_path = self.paths(folder)
        names, metrics = self.names, list(self.metrics)
        run_key = self.settings.run_key(names)
        sio = io.StringIO()
        w = csv.writer(sio)
        w.writerow(_header(names, metrics))
        for row in self.rows:
            w.writerow([row.seed, row.label] + [f"{row.values[n][m]:.6f}" for n in names for m in metrics]
                       + [row.nearest_index, f"{row.nearest_distance:.4f}", run_key])
        atomic_write(csv_path, sio.getvalue().encode())
        write_json(json_path, self.to_json())
        return [csv_path, json_path]

    @classmethod
    def load(cls, folder) -> "Comparison":
        """Read ``folder``'s summary.json and results.csv; either missing, or the two disagreeing
        (other machines, metrics, seed count or settings), is an InputError."""
        csv_path, json_path = cls.paths(folder)
        for p in (json_path, csv_path):
            if not p.exists():
                raise InputError(f"{folder} is not a summarised comparison folder (no {p.name})")
        s = _read_json(json_path)
        try:
            metrics, settings = dict(s["metrics"]), ComparisonSettings.from_json(s["settings"])
            machines = {n: MachineSummary.from_json(v, list(metrics)) for n, v in s["machines"].items()}
            seeds = int(s["seeds"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{json_path} is not a comparison summary: {e}") from None
        names = list(machines)
        with open(csv_path, newline="") as f:
            table = list(csv.reader(f))
        if not table or table[0] != _header(names, list(metrics)):
            raise InputError(f"{csv_path} does not list the machines and metrics of {json_path.name}")
        if len(table) - 1 != seeds:
            raise InputError(f"{csv_path} holds {len(table) - 1} seeds, {json_path.name} {seeds}")
        try:
            run_key = settings.run_key(names)
        except KeyError as e:
            raise InputError(f"{json_path} has no settings for the machine {e.args[0]!r}") from None
        rows = []
        for cells in table[1:]:
            if cells[-1] != run_key:
                raise InputError(f"{csv_path} holds seed {cells[0]} made with other settings than {json_path.name} names")
            it = iter(cells[2:-3])
            rows.append(SeedMetrics(seed=int(cells[0]), label=int(cells[1]),
                                    values={n: {m: float(next(it)) for m in metrics} for n in names},
                                    nearest_index=int(cells[-3]), nearest_distance=float(cells[-2])))
        return cls(metrics=metrics, machines=machines, settings=settings, rows=tuple(rows),
                   els_beats_is=None if s.get("els_beats_is") is None else float(s["els_beats_is"]),
                   reference=str(s.get("reference", REFERENCE)),
                   as_reported={str(k): str(v) for k, v in dict(s.get("as_reported", {})).items()})

    def records(self, folder) -> Iterator[tuple[SeedMetrics, SeedRecord]]:
        """Each row with its seed's record from ``folder``, in order, for the seeds whose record
        still holds every machine's image made with the settings summarised here (a later run
        with other settings may have replaced some since)."""
        keys = {n: self.settings.key(n) for n in self.names}
        for row in self.rows:
            path = seed_path(folder, row.seed)
            if not path.exists():
                continue
            rec = SeedRecord.load(path)
            if all(rec.made_with(n, k) for n, k in keys.items()):
                yield row, rec


def _header(names: Sequence[str], metrics: Sequence[str]) -> list[str]:
    return (["seed", "label"] + [f"{m}_{n}" for n in names for m in metrics]
            + ["nearest_index", "nearest_distance", "settings"])


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
