"""The records a comparison of machines with a network leaves in its folder (docs/theory.md,
"Metrics"), as typed values with their load and save, so that the comparison that writes them and
the plots and pages that read them agree through one place, not through string keys.

A comparison folder holds:

- ``settings.json``: :class:`ComparisonSettings`, the settings every seed shares (``common``) and
  each machine's own (``machines``);
- ``seeds/NNNNNN.npz``: one :class:`SeedRecord` per finished seed, the network's final image and
  each machine's with the key of the settings that made it, and the key of the shared settings;
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
    ``network`` float32 [C, H, W], the training image nearest to it (index, L2 distance), per
    machine name that machine's :class:`MachineImage`, and ``common_key``, the key of the shared
    settings that made the record (:meth:`ComparisonSettings.common_key`; None in records written
    before records carried it).

    On disk (:meth:`save`) one .npz with the arrays ``seed``, ``label``, ``network``,
    ``nearest_index``, ``nearest_distance``, ``common_key`` (where known) and per machine
    ``img_<name>`` and ``key_<name>``."""

    seed: int
    label: int
    network: np.ndarray
    nearest_index: int
    nearest_distance: float
    machines: dict[str, MachineImage] = field(default_factory=dict)
    common_key: str | None = None

    def made_with(self, name: str, key: str) -> bool:
        """Whether this record holds machine ``name``'s image made with the settings of ``key``."""
        m = self.machines.get(name)
        return m is not None and m.key == key

    def __eq__(self, other) -> bool:
        if not isinstance(other, SeedRecord):
            return NotImplemented
        return ((self.seed, self.label, self.nearest_index, self.nearest_distance, self.common_key)
                == (other.seed, other.label, other.nearest_index, other.nearest_distance, other.common_key)
                and _same_array(self.network, other.network) and self.machines == other.machines)

    def save(self, path) -> Path:
        """Write the record atomically as .npz; returns the path."""
        arrays = {"seed": np.int64(self.seed), "label": np.int64(self.label),
                  "network": np.asarray(self.network, dtype=np.float32),
                  "nearest_index": np.int64(self.nearest_index), "nearest_distance": np.float64(self.nearest_distance)}
        if self.common_key is not None:  # a record of before, saved again, keeps the layout of before
            arrays["common_key"] = np.array(self.common_key)
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
        numbers = {}
        for k, kind in (("seed", int), ("label", int), ("nearest_index", int), ("nearest_distance", float)):
            a = arrays[k]
            if a.shape != () or a.dtype.kind not in ("iu" if kind is int else "iuf"):
                raise InputError(f"seed record {path} holds {k} as {a.dtype} {list(a.shape)}, not one number")
            numbers[k] = kind(a)
        machines = {}
        for k in arrays:  # in the order written, so that a record saved again reads back the same
            if k.startswith("img_"):
                name = k[len("img_"):]
                if f"key_{name}" not in arrays:
                    raise InputError(f"seed record {path} holds the image of {name!r} without its settings key")
                machines[name] = MachineImage(_image(arrays[k], path, f"the image of {name!r}"),
                                              str(arrays[f"key_{name}"]))
        return cls(network=_image(arrays["network"], path, "the network's image"), machines=machines,
                   common_key=str(arrays["common_key"]) if "common_key" in arrays else None, **numbers)

    def check(self, path, *, common_key: str, shape: Sequence[int] | None = None) -> "SeedRecord":
        """Refuse, with an InputError naming ``path``, a record that does not belong in the
        comparison folder it was read from (whose shared settings have the key ``common_key``,
        :meth:`ComparisonSettings.common_key`): one made with other shared settings (a file of
        another comparison), one under another seed's file name, one whose images differ in shape
        from each other or from ``shape`` [C, H, W], or that hold NaN or inf. A record written
        before records carried their common key is accepted on its images alone. Returns the
        record."""
        path = Path(path)
        again = f"remove it to compute seed {self.seed} again"
        if self.common_key is not None and self.common_key != common_key:
            raise InputError(f"seed record {path} was made with other shared settings than its folder's "
                             f"(a file of another comparison?); {again}")
        if path.name != seed_path("", self.seed).name:
            own = seed_path("", self.seed).name
            raise InputError(f"seed record {path} holds seed {self.seed}, whose file is {own}")
        want = tuple(self.network.shape) if shape is None else tuple(shape)
        for what, img in [("the network's image", self.network)] + [(f"the image of {n!r}", m.image)
                                                                   for n, m in self.machines.items()]:
            if tuple(img.shape) != want:
                raise InputError(f"seed record {path} holds {what} of shape {list(img.shape)}, not {list(want)}; "
                                 f"{again}")
            if not np.isfinite(img).all():
                raise InputError(f"seed record {path} holds NaN or inf in {what}; {again}")
        return self


def _image(a: np.ndarray, path, what: str) -> np.ndarray:
    """``a`` if it is an image [C, H, W] of floats, else an InputError naming the record."""
    if a.ndim != 3 or a.dtype.kind != "f":
        raise InputError(f"seed record {path} holds {what} as {a.dtype} {list(a.shape)}, not float [C, H, W]")
    return a


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

    def common_key(self) -> str:
        """The key of the shared settings, which every seed record of the folder carries."""
        return settings_key(self.common)

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
        """The settings ``obj`` holds; anything but {"common": {...}, "machines": {name: {...}}} is an
        InputError."""
        if (not isinstance(obj, dict) or not isinstance(obj.get("common"), dict)
                or not isinstance(obj.get("machines"), dict)
                or not all(isinstance(v, dict) for v in obj["machines"].values())):
            raise InputError('settings must be {"common": {...}, "machines": {"<machine>": {...}}}, got '
                             + _abridged(obj))
        return cls(dict(obj["common"]), dict(obj["machines"]))

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
        obj = _read_json(path)
        try:
            return cls.from_json(obj)
        except InputError as e:
            raise InputError(f"{path} is not a comparison's settings: {e}") from None


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
    Comparison also reads like it: ``c["machines"][name]["median_r"]``."""

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
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # InputError is a ValueError
            raise InputError(f"{json_path} is not a comparison summary: {e}") from None
        names = list(machines)
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                table = list(csv.reader(f))
        except (OSError, ValueError, csv.Error) as e:
            raise InputError(f"cannot read {csv_path}: {e}") from None
        if not table or table[0] != _header(names, list(metrics)):
            raise InputError(f"{csv_path} does not list the machines and metrics of {json_path.name}")
        if len(table) - 1 != seeds:
            raise InputError(f"{csv_path} holds {len(table) - 1} seeds, {json_path.name} {seeds}")
        try:
            run_key = settings.run_key(names)
        except KeyError as e:
            raise InputError(f"{json_path} has no settings for the machine {e.args[0]!r}") from None
        rows = []
        for line, cells in enumerate(table[1:], start=2):
            if len(cells) != len(table[0]):
                raise InputError(f"{csv_path} line {line} has {len(cells)} values, its header {len(table[0])}")
            if cells[-1] != run_key:
                raise InputError(f"{csv_path} holds seed {cells[0]} made with other settings than {json_path.name} names")
            it = iter(cells[2:-3])
            try:
                rows.append(SeedMetrics(seed=int(cells[0]), label=int(cells[1]),
                                        values={n: {m: float(next(it)) for m in metrics} for n in names},
                                        nearest_index=int(cells[-3]), nearest_distance=float(cells[-2])))
            except ValueError as e:
                raise InputError(f"{csv_path} line {line}: {e}") from None
        return cls(metrics=metrics, machines=machines, settings=settings, rows=tuple(rows),
                   els_beats_is=None if s.get("els_beats_is") is None else float(s["els_beats_is"]),
                   reference=str(s.get("reference", REFERENCE)),
                   as_reported={str(k): str(v) for k, v in dict(s.get("as_reported", {})).items()})

    def records(self, folder) -> Iterator[tuple[SeedMetrics, SeedRecord]]:
        """Each row with its seed's record from ``folder``, in order, for the seeds whose record
        still holds every machine's image made with the settings summarised here (a later run
        with other settings may have replaced some since). A record that does not belong in the
        folder (:meth:`SeedRecord.check`) is an InputError naming it."""
        keys = {n: self.settings.key(n) for n in self.names}
        common_key = self.settings.common_key()
        for row in self.rows:
            path = seed_path(folder, row.seed)
            if not path.exists():
                continue
            rec = SeedRecord.load(path).check(path, common_key=common_key)
            if all(rec.made_with(n, k) for n, k in keys.items()):
                yield row, rec


def _header(names: Sequence[str], metrics: Sequence[str]) -> list[str]:
    return (["seed", "label"] + [f"{m}_{n}" for n in names for m in metrics]
            + ["nearest_index", "nearest_distance", "settings"])


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # a decoding error is a ValueError
        raise InputError(f"cannot read {path}: {e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None


def _abridged(obj, limit: int = 60) -> str:
    """``obj`` as JSON, cut to ``limit`` characters, to name a wrong value in one line."""
    text = json.dumps(obj, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
