"""LlamaIndex adapters for sidecar-memory.

* :class:`SidecarMemory`: a ``BaseMemory`` for chat engines (``SimpleChatEngine``,
  ``ContextChatEngine``, ``CondensePlusContextChatEngine``).
* :class:`SidecarMemoryBlock`: a ``BaseMemoryBlock`` for the ``Memory`` class
  that agents use (``FunctionAgent``, ``AgentWorkflow``).
* :class:`SidecarLLM` and :class:`SidecarToolCallingLLM`: LlamaIndex LLMs over a
  local Hugging Face causal LM, such as the embedded SmolLM2 model.

Install with ``pip install "sidecar-memory[llama-index]"``.
"""

from __future__ import annotations

LLAMA_INDEX_EXTRA = "llama-index"
"""Name of the pip extra that installs llama-index-core."""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "sidecar_integrations.llama_index requires the package 'llama-index-core', which is not "
        f"installed ({exc}). Install it with: pip install \"sidecar-memory[{LLAMA_INDEX_EXTRA}]\"",
        name="llama_index.core",
    ) from exc

from sidecar_integrations.llama_index.block import SidecarMemoryBlock  # noqa: E402
from sidecar_integrations.llama_index.llm import SidecarLLM, SidecarToolCallingLLM  # noqa: E402
from sidecar_integrations.llama_index.memory import SidecarMemory  # noqa: E402

__all__ = [
    "LLAMA_INDEX_EXTRA",
    "SidecarLLM",
    "SidecarMemory",
    "SidecarMemoryBlock",
    "SidecarToolCallingLLM",
]
