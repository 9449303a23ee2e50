"""A training set: float32 images [N, C, H, W] in [-1, 1], optional labels, and how it was selected
(docs/theory.md, "Data")."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from ..errors import InputError

__all__ = ["Dataset"]


@dataclass
class Dataset:
    """images: float32 [N, C, H, W] in [-1, 1]; labels: int64 [N] or None; name: where it came
    from; selection: the arguments of :func:`load_dataset` that made it (to load it again);
    class_names: the name of each label (class_names[c] names label c) where the data names its
    classes (an image folder's sub-folders), else None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    selection: dict = field(default_factory=dict)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def classes(self) -> list[int]:
        return [] if self.labels is None else sorted(torch.unique(self.labels).tolist())

    def fingerprint(self) -> str:
        """A hash of the images (as float32) and labels: two sets with the same fingerprint are
        the same training set, in the same order."""
        h = hashlib.sha256(self.images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """What results record of their training data: how it was selected, its size, classes and
        fingerprint."""
        return {**self.selection, "name": self.name, "n": len(self), "classes": self.classes,
                "sha256": self.fingerprint()}

    def subset(self, *, limit: int | None = None, per_class: int | None = None) -> "Dataset":
        """``per_class``: the first N images of every class. ``limit``: N images; for a labelled
        set taken in turn from each class in file order (the first image of every class, then
        the second, ...), so the classes stay balanced even where the file is sorted by class."""
        idx = torch.arange(len(self))
        if per_class is not None:
            if self.labels is None:
                raise InputError(f"dataset {self.name} has no labels, so per_class cannot be used")
            if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
                raise InputError(f"per_class must be a positive integer, got {per_class!r}")
            keep = [torch.nonzero(self.labels == c).flatten()[:per_class] for c in self.classes]
            idx = torch.sort(torch.cat(keep)).values
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise InputError(f"limit must be a positive integer, got {limit!r}")
            if self.labels is not None:
                classes, cls = torch.unique(self.labels[idx], return_inverse=True)
                rank = torch.empty_like(idx)  # the position of each image within its class
                for c in range(classes.numel()):
                    where = torch.nonzero(cls == c).flatten()
                    rank[where] = torch.arange(where.numel())
                order = torch.argsort(rank * classes.numel() + cls, stable=True)
                idx = torch.sort(idx[order[:limit]]).values
            else:
                idx = idx[:limit]
        return Dataset(self.images[idx], None if self.labels is None else self.labels[idx], self.name, self.selection,
                       self.class_names)
