"""The score machines: each one class that declares itself, one file per family, one statement
of which candidates a pixel sees.

- :mod:`.declaration`: how a machine states its name, options, candidates and capabilities.
- :mod:`.base`: what every machine shares (contract, classes, patch size by t, trace, the full
  set's description); :class:`~.base.CandidateMachine`, what the softmax machines add (an engine
  chosen once per device and dtype, its key cache).
- :mod:`.candidates`: which candidate patches an output pixel sees (LS, ELS both paddings);
  :mod:`.forms`: the engine forms over those candidates (attention, displacement, Triton).
- The machines: :mod:`.ideal` (IS), :mod:`.local` (LS, ELS), and the peers' :mod:`.nearest`,
  :mod:`.gaussian` (Wiener, stationary), :mod:`.locality`, :mod:`.golddiff`, :mod:`.smoothed`,
  :mod:`.composite` (PSPC square and flex; locality and composites share :mod:`.masked`).
- The candidates beyond ELS: :mod:`.tempered`; the ELS variants, each a declaration of per-step
  values of the one step (:mod:`.step`): :mod:`.els_tempered`, :mod:`.els_soft`, :mod:`.els_border`,
  :mod:`.els_radius`, :mod:`.els_centred`; and those composed of machines (:mod:`.joined`):
  :mod:`.wiener_els`, :mod:`.wiener_els_radius`, :mod:`.els_attention`.
- :mod:`.subset`: the opt-in subset mode of the softmax machines, with its bound.
- :mod:`.tracing`: a machine wrapped to record where every pixel comes from.
- :mod:`.registry`: every declared machine by name, found by importing this package's modules.
"""

from .base import BACKENDS, DEFAULT_MEMORY_BUDGET, CandidateMachine, ScoreMachine, Trace
from .composite import FlexCompositeMachine, PatchCompositeMachine
from .declaration import COMPOSITE, LINEAR, SOFTMAX, Cost, Declaration, Fit, Option
from .gaussian import StationaryMachine, WienerMachine
from .golddiff import GoldDiffMachine
from .ideal import IdealMachine
from .local import ELSMachine, LocalMachine, PatchMachine
from .locality import LocalityMachine
from .nearest import NearestMachine
from .smoothed import SmoothedMachine
from .registry import (DEFAULT_MACHINE, EXACT_MACHINE, MACHINES, cost_of, declaration_of, declarations, make_machine,
                       options_of, timed_options)
from .tracing import SampleTrace, Traced

__all__ = ["BACKENDS", "DEFAULT_MEMORY_BUDGET", "ScoreMachine", "CandidateMachine", "Trace", "Declaration", "Option", "Fit", "Cost",
           "SOFTMAX", "LINEAR", "COMPOSITE", "IdealMachine", "ELSMachine", "LocalMachine", "PatchMachine",
           "NearestMachine", "WienerMachine", "StationaryMachine", "LocalityMachine", "PatchCompositeMachine",
           "FlexCompositeMachine", "GoldDiffMachine", "SmoothedMachine", "MACHINES", "DEFAULT_MACHINE", "EXACT_MACHINE", "cost_of", "timed_options", "make_machine", "options_of", "declaration_of", "declarations",
           "SampleTrace", "Traced"]
