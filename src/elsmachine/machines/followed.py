"""ELS followed by one more step per denoiser call (docs/theory.md, "Candidates beyond ELS"):
the candidates whose estimate is ELS's x0_hat passed through a map of their own,

    x0_hat(t) = F_t(x0_ELS(x_t), x_t),

stated by each subclass in :meth:`ELSFollowed._after` (the Wiener filter joined to it, one
attention step over it). What they share is here: the map applied per class to the rows of each
call, and ``denoise_sizes`` keeping ELS's one pass over several sizes with the map applied to
each size's estimate.
"""

from __future__ import annotations

import torch

from .. import checks
from .local import ELSMachine

__all__ = ["ELSFollowed"]


class ELSFollowed(ELSMachine):
    """ELS, then :meth:`_after` on its estimate (a subclass declares itself and states the map)."""

    _following = True

    def _after(self, els: torch.Tensor, x, a, s, cls, t) -> torch.Tensor:  # pragma: no cover - abstract
        """The estimate [b, C, H, W] from ELS's ``els`` for the rows x of class ``cls`` at times t."""
        raise NotImplementedError

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None, window=None):
        els, tr = super()._denoise_subset(x, a, s, k, cls, trace, t, window)
        return (self._after(els, x, a, s, cls, t) if self._following else els), tr

    def denoise_sizes(self, x, t, sizes, labels=None):
        self._following = False  # ELS at every size (from one pass where the kernel runs), then the map
        try:
            outs = super().denoise_sizes(x, t, sizes, labels)
        finally:
            self._following = True
        x = checks.query(x, self.image_shape)
        tt = checks.times(t, x.shape[0])
        a, s = self.schedule.coefficients(tt, x)
        done = [torch.empty_like(o) for o in outs]
        for bidx, cls, _ in self._subsets(labels, [None] * x.shape[0], x.shape[0]):
            sel = bidx.to(x.device)
            for o, d in zip(outs, done):
                d[sel] = self._after(o[sel], x[sel], a[sel], s[sel], cls, tt[bidx])
        return done
