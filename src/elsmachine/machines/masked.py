"""A softmax over whole training images in which each output has its own mask of input entries
(docs/theory.md, "The peers' machines"): the shared body of the analytic locality machine and of
PSPC flex, streamed over chunks of images on the one softmax state.

For query q with mask row R[q, :] over the D = C*H*W input entries and image n,

    z[q, n] = -scale * sum_u R[q, u] (x[u] - a Y_n[u])^2,      w[q, :] = softmax_n z[q, :].

- Entry form (Q = D): the output entry q is sum_n w[q, n] Y_n[q] (the locality machine).
- Composite form: each query is a window, its posterior mean sum_n w[q, n] Y_n is taken on the
  window's entries, and every entry is the average over the windows that hold it (PSPC).

The squared differences are summed from their own terms (a 0/1 mask times non-negative terms),
so no distance cancels late in sampling.
"""

from __future__ import annotations

import torch

from ..engines.softmax import SoftmaxState, exp_floor

__all__ = ["masked_state", "masked_finish"]


def masked_state(x: torch.Tensor, a: torch.Tensor, scale: torch.Tensor, Y: torch.Tensor, rows: torch.Tensor, *,
                 composite: bool, memory_budget: int, trace: bool = False, index: torch.Tensor | None = None
                 ) -> SoftmaxState:
    """x [B, D], a and scale [B], Y [N, D], rows [Q, D] (0/1, in x's dtype) -> the softmax state
    over [B, Q] (values last: D for the composite form, 1 for the entry form).

    Entry form needs Q == D. ``memory_budget`` bounds the chunk of images held at once. With
    ``trace`` the state records each query's best image (``state.source``, entry form only):
    ``index[position in Y]``, the global index, where ``index`` is given.
    """
    B, D = x.shape
    Q = rows.shape[0]
    N = Y.shape[0]
    values = D if composite else 1
    per = max(1, (memory_budget // 4) // (x.element_size() * B * (D + Q)))  # squared differences, logits
    state = SoftmaxState.empty((B, Q), values, value_dim=-1, device=x.device, trace=trace)
    rows_t = rows.T.contiguous()  # [D, Q]
    floor = exp_floor(x.dtype)
    for n0 in range(0, N, per):
        Yc = Y[n0 : n0 + per]  # [n, D]
        E = (x[:, None, :] - a.view(-1, 1, 1) * Yc[None]) ** 2  # [B, n, D]
        logits = (E @ rows_t).transpose(1, 2).contiguous().mul_(-scale.view(-1, 1, 1))  # [B, Q, n]
        if composite:
            weigh = lambda w, Yc=Yc: w @ Yc  # noqa: E731 - [B, Q, D]
        else:
            weigh = lambda w, Yc=Yc: (w * Yc.T[None]).sum(-1, keepdim=True)  # noqa: E731 - [B, D, 1]
        state.fold_(logits, weigh, offset=n0, floor=floor)
    if trace and index is not None and N:
        state.source = index.to(x.device)[state.source]
    return state


def masked_finish(state: SoftmaxState, rows: torch.Tensor, *, composite: bool, dtype, trace: bool = False):
    """(out [B, D] in ``dtype``, the finalised state): the entry form's values, or the composite's
    window means averaged over the windows holding each entry."""
    fin = state.finalize(torch.float64, trace=trace)
    if composite:
        counts = rows.to(torch.float64).sum(0)  # [D] windows holding each entry
        out = (fin.out * rows.to(torch.float64)).sum(1) / counts
    else:
        out = fin.out[..., 0]
    return out.to(dtype), fin
