"""The score machines: one base, one module per family, one statement of which candidates a
pixel sees.

- :mod:`.base`: what every machine shares (contract, classes, patch size by t, trace, caches).
- :mod:`.candidates`: which candidate patches an output pixel sees (LS, ELS both paddings).
- :mod:`.ideal`: IS. :mod:`.local`: LS and ELS on either engine form.
- The peers' machines: :mod:`.nearest`, :mod:`.gaussian` (Wiener, stationary), :mod:`.locality`,
  :mod:`.composite` (PSPC square and flex), the last two on :mod:`.masked`.
- :mod:`.tracing`: a machine wrapped to record where every pixel comes from.
- :mod:`.registry`: machines by name.
"""

from .base import BACKENDS, DEFAULT_MEMORY_BUDGET, ScoreMachine, Trace
from .composite import FlexCompositeMachine, PatchCompositeMachine
from .gaussian import StationaryMachine, WienerMachine
from .ideal import IdealMachine
from .local import ELSMachine, LocalMachine, PatchMachine
from .locality import LocalityMachine
from .nearest import NearestMachine
from .registry import MACHINES, make_machine, options_of
from .tracing import SampleTrace, Traced

__all__ = ["BACKENDS", "DEFAULT_MEMORY_BUDGET", "ScoreMachine", "Trace", "IdealMachine", "ELSMachine",
           "LocalMachine", "PatchMachine", "NearestMachine", "WienerMachine", "StationaryMachine", "LocalityMachine",
           "PatchCompositeMachine", "FlexCompositeMachine", "MACHINES", "make_machine", "options_of", "SampleTrace",
           "Traced"]
