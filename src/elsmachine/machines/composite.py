"""Patch posterior composites (PSPC) of Niedoba et al. (ICML 2025, arXiv 2411.19339):
posterior means of windows, averaged where windows overlap (docs/theory.md, "The peers'
machines").

PSPC square: the windows are the k x k crops lying fully inside the image, (H-k+1)(W-k+1) of
them. Window w gets the posterior mean of its crop over the same crop of every training image,

    E_w = sum_n softmax_n(-|crop_w(x_t) - a crop_w(Y_n)|^2 / (2 s^2)) crop_w(Y_n),

and x0_hat at pixel q is the average of E_w[q] over the windows holding q. k = H = W is IS. The
window distances are box sums of the squared-difference images; the composite is ``fold`` of
the windows' means over ``fold`` of ones.

PSPC flex: the window of output pixel q at a step is the set of input pixels that holds a share
rho(t) of a trained network's sensitivity to its input at q (:mod:`elsmachine.networks.sensitivity`);
the composite is then taken the same way over those sets (:mod:`.masked`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engines.softmax import SoftmaxState, exp_floor
from ..errors import InputError
from ..noise import NoiseSchedule
from ..patch_schedule import as_patch_schedule
from ..sensitivity import Sensitivity
from .base import DEFAULT_MEMORY_BUDGET, PatchSized, ScoreMachine
from .declaration import Cost, COMPOSITE, PATCH_SIZE, Declaration, Option
from .masked import masked_finish, masked_state

__all__ = ["PatchCompositeMachine", "FlexCompositeMachine"]



def _square_pairs(k, n, H, W, t, padding=None, radius=None):
    return (H - k + 1) * (W - k + 1) * n  # every window against every image


def _square_flops(k, n, H, W, C, t, padding=None, radius=None):
    nw = (H - k + 1) * (W - k + 1)  # box sums, exp and the windows' weighted crops
    return n * (3.0 * C * H * W + 2.0 * (H - k + 1) * W * k + nw * (14 + 2.0 * C * k * k))


def _flex_pairs(k, n, H, W, t, padding=None, radius=None):
    return H * W * n  # one window per output pixel


def _flex_flops(k, n, H, W, C, t, padding=None, radius=None):
    D = C * H * W
    return n * (3.0 * D + H * W * (2.0 * D + 14 + 2.0 * D))


def square_sensitivity(sizes, ts, H: int, W: int):
    """A stand-in sensitivity of PSPC flex's cost without a network: at each time of ``ts`` the
    square of that step's size of ``sizes`` around each pixel, clipped to the image."""
    from ..noise import CosineSchedule
    from ..sensitivity import Sensitivity

    wins = []
    for k in sizes:
        r = k // 2
        rows = (torch.arange(H)[:, None] - torch.arange(H)[None, :]).abs() <= r
        cols = (torch.arange(W)[:, None] - torch.arange(W)[None, :]).abs() <= r
        wins.append((rows[:, None, :, None] & cols[None, :, None, :]).reshape(H * W, H * W))
    return Sensitivity.from_windows(torch.stack(wins), list(ts), (H, W), CosineSchedule().to_dict())


class PatchCompositeMachine(PatchSized, ScoreMachine):
    """PSPC with square windows. ``patch_size`` takes every form LS and ELS take (one size, one
    per step, a preset, a patch schedule or its file); a window must fit inside the image."""

    declaration = Declaration(
        name="pspc", summary="PSPC square (Niedoba et al.): posterior means of k x k crops, averaged where they "
        "overlap.", candidates="the same k x k crop of every training image, per window; windows averaged",
        form=COMPOSITE, options=(PATCH_SIZE,), order=70, cost=Cost(_square_pairs, _square_flops, "box sums"))

    def __init__(self, images, patch_size=None, labels=None, *, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed)
        self.patch_size = as_patch_schedule(patch_size, schedule=self.schedule)

    def _checked_size(self, k: int) -> int:
        H, W = self.image_shape[1:]
        if k > min(H, W):
            raise InputError(f"a PSPC window of {k} x {k} does not fit inside a {H}x{W} image (at most {min(H, W)})")
        return k

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        Y, _ = self._training(x.dtype, x.device, cls)
        B, C, H, W = x.shape
        nw = (H - k + 1) * (W - k + 1)
        per = max(1, (self.memory_budget // 4) // (x.element_size() * (B * H * W + C * k * k * nw)))
        state = SoftmaxState.empty((B, nw), C * k * k, value_dim=-1, device=x.device)
        scale = (1.0 / (2.0 * s.to(torch.float64) ** 2)).to(x.dtype).view(-1, 1, 1)
        for n0 in range(0, Y.shape[0], per):
            Yc = Y[n0 : n0 + per]
            n = Yc.shape[0]
            sq = ((x[:, None] - a.view(-1, 1, 1, 1, 1) * Yc[None]) ** 2).sum(2)  # [B, n, H, W]
            box = F.avg_pool2d(sq.view(B * n, 1, H, W), k, stride=1, divisor_override=1)  # window sums
            logits = box.view(B, n, nw).transpose(1, 2).contiguous().mul_(-scale)  # [B, windows, n]
            crops = F.unfold(Yc, k)  # [n, C k k, windows]
            state.fold_(logits, lambda w, crops=crops: torch.einsum("bwn,nvw->bwv", w, crops),
                        floor=exp_floor(x.dtype))
        self._merge(state)
        means = state.finalize(torch.float64, trace=False).out  # [B, windows, C k k]
        summed = F.fold(means.transpose(1, 2), (H, W), k)  # [B, C, H, W]
        count = F.fold(torch.ones_like(means[:1]).transpose(1, 2), (H, W), k)
        return (summed / count).to(x.dtype), None


class FlexCompositeMachine(ScoreMachine):
    """PSPC flex: windows shaped by a trained network's sensitivity (``sensitivity``: a
    :class:`~elsmachine.networks.sensitivity.Sensitivity` or its file), one set per step of its
    grid; a time outside that grid is refused."""

    declaration = Declaration(
        name="pspc-flex", summary="PSPC flex: windows shaped by a trained network's sensitivity.",
        candidates="the same window of every training image, per output pixel's window; windows averaged",
        form=COMPOSITE, order=80,
        options=(Option("sensitivity", "path", None, "The network sensitivity file (els sensitivity --model ...).",
                        flag="--sensitivity", required=True, record=lambda sens: sens.describe()),), cost=Cost(_flex_pairs, _flex_flops, "masked"), needs_network=True, bench_options=lambda sizes, ts, H, W: {"sensitivity": square_sensitivity(sizes, ts, H, W)})

    def __init__(self, images, sensitivity, labels=None, *, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False) -> None:

        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed)
        self.sensitivity = sensitivity if isinstance(sensitivity, Sensitivity) else Sensitivity.load(sensitivity)
        H, W = self.image_shape[1:]
        if tuple(self.sensitivity.image_size) != (H, W):
            raise InputError(f"the sensitivity {self.sensitivity.source} is of {self.sensitivity.image_size[0]}x"
                             f"{self.sensitivity.image_size[1]} images, the training images are {H}x{W}")
        self.sensitivity.check_schedule(self.schedule)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        Y, _ = self._training(x.dtype, x.device, cls)
        B, C, H, W = x.shape
        out = torch.empty_like(x)
        for ti in sorted(set(t.tolist())):
            sel = torch.nonzero(t == ti).flatten().to(x.device)
            win = self.sensitivity.windows_at(ti).to(device=x.device, dtype=x.dtype)  # [q, p] over pixels
            if not bool((win.sum(0) > 0).all()):  # an uncovered pixel has no composite to average
                raise InputError(f"the sensitivity {self.sensitivity.source} leaves pixels in no window at t = {ti:g}")
            rows = win.repeat(1, C)  # the window's pixels in every channel: [q, C*H*W]
            scale = (1.0 / (2.0 * s[sel].to(torch.float64) ** 2)).to(x.dtype)
            state = masked_state(x[sel].reshape(len(sel), -1), a[sel], scale, Y.flatten(1), rows, composite=True,
                                 memory_budget=self.memory_budget)
            self._merge(state)
            o, _ = masked_finish(state, rows, composite=True, dtype=x.dtype)
            out[sel] = o.view(len(sel), C, H, W)
        return out, None
