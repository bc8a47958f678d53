"""``SidecarMemory``: a LlamaIndex ``BaseMemory`` backed by one user's sidecar memory.

Chat engines call ``put`` for every message and ``get`` before every LLM call.
``put`` keeps the message in a short-term chat store and runs the engine's
gate-and-commit on its text. ``get`` recalls the memories that match the
current input and returns them, with the engine's steering prefix, as a system
message in front of the recent messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    field_serializer,
    field_validator,
    model_validator,
)
from llama_index.core.memory.types import BaseMemory
from llama_index.core.storage.chat_store import BaseChatStore, SimpleChatStore
from llama_index.core.utils import get_tokenizer

from sidecar_integrations.llama_index._sessions import (
    SESSION_METHODS,
    aclear_session,
    build_session,
    clear_session,
    hf_token_counter,
    validate_session,
)
from sidecar_integrations.llama_index._text import (
    DEFAULT_COMMIT_ROLES,
    DEFAULT_MEMORY_HEADER,
    DEFAULT_MEMORY_LINE_TEMPLATE,
    DEFAULT_RECALL_K,
    build_query,
    message_role,
    message_text,
    render_recall,
    validate_line_template,
    validate_roles,
)

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_LIMIT = 3000
"""Tokens that ``get`` may return in all (memory message and recent messages)."""

DEFAULT_TOKEN_LIMIT_RATIO = 0.75
"""Share of an LLM's context window used as the token limit by ``from_defaults(llm=...)``."""

class SidecarMemory(BaseMemory):
    """Chat memory for LlamaIndex chat engines, backed by one session's sidecar memory.

    ``put`` appends the message to the short-term ``chat_store``. When its role
    is in ``commit_roles``, it also observes its text, and the engine's gate
    decides whether the text is committed. ``get(input=...)`` recalls memories for
    ``input``, or for the latest user message when ``input`` is None, and
    returns a system message with the steering prefix and the memories,
    followed by the most recent messages that fit ``token_limit``.

    ``reset`` clears the recent messages only. The long-term memory survives a
    new conversation; :meth:`clear` removes both.

    Isolation: the memory reads and writes only ``session``, and stores recent
    messages under ``chat_store_key``, which defaults to the session id. Two
    users on one state store or one chat store therefore never see each other's
    memories or messages.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    session: Any = Field(
        exclude=True,
        description=(
            "The user's long-term memory: a sidecar_memory.SessionMemory, or any object with "
            f"the methods {', '.join(SESSION_METHODS)} (a sidecar_memory.Sidecar works for one "
            "in-process user)."
        ),
    )
    chat_store: SerializeAsAny[BaseChatStore] = Field(
        default_factory=SimpleChatStore,
        description="Short-term store of the recent messages, the ones get() returns after the memory message.",
    )
    chat_store_key: str = Field(
        default="",
        description=(
            "Key of this session's recent messages in chat_store. Empty means the session's "
            "session_id, so sessions that share one chat store stay apart."
        ),
    )
    token_limit: int = Field(
        default=DEFAULT_TOKEN_LIMIT,
        description="Tokens that get() may return in all, memory message included.",
    )
    recall_k: int = Field(
        default=DEFAULT_RECALL_K,
        description="Number of memories recalled per get().",
    )
    min_score: float | None = Field(
        default=None,
        description="Memories whose recall score (cosine, -1 to 1) is below this are left out. None keeps all.",
    )
    commit_roles: tuple[str, ...] = Field(
        default=DEFAULT_COMMIT_ROLES,
        description="Roles of the messages whose text put() observes (gate-and-commit).",
    )
    include_prefix: bool = Field(
        default=True,
        description="Whether the memory message starts with the engine's steering prefix.",
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
    tokenizer_fn: Callable[[str], list] = Field(
        default_factory=get_tokenizer,
        exclude=True,
        description=(
            "Function from text to tokens, used to count tokens against token_limit. "
            "from_defaults(tokenizer=...) uses the Hugging Face tokenizer given."
        ),
    )

    _last_decision: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SidecarMemory"

    @property
    def last_decision(self) -> Any:
        """``GateDecision`` of the latest observed message (whether the gate committed it), or None."""
        return self._last_decision

    @model_validator(mode="before")
    @classmethod
    def _fill_chat_store_key(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("chat_store_key"):
            session_id = getattr(values.get("session"), "session_id", None)
            if not isinstance(session_id, str) or not session_id:
                raise ValueError(
                    "chat_store_key is missing and the session has no session_id attribute; "
                    "pass chat_store_key= (one key per user) or a sidecar_memory.SessionMemory"
                )
            values["chat_store_key"] = session_id
        return values

    @field_validator("session")
    @classmethod
    def _check_session(cls, session: Any) -> Any:
        return validate_session(session)

    @field_validator("token_limit", "recall_k")
    @classmethod
    def _check_positive(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be at least 1; got {value!r}")
        return value

    @field_validator("commit_roles", mode="before")
    @classmethod
    def _check_commit_roles(cls, roles: Any) -> tuple[str, ...]:
        return validate_roles("commit_roles", roles)

    @field_validator("memory_line_template")
    @classmethod
    def _check_line_template(cls, template: str) -> str:
        return validate_line_template(template)

    @field_serializer("chat_store")
    def _serialize_chat_store(self, chat_store: BaseChatStore) -> dict:
        serialized = chat_store.model_dump()
        serialized["class_name"] = chat_store.class_name()
        return serialized

    @classmethod
    def from_defaults(  # type: ignore[override]
        cls,
        *,
        session: Any = None,
        model: Any = None,
        tokenizer: Any = None,
        store: Any = None,
        session_id: str | None = None,
        config: Any = None,
        chat_history: list[ChatMessage] | None = None,
        chat_store: BaseChatStore | None = None,
        llm: Any = None,
        token_limit: int | None = None,
        tokenizer_fn: Callable[[str], list] | None = None,
        **options: Any,
    ) -> "SidecarMemory":
        """Build a memory for one session.

        Pass either ``session`` (a ready ``SessionMemory``) or ``model``,
        ``tokenizer``, a state ``store`` and ``session_id`` (with an optional
        engine ``config``), from which a ``SessionMemory`` is built.

        ``chat_history`` seeds the recent messages without observing them.
        ``token_limit`` defaults to 75% of ``llm``'s context window when ``llm``
        is given, else to :data:`DEFAULT_TOKEN_LIMIT`. Token counting uses
        ``tokenizer_fn``, else the Hugging Face ``tokenizer``, else LlamaIndex's
        default tokenizer. Other keyword options set the fields of the same name.
        """
        if session is None:
            session = build_session(
                model=model, tokenizer=tokenizer, store=store, session_id=session_id, config=config
            )
        elif any(value is not None for value in (model, store, session_id, config)):
            raise ValueError(
                "pass either session= or model=/store=/session_id=/config= to "
                "SidecarMemory.from_defaults, not both (tokenizer= may go with either)"
            )

        if token_limit is None:
            if llm is not None:
                token_limit = int(llm.metadata.context_window * DEFAULT_TOKEN_LIMIT_RATIO)
            else:
                token_limit = DEFAULT_TOKEN_LIMIT

        if tokenizer_fn is None and tokenizer is not None:
            tokenizer_fn = hf_token_counter(tokenizer)
        if tokenizer_fn is not None:
            options["tokenizer_fn"] = tokenizer_fn

        memory = cls(
            session=session,
            chat_store=chat_store or SimpleChatStore(),
            token_limit=token_limit,
            **options,
        )
        if chat_history is not None:
            memory.set(chat_history)
        return memory

    # -- reading ---------------------------------------------------------------

    def get(
        self, input: str | None = None, *, initial_token_count: int = 0, **kwargs: Any
    ) -> list[ChatMessage]:
        """Return the memory message, then the recent messages, within ``token_limit``.

        ``input`` is the recall query; when None, the latest user message is.
        ``initial_token_count`` is the number of tokens the caller adds in front
        (a chat engine's system prompt) and is subtracted from the budget.
        """
        history = self.chat_store.get_messages(self.chat_store_key)
        query = self._recall_query(input, history)
        recall = self.session.recall(query, k=self.recall_k) if query else None
        return self._compose(history, recall, initial_token_count)

    async def aget(
        self, input: str | None = None, *, initial_token_count: int = 0, **kwargs: Any
    ) -> list[ChatMessage]:
        """Async :meth:`get`: recalls through the session's ``arecall``."""
        history = await self.chat_store.aget_messages(self.chat_store_key)
        query = self._recall_query(input, history)
        recall = await self.session.arecall(query, k=self.recall_k) if query else None
        return self._compose(history, recall, initial_token_count)

    def get_all(self) -> list[ChatMessage]:
        """Return every recent message of this session, oldest first (no memory message)."""
        return self.chat_store.get_messages(self.chat_store_key)

    async def aget_all(self) -> list[ChatMessage]:
        """Async :meth:`get_all`."""
        return await self.chat_store.aget_messages(self.chat_store_key)

    # -- writing ---------------------------------------------------------------

    def put(self, message: ChatMessage) -> None:
        """Append ``message`` to the recent messages and observe its text if its role commits."""
        self.chat_store.add_message(self.chat_store_key, message)
        text, role = self._commit_text(message)
        if text:
            decision = self.session.observe(text, role=role)
            self._log_decision(decision)

    async def aput(self, message: ChatMessage) -> None:
        """Async :meth:`put`: observes through the session's ``aobserve``."""
        await self.chat_store.async_add_message(self.chat_store_key, message)
        text, role = self._commit_text(message)
        if text:
            decision = await self.session.aobserve(text, role=role)
            self._log_decision(decision)

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """:meth:`put` each message in order."""
        for message in messages:
            self.put(message)

    async def aput_messages(self, messages: list[ChatMessage]) -> None:
        """:meth:`aput` each message in order."""
        for message in messages:
            await self.aput(message)

    def set(self, messages: list[ChatMessage]) -> None:
        """Replace the recent messages with ``messages``. Nothing is observed; use put_messages for that."""
        self.chat_store.set_messages(self.chat_store_key, list(messages))

    async def aset(self, messages: list[ChatMessage]) -> None:
        """Async :meth:`set`."""
        await self.chat_store.aset_messages(self.chat_store_key, list(messages))

    def reset(self) -> None:
        """Delete the recent messages. The long-term memory is kept; see :meth:`clear`."""
        self.chat_store.delete_messages(self.chat_store_key)

    async def areset(self) -> None:
        """Async :meth:`reset`."""
        await self.chat_store.adelete_messages(self.chat_store_key)

    def clear(self) -> None:
        """Delete the recent messages and every long-term memory of this session."""
        self.reset()
        clear_session(self.session)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await self.areset()
        await aclear_session(self.session)

    # -- helpers ---------------------------------------------------------------

    def _recall_query(self, input: str | None, history: Sequence[ChatMessage]) -> str:
        if input is not None:
            if not isinstance(input, str):
                input = message_text(input)
            return input.strip()
        return build_query(history, roles=("user",), count=1)

    def _commit_text(self, message: ChatMessage) -> tuple[str, str]:
        role = message_role(message)
        if role not in self.commit_roles:
            return "", role
        return message_text(message), role

    def _log_decision(self, decision: Any) -> None:
        self._last_decision = decision
        logger.debug(
            "session %s: turn %s (%s) committed=%s G=%.3f tau=%.3f %s",
            self.chat_store_key,
            getattr(decision, "turn", "?"),
            getattr(decision, "role", "?"),
            getattr(decision, "committed", "?"),
            getattr(decision, "G", float("nan")),
            getattr(decision, "tau", float("nan")),
            getattr(decision, "reason", ""),
        )

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer_fn(text))

    def _compose(
        self, history: list[ChatMessage], recall: Any, initial_token_count: int
    ) -> list[ChatMessage]:
        """Fit the memory message and the recent messages into the token budget.

        Order of priority: the latest message, then the memory message (its
        least relevant memories are dropped first), then older messages,
        newest first. A recent slice never starts with an assistant or tool
        message, unless only the latest message fits.
        """
        budget = self.token_limit - initial_token_count
        if budget < 1:
            raise ValueError(
                f"initial_token_count {initial_token_count} leaves no room within token_limit "
                f"{self.token_limit}; raise token_limit or shorten the system prompt"
            )

        latest_tokens = self._count_tokens(message_text(history[-1])) if history else 0
        memory_message = self._memory_message(recall, budget - latest_tokens)
        if memory_message is not None:
            budget -= self._count_tokens(memory_message.content or "")

        recent = self._recent_messages(history, budget)
        if memory_message is None:
            return recent
        return [memory_message, *recent]

    def _memory_message(self, recall: Any, budget: int) -> ChatMessage | None:
        if recall is None:
            return None
        lead_lines, memory_lines = render_recall(
            recall,
            include_prefix=self.include_prefix,
            memory_header=self.memory_header,
            memory_line_template=self.memory_line_template,
            min_score=self.min_score,
        )
        while memory_lines:
            text = "\n".join([*lead_lines, *memory_lines])
            if self._count_tokens(text) <= budget:
                return ChatMessage(role=MessageRole.SYSTEM, content=text)
            memory_lines.pop()

        # No memory line fits: keep the steering prefix alone if it fits.
        prefix_lines = lead_lines[:1] if self.include_prefix and recall.prefix.strip() else []
        text = "\n".join(prefix_lines)
        if text and self._count_tokens(text) <= budget:
            return ChatMessage(role=MessageRole.SYSTEM, content=text)
        return None

    def _recent_messages(self, history: list[ChatMessage], budget: int) -> list[ChatMessage]:
        if not history:
            return []
        start = len(history) - 1
        used = self._count_tokens(message_text(history[start]))
        while start > 0:
            cost = self._count_tokens(message_text(history[start - 1]))
            if used + cost > budget:
                break
            used += cost
            start -= 1

        while start < len(history) - 1 and message_role(history[start]) in ("assistant", "tool"):
            start += 1
        return history[start:]
