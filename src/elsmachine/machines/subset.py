"""Opt-in subsets of the training set, with a bound on what they leave out (docs/theory.md,
"Subsets with a bound"). GoldDiff (Shang et al., "Fast and Scalable Analytical Diffusion", ICML
2026) observes that the images carrying the softmax weight shrink from the whole set at high
noise to a neighbourhood at low noise, and keeps a subset chosen coarse to fine. Here every
softmax over a subset comes with a rigorous bound on the share of the exact softmax it leaves out.

**Selection.** Cut each image into f x f blocks per channel (f = ``subset_pool``; edge blocks are
smaller). With n_b the entries of block b, m_b their mean and r_b = |y_b - m_b| the norm of their
deviations from it, the pooled image with one more channel is

    e(y) = (sqrt(n_b) m_b, r_b)_b,   2 C ceil(H / f) ceil(W / f) numbers.

The coarse screen ranks the training images of the query's class by LB_n = |e(x_t) - a e(Y_n)|^2
(per query image, lower index first on ties). The subset S is the M best (``subset``: a count, or a
fraction of the class), or, with ``subset_bound = eps``, the shortest of the prefixes M0, 2 M0,
4 M0, ... of that ranking whose bound is at most eps: each step streams only the images it adds,
and the softmax states merge exactly (:meth:`SoftmaxState.merge_`).

**The bound.** Within a block the deviations from the mean sum to zero, so the cross term
vanishes (Pythagoras) and the reverse triangle inequality (a >= 0) bounds the rest:

    sum_{i in b} (x_i - a y_i)^2 = n_b (m_x - a m_y)^2 + |dx - a dy|^2 >= n_b (m_x - a m_y)^2 + (r_x - a r_y)^2.

Summed over blocks, LB_n <= |x_t - a Y_n|^2 for every image (dropping the r term leaves the
Cauchy-Schwarz bound n_b (mean x - a mean y)^2; f = 1 makes LB_n exact).

- IS: a left-out image's unnormalised weight is at most exp(-LB_n / (2 s^2)). With Z_S the exact
  sum over S and U = sum_{n not in S} exp(-LB_n / (2 s^2)), the share L / (Z_S + L) of the full
  softmax left out grows with the left-out sum L <= U, so it is at most eps = U / (Z_S + U).
- LS, ELS: at query pixel q a left-out image n offers c_q candidates (LS: 1; ELS: the pixels with
  q's padding footprint, :mod:`.candidates`). Each k x k patch is one block per channel, and the
  minimum over n's candidates p of q splits into two one-dimensional searches in the image's
  sorted patch means and sorted patch norms:

      LB_qn = sum_c [min_p k^2 (m_x,c - a m_p,c)^2 + min_p (r_x,c - a r_p,c)^2] <= |P_q(x_t) - a P_p(Y_n)|^2,

  U_q = sum_{n not in S} c_q exp(-LB_qn / (2 s^2)), and eps_q = U_q / (Z_S,q + U_q) per pixel.

The output follows: x0_full = (1 - lam) x0_S + lam x0_out, with lam the left-out share and x0_out
an average of left-out values, so |x0_S - x0_full| <= eps (max Y - min Y). The machine reports the
largest eps of each call (``subset_report``). Everything is in log space: log Z_S is the state's
log-sum-exp, less |x - a mu|^2 / (2 s^2) (per patch) where an attention form centred its logits by
the training mean mu, and eps = exp(log U - logaddexp(log Z_S, log U)).

The bound holds in exact arithmetic for the softmax the engine computes; the float64 statistics
behind it are shrunk by a margin far above their rounding. It is tight where the left-out images
are far from the query in the pooled picture (IS at low noise); it is loose where many left-out
candidates match the query's block means and norms but not its detail. On data with a common
background (MNIST) the ELS bound is near 1 at every step, and the share left out is itself about
1 - M / N: at a background pixel every image offers background patches as close as the subset's.
Their values, -1 like the subset's, hardly move x0_hat, but the bound on the error says nothing.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .. import checks
from ..engines.engine import Bank, as_float
from ..engines.softmax import SoftmaxState
from ..errors import InputError
from .declaration import Option

__all__ = [
    "SUBSET_OPTIONS",
    "SubsetSelection",
    "image_embedding",
    "patch_lower_bounds",
    "patch_statistics",
    "subset_size",
]

SUBSET_OPTIONS = (
    Option("subset", "subset", None, "Approximate, with a bound: each query meets only the M training images of its "
           "class nearest by a pooled screen (an integer M, or a fraction of the class such as 0.1); with "
           "subset_bound, the first prefix tried.", flag="--subset", recorded=False),
    Option("subset_bound", float, None, "Approximate, with a bound: the shortest doubling prefix of the pooled "
           "ranking whose left-out softmax share is at most this (0 < eps < 1).", flag="--subset-bound",
           recorded=False),
    Option("subset_pool", int, 4, "Block side f of the pooled screen and bound of the subset mode.",
           flag="--subset-pool", recorded=False),
)

# The float64 statistics behind a bound are shrunk by this much (relative), far above their
# rounding (about 1e-16 per operation), so rounding never lifts a lower bound above a distance.
_SLACK = 1e-10
# The sorted patch statistics are held in float32 (half the memory, so a class's fit the cache
# between calls); their rounding, and that of the float32 gaps, is covered by this (relative) slack.
_SLACK32 = 4e-6
_FIRST_SHARE = 64  # subset_bound without subset: the first prefix is 1/64 of the class


def subset_size(v):
    """``subset`` as given: None, an int M >= 1 (a count), a float in (0, 1] (a share of the
    class), or their text ("100", "0.1", "10%")."""
    if v is None:
        return None
    if isinstance(v, str):
        text = v.strip()
        try:
            v = int(text)
        except ValueError:
            try:
                v = float(text[:-1]) / 100 if text.endswith("%") else float(text)
            except ValueError:
                raise InputError(f"subset must be a count (an integer >= 1) or a share of the class in (0, 1], "
                                 f"got {text!r}") from None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InputError(f"subset must be a count (an integer >= 1) or a share of the class in (0, 1], got {v!r}")
    if isinstance(v, numbers.Integral):
        if v < 1:
            raise InputError(f"subset must be a count >= 1 or a share in (0, 1], got {v!r}")
        return int(v)
    if not (0.0 < float(v) <= 1.0):
        raise InputError(f"a subset share must lie in (0, 1], got {v!r}")
    return float(v)


def _bound_value(v):
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InputError(f"subset_bound must be a number in (0, 1), got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 < float(v) < 1.0):
        raise InputError(f"subset_bound must be a number in (0, 1), got {v!r}")
    return float(v)


# ----------------------------------------------------------------------------- the statistics
def image_embedding(images: torch.Tensor, f: int) -> torch.Tensor:
    """e(y) [n, 2 C Hb Wb] (float64) of images [n, C, H, W]: per f x f block (edge blocks
    smaller), sqrt(n_b) * its mean and the norm of its deviations from that mean, the deviations
    summed directly (no difference of large sums)."""
    y = images.to(torch.float64)
    n, C, H, W = y.shape
    Hb, Wb = -(-H // f), -(-W // f)
    pad = (0, Wb * f - W, 0, Hb * f - H)
    ones = F.pad(torch.ones(1, 1, H, W, dtype=torch.float64, device=y.device), pad)
    count = ones.view(1, 1, Hb, f, Wb, f).sum(dim=(3, 5))  # [1, 1, Hb, Wb]
    blocks = F.pad(y, pad).view(n, C, Hb, f, Wb, f)
    mean = blocks.sum(dim=(3, 5)) / count
    dev = (blocks - mean.view(n, C, Hb, 1, Wb, 1)) * ones.view(1, 1, Hb, f, Wb, f)  # padding contributes 0
    norm = (dev * dev).sum(dim=(3, 5)).sqrt()
    return torch.cat([(mean * count.sqrt()).flatten(1), norm.flatten(1)], dim=1)


def _extended(y: torch.Tensor, k: int, padding: str) -> torch.Tensor:
    """y [n, C, H, W] -> [n, C, H + 2h, W + 2h]: zeros outside, or periodic (a window wider than
    the image wraps again, as :func:`~.candidates.gather_patches` reads it)."""
    h = k // 2
    H, W = y.shape[-2:]
    if padding == "zeros":
        return F.pad(y, (h, h, h, h))
    ri = (torch.arange(H + 2 * h, device=y.device) - h) % H
    ci = (torch.arange(W + 2 * h, device=y.device) - h) % W
    return y[:, :, ri][:, :, :, ci]


def _box(v: torch.Tensor, k: int) -> torch.Tensor:
    """k x k window sums [..., H, W] of an extended image [..., H + 2h, W + 2h], by one cumulative
    sum along each axis (float64: the sums are short, their rounding far below the slack)."""
    c = F.pad(v.cumsum(-1), (1, 0))
    v = c[..., k:] - c[..., :-k]
    c = F.pad(v.cumsum(-2), (0, 0, 1, 0))
    return c[..., k:, :] - c[..., :-k, :]


def patch_statistics(images: torch.Tensor, k: int, padding: str):
    """(mean, norm) [n, C, H, W] float64 of the k x k patch at every pixel (padded as the
    machine pads): its mean per channel, and the norm of its deviations from that mean; and
    (slack_mean, slack_norm), how far rounding may have moved them."""
    y = _extended(images.to(torch.float64), k, padding)
    s1, s2 = _box(y, k), _box(y * y, k)
    kk = k * k
    mean = s1 / kk
    sq = s2 - s1 * s1 / kk
    slack_norm = math.sqrt(_SLACK * (1.0 + float(s2.max()))) if s2.numel() else 0.0
    slack_mean = _SLACK * (1.0 + float(mean.abs().max())) if mean.numel() else 0.0
    return mean, sq.clamp_min(0.0).sqrt(), (slack_mean, slack_norm)


def _slack32(v: torch.Tensor) -> float:
    return _SLACK32 * (1.0 + float(v.abs().max())) if v.numel() else 0.0


def _axis(L: int, k: int, kind: str, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(shared, own) indices of one axis: an index in ``shared`` meets every shared index of the
    axis as a candidate, one in ``own`` only itself (docs/theory.md, "Padding footprints")."""
    idx = torch.arange(L)
    if kind == "ls":
        return idx[:0], idx
    if padding == "circular":
        return idx, idx[:0]
    h = k // 2
    inner = (idx >= h) & (idx <= L - 1 - h)
    return idx[inner], idx[~inner]


def _nearest(sorted_v: torch.Tensor, target: torch.Tensor, a: float) -> torch.Tensor:
    """[n, ..., Q]: min over the candidates v of |target - a v| for every image, with the
    candidates sorted along the last dimension of ``sorted_v`` [n, ..., P] and the targets
    [..., Q] shared by the images (a > 0, so the order of a v is v's). The targets are searched
    in increasing order, which keeps the binary searches in cache."""
    P = sorted_v.shape[-1]
    shape = (sorted_v.shape[0], *target.shape)
    order = target.argsort(-1)
    ts = target.gather(-1, order)
    idx = torch.searchsorted(sorted_v, (ts / a).unsqueeze(0).expand(shape).contiguous())
    lo = sorted_v.gather(-1, (idx - 1).clamp(min=0))
    hi = sorted_v.gather(-1, idx.clamp(max=P - 1))
    gap = torch.minimum((ts - a * lo).abs(), (ts - a * hi).abs())
    return torch.empty_like(gap).scatter_(-1, order.unsqueeze(0).expand(shape), gap)


class _SortedPatches:
    """The patch statistics of a chunk of images, sorted per class of query pixels that share
    their candidate pixels (the product of the two axes' classes, :func:`_axis`), in float32."""

    def __init__(self, mean, norm, slack, k, kind, padding) -> None:
        self.n, _, self.H, self.W = mean.shape
        self.k = k
        self.slack = tuple(sl + _slack32(v) for sl, v in zip(slack, (mean, norm)))
        mean, norm = mean.to(torch.float32), norm.to(torch.float32)
        self.rows, self.cols = _axis(self.H, k, kind, padding), _axis(self.W, k, kind, padding)
        (rs, rb), (cs, cb) = self.rows, self.cols
        self.parts = {}
        if len(rb) and len(cb):  # own row and own column: the one candidate is the pixel itself
            self.parts["bb"] = tuple(v[:, :, rb][:, :, :, cb].contiguous() for v in (mean, norm))
        if len(rs) and len(cs):  # shared x shared: every pixel of the block meets every other
            self.parts["ss"] = tuple(v[:, :, rs][:, :, :, cs].flatten(2).sort(-1).values.contiguous()
                                     for v in (mean, norm))
        if len(rb) and len(cs):  # an own row: its shared columns
            self.parts["bs"] = tuple(v[:, :, rb][:, :, :, cs].sort(-1).values.contiguous() for v in (mean, norm))
        if len(rs) and len(cb):  # an own column: its shared rows
            self.parts["sb"] = tuple(v[:, :, rs][:, :, :, cb].transpose(2, 3).contiguous().sort(-1).values
                                     for v in (mean, norm))

    def counts(self, H: int, W: int, device) -> torch.Tensor:
        """c_q [H, W]: how many candidates an image offers each query pixel."""
        (rs, _), (cs, _) = self.rows, self.cols
        r = torch.ones(H, dtype=torch.float64)
        c = torch.ones(W, dtype=torch.float64)
        r[rs] = float(len(rs))
        c[cs] = float(len(cs))
        return (r.view(-1, 1) * c.view(1, -1)).to(device)

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for part in self.parts.values() for v in part)

    def lower_bounds(self, mx, rx, qslack, a: float) -> torch.Tensor:
        """LB [n, H, W]: for each image of the chunk and query pixel q, a lower bound on the
        distance of q's patch (mean mx, norm rx [C, H, W]) to every candidate patch of q."""
        n, H, W = self.n, self.H, self.W
        kk = self.k * self.k
        dm_slack = qslack[0] + _slack32(mx) + a * self.slack[0]
        dn_slack = qslack[1] + _slack32(rx) + a * self.slack[1]
        mx, rx = mx.to(torch.float32), rx.to(torch.float32)
        (rs, rb), (cs, cb) = self.rows, self.cols
        out = torch.empty(n, H, W, dtype=torch.float64, device=mx.device)

        def term(gm, gn):  # [n, C, ...] gaps -> summed over channels
            gm = (gm - dm_slack).clamp_min(0.0).to(torch.float64)
            gn = (gn - dn_slack).clamp_min(0.0).to(torch.float64)
            return (kk * gm * gm + gn * gn).sum(1)

        if "ss" in self.parts:
            sm, sn = self.parts["ss"]
            tm, tn = (v[:, rs][:, :, cs].flatten(1) for v in (mx, rx))
            lb = term(_nearest(sm, tm, a), _nearest(sn, tn, a))
            out[:, rs.view(-1, 1), cs.view(1, -1)] = lb.view(n, len(rs), len(cs))
        if "bs" in self.parts:
            sm, sn = self.parts["bs"]
            tm, tn = (v[:, rb][:, :, cs] for v in (mx, rx))
            out[:, rb.view(-1, 1), cs.view(1, -1)] = term(_nearest(sm, tm, a), _nearest(sn, tn, a))
        if "sb" in self.parts:
            sm, sn = self.parts["sb"]
            tm, tn = (v[:, rs][:, :, cb].transpose(1, 2) for v in (mx, rx))
            out[:, rs.view(-1, 1), cb.view(1, -1)] = term(_nearest(sm, tm, a), _nearest(sn, tn, a)).transpose(1, 2)
        if "bb" in self.parts:
            sm, sn = self.parts["bb"]
            r, c = rb.view(-1, 1), cb.view(1, -1)
            out[:, r, c] = term((mx[:, r, c].unsqueeze(0) - a * sm).abs(), (rx[:, r, c].unsqueeze(0) - a * sn).abs())
        return out * (1.0 - _SLACK)


def patch_lower_bounds(x, Y, a: float, k: int, kind: str, padding: str):
    """LB [n, H, W] and c_q [H, W] of one query image x [C, H, W] against images Y [n, C, H, W]
    (the bound of the module docstring, for tests and benchmarks)."""
    mx, rx, qs = patch_statistics(x[None], k, padding)
    my, ry, ys = patch_statistics(Y, k, padding)
    sp = _SortedPatches(my, ry, ys, k, kind, padding)
    return sp.lower_bounds(mx[0], rx[0], qs, a), sp.counts(*x.shape[-2:], x.device)


def _log_normaliser(state: SoftmaxState, x, a: float, s: float, k, padding) -> torch.Tensor:
    """log Z_S of one query row: [1] (whole images) or [1, H, W] (patches), from the state's
    log-sum-exp. An attention form (``state.shift``, the training mean mu) dropped
    |q - a mu|^2 / (2 s^2) from every logit of a query q; it is taken off again."""
    lse = state.m + torch.log(state.l)
    if state.shift is None:
        return lse
    mu = state.shift.to(device=x.device, dtype=torch.float64).view(1, -1, 1, 1)
    xd = x.to(torch.float64)
    if k is None:
        q2 = ((xd - a * mu) ** 2).sum().view(1)
    else:  # a zero-padded entry of x is 0, so it enters as -a mu, as in the attention form's patches
        q2 = _box(((_extended(xd, k, padding) - a * mu) ** 2).sum(1), k)
    return lse.to(torch.float64) - q2.to(lse.device) / (2.0 * s * s)


def _share(log_u: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """U / (Z + U) from logs, 0 where nothing is left out (log U = -inf)."""
    log_u = log_u.to(log_z.device)
    return torch.exp(log_u - torch.logaddexp(log_z, log_u))


# ----------------------------------------------------------------------------- the machines' part
def _part(bank: Bank, positions: torch.Tensor) -> Bank:
    """The images of ``bank`` at ``positions``, in index order (as the full bank streams them, so
    ties go to the lower index as there), not cached."""
    pos = positions.sort().values
    return Bank(bank.images[pos], bank.index[pos], bank.mean, key=None)


class SubsetSelection:
    """The subset mode of the softmax machines (see the module docstring). A machine that
    declares the options (``SUBSET_OPTIONS``) streams, per query image, only its subset of the
    class's bank through its engine, and appends to ``subset_report`` per call one dict:
    t (one time, or the call's distinct times), size (the largest subset of the call), mean_size,
    of (the largest class size), bound (the largest bound over its query images and pixels) and
    mean_bound (the bound averaged over them).
    ``describe()`` records subset, subset_bound and subset_pool while the mode is on;
    :meth:`subset_ranking` gives the screen's order, :meth:`left_out_share` the exact share the
    bound bounds."""

    subset = None
    subset_bound = None
    subset_pool = 4
    _report_rows = None
    _capture = None

    def _init_subset(self, subset, subset_bound, subset_pool, distributed: bool) -> None:
        subset, subset_bound = subset_size(subset), _bound_value(subset_bound)
        pool = checks.positive_int(subset_pool, "subset_pool")
        on = subset is not None or subset_bound is not None
        if on and self.declaration.option("subset") is None:
            raise InputError(f"the {self.name} machine has no subset mode (subset=, subset_bound=)")
        if on and distributed:
            raise InputError("subset= ranks the whole class: not on a sharded machine (distributed=True)")
        self.subset, self.subset_bound, self.subset_pool = subset, subset_bound, pool
        self.subset_report: list[dict] = []
        self._embeddings: dict = {}
        self._sorted_stats: dict = {}

    @property
    def subsetting(self) -> bool:
        """Whether the subset mode is on."""
        return self.subset is not None or self.subset_bound is not None

    def describe(self) -> dict:
        d = super().describe()
        if self.subsetting:
            d.update(subset=self.subset, subset_bound=self.subset_bound, subset_pool=self.subset_pool)
        return d

    def _call_starts(self) -> None:
        self._report_rows = [] if self.subsetting else None

    def _call_ends(self, tt: torch.Tensor) -> None:
        rows, self._report_rows = self._report_rows, None
        if not rows:
            return
        times = sorted({float(v) for v in tt.tolist()}, reverse=True)
        self.subset_report.append({
            "t": times[0] if len(times) == 1 else times,
            "size": max(r[0] for r in rows), "mean_size": sum(r[0] for r in rows) / len(rows),
            "of": max(r[1] for r in rows), "bound": max(r[2] for r in rows),
            "mean_bound": sum(r[3] for r in rows) / len(rows)})

    # ------------------------------------------------------------------ selection and bound
    def _first_size(self, n: int) -> int:
        v = self.subset
        if v is None:
            return max(1, math.ceil(n / _FIRST_SHARE))
        return max(1, min(n, v if isinstance(v, int) else math.ceil(v * n)))

    def _stops(self, n: int) -> list[int]:
        """The prefix sizes tried, increasing, the last the whole class."""
        m = self._first_size(n)
        if self.subset_bound is None:
            return [m] if m >= n else [m, n]
        stops = [m]
        while stops[-1] < n:
            stops.append(min(n, 2 * stops[-1]))
        return stops

    def _embedding(self, bank: Bank, cls, device) -> torch.Tensor:
        key = (cls, self.subset_pool, device)
        hit = self._embeddings.get(key)
        if hit is None:  # converted and pooled a block of images at a time
            per = max(1, (self.memory_budget // 16) // (3 * 8 * math.prod(self.image_shape)))
            hit = self._embeddings[key] = torch.cat([
                image_embedding(as_float(bank.images[n0 : n0 + per], torch.float64, device), self.subset_pool)
                for n0 in range(0, len(bank), per)])
        return hit

    def _screen(self, x, a: float, bank: Bank, cls):
        """(LB [n], ranking [n]) of one query image x [C, H, W]: the pooled lower bounds on
        |x - a Y_n|^2 (shrunk by the slack), and the positions nearest first, lower first on ties."""
        emb = self._embedding(bank, cls, x.device)
        ex = image_embedding(x.to(torch.float64)[None], self.subset_pool)
        lb = ((ex - a * emb) ** 2).sum(1) * (1.0 - _SLACK)
        return lb, torch.sort(lb, stable=True).indices

    def subset_ranking(self, x: torch.Tensor, t: float, cls=None) -> torch.Tensor:
        """int64 [n]: the positions among the images of class ``cls`` (all when None) ranked by
        the coarse screen for query x [C, H, W] at time t, nearest first; a subset of M is the
        first M (as a set; it is streamed in index order)."""
        x = checks.query(x[None] if x.dim() == 3 else x, self.image_shape)[0]
        if cls is not None and int(cls) not in self.classes:
            raise InputError(f"class {cls} has no training images (classes present: {self.classes})")
        a = float(self.schedule.coefficients(checks.times(t, 1), x[None])[0][0])  # as a call computes it
        cls = None if cls is None else int(cls)
        return self._screen(x, a, self.bank(cls), cls)[1].cpu()

    def _subset_state(self, x, a, s, k, cls, trace, stream) -> SoftmaxState:
        """The softmax state of the rows x [B, C, H, W] (one class; k None for whole images, else
        the patch size) over each row's subset, with its bound recorded. ``stream(row, bank)``
        streams one row over a bank through the machine's engine."""
        bank = self.bank(cls)
        n = len(bank)
        B = x.shape[0]
        stops = self._stops(n)
        if stops[0] >= n:  # the whole class: the exact path, nothing left out
            states = [stream(b, bank) for b in range(B)]
            if self._capture is not None:
                self._capture.extend(torch.zeros_like(st.m) for st in states)
            self._record([(n, n, 0.0, 0.0)] * B)
            return SoftmaxState.cat(states)
        a64, s64 = a.to(torch.float64).cpu(), s.to(torch.float64).cpu()
        xd = x.to(torch.float64)
        orders, log_u = [], []
        for b in range(B):
            lb, order = self._screen(xd[b], float(a64[b]), bank, cls)
            orders.append(order.cpu())
            if k is None:  # log U at each stop: the log-sum-exp of the bounds of the images after it
                v = -lb[order] / (2.0 * float(s64[b]) ** 2)
                tail = torch.logcumsumexp(v.flip(0), 0).flip(0)
                log_u.append([tail[m].view(1) if m < n else tail.new_full((1,), -math.inf) for m in stops])
        if k is not None:
            log_u = self._patch_log_u(xd, a64, s64, k, bank, cls, orders, stops)
        states, rows = [], []
        for b in range(B):
            state, done = None, 0
            for j, m in enumerate(stops):
                part = stream(b, _part(bank, orders[b][done:m]))
                if state is None:
                    state = part
                else:
                    state.merge_(part)
                done = m
                log_z = _log_normaliser(state, x[b : b + 1], float(a64[b]), float(s64[b]), k, self.padding)
                share = _share(log_u[b][j], log_z)
                eps = float(share.max())
                if self.subset_bound is None or eps <= self.subset_bound or m >= n:
                    break
            states.append(state)
            rows.append((done, n, eps, float(share.mean())))
            if self._capture is not None:  # left_out_share: the rest of the class, streamed exactly
                self._capture.append(self._rest_share(state, stream(b, _part(bank, orders[b][done:]))))
        self._record(rows)
        return SoftmaxState.cat(states)

    @staticmethod
    def _rest_share(kept: SoftmaxState, rest: SoftmaxState) -> torch.Tensor:
        """Z_rest / (Z_kept + Z_rest) from two states of one query over disjoint candidates (an
        attention form's dropped term is the same in both and cancels)."""
        lse_in, lse_out = kept.m + torch.log(kept.l), rest.m + torch.log(rest.l)
        return torch.where(torch.isfinite(lse_out), torch.exp(lse_out - torch.logaddexp(lse_in, lse_out)),
                           torch.zeros_like(lse_in))

    def left_out_share(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        """float64 [B] (whole images) or [B, H, W] (per pixel): the exact share of each query's
        softmax on the images of its class that its subset leaves out, which the reported bound
        bounds. It streams the rest of the class, so it costs an exact call (for measurements)."""
        if not self.subsetting:
            raise InputError("left_out_share needs the subset mode (subset= or subset_bound=)")
        x = checks.query(x, self.image_shape)
        B = x.shape[0]
        tt = checks.times(t, B)
        lab = None if labels is None else checks.labels_tensor(labels, B, "labels")
        kept, out = len(self.subset_report), []
        for b in range(B):
            self._capture = []
            try:
                self._run(x[b : b + 1], tt[b : b + 1], None if lab is None else lab[b : b + 1], patch_size, False)
                out.append(self._capture[0].to(torch.float64).cpu())
            finally:
                self._capture = None
        del self.subset_report[kept:]  # a measurement, not a call
        return torch.cat(out)

    def _sorted_chunks(self, k: int, bank: Bank, cls, device):
        """The sorted patch statistics of the class's images at size k, chunk by chunk (kept for
        the next call, one size per machine, where they fit a quarter of the memory budget)."""
        key = (cls, k, device)
        hit = self._sorted_stats.get(key)
        if hit is not None:
            yield from hit
            return
        C, H, W = self.image_shape
        per = max(1, (self.memory_budget // 64) // (C * (H + k) * (W + k) * 8))
        kept, size = [], 0
        for n0 in range(0, len(bank), per):
            my, ry, ys = patch_statistics(as_float(bank.images[n0 : n0 + per], torch.float64, device), k, self.padding)
            sp = _SortedPatches(my, ry, ys, k, self.candidate_kind, self.padding)
            size += sp.nbytes
            if kept is not None:
                kept = kept + [sp] if size <= self.memory_budget // 4 else None
            yield sp
        self._sorted_stats = {} if kept is None else {key: kept}

    def _patch_log_u(self, xd, a64, s64, k, bank: Bank, cls, orders, stops) -> list[list[torch.Tensor]]:
        """Per row and stop, log U_q [H, W]: the log-sum-exp over the images ranked after the stop
        of log c_q - LB_qn / (2 s^2), from the sorted patch statistics in chunks of images."""
        n = len(bank)
        B, _, H, W = xd.shape
        dev = xd.device
        mx, rx, qslack = patch_statistics(xd, k, self.padding)
        bounds = torch.tensor(stops)
        segs = []
        for order in orders:  # each image's segment: -1 inside the first prefix, j between stops j and j + 1
            rank = torch.empty(n, dtype=torch.long)
            rank[order] = torch.arange(n)
            segs.append(torch.bucketize(rank, bounds, right=True) - 1)
        R = len(stops) - 1
        acc = torch.full((B, max(R, 1), H, W), -math.inf, dtype=torch.float64, device=dev)
        log_c, end = None, 0
        for sp in self._sorted_chunks(k, bank, cls, dev):
            if log_c is None:
                log_c = sp.counts(H, W, dev).log()
            start, end = end, end + sp.n
            for b in range(B):
                seg = segs[b][start:end].to(dev)
                if not bool((seg >= 0).any()):
                    continue
                v = log_c - sp.lower_bounds(mx[b], rx[b], qslack, float(a64[b])) / (2.0 * float(s64[b]) ** 2)
                for j in torch.unique(seg[seg >= 0]).tolist():
                    acc[b, j] = torch.logaddexp(acc[b, j], torch.logsumexp(v[seg == j], 0))
        out = []
        for b in range(B):
            tail = torch.logcumsumexp(acc[b, :R].flip(0), 0).flip(0) if R else acc[b, :0]
            out.append([tail[j] if j < R else torch.full((H, W), -math.inf, dtype=torch.float64, device=dev)
                        for j in range(len(stops))])
        return out

    def _record(self, rows) -> None:
        if self._report_rows is not None:
            self._report_rows.extend(rows)
