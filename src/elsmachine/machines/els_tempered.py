"""ELS with a temperature per step (docs/theory.md, "ELS at a temperature"): the ELS machine's
softmax over candidate patches with its logits divided by T(t),

    x0_hat(q) = sum_{n, p} softmax_{n, p}(-|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2 T(t))) Y_n(p),

over the candidates ELS's pixel q sees (:mod:`.candidates`). T = 1 is ELS; T -> 0 its best
patch alone; T > 1 averages more patches. x0_hat depends on s only through the logits, so the
machine is ELS with s sqrt(T(t)) in place of s. T(t) is one number or a timed per-step schedule (:class:`~elsmachine.StepSchedule`),
looked up by noise level like a patch schedule; it is fitted to a network by ``els fit`` on seeds disjoint from evaluation seeds.
"""

from __future__ import annotations

from .declaration import SOFTMAX, Declaration, Fit
from .local import BACKENDS, PATCH_OPTIONS, ELSMachine, step_option

__all__ = ["TemperedELSMachine"]


class TemperedELSMachine(ELSMachine):
    """ELS with its logits divided by a temperature per step (see the module docstring)."""

    declaration = Declaration(
        name="els-tempered", summary="ELS at a temperature per step: logits divided by T(t) (T = 1 is ELS).",
        candidates="as ELS", form=SOFTMAX, traceable=True, sizes_in_one_pass=True, backends=BACKENDS, order=40,
        cost_like="els", candidate=True, reduces_to="els", fit=Fit("temperatures", ("0.7", "1.4")),
        options=PATCH_OPTIONS + (step_option(
            "temperatures", "temperature", 1.0,
            "Softmax temperature: one number, or one per step of the run's grid (highest t first).",
            "--temperatures"),))
