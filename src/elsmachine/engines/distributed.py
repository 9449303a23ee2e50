"""A candidate bank sharded across the processes of a ``torch.distributed`` group
(docs/theory.md, "How it computes").

Every rank is given the same full training set and keeps its share: within each class, every
world-th image (so each rank holds about 1/world of every class). A rank streams its share into
its own softmax state; the states of all ranks are then gathered in one collective and merged in
rank order with the exact log-sum-exp merge of :class:`~.softmax.SoftmaxState`, so every rank holds
the same state, as one process holding every image would (to rounding). The best candidate travels
as a global code (image index times pixels plus pixel), so the trace names global images.

Gloo on the CPU, NCCL on GPUs; nothing here when the group is not initialised. :func:`join`
starts the group of a run launched by ``torchrun`` (from its environment) and returns a
:class:`Group` through which commands agree on what to do (rank 0 decides), split seeds, and wait
for each other; outside ``torchrun`` it is a group of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import InputError
from .engine import Wrapping
from .softmax import SoftmaxState

__all__ = ["Group", "join", "Shard", "Sharded", "shard_of", "gather_merge_", "all_reduce_sum", "gather_argmin"]


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InputError("distributed=True needs an initialised torch.distributed process group (run under torchrun)")
    return dist


class Shard:
    """This rank's share of a training set: ``index`` [n] global indices, in ascending order."""

    def __init__(self, index: torch.Tensor, rank: int, world: int) -> None:
        self.index, self.rank, self.world = index, rank, world


def shard_of(n: int, labels: torch.Tensor | None) -> Shard:
    """Within each class (all images when unlabelled), every world-th image from this rank's."""
    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    if labels is None:
        return Shard(torch.arange(rank, n, world), rank, world)
    keep = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        keep.append(members[rank::world])
    return Shard(torch.sort(torch.cat(keep)).values, rank, world)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``t`` (a new tensor; float64 stays float64)."""
    dist = _dist()
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    dist = _dist()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return parts


def gather_merge_(state: SoftmaxState) -> None:
    """Merge ``state`` with the states of the same queries on every rank, in place, in rank order:
    every rank ends with the same state. ``state.source`` must hold global codes (or be None)."""
    fields = [state.m, state.l, state.u, state.best]
    if state.source is not None:
        fields.append(state.source.to(torch.float64))  # codes below 2^53 travel exactly
    pack = torch.cat([f.reshape(-1) for f in fields] + [state.acc.reshape(-1)])
    parts = _all_gather(pack)
    n = state.m.numel()
    merged = None
    for p in parts:
        pieces = [p[i * n : (i + 1) * n].view_as(state.m) for i in range(len(fields))]
        acc = p[len(fields) * n :].view_as(state.acc)
        src = pieces[4].round().long() if state.source is not None else None
        other = SoftmaxState(m=pieces[0].clone(), l=pieces[1].clone(), acc=acc.clone(), u=pieces[2].clone(),
                             best=pieces[3].clone(), value_dim=state.value_dim, source=src)
        if merged is None:
            merged = other
        else:
            merged.merge_(other)
    state.m, state.l, state.u, state.best, state.acc = merged.m, merged.l, merged.u, merged.best, merged.acc
    if state.source is not None:
        state.source = merged.source


def gather_argmin(dist_to: torch.Tensor, code: torch.Tensor, payload: torch.Tensor):
    """Per row, the smallest ``dist_to`` [B] over ranks (the lowest ``code`` on ties), with its
    ``code`` [B] and ``payload`` [B, ...]: the same answer on every rank."""
    d_all = torch.stack(_all_gather(dist_to.to(torch.float64)))  # [R, B]
    c_all = torch.stack(_all_gather(code.to(torch.float64)))
    p_all = torch.stack(_all_gather(payload))
    # Lexicographic: distance first, then the global index (the first on ties).
    order = torch.argsort(c_all, dim=0, stable=True)
    d_sorted = torch.gather(d_all, 0, order)
    pick = torch.gather(order, 0, d_sorted.argmin(dim=0, keepdim=True))[0]  # [B] rank holding each winner
    rows = torch.arange(dist_to.shape[0])
    return d_all[pick, rows], c_all[pick, rows].round().long(), p_all[pick, rows]


@dataclass(frozen=True)
class Group:
    """The processes of one run: ``rank`` of ``world`` (0 of 1 outside torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def split(self, items: list) -> list:
        """This rank's share of ``items``: every world-th, from its rank."""
        return list(items)[self.rank :: self.world]

    def agree(self, obj):
        """Rank 0's ``obj`` on every rank (``obj`` itself in a group of one): so that every rank
        takes the same branch where only rank 0 can see the files."""
        if self.world == 1:
            return obj
        box = [obj]
        _dist().broadcast_object_list(box, src=0)
        return box[0]

    def read(self, path, load):
        """``load(path)`` read by rank 0 where the file exists (None where it does not), on
        every rank: the files of a run are rank 0's, and may be on its node only."""
        return self.agree(load(path) if self.main and path.exists() else None)

    def barrier(self) -> None:
        if self.world > 1:
            _dist().barrier()


def join(device: torch.device | None = None) -> Group:
    """The group of this run: under torchrun (``WORLD_SIZE`` > 1 in the environment) the process
    group is initialised here (NCCL for a CUDA device, else gloo) if it is not already."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError("this torch has no torch.distributed: run without torchrun")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device is not None and device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())


class Sharded(Wrapping):
    """An engine over this rank's share of the bank whose states are merged with every rank's
    (:func:`gather_merge_`): each rank gets the state one process holding every image would."""

    def stream(self, queries, bank, *, trace: bool) -> SoftmaxState:
        state = self.inner.stream(queries, bank, trace=trace)
        gather_merge_(state)
        return state

    def stream_sizes(self, queries, bank) -> SoftmaxState:
        state = self.inner.stream_sizes(queries, bank)
        gather_merge_(state)
        return state
