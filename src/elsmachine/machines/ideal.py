"""IS, the ideal score machine: the exact denoiser of the empirical training distribution
(docs/theory.md, "The score machines"; the paper's ideal score).

    x0_hat = sum_n softmax_n(-|x_t - a Y_n|^2 / (2 s^2)) Y_n.

On the attention engine: dropping |x_t|^2, which is the same for every candidate, leaves the
logits (a / s^2) x.y - (a^2 / (2 s^2)) |y|^2, i.e. queries [(a/s^2) x, -(a^2 / (2 s^2))] against
keys [y, |y|^2]. Both sides are first shifted by the training mean (x - a mu, y - mu), which
leaves x - a y unchanged but makes the norms small, so the dot products lose less to rounding.

With ``subset=`` (opt-in) each noisy image meets only the images of its class nearest by a pooled
screen, and the call reports a bound on the share of the softmax left out (:mod:`.subset`).
"""

from __future__ import annotations

import torch

from ..engines.attention import attention_state
from ..engines.engine import Bank, KeyCache
from ..engines.softmax import SoftmaxState
from .base import CandidateMachine, Trace
from .declaration import Cost, SOFTMAX, Declaration, Option
from .forms import PatchQueries
from .subset import SUBSET_OPTIONS

__all__ = ["IdealMachine", "WholeImages"]


class WholeImages:
    """The attention form over whole training images: one query per noisy image; the state is
    [B] with the C*H*W values last and ``source`` the global index of the best image."""

    name = "attention"
    several_sizes = False

    def __init__(self, cache: KeyCache, memory_budget: int, backend: str) -> None:
        self.cache, self.memory_budget, self.backend = cache, memory_budget, backend
        self._norms: dict = {}

    def _chunks(self, Y, mu, D, itemsize):
        per = max(1, (self.memory_budget // 4) // ((D + 1) * itemsize))
        for n0 in range(0, Y.shape[0], per):
            yield _keys(Y[n0 : n0 + per], mu, D)

    def stream(self, queries: PatchQueries, bank: Bank, *, trace: bool) -> SoftmaxState:
        x, a, s = queries.x, queries.a, queries.s
        Y = bank.as_float(x.dtype, x.device)
        mu = bank.mean.to(device=x.device, dtype=x.dtype)
        B, C, H, W = x.shape
        D = C * H * W
        q = x.new_empty(1, B, D + 1)
        q[0, :, :D] = (x - (a.view(-1, 1, 1, 1) * mu.view(1, -1, 1, 1))).reshape(B, D) * (a / s**2).view(-1, 1)
        q[0, :, D] = -(a**2) / (2 * s**2)
        n = Y.shape[0]
        key = None if bank.key is None else ("ideal", x.dtype, x.device, bank.key)
        keys = self.cache.get(key, n * (D + 1) * x.element_size(), lambda: _keys(Y, mu, D)) if n else None
        chunks = [keys] if keys is not None else self._chunks(Y, mu, D, x.element_size())
        st = attention_state(q, chunks, slice(0, D), trace=trace, backend=self.backend)
        source = None
        if trace:  # stream positions -> global image indices
            source = bank.index.to(x.device)[st.source[0]] if n else st.source[0]
        state = SoftmaxState(m=st.m[0], l=st.l[0], acc=st.acc[0], u=st.u[0], best=st.best[0], value_dim=-1,
                             source=source, shift=mu)
        if n:
            exact = self._exact_keys(Y, mu, D, x.device, bank.key)
            _refine_near_max(state, q[0], x, a, s, Y, mu, bank, keys, self._chunks, trace, exact)
        return state

    def _exact_keys(self, Y, mu, D, device, bank_key):
        """(float64 keys [n, D + 1] = [y - mu, |y - mu|^2] or None where they do not fit the cache,
        max_j of their norm), kept between calls as the float32 keys are."""
        key = None if bank_key is None else ("ideal64", device, bank_key)
        keys = self.cache.get(key, Y.shape[0] * (D + 1) * 8,
                              lambda: _keys(Y.to(device=device, dtype=torch.float64), mu.to(torch.float64), D)[0])
        if keys is None:
            return None, None
        norm = self._norms.get(key) if key is not None else None
        if norm is None:
            norm = float(keys.norm(dim=1).max())
            if key is not None:
                self._norms[key] = norm
        return keys, norm


# Candidates whose logit lies more than this below a query's max weigh less than e^-40 = 4e-18 of
# it each: left out of the exact recomputation, a million of them change the sum by 4e-12.
_REFINE_SPAN = 40.0


def _refine_near_max(state: SoftmaxState, q, x, a, s, Y, mu, bank: Bank, keys, chunks, trace: bool,
                     exact_keys=(None, None)) -> None:
    """Recompute, in place and in float64, the state of every query whose logits the matrix
    product may have rounded by more than the dtype's unit roundoff.

    The logit q.k of the attention form is a dot product of D + 1 terms, rounded by at most
    delta = gamma_{D+3} sum_i |q_i k_i| <= gamma_{D+3} |q| max_j |k_j| (gamma_n = n u / (1 - n u),
    u the unit roundoff; two more terms for rounding q and k themselves). Late in sampling |q|
    grows as a / s^2, and a shift of delta in a logit moves its weight by a factor e^delta. For
    such queries, every candidate within _REFINE_SPAN + 2 delta of a query's max by the rounded
    logits (so every candidate within _REFINE_SPAN of its true max) gets its logit again from
    queries and keys built in float64, whose rounding is 2^29 times smaller, and the query's state
    is rebuilt from those candidates alone. Rounded logits then decide only which candidates lie
    far below the max."""
    B, C, H, W = x.shape
    D = C * H * W
    unit = torch.finfo(x.dtype).eps / 2
    if x.is_cuda and x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        unit = 2.0**-11  # TensorFloat-32 products keep 10 bits of mantissa
    if unit <= torch.finfo(torch.float64).eps / 2:
        return
    gamma = (D + 3) * unit / (1 - (D + 3) * unit)
    k64, knorm = exact_keys
    if knorm is None:
        knorm = _key_norm_max(keys, Y, mu, D, chunks, x.element_size())
    delta = gamma * q.to(torch.float64).norm(dim=1) * knorm
    rows = torch.nonzero((2 * delta > unit) & torch.isfinite(state.m)).flatten()
    if rows.numel() == 0:
        return
    z = _rounded_logits(q[rows], keys, Y, mu, D, chunks, x.element_size()).to(torch.float64)  # [r, n]
    near = z >= z.max(1, keepdim=True).values - (_REFINE_SPAN + 2 * delta[rows, None])
    idx = torch.nonzero(near.any(0)).flatten()
    f64 = torch.float64
    mu64 = mu.to(f64).view(1, -1, 1, 1)
    if k64 is not None:
        if 2 * idx.numel() > k64.shape[0]:  # most of the set is near a max: every key, no gathered copy
            idx = torch.arange(k64.shape[0], device=k64.device)
            sel = k64
        else:
            sel = k64[idx]
        yc, sq = sel[:, :D], sel[:, D]
    else:
        yc = (Y[idx.to(Y.device)].to(device=x.device, dtype=f64) - mu64).reshape(-1, D)  # the values, centred
        sq = (yc * yc).sum(1)
    a64, s64 = a[rows].to(f64), s[rows].to(f64)
    xc = (x[rows].to(f64) - a64.view(-1, 1, 1, 1) * mu64).reshape(-1, D)
    exact = (a64 / s64**2).view(-1, 1) * (xc @ yc.T) - (a64**2 / (2 * s64**2)).view(-1, 1) * sq
    exact = exact.masked_fill(~near[:, idx], float("-inf"))  # each query keeps its own candidates
    m = exact.max(1).values
    w = torch.exp(exact - m[:, None])
    state.m[rows], state.l[rows], state.best[rows] = m, w.sum(1), m
    state.acc[rows] = w @ yc
    state.u[rows] = torch.where(w > 0, w * (exact - m[:, None]), torch.zeros_like(w)).sum(1)
    if trace:
        state.source[rows] = bank.index.to(x.device)[idx.to(x.device)[exact.argmax(1)]]


def _key_norm_max(keys, Y, mu, D, chunks, itemsize) -> float:
    """max_j |k_j| over the keys [y - mu, |y - mu|^2], in float64."""
    parts = [keys] if keys is not None else chunks(Y, mu, D, itemsize)
    return max(float(k[0].to(torch.float64).norm(dim=1).max()) for k in parts)


def _rounded_logits(q, keys, Y, mu, D, chunks, itemsize) -> torch.Tensor:
    """The attention form's logits q . k of the queries q [b, D + 1] against every key, as the
    matrix product rounds them: [b, n]."""
    parts = [keys] if keys is not None else chunks(Y, mu, D, itemsize)
    return torch.cat([q @ k[0].T for k in parts], dim=1)


def _keys(Y, mu, D):
    yc = (Y - mu.view(1, -1, 1, 1)).reshape(1, -1, D)
    return torch.cat([yc, (yc * yc).sum(-1, keepdim=True)], dim=-1)  # [1, n, D + 1]



def _whole_pairs(k, n, H, W, t, padding=None, radius=None):
    return n  # one candidate (a whole image) per image


def _whole_flops(k, n, H, W, C, t, padding=None, radius=None):
    return n * (4.0 * (C * H * W + 1) + 10)  # the logits' product (2D a pair), exp and weighted sum (2D)


WHOLE_IMAGES = Cost(_whole_pairs, _whole_flops)


class IdealMachine(CandidateMachine):
    """IS: candidates are whole training images; weights softmax_n(-|x_t - a Y_n|^2 / (2 s^2))."""

    declaration = Declaration(
        name="ideal", summary="IS, the ideal score machine: the exact denoiser of the training set (memorises).",
        candidates="every whole training image", form=SOFTMAX, traceable=True,
        options=(Option("backend", str, "auto", "The attention variant: auto, fused or explicit.", flag="--backend",
                        choices=("auto", "fused", "explicit"), recorded=False), *SUBSET_OPTIONS),
        backends=("auto", "fused", "explicit"), order=0, label="IS", exact=True, cost=WHOLE_IMAGES)

    def _no_backend(self, backend: str) -> str:
        if backend.startswith("triton"):
            return ("IS has no Triton kernel: its attention form is already one matrix product on the GPU; "
                    "use backend='auto'")
        return super()._no_backend(backend)

    def _choose_engine(self, x):
        return WholeImages(self._cache, self.memory_budget, self._attention_backend)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        engine = self.engine(x)
        if self.subsetting:  # each row over its own subset (docs/theory.md, "Subsets with a bound")
            state = self._subset_state(x, a, s, None, cls, trace, lambda b, bank: engine.stream(
                PatchQueries(x[b : b + 1], a[b : b + 1], s[b : b + 1], None), bank, trace=trace))
        else:
            state = engine.stream(PatchQueries(x, a, s, None), self.bank(cls), trace=trace)
        B, C, H, W = x.shape
        fin = state.finalize(torch.float64, trace=trace)
        x0 = (fin.out.to(x.dtype).view(B, C, H, W) + state.shift.view(1, -1, 1, 1)).to(x.dtype)
        if not trace:
            return x0, None
        every = (B, H, W)
        return x0, Trace(
            source_image=state.source.view(B, 1, 1).expand(every).clone(),
            source_pixel=torch.arange(H * W, device=x.device).view(1, H, W).expand(every).clone(),
            weight=fin.weight.view(B, 1, 1).expand(every).clone(),
            effective=fin.effective.view(B, 1, 1).expand(every).clone(),
            patch_size=torch.full((B,), -1, dtype=torch.long),
        )
