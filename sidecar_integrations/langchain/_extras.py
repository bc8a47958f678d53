"""Import a framework module or raise an ImportError that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

LANGCHAIN_EXTRA = "langchain"
"""Name of the pip extra that installs every LangChain package the adapters use."""


def require_module(module_name: str, *, purpose: str, extra: str = LANGCHAIN_EXTRA) -> ModuleType:
    """Import ``module_name`` or raise an ImportError with the command that installs it.

    ``purpose`` names the adapter that needs the module, for the error message.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        distribution = module_name.split(".", 1)[0].replace("_", "-")
        message = (
            f"{purpose} requires the package {distribution!r}, which is not installed "
            f"({exc}). Install it with: pip install \"sidecar-memory[{extra}]\""
        )
        raise ImportError(message, name=module_name) from exc
