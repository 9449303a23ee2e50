"""ELS within a radius per step (docs/theory.md, "ELS within a radius"): ELS whose pixel q meets
only the candidate patches at most R(t) pixels from q along each axis,

    x0_hat(q) = sum_{n, p in C_R(q)} softmax_{n, p}(-|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2)) Y_n(p),
    C_R(q) = {p among ELS's candidates of q : |p_i - q_i| <= R(t), |p_j - q_j| <= R(t)},

(around the torus for circular padding). R = 0 is LS, the patch at q alone; R >= max(H, W) - 1
is ELS. Between them a pixel may take a patch from near where it sits but not from anywhere: a
network that is translation equivariant only over short distances, as a deep zero-padded UNet
whose receptive field reaches the border from every pixel may be. The machine stays local (the
window is k(t) x k(t)) and is equivariant to shifts that keep a patch within R of its place.
R(t) is one number or a timed per-step schedule, looked up by noise level like a patch
schedule; it is fitted to a network on seeds disjoint from
evaluation seeds. Each R runs on ELS's engine with the candidate rectangles cut to the radius
(:mod:`.candidates`), the compiled kernel where it runs, else the attention form.
"""

from __future__ import annotations

from .declaration import SOFTMAX, Declaration, Fit
from .local import PATCH_OPTIONS, ELSMachine, step_option

__all__ = ["RadiusELSMachine"]


class RadiusELSMachine(ELSMachine):
    """ELS whose pixel q meets only the candidates within R(t) pixels (see the module docstring)."""

    declaration = Declaration(
        name="els-radius", summary="ELS within a radius: pixel q meets only the candidates at most R(t) pixels "
        "away (0 is LS, inf is ELS).", candidates="as ELS, those at most R(t) pixels from q along each axis",
        form=SOFTMAX, traceable=True, backends=("auto", "native", "fused", "explicit"), order=45, cost_like="els",
        candidate=True, reduces_to="els", fit=Fit("radii", ("0", "1", "2", "3", "5", "8")),
        options=PATCH_OPTIONS + (step_option(
            "radii", "radius", "inf",
            "Radius R in pixels along each axis: one whole number, or one per step of the run's grid (highest t "
            "first); 0 is LS, inf is ELS.", "--radii"),))
