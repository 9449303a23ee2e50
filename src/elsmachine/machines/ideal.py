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

from ..engines import attend
from ..errors import InputError
from .base import ScoreMachine, Trace

__all__ = ["IdealMachine"]


class IdealMachine(ScoreMachine):
    """IS: candidates are whole training images; weights softmax_n(-|x_t - a Y_n|^2 / (2 s^2))."""

    name = "ideal"

    def __init__(self, images, **kw) -> None:
        super().__init__(images, **kw)
        if self.backend == "triton":
            raise InputError("IS has no Triton kernel: its attention form is already one matrix product on the GPU; "
                             "use backend='auto'")

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        Y, gidx, mu = self._training(x.dtype, x.device, cls)
        B, C, H, W = x.shape
        D = C * H * W
        q = x.new_empty(1, B, D + 1)
        q[0, :, :D] = (x - (a.view(-1, 1, 1, 1) * mu.view(1, -1, 1, 1))).reshape(B, D) * (a / s**2).view(-1, 1)
        q[0, :, D] = -(a**2) / (2 * s**2)

        def build():
            yc = (Y - mu.view(1, -1, 1, 1)).reshape(1, -1, D)
            return torch.cat([yc, (yc * yc).sum(-1, keepdim=True)], dim=-1)  # [1, N, D + 1]

        n = Y.shape[0]
        key = ("ideal", x.dtype, x.device, cls)
        keys = self._cached_keys(key, n * (D + 1) * x.element_size(), build) if n else None
        chunks = [keys] if keys is not None else self._image_chunks(Y, mu, D, x.element_size())

        def combine(state):  # stream positions -> global image indices, then every rank's state
            if state.source is not None:
                state.source = gidx.to(x.device)[state.source] if n else state.source
            self._combine(state)

        res = attend(q, chunks, slice(0, D), trace=trace, backend=self._attention_backend, combine=combine,
                     allow_empty=self.distributed)
        x0 = (res.out[0].view(B, C, H, W) + mu.view(1, -1, 1, 1)).to(x.dtype)
        if not trace:
            return x0, None
        every = (B, H, W)
        return x0, Trace(
            source_image=res.source[0].view(B, 1, 1).expand(every).clone(),
            source_pixel=torch.arange(H * W, device=x.device).view(1, H, W).expand(every).clone(),
            weight=res.weight[0].view(B, 1, 1).expand(every).clone(),
            effective=res.effective[0].view(B, 1, 1).expand(every).clone(),
            patch_size=torch.full((B,), -1, dtype=torch.long),
        )

    def _image_chunks(self, Y, mu, D, itemsize):
        per = max(1, (self.memory_budget // 4) // ((D + 1) * itemsize))
        for n0 in range(0, Y.shape[0], per):
            yc = (Y[n0 : n0 + per] - mu.view(1, -1, 1, 1)).reshape(1, -1, D)
            yield torch.cat([yc, (yc * yc).sum(-1, keepdim=True)], dim=-1)
