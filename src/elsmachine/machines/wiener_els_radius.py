"""The Wiener filter joined to ELS within a radius (docs/theory.md, "Wiener at high noise, ELS
within a radius"): the two candidates of :mod:`.wiener_els` and :mod:`.els_radius` in one,

    x0_hat(t) = lambda(t) x0_Wiener(x_t) + (1 - lambda(t)) x0_ELS_R(t)(x_t),

where ELS_R is ELS whose pixel q meets only the candidates at most R(t) pixels from q along each
axis. lambda = 0 is els-radius, R = inf is wiener-els, both is ELS. lambda(t) and R(t) are each
one value or a timed per-step schedule, fitted to a network on seeds disjoint from
evaluation seeds.
"""

from __future__ import annotations

from .declaration import SOFTMAX, Declaration, Fit
from .els_radius import RadiusELSMachine
from .gaussian import WienerMachine
from .joined import Blend
from .wiener_els import WIENER_WEIGHT

__all__ = ["WienerRadiusELSMachine"]


class WienerRadiusELSMachine(Blend):
    """lambda(t) Wiener + (1 - lambda(t)) ELS within R(t) pixels (see the module docstring)."""

    first_class, inner_class, weight = WienerMachine, RadiusELSMachine, "wiener_weight"
    declaration = Declaration(
        name="wiener-els-radius", summary="The Wiener filter at high noise joined to ELS within a radius: lambda(t) "
        "Wiener + (1 - lambda(t)) ELS_R(t).", candidates="as els-radius, beside the training set's mean and "
        "covariance", form=SOFTMAX, backends=RadiusELSMachine.declaration.backends, order=46, cost_like="els",
        candidate=True, reduces_to="els",
        # R = inf is wiener-els itself; the weight is wiener-els's, fitted on the same network
        fit=Fit("radii", ("1", "2", "3"), keeps={"wiener_weight": "wiener-els"}),
        options=RadiusELSMachine.declaration.options + (WIENER_WEIGHT,))
