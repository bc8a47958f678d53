"""Exceptions raised by the engine.

Every error message names the invalid value and the fix, so a caller can
act on the message alone.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(SidecarError, ValueError):
    """Error for a value the engine cannot use (empty text, wrong type, invalid option)."""


class StateError(SidecarError, RuntimeError):
    """Error for a saved state that is missing, corrupt, or written for another model or shape."""
