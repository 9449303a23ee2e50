"""The streaming softmax state, its exact merge and its one finalisation (docs/theory.md, "The
computation is attention"; the online softmax of Milakov & Gimelshein 2018, as flash-decoding
merges its splits).

Per query, over the candidates j seen so far with logits z_j and values v_j:

    m    = the running max of z_j (any upper bound of the z_j seen works),
    l    = sum_j exp(z_j - m),
    acc  = sum_j exp(z_j - m) v_j,
    u    = sum_j exp(z_j - m) (z_j - m)            (for the entropy),
    best = max_j z_j                               (for the dominant candidate).

Two states over disjoint candidates merge exactly: rescale each by exp(m_side - m_new). Sums,
never means, so the result does not depend on how the candidates are cut. At the end

    x0_hat = acc / l,   lse = m + log l,   weight of the best = exp(best - lse),
    entropy H = log l - u / l,   effective number of candidates = exp(H).

The state is float64 whatever the inputs: a query meets up to millions of candidates, and
float32 sums of that many terms drift by 1e-4. Each query has its own max, so a query far from
every candidate cannot turn another into NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SoftmaxState", "Finalized", "exp_floor"]

# float32 exp of arguments below about -87 produces subnormal numbers, which are ~10x slower to
# compute; those weights are below 1.7e-38 of the largest one, so clamping changes nothing.
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0, torch.float16: -17.0, torch.bfloat16: -87.0}


def exp_floor(dtype: torch.dtype) -> float:
    """The lowest argument worth passing to exp in ``dtype`` (see ``fold_``'s ``floor``)."""
    return _EXP_FLOOR.get(dtype, -87.0)


@dataclass
class Finalized:
    """out: the weighted sum of the values; lse: log-sum-exp of the logits; weight: the best
    candidate's weight; effective: exp(entropy of the weights). weight and effective are None
    unless the trace was asked for."""

    out: torch.Tensor
    lse: torch.Tensor
    weight: torch.Tensor | None = None
    effective: torch.Tensor | None = None


@dataclass
class SoftmaxState:
    """Running state of queries of shape ``m.shape``; ``acc`` adds the value axis at ``value_dim``."""

    m: torch.Tensor
    l: torch.Tensor
    acc: torch.Tensor
    u: torch.Tensor
    best: torch.Tensor
    value_dim: int
    source: torch.Tensor | None = None  # int64 code of the best candidate (trace)
    # Where the values were centred (attention forms shift both sides by the training mean so
    # the dot products lose less to rounding): [values], added back to the finalised output.
    shift: torch.Tensor | None = None

    @staticmethod
    def empty(shape: tuple[int, ...], values: int, *, value_dim: int, device, trace: bool = False) -> "SoftmaxState":
        f64 = dict(dtype=torch.float64, device=device)
        acc_shape = list(shape)
        acc_shape.insert(value_dim if value_dim >= 0 else len(shape) + 1 + value_dim, values)
        return SoftmaxState(m=torch.full(shape, -math.inf, **f64), l=torch.zeros(shape, **f64),
                            acc=torch.zeros(acc_shape, **f64), u=torch.zeros(shape, **f64),
                            best=torch.full(shape, -math.inf, **f64), value_dim=value_dim,
                            source=torch.zeros(shape, dtype=torch.long, device=device) if trace else None)

    @staticmethod
    def cat(states: list["SoftmaxState"]) -> "SoftmaxState":
        """The states of disjoint query rows stacked along the first dimension (same candidates' kind)."""
        first = states[0]
        src = None if first.source is None else torch.cat([st.source for st in states])
        return SoftmaxState(m=torch.cat([st.m for st in states]), l=torch.cat([st.l for st in states]),
                            acc=torch.cat([st.acc for st in states]), u=torch.cat([st.u for st in states]),
                            best=torch.cat([st.best for st in states]), value_dim=first.value_dim, source=src,
                            shift=first.shift)

    def fold_(self, logits: torch.Tensor, weigh, *, offset: int = 0, rows=None, floor: float | None = None,
              scratch: torch.Tensor | None = None) -> None:
        """Fold one chunk of candidates into the state, in place: ``logits`` [..., L] (overwritten
        with the chunk's weights exp(z - m)), ``weigh(w)`` -> the weighted sum of the chunk's
        values [..., V] (a float tensor), ``offset`` the stream position of the chunk's first
        candidate, ``rows`` an index into the state's leading dimensions (default: all).
        ``floor`` clamps z - m from below before exp (float32 exp of arguments below about -87 is
        subnormal and slow; those weights are below 1e-38 of the largest). ``scratch`` (shaped
        like ``logits``) holds z - m for the entropy when the state traces."""
        r = slice(None) if rows is None else rows
        trace = self.source is not None
        cmax, carg = logits.max(dim=-1) if trace else (logits.amax(dim=-1), None)
        m_old = self.m[r]
        m_new = torch.maximum(m_old, cmax.to(torch.float64))  # a logit's own value: exact in its dtype
        if trace:
            better = cmax.to(torch.float64) > self.best[r]
            self.best[r] = torch.where(better, cmax.to(torch.float64), self.best[r])
            self.source[r] = torch.where(better, carg + offset, self.source[r])
        logits.sub_(m_new.to(logits.dtype).unsqueeze(-1))
        if floor is not None:
            logits.clamp_min_(floor)
        if trace:
            z = scratch if scratch is not None else torch.empty_like(logits)
            z.copy_(logits)
        logits.exp_()
        finite = torch.isfinite(m_old)
        rescale = torch.where(finite, torch.exp(m_old - m_new), torch.zeros_like(m_new))  # 0 on the first chunk
        l_old = self.l[r]
        if trace:
            # sum e^(z - m_new)(z - m_new) = rescale * (u_old + (m_old - m_new) l_old) + this chunk's
            shift = torch.where(finite, m_old - m_new, torch.zeros_like(rescale))
            self.u[r] = rescale * (self.u[r] + shift * l_old) + (logits * z).sum(-1, dtype=torch.float64)
        self.l[r] = l_old * rescale + logits.sum(-1, dtype=torch.float64)
        acc = self.acc[r]
        acc.mul_(self._per_value(rescale)).add_(weigh(logits))
        self.acc[r] = acc
        self.m[r] = m_new

    def _per_value(self, t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(self.value_dim)

    def merge_(self, other: "SoftmaxState") -> torch.Tensor:
        """Fold ``other`` (same queries, other candidates) into this state, exactly; returns
        where ``other`` holds the better best candidate (for fields the caller keeps beside)."""
        m = torch.maximum(self.m, other.m)
        safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        fa = torch.where(torch.isfinite(self.m), torch.exp(self.m - safe), torch.zeros_like(m))
        fb = torch.where(torch.isfinite(other.m), torch.exp(other.m - safe), torch.zeros_like(m))
        da = torch.where(torch.isfinite(self.m), self.m - safe, torch.zeros_like(m))
        db = torch.where(torch.isfinite(other.m), other.m - safe, torch.zeros_like(m))
        self.u = fa * (self.u + da * self.l) + fb * (other.u + db * other.l)
        self.l = fa * self.l + fb * other.l
        self.acc = self._per_value(fa) * self.acc + self._per_value(fb) * other.acc
        self.m = m
        better = other.best > self.best
        if self.source is not None and other.source is not None:
            # An exact tie (the same patch in two images) goes to the lower index, whichever
            # order the states are merged in.
            better = better | ((other.best == self.best) & (other.source < self.source))
            self.source = torch.where(better, other.source, self.source)
        self.best = torch.where(better, other.best, self.best)
        return better

    def finalize(self, dtype: torch.dtype, *, trace: bool) -> Finalized:
        out = (self.acc / self._per_value(self.l)).to(dtype)
        lse = self.m + torch.log(self.l)
        if not trace:
            return Finalized(out=out, lse=lse.to(dtype))
        weight = torch.exp(self.best - lse)
        entropy = (torch.log(self.l) - self.u / self.l).clamp_min(0.0)
        return Finalized(out=out, lse=lse.to(dtype), weight=weight.to(dtype), effective=entropy.exp().to(dtype))
