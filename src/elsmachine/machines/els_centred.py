"""ELS comparing patches by their shape (docs/theory.md, "ELS with centred patches"): ELS whose patch
distance first takes the share c(t) of each channel's patch mean out of both patches,

    x0_hat(q) = sum_{n, p} softmax_{n, p}(-|T(P_q(x_t)) - a T(P_p(Y_n))|^2 / (2 s^2)) Y_n(p),
    T(P) = P - c(t) mean(P)   (per channel, over the k x k window),

over the candidates ELS's pixel q sees (:mod:`.candidates`); the values stay the candidates'
centre pixels. c = 0 is ELS; c = 1 matches a stroke or a texture whatever its local brightness,
which a network that normalises its features may do. c(t) is one number or a timed per-step
schedule, fitted to a network on seeds disjoint from evaluation seeds. The centred distance is
no box sum of squared differences, so it runs on the attention form.
"""

from __future__ import annotations

from ..engines.attention import ATTENTION_BACKENDS
from .declaration import SOFTMAX, Declaration, Fit
from .local import PATCH_OPTIONS, ELSMachine, step_option

__all__ = ["CentredELSMachine"]


class CentredELSMachine(ELSMachine):
    """ELS with the share c(t) of each patch's mean taken out of its distance (see the module docstring)."""

    declaration = Declaration(
        name="els-centred", summary="ELS with centred patches: the share c(t) of each patch's mean taken out of "
        "the distance (0 is ELS).", candidates="as ELS", form=SOFTMAX, traceable=True, backends=ATTENTION_BACKENDS,
        order=47, cost_like="els", candidate=True, reduces_to="els", fit=Fit("centring", ("0.5", "1", "1@0.5")),
        options=PATCH_OPTIONS + (step_option(
            "centring", "centring", 0.0,
            "Share c in [0, 1] of each channel's patch mean taken out of both patches: one number, or one per step "
            "of the run's grid (highest t first); 0 is ELS.", "--centring"),))
