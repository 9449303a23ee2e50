"""The project's error type: bad input is reported by name, before any tensor work starts."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Raised for input the project cannot use: wrong shape, patch size, time, label, file, option.

    A subclass of ValueError, so callers that already catch ValueError keep working.
    """
