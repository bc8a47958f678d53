"""Exceptions raised by the engine.

Every error says which value was wrong and what to do about it, so a caller
can act on the message alone.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(SidecarError, ValueError):
    """A caller passed a value the engine cannot use (empty text, wrong type, bad option)."""


class StateError(SidecarError, RuntimeError):
    """A saved state is missing, corrupt, or was written for another model or shape."""
