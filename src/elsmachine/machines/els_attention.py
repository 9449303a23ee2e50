"""ELS followed by one self-attention step over its local estimate (docs/theory.md, "ELS with one
attention step"), after Finn et al. ("Origins of Creativity in Attention-Based Diffusion Models",
arXiv 2506.17324), whose network is a CNN with one final self-attention layer. With z = ELS's
x0_hat, every pixel attends to every pixel r of the same image, by how alike their neighbourhoods
in z are:

    A(q, r) = softmax_r(-|P_q(z) - P_r(z)|^2 / (2 tau(t)^2)),
    x0_hat(q) = (1 - beta(t)) z(q) + beta(t) sum_r A(q, r) z(r),

with P the k_a x k_a patch (k_a = ``attention_size``; past the border as the machine's padding).
This is the machine's one global step: the queries, keys and values are ELS's estimate itself,
so the step stays closed form and translation equivariant, and it can move a stroke's values
towards those of alike strokes elsewhere in the image, which no local machine can. beta = 0 is
ELS; beta(t) and tau(t) are one number or a timed per-step schedule, fitted to a network
on seeds disjoint from evaluation seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import checks
from .declaration import SOFTMAX, Declaration, Fit, Option
from .joined import Followed
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine, record_step

__all__ = ["AttentionELSMachine", "attention_step"]


def attention_step(z: torch.Tensor, k: int, tau: torch.Tensor, padding: str) -> torch.Tensor:
    """sum_r A(q, r) z(r) for z [B, C, H, W] and tau [B] (see the module docstring), in z's dtype;
    distances in direct form (the expanded square would cancel where patches are alike)."""
    B, C, H, W = z.shape
    h = k // 2
    padded = F.pad(z, (h, h, h, h), mode="circular" if padding == "circular" else "constant")
    P = F.unfold(padded, k).transpose(1, 2)  # [B, HW, C k k]
    d = torch.cdist(P, P, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # [B, HW, HW]
    A = torch.softmax(-d / (2 * tau.view(-1, 1, 1) ** 2), dim=-1)
    return (A @ z.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, H, W)


class AttentionELSMachine(Followed):
    """ELS, then one self-attention step over its estimate (see the module docstring)."""

    inner_class = ELSMachine
    declaration = Declaration(
        name="els-attention", summary="ELS followed by one self-attention step over its estimate (after Finn et "
        "al.): each pixel also takes the values of pixels whose neighbourhoods look alike.",
        candidates="as ELS; then every pixel of the same estimate", form=SOFTMAX, sizes_in_one_pass=True,
        backends=BACKENDS, order=43, cost_like="els", candidate=True, reduces_to="els",
        fit=Fit("attention_weight", ("0.3",)),
        options=PATCH_OPTIONS + (
            Option("attention_weight", "weight_schedule", 0.0, "Weight beta of the attention step in [0, 1]: one "
                   "number, or one per step of the run's grid (highest t first); 0 is ELS.",
                   flag="--attention-weight", record=record_step, domain={"share": True}),
            Option("attention_width", "width_schedule", 1.0, "Width tau of the attention softmax on patch distances "
                   "of the estimate: one number, or one per step.", flag="--attention-width", record=record_step, domain={}),
            Option("attention_size", int, 3, "Odd size of the estimate's patches the attention compares.",
                   flag="--attention-size")))

    def __init__(self, images, **options) -> None:
        super().__init__(images, **options)
        self.attention_size = checks.patch_size(self.attention_size, "attention_size")

    def _mapped(self, est, x, a, s, cls, t):
        beta = self._values("attention_weight", t)
        rows = torch.nonzero(beta > 0).flatten()
        if len(rows) == 0:
            return est
        tau = self._values("attention_width", t[rows])
        sel = rows.to(x.device)
        z = est[sel]
        mixed = attention_step(z, self.attention_size, tau.to(device=x.device, dtype=x.dtype), self.padding)
        b4 = beta[rows].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        out = est.clone()
        out[sel] = (1 - b4) * z + b4 * mixed
        return out
