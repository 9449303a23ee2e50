"""The engine: one streaming softmax over candidates, in two forms.

- :mod:`.softmax`: the running state (max, sums, trace terms), its exact merge, its finalisation.
- :mod:`.attention`: queries against streamed key chunks by matrix multiply (any device).
- :mod:`.displacement` with :mod:`.native` and ``csrc/displacement.c``: the compiled CPU kernel
  that sums distances per displacement directly from images.
"""

from .attention import ATTENTION_BACKENDS, Attended, attend
from .softmax import Finalized, SoftmaxState

__all__ = ["ATTENTION_BACKENDS", "Attended", "attend", "Finalized", "SoftmaxState"]
