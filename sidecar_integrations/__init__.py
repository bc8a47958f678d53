"""Framework adapters for sidecar-memory.

Each adapter lives in its own subpackage and imports its framework only when
that subpackage is imported, so this package imports without any framework:

* ``sidecar_integrations.langchain``: chat message history, classic
  ``BaseMemory``, agent middleware and a chat model over a local Hugging Face
  model. Install with ``pip install "sidecar-memory[langchain]"``.
* ``sidecar_integrations.llama_index``: chat memory, a memory block and LLMs
  over a local Hugging Face model. Install with
  ``pip install "sidecar-memory[llama-index]"``.
"""

from __future__ import annotations

__all__: list[str] = []
