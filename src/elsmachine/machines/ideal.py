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
from .base import ScoreMachine, Trace

__all__ = ["IdealMachine"]


class IdealMachine(ScoreMachine):
    """IS: candidates are whole training images; weights softmax_n(-|x_t - a Y_n|^2 / (2 s^2))."""

    name = "ideal"

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
        keys = self._cached_keys(key, n * (D + 1) * x.element_size(), build)
        chunks = [keys] if keys is not None else self._image_chunks(Y, mu, D, x.element_size())
        res = attend(q, chunks, slice(0, D), trace=trace, backend=self._attention_backend)
        x0 = (res.out[0].view(B, C, H, W) + mu.view(1, -1, 1, 1)).to(x.dtype)
        if not trace:
            return x0, None
        every = (B, H, W)
        return x0, Trace(
            source_image=gidx.to(x.device)[res.source[0]].view(B, 1, 1).expand(every).clone(),
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
