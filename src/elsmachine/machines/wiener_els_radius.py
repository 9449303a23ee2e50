"""The Wiener filter joined to ELS within a radius (docs/theory.md, "Wiener at high noise, ELS
within a radius"): the two candidates of :mod:`.wiener_els` and :mod:`.els_radius` in one,

    x0_hat(t) = lambda(t) x0_Wiener(x_t) + (1 - lambda(t)) x0_ELS_R(t)(x_t),

where ELS_R is ELS whose pixel q meets only the candidates at most R(t) pixels from q along each
axis. lambda = 0 is els-radius, R = inf is wiener-els, both is ELS. lambda(t) and R(t) are each
one value or one per step of the default grid, fitted to a network on seeds disjoint from
evaluation seeds.
"""

from __future__ import annotations

import math

from .declaration import SOFTMAX, Declaration
from .els_radius import RadiusELSMachine
from .local import APPROX_RADIUS, PATCH_OPTIONS
from .wiener_els import WienerELSMachine

__all__ = ["WienerRadiusELSMachine"]


class WienerRadiusELSMachine(WienerELSMachine, RadiusELSMachine):
    """lambda(t) Wiener + (1 - lambda(t)) ELS within R(t) pixels (see the module docstring)."""

    declaration = Declaration(
        name="wiener-els-radius", summary="The Wiener filter at high noise joined to ELS within a radius: lambda(t) "
        "Wiener + (1 - lambda(t)) ELS_R(t).", candidates="as els-radius, beside the training set's mean and "
        "covariance", form=SOFTMAX, backends=RadiusELSMachine.declaration.backends, order=46, cost_like="els",
        candidate=True,
        options=tuple(o for o in PATCH_OPTIONS if o is not APPROX_RADIUS) + (
            WienerELSMachine.declaration.option("wiener_weight"), RadiusELSMachine.declaration.option("radii")))

    def __init__(self, images, patch_size=None, padding: str = "zeros", wiener_weight=0.0, radii=math.inf,
                 **kw) -> None:
        super().__init__(images, patch_size, padding, wiener_weight, radii=radii, **kw)
