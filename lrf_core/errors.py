"""One exception hierarchy for lrflow.

Every error a user can cause derives from :class:`LRFError`, and also from the
builtin that fits it (``ValueError``, ``FileNotFoundError`` ...), so callers can
catch either. Messages follow one pattern: what was expected, what was
received, and what to do. The CLI prints ``str(error)`` as one line.
"""

from __future__ import annotations


class LRFError(Exception):
    """Base class of every error lrflow raises on purpose."""


class InvalidRankError(LRFError, ValueError):
    """A rank is outside the range a method allows for a layer."""


class UnknownMethodError(LRFError, KeyError):
    """A method id that is not registered (the message lists the allowed ids)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MethodNotApplicableError(LRFError, ValueError):
    """A method that exists but does not apply to this layer type or shape."""


class PlanError(LRFError, ValueError):
    """A compression plan names unknown layers, keys or malformed entries."""


class DataError(LRFError, ValueError):
    """Calibration or evaluation data that cannot be used (shape, dtype, values, URI)."""


class ModelLoadError(LRFError, ValueError):
    """A model file that is missing, corrupt, or of an unsupported kind."""


class RebuildError(LRFError, ValueError):
    """A model that cannot be rebuilt (subclassed, nested layer in the plan, ...)."""


class NumericalError(LRFError, ArithmeticError):
    """A numerical step failed even after the documented safeguards (damping, guards)."""
