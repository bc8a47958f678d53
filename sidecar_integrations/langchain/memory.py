"""`SidecarMemory`: a langchain-classic ``BaseMemory`` backed by sidecar-memory.

It takes the same keys as ``VectorStoreRetrieverMemory`` (``memory_key``,
``input_key``, ``return_docs``, ``exclude_input_keys``), so a chain that uses
that memory can switch by changing the constructor call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sidecar_integrations.langchain._extras import require_module

require_module("langchain_classic", purpose="SidecarMemory")

from langchain_classic.base_memory import BaseMemory  # noqa: E402
from langchain_classic.memory.utils import get_prompt_input_key  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr, model_validator  # noqa: E402

from sidecar_integrations.langchain._session import (  # noqa: E402
    ASSISTANT_ROLE,
    DEFAULT_RECALL_K,
    USER_ROLE,
    default_store,
    open_session,
    render_memory_text,
)
from sidecar_memory import Recall, SessionMemory, SidecarConfig  # noqa: E402
from sidecar_memory.stores import StateStore  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_SESSION_ID = "default"
"""Session id used when the memory is built without one."""

PREFIX_DOCUMENT_KIND = "steering_prefix"
MEMORY_DOCUMENT_KIND = "memory"


class SidecarMemory(BaseMemory):
    """Chain memory that recalls from, and commits each run to, a sidecar memory.

    ``load_memory_variables`` recalls for the chain's input and returns, under
    ``memory_key``, the steering prefix and the recalled memories as text (or as
    documents when ``return_docs`` is set). ``save_context`` runs gate-and-commit
    on the input text (role ``user``) and the output text (role ``assistant``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(exclude=True, description="Hugging Face causal LM used by the engine.")
    tokenizer: Any = Field(exclude=True, description="The model's tokenizer.")
    store: StateStore | None = Field(
        default=None,
        exclude=True,
        description="Where the memory state is saved; None uses a DirectoryStore under .sidecar-memory/langchain.",
    )
    session_id: str = Field(default=DEFAULT_SESSION_ID, description="Id of this memory's state in the store.")
    config: SidecarConfig | None = Field(default=None, exclude=True, description="Engine configuration.")
    memory_key: str = Field(default="history", description="Key of the memory text in load_memory_variables.")
    input_key: str | None = Field(
        default=None,
        description="Input key whose text is the recall query and the committed user turn; None picks the only prompt input.",
    )
    output_key: str | None = Field(
        default=None,
        description="Output key whose text is committed as the assistant turn; None picks the only output.",
    )
    return_docs: bool = Field(
        default=False,
        description="Return a list of Documents (prefix first, then one per memory) instead of one string.",
    )
    exclude_input_keys: Sequence[str] = Field(
        default_factory=tuple,
        description="Accepted for VectorStoreRetrieverMemory compatibility; only input_key's text is committed.",
    )
    recall_k: int = Field(default=DEFAULT_RECALL_K, ge=1, description="Number of memories recalled per run.")

    _session: SessionMemory = PrivateAttr()

    @model_validator(mode="after")
    def _open_session(self) -> SidecarMemory:
        if self.store is None:
            self.store = default_store()
        self._session = open_session(self.model, self.tokenizer, self.store, self.session_id, self.config)
        return self

    @property
    def memory_variables(self) -> list[str]:
        """The single key this memory adds to chain inputs: ``memory_key``."""
        return [self.memory_key]

    # -- loading --------------------------------------------------------------

    def load_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Recall for the chain input and return ``{memory_key: text or documents}``."""
        recall = self._session.recall(self._input_text(inputs), k=self.recall_k)
        return {self.memory_key: self._format(recall)}

    async def aload_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Async `load_memory_variables` through the engine's ``arecall``."""
        recall = await self._session.arecall(self._input_text(inputs), k=self.recall_k)
        return {self.memory_key: self._format(recall)}

    # -- saving ---------------------------------------------------------------

    def save_context(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Commit the input as a user turn and the output as an assistant turn (empty text is skipped)."""
        for role, text in self._turns(inputs, outputs):
            self._session.observe(text, role=role)

    async def asave_context(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Async `save_context` through the engine's ``aobserve``."""
        for role, text in self._turns(inputs, outputs):
            await self._session.aobserve(text, role=role)

    def clear(self) -> None:
        """Delete this session's memory state."""
        self._session.clear()

    async def aclear(self) -> None:
        """Async `clear`."""
        await self._session.aclear()

    # -- helpers --------------------------------------------------------------

    def _input_text(self, inputs: dict[str, Any]) -> str:
        key = self.input_key or get_prompt_input_key(inputs, self.memory_variables)
        if key not in inputs:
            raise ValueError(f"input_key {key!r} is not among the chain inputs {sorted(inputs)}; set input_key to one of them.")
        return str(inputs[key])

    def _output_text(self, outputs: dict[str, Any]) -> str:
        if self.output_key is not None:
            if self.output_key not in outputs:
                raise ValueError(
                    f"output_key {self.output_key!r} is not among the chain outputs {sorted(outputs)}; set output_key to one of them."
                )
            return str(outputs[self.output_key])
        if len(outputs) != 1:
            raise ValueError(f"the chain returned outputs {sorted(outputs)}; set output_key to the one to commit.")
        return str(next(iter(outputs.values())))

    def _turns(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> list[tuple[str, str]]:
        turns = [(USER_ROLE, self._input_text(inputs).strip()), (ASSISTANT_ROLE, self._output_text(outputs).strip())]
        return [(role, text) for role, text in turns if text]

    def _format(self, recall: Recall) -> str | list[Document]:
        if not self.return_docs:
            return render_memory_text(recall)
        documents = []
        if recall.prefix.strip():
            documents.append(Document(page_content=recall.prefix, metadata={"kind": PREFIX_DOCUMENT_KIND}))
        for item in recall.memories:
            metadata = {
                "kind": MEMORY_DOCUMENT_KIND,
                "score": item.score,
                "slot": item.slot,
                "role": item.role,
                "turn": item.turn,
                "strength": item.strength,
                "timestamp": item.timestamp,
                "context": item.context,
            }
            documents.append(Document(page_content=item.text, metadata=metadata))
        return documents
