"""The project's errors: bad input is reported by name before any tensor work starts; a run that
cannot finish says why. The command line prints either as one line (exit 2 and 1)."""

from __future__ import annotations

__all__ = ["InputError", "RunError"]


class InputError(ValueError):
    """Raised for input the project cannot use: wrong shape, patch size, time, label, file, option.

    A subclass of ValueError, so callers that already catch ValueError keep working.
    """


class RunError(RuntimeError):
    """Raised when a run cannot finish with valid input: a file that cannot be written (a full
    disk), a network whose forward fails or returns NaN or inf."""
