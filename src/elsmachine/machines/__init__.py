"""The score machines: one base, one module per family, one statement of which candidates a
pixel sees.

- :mod:`.base`: what every machine shares (contract, classes, patch size by t, trace, caches).
- :mod:`.candidates`: which candidate patches an output pixel sees (LS, ELS both paddings).
- :mod:`.ideal`: IS. :mod:`.local`: LS and ELS on either engine form.
- :mod:`.tracing`: a machine wrapped to record where every pixel comes from.
- :mod:`.registry`: machines by name.
"""

from .base import BACKENDS, DEFAULT_MEMORY_BUDGET, ScoreMachine, Trace
from .ideal import IdealMachine
from .local import ELSMachine, LocalMachine, PatchMachine
from .registry import MACHINES, make_machine
from .tracing import SampleTrace, Traced

__all__ = ["BACKENDS", "DEFAULT_MEMORY_BUDGET", "ScoreMachine", "Trace", "IdealMachine", "ELSMachine",
           "LocalMachine", "PatchMachine", "MACHINES", "make_machine", "SampleTrace", "Traced"]
