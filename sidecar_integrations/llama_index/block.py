"""``SidecarMemoryBlock``: a LlamaIndex ``BaseMemoryBlock`` for the agents' ``Memory`` class.

``Memory`` keeps recent messages in a FIFO queue. When the queue passes its
token limit, it flushes the oldest messages to every memory block with the
session id, and before each LLM call it requests content from every block. This
block commits the flushed messages to the sidecar memory of that session and
returns the memories recalled for the latest messages.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ContentBlock, TextBlock
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator, model_validator
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.utils import get_tokenizer

from sidecar_integrations.llama_index._sessions import build_session, validate_session
from sidecar_integrations.llama_index._text import (
    DEFAULT_COMMIT_ROLES,
    DEFAULT_MEMORY_HEADER,
    DEFAULT_MEMORY_LINE_TEMPLATE,
    DEFAULT_QUERY_ROLES,
    DEFAULT_RECALL_K,
    build_query,
    message_role,
    message_text,
    render_recall,
    validate_line_template,
    validate_roles,
)

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_NAME = "sidecar_memory"
"""Block name; ``Memory`` wraps the block's content in a tag of this name."""

DEFAULT_QUERY_MESSAGES = 1
"""Latest messages (of ``query_roles``) whose text forms the recall query."""

DEFAULT_MAX_CACHED_SESSIONS = 32
"""Session objects kept between calls.

A ``SessionMemory`` keeps a parsed copy of the last state it saw: about 3.6 MB
with the default ``SidecarConfig`` (a 1.8 MB state, measured with
``Sidecar.state_nbytes()``, plus its stored bytes). Evicting one is safe,
because a session reloads its state from the store on use.
"""

SESSION_ID_KEY = "session_id"
"""Key under which ``Memory`` stores the session id in a flushed message's ``additional_kwargs``."""


class SidecarMemoryBlock(BaseMemoryBlock[list[ContentBlock]]):
    """Memory block that commits flushed messages to the sidecar memory and recalls from it.

    Give it ``model``, ``tokenizer`` and a state ``store`` (or a
    ``session_factory``), and put it in ``Memory.from_defaults(memory_blocks=[...])``
    beside or instead of ``VectorMemoryBlock``. Each session id that ``Memory``
    passes gets its own ``sidecar_memory.SessionMemory``, so one block (and one
    store) can serve many users without mixing their memories. Pass a fixed
    ``session_id`` to ``Memory.from_defaults`` for memories that outlive the
    process, because ``Memory`` otherwise draws a random one.

    ``_aput`` observes the text of each flushed message whose role is in
    ``commit_roles``. ``Memory`` flushes only when its queue of recent messages
    passes ``token_limit * chat_history_token_ratio`` tokens, so a low
    ``token_limit`` commits sooner.
    """

    name: str = Field(
        default=DEFAULT_BLOCK_NAME,
        description="Name of the memory block; Memory renders its content inside a tag of this name.",
    )
    model: Any = Field(
        default=None,
        exclude=True,
        description="Hugging Face causal LM the sessions encode with (for example from sidecar_memory.load_default_model()).",
    )
    tokenizer: Any = Field(
        default=None,
        exclude=True,
        description="Tokenizer of model.",
    )
    store: Any = Field(
        default=None,
        exclude=True,
        description="sidecar_memory state store shared by every session (required unless session_factory is set).",
    )
    config: Any = Field(
        default=None,
        exclude=True,
        description="sidecar_memory.SidecarConfig for new sessions; None uses the engine defaults.",
    )
    session_factory: Callable[[str], Any] | None = Field(
        default=None,
        exclude=True,
        description=(
            "Function from a session id to its session object, used instead of model, tokenizer, "
            "store and config."
        ),
    )
    default_session_id: str | None = Field(
        default=None,
        description=(
            "Session used when a call carries no session id (Memory always passes one). "
            "None makes such calls raise ValueError."
        ),
    )
    recall_k: int = Field(
        default=DEFAULT_RECALL_K,
        description="Number of memories recalled per aget().",
    )
    min_score: float | None = Field(
        default=None,
        description="Memories whose recall score (cosine, -1 to 1) is below this are left out. None keeps all.",
    )
    commit_roles: tuple[str, ...] = Field(
        default=DEFAULT_COMMIT_ROLES,
        description="Roles of the flushed messages whose text is observed (gate-and-commit).",
    )
    query_roles: tuple[str, ...] = Field(
        default=DEFAULT_QUERY_ROLES,
        description="Roles of the messages whose text forms the recall query.",
    )
    query_messages: int = Field(
        default=DEFAULT_QUERY_MESSAGES,
        description="Number of latest messages (of query_roles) joined into the recall query.",
    )
    include_prefix: bool = Field(
        default=True,
        description="Whether the content starts with the engine's steering prefix.",
    )
    memory_header: str = Field(
        default=DEFAULT_MEMORY_HEADER,
        description="Line between the steering prefix and the list of recalled memories.",
    )
    memory_line_template: str = Field(
        default=DEFAULT_MEMORY_LINE_TEMPLATE,
        description=(
            "str.format template of one recalled memory, with the fields text, context, role, "
            "turn, score, slot and strength."
        ),
    )
    max_cached_sessions: int = Field(
        default=DEFAULT_MAX_CACHED_SESSIONS,
        description="Number of session objects kept between calls, least recently used evicted first.",
    )
    tokenizer_fn: Callable[[str], list] = Field(
        default_factory=get_tokenizer,
        exclude=True,
        description="Function from text to tokens, used by atruncate. Memory's default tokenizer is the default here too.",
    )

    _sessions: OrderedDict[str, Any] = PrivateAttr(default_factory=OrderedDict)
    _sessions_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _check_session_source(self) -> "SidecarMemoryBlock":
        if self.session_factory is None and (self.model is None or self.tokenizer is None or self.store is None):
            raise ValueError(
                "SidecarMemoryBlock needs model=, tokenizer= and store= (with an optional config=), "
                "or session_factory="
            )
        return self

    @field_validator("recall_k", "query_messages", "max_cached_sessions")
    @classmethod
    def _check_positive(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be at least 1; got {value!r}")
        return value

    @field_validator("commit_roles", "query_roles", mode="before")
    @classmethod
    def _check_roles(cls, roles: Any, info: Any) -> tuple[str, ...]:
        return validate_roles(info.field_name, roles)

    @field_validator("memory_line_template")
    @classmethod
    def _check_line_template(cls, template: str) -> str:
        return validate_line_template(template)

    def session_for(self, session_id: str) -> Any:
        """Return the session object of ``session_id``, creating it on first use."""
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is not None:
                self._sessions.move_to_end(session_id)
                return session

        if self.session_factory is not None:
            session = validate_session(self.session_factory(session_id))
        else:
            session = build_session(
                model=self.model,
                tokenizer=self.tokenizer,
                store=self.store,
                session_id=session_id,
                config=self.config,
            )
        with self._sessions_lock:
            session = self._sessions.setdefault(session_id, session)
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > self.max_cached_sessions:
                self._sessions.popitem(last=False)
        return session

    async def _aget(
        self,
        messages: list[ChatMessage] | None = None,
        session_id: str | None = None,
        **block_kwargs: Any,
    ) -> list[ContentBlock]:
        """Return the steering prefix and the memories recalled for the latest messages.

        The content is one text block per line: the prefix, the header, then one
        block per memory, most relevant first. Returns [] when there is no query
        text or nothing to show.
        """
        query = build_query(messages or [], roles=self.query_roles, count=self.query_messages)
        if not query:
            return []

        session = self.session_for(self._resolve_session_id(session_id))
        recall = await session.arecall(query, k=self.recall_k)
        lead_lines, memory_lines = render_recall(
            recall,
            include_prefix=self.include_prefix,
            memory_header=self.memory_header,
            memory_line_template=self.memory_line_template,
            min_score=self.min_score,
        )
        return [TextBlock(text=line) for line in [*lead_lines, *memory_lines]]

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Observe the text of each message whose role is in ``commit_roles``, in order.

        Each message goes to the session named by its ``additional_kwargs["session_id"]``
        (``Memory`` sets it), else to ``default_session_id``.
        """
        for message in messages:
            role = message_role(message)
            if role not in self.commit_roles:
                continue
            text = message_text(message)
            if not text:
                continue

            session_id = self._resolve_session_id(message.additional_kwargs.get(SESSION_ID_KEY))
            decision = await self.session_for(session_id).aobserve(text, role=role)
            logger.debug(
                "session %s: flushed %s turn committed=%s",
                session_id,
                role,
                getattr(decision, "committed", "?"),
            )

    async def atruncate(self, content: list[ContentBlock], tokens_to_truncate: int) -> list[ContentBlock] | None:
        """Drop the least relevant memories until about ``tokens_to_truncate`` tokens are gone.

        Returns None (the whole block is dropped) when removing every memory
        line is not enough, or when no line equals ``memory_header`` (no
        memories listed, or an empty header), because then the memory lines
        cannot be distinguished from the prefix.
        """
        header_index = next(
            (
                index
                for index, block in enumerate(content)
                if isinstance(block, TextBlock) and block.text == self.memory_header
            ),
            None,
        )
        if header_index is None:
            return None

        truncated = list(content)
        removed_tokens = 0
        while len(truncated) > header_index + 1 and removed_tokens < tokens_to_truncate:
            dropped = truncated.pop()
            if isinstance(dropped, TextBlock):
                removed_tokens += len(self.tokenizer_fn(dropped.text))
        if removed_tokens < tokens_to_truncate:
            return None
        if len(truncated) == header_index + 1:
            # Every memory is gone: drop the header, keep the prefix if there is one.
            truncated.pop()
        return truncated or None

    def _resolve_session_id(self, session_id: str | None) -> str:
        resolved = session_id or self.default_session_id
        if not resolved:
            raise ValueError(
                "SidecarMemoryBlock received no session id: use it inside llama_index Memory "
                "(which passes Memory.session_id) or set default_session_id="
            )
        return resolved
