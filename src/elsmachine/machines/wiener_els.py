"""The Wiener machine's linear regime joined to ELS (docs/theory.md, "Wiener at high noise, ELS
at low noise"): per step a convex combination of the two machines' estimates,

    x0_hat(t) = lambda(t) x0_Wiener(x_t) + (1 - lambda(t)) x0_ELS(x_t),   lambda(t) in [0, 1].

At high noise a trained network is close to linear in its input (the Gaussian regime of Wang &
Vastola, where the Wiener filter of the data's moments is the exact denoiser of a Gaussian with
them); at low noise it is local (ELS). lambda = 0 is ELS, lambda = 1 the Wiener filter; a step
switch (1 down to some t, then 0) joins them at one time. lambda(t) is one number or a timed
per-step schedule, fitted to a network on seeds disjoint from
evaluation seeds. Both parts hold the same training set, classes and schedule; ELS's patch
schedule, padding and engine are its own. The machine is a :class:`~.joined.Blend` of the two.
"""

from __future__ import annotations

from .declaration import SOFTMAX, Declaration, Fit, Option
from .gaussian import WienerMachine
from .joined import Blend
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine, record_step

__all__ = ["WienerELSMachine", "WIENER_WEIGHT"]

WIENER_WEIGHT = Option(
    "wiener_weight", "weight_schedule", 0.0,
    "Weight lambda of the Wiener filter in [0, 1]: one number, or one per step of the run's grid (highest t "
    "first); 0 is ELS.", flag="--wiener-weight", record=record_step, domain={"share": True})


class WienerELSMachine(Blend):
    """lambda(t) Wiener + (1 - lambda(t)) ELS (see the module docstring)."""

    first_class, inner_class, weight = WienerMachine, ELSMachine, "wiener_weight"
    declaration = Declaration(
        name="wiener-els", summary="The Wiener filter at high noise joined to ELS at low noise: lambda(t) Wiener + "
        "(1 - lambda(t)) ELS.", candidates="as ELS, beside the training set's mean and covariance", form=SOFTMAX,
        sizes_in_one_pass=True, backends=BACKENDS, order=42, cost_like="els", candidate=True, reduces_to="els",
        fit=Fit("wiener_weight", ("0.1", "0.2", "0.35", "0.5", "0.65", "0.8", "1@0.85", "1@0.7", "1@0.5", "1@0.3",
                                  "0.5@0.5")),
        options=PATCH_OPTIONS + (WIENER_WEIGHT,))
