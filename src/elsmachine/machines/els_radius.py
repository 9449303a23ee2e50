"""ELS within a radius per step (docs/theory.md, "ELS within a radius"): ELS whose pixel q meets
only the candidate patches at most R(t) pixels from q along each axis,

    x0_hat(q) = sum_{n, p in C_R(q)} softmax_{n, p}(-|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2)) Y_n(p),
    C_R(q) = {p among ELS's candidates of q : |p_i - q_i| <= R(t), |p_j - q_j| <= R(t)},

(around the torus for circular padding). R = 0 is LS, the patch at q alone; R >= max(H, W) - 1
is ELS. Between them a pixel may take a patch from near where it sits but not from anywhere: a
network that is translation equivariant only over short distances, as a deep zero-padded UNet
whose receptive field reaches the border from every pixel may be. The machine stays local (the
window is k(t) x k(t)) and is equivariant to shifts that keep a patch within R of its place.
R(t) is one number, or one per step of the default grid (highest t first) looked up at the
nearest grid time like a patch schedule; it is fitted to a network on seeds disjoint from
evaluation seeds. Each R runs on ELS's engine with the candidate rectangles cut to the radius
(:mod:`.candidates`), the compiled kernel where it runs, else the attention form.
"""

from __future__ import annotations

import math

from ..errors import InputError
from .declaration import SOFTMAX, Declaration, Option
from .local import APPROX_RADIUS, PATCH_OPTIONS, ELSMachine
from .per_step import by_step_value, per_step_values, value_at

__all__ = ["RadiusELSMachine"]


def _record(radii):
    return [str(r) if math.isinf(r) else int(r) for r in radii]


class RadiusELSMachine(ELSMachine):
    """ELS whose pixel q meets only the candidates within R(t) pixels (see the module docstring)."""

    declaration = Declaration(
        name="els-radius", summary="ELS within a radius: pixel q meets only the candidates at most R(t) pixels "
        "away (0 is LS, inf is ELS).", candidates="as ELS, those at most R(t) pixels from q along each axis",
        form=SOFTMAX, traceable=True, backends=("auto", "native", "fused", "explicit"), order=45, cost_like="els",
        candidate=True,
        options=tuple(o for o in PATCH_OPTIONS if o is not APPROX_RADIUS) + (Option(
            "radii", "radius_schedule", math.inf,
            "Radius R in pixels along each axis: one whole number, or one per step of the default grid (highest t "
            "first); 0 is LS, inf is ELS.", flag="--radii", record=_record),))

    def __init__(self, images, patch_size=None, padding: str = "zeros", radii=math.inf, **kw) -> None:
        self.radii = per_step_values(radii, "radii", infinite=True, zero=True)
        bad = [r for r in self.radii if not math.isinf(r) and r != int(r)]
        if bad:
            raise InputError(f"radii must be whole numbers of pixels (or inf), got {bad[0]!r}")
        if kw.get("approx_radius") is not None:
            raise InputError("els-radius takes its radius as radii=, not approx_radius")
        if kw.get("subset") is not None or kw.get("subset_bound") is not None:
            raise InputError("subset= bounds ELS's whole candidate set; els-radius has no bound")
        super().__init__(images, patch_size, padding, **kw)

    def radius_at(self, t: float) -> int | None:
        """R at a denoiser time (None: no limit, ELS), the one value or the nearest grid time's."""
        r = value_at(self.radii, t, "radii")
        return None if math.isinf(r) else int(r)

    def _engine_at(self, x, t):
        # one radius (_denoise_subset groups the rows by it); None, ELS's own engine
        return self.engine(x, self.radius_at(float(t[0])))

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None, window=None):
        parent = super()._denoise_subset  # rows at different radii: one candidate set each
        return by_step_value(self.radius_at, x, a, s, t, trace,
                             lambda x, a, s, t, _: parent(x, a, s, k, cls, trace, t, window))

    def denoise_sizes(self, x, t, sizes, labels=None):
        """x0_hat at each patch size of ``sizes``, size by size (each at the radius of its t)."""
        return [self.denoise(x, t, labels, patch_size=k) for k in sizes]
