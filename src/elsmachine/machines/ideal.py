"""IS, the ideal score machine: the exact denoiser of the empirical training distribution
(docs/theory.md, "The score machines"; the paper's ideal score).

    x0_hat = sum_n softmax_n(-|x_t - a Y_n|^2 / (2 s^2)) Y_n.

On the attention engine: dropping |x_t|^2, which is the same for every candidate, leaves the
logits (a / s^2) x.y - (a^2 / (2 s^2)) |y|^2, i.e. queries [(a/s^2) x, -(a^2 / (2 s^2))] against
keys [y, |y|^2]. Both sides are first shifted by the training mean (x - a mu, y - mu), which
leaves x - a y unchanged but makes the norms small, so the dot products lose less to rounding.
"""

from __future__ import annotations

import torch

from ..engines.attention import attention_state
from ..engines.engine import Bank, KeyCache
from ..engines.softmax import SoftmaxState
from .base import CandidateMachine, Trace
from .declaration import SOFTMAX, Declaration, Option
from .forms import PatchQueries

__all__ = ["IdealMachine", "WholeImages"]


class WholeImages:
    """The attention form over whole training images: one query per noisy image; the state is
    [B] with the C*H*W values last and ``source`` the global index of the best image."""

    name = "attention"
    several_sizes = False

    def __init__(self, cache: KeyCache, memory_budget: int, backend: str) -> None:
        self.cache, self.memory_budget, self.backend = cache, memory_budget, backend

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
        return SoftmaxState(m=st.m[0], l=st.l[0], acc=st.acc[0], u=st.u[0], best=st.best[0], value_dim=-1,
                            source=source, shift=mu)


def _keys(Y, mu, D):
    yc = (Y - mu.view(1, -1, 1, 1)).reshape(1, -1, D)
    return torch.cat([yc, (yc * yc).sum(-1, keepdim=True)], dim=-1)  # [1, n, D + 1]


class IdealMachine(CandidateMachine):
    """IS: candidates are whole training images; weights softmax_n(-|x_t - a Y_n|^2 / (2 s^2))."""

    declaration = Declaration(
        name="ideal", summary="IS, the ideal score machine: the exact denoiser of the training set (memorises).",
        candidates="every whole training image", form=SOFTMAX, traceable=True,
        options=(Option("backend", str, "auto", "The attention variant: auto, fused or explicit.", flag="--backend",
                        choices=("auto", "fused", "explicit"), recorded=False),),
        backends=("auto", "fused", "explicit"), order=0)

    def _no_backend(self, backend: str) -> str:
        if backend == "triton":
            return ("IS has no Triton kernel: its attention form is already one matrix product on the GPU; "
                    "use backend='auto'")
        return super()._no_backend(backend)

    def _choose_engine(self, x):
        return WholeImages(self._cache, self.memory_budget, self._attention_backend)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        state = self.engine(x).stream(PatchQueries(x, a, s, None), self.bank(cls), trace=trace)
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
