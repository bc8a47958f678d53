"""sidecar-memory: a small, persistent, constant-size fast-weight memory for causal LMs.

The engine imports neither LangChain nor LlamaIndex. Adapters for both live
in the separate ``sidecar_integrations`` package.
"""

from __future__ import annotations

import logging

from .config import SidecarConfig
from .errors import InvalidInputError, SidecarError, StateError
from .model_loader import load_default_model, load_model
from .records import GateDecision, MemoryItem, Recall
from .sidecar import Sidecar, SidecarV3
from .session import SessionMemory
from .stores import DirectoryStore, SQLiteStore, StateBlob, StateStore, open_store

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DirectoryStore",
    "GateDecision",
    "InvalidInputError",
    "MemoryItem",
    "Recall",
    "SQLiteStore",
    "SessionMemory",
    "Sidecar",
    "SidecarConfig",
    "SidecarError",
    "SidecarV3",
    "StateBlob",
    "StateError",
    "StateStore",
    "load_default_model",
    "load_model",
    "open_store",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # RedisStore and PostgresStore need optional packages, so they are imported on first use.
    if name in ("RedisStore", "PostgresStore"):
        from . import stores

        return getattr(stores, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
