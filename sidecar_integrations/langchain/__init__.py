"""LangChain adapters for sidecar-memory.

Install with ``pip install "sidecar-memory[langchain]"``. The adapters:

* `SidecarChatMessageHistory` (langchain-core): a ``BaseChatMessageHistory`` for
  ``RunnableWithMessageHistory``.
* `SidecarMemory` (langchain-classic): a ``BaseMemory`` with the keys of
  ``VectorStoreRetrieverMemory``.
* `SidecarMiddleware` (langchain): an ``AgentMiddleware`` for ``create_agent``.
* `SidecarChatModel` (langchain-core): a ``BaseChatModel`` over a local
  Hugging Face model, used by the examples and tests.

Each name is imported on first use, so a missing optional package only fails
the adapter that needs it, with an ImportError that names the extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sidecar_integrations.langchain._extras import require_module

require_module("langchain_core", purpose="sidecar_integrations.langchain")

if TYPE_CHECKING:
    from sidecar_integrations.langchain.chat_model import SidecarChatModel
    from sidecar_integrations.langchain.history import SidecarChatMessageHistory
    from sidecar_integrations.langchain.memory import SidecarMemory
    from sidecar_integrations.langchain.middleware import SidecarMiddleware

_EXPORTS = {
    "SidecarChatMessageHistory": "sidecar_integrations.langchain.history",
    "SidecarMemory": "sidecar_integrations.langchain.memory",
    "SidecarMiddleware": "sidecar_integrations.langchain.middleware",
    "SidecarChatModel": "sidecar_integrations.langchain.chat_model",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
