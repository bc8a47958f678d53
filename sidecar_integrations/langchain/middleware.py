"""`SidecarMiddleware`: sidecar memory for LangChain v1 agents (``langchain.agents.create_agent``).

Before each model call it appends the steering prefix and the memories
recalled for the latest human message to the request's system message. After
each model call it commits the turn: the human message on the first model call
that answers it, and the AI message once it is a final answer (no tool calls).
Memory is kept per user or thread, read from the runtime context or the run config.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar_integrations.langchain._extras import require_module

require_module("langchain.agents.middleware", purpose="SidecarMiddleware")

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse  # noqa: E402
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage  # noqa: E402
from langgraph.config import get_config  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402

from sidecar_integrations.langchain._session import (  # noqa: E402
    ASSISTANT_ROLE,
    DEFAULT_RECALL_K,
    DEFAULT_SESSION_CACHE_SIZE,
    USER_ROLE,
    SessionCache,
    default_store,
    render_memory_text,
)
from sidecar_memory import Recall, SidecarConfig  # noqa: E402
from sidecar_memory.stores import StateStore  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_SESSION_KEYS = ("user_id", "thread_id")
"""Keys looked up, in order, in the runtime context and then in ``config["configurable"]``."""

SessionResolver = Callable[[Runtime[Any]], "str | None"]


class SidecarMiddleware(AgentMiddleware):
    """Agent middleware that recalls before each model call and commits after it.

    The memory session id is the first of these that is set:

    1. ``session_resolver(runtime)``, when a resolver is given.
    2. The first of ``session_keys`` in the runtime context (a mapping, or an
       object with that attribute).
    3. The first of ``session_keys`` in ``config["configurable"]``.
    4. The run's ``thread_id``.

    An agent run with none of them raises ``ValueError``.

    Args:
        model: Hugging Face causal LM used by the engine.
        tokenizer: The model's tokenizer.
        store: Where each session's state is saved; default: a ``DirectoryStore``
            under ``.sidecar-memory/langchain`` in the working directory.
        config: Engine configuration; ``None`` uses the engine defaults.
        recall_k: Number of memories recalled per model call.
        session_keys: Context and configurable keys that name the memory session.
        session_resolver: Function of the runtime that returns the session id, or
            ``None`` to fall back to ``session_keys``.
        max_cached_sessions: Number of session handles kept in memory.
    """

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        store: StateStore | None = None,
        config: SidecarConfig | None = None,
        recall_k: int = DEFAULT_RECALL_K,
        session_keys: Sequence[str] = DEFAULT_SESSION_KEYS,
        session_resolver: SessionResolver | None = None,
        max_cached_sessions: int = DEFAULT_SESSION_CACHE_SIZE,
    ) -> None:
        super().__init__()
        if recall_k < 1:
            raise ValueError(f"recall_k must be at least 1, got {recall_k}")
        if isinstance(session_keys, str) or not session_keys:
            raise ValueError(f"session_keys must be a non-empty sequence of key names, got {session_keys!r}")
        self.store = store if store is not None else default_store()
        self.recall_k = recall_k
        self.session_keys = tuple(session_keys)
        self.session_resolver = session_resolver
        self.sessions = SessionCache(
            model=model, tokenizer=tokenizer, store=self.store, config=config, max_sessions=max_cached_sessions
        )

    # -- session id -------------------------------------------------------------

    def session_id(self, runtime: Runtime[Any]) -> str:
        """Return the memory session id for the current agent run."""
        if self.session_resolver is not None:
            resolved = self.session_resolver(runtime)
            if resolved:
                return str(resolved)
        context = getattr(runtime, "context", None)
        for key in self.session_keys:
            value = _lookup(context, key)
            if value:
                return str(value)
        configurable = _configurable()
        for key in self.session_keys:
            value = configurable.get(key)
            if value:
                return str(value)
        execution_info = getattr(runtime, "execution_info", None)
        thread_id = getattr(execution_info, "thread_id", None)
        if thread_id:
            return str(thread_id)
        raise ValueError(
            f"SidecarMiddleware found no memory session id: none of {list(self.session_keys)} is in the runtime "
            f"context or config['configurable']. Pass context={{'{self.session_keys[0]}': ...}} (with a "
            f"context_schema) or config={{'configurable': {{'thread_id': ...}}}} to invoke, or set session_resolver."
        )

    # -- before the model call ------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        """Add the prefix and the recalled memories to the system message, then call the model."""
        query = _latest_human_text(request.messages)
        if query:
            session = self.sessions.get(self.session_id(request.runtime))
            request = _with_memory(request, session.recall(query, k=self.recall_k))
        return handler(request)

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        """Async `wrap_model_call` through the engine's ``arecall``."""
        query = _latest_human_text(request.messages)
        if query:
            session = self.sessions.get(self.session_id(request.runtime))
            request = _with_memory(request, await session.arecall(query, k=self.recall_k))
        return await handler(request)

    # -- after the model call -------------------------------------------------

    def after_model(self, state: AgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Commit the human message (first answer to it) and the final AI message."""
        turns = _turns_to_commit(state["messages"])
        if turns:
            session = self.sessions.get(self.session_id(runtime))
            for role, text in turns:
                session.observe(text, role=role)
        return None

    async def aafter_model(self, state: AgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Async `after_model` through the engine's ``aobserve``."""
        turns = _turns_to_commit(state["messages"])
        if turns:
            session = self.sessions.get(self.session_id(runtime))
            for role, text in turns:
                await session.aobserve(text, role=role)
        return None


def _lookup(container: Any, key: str) -> Any:
    if container is None:
        return None
    if isinstance(container, Mapping):
        return container.get(key)
    return getattr(container, key, None)


def _configurable() -> Mapping[str, Any]:
    try:
        config = get_config()
    except RuntimeError:
        # Called outside a LangGraph run (for example from a unit test of the hook).
        return {}
    return config.get("configurable") or {}


def _latest_human_text(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and message.text.strip():
            return message.text
    return ""


def _with_memory(request: ModelRequest, recall: Recall) -> ModelRequest:
    """Return ``request`` with the memory text appended to its system message."""
    memory_text = render_memory_text(recall)
    if not memory_text:
        return request
    current = request.system_message
    if current is None:
        system = SystemMessage(content=memory_text)
    elif isinstance(current.content, str):
        system = SystemMessage(content=f"{current.content}\n\n{memory_text}" if current.content else memory_text)
    else:
        system = SystemMessage(content=[*current.content, {"type": "text", "text": memory_text}])
    return request.override(system_message=system)


def _turns_to_commit(messages: Sequence[AnyMessage]) -> list[tuple[str, str]]:
    """Return the ``(role, text)`` turns the latest model call completes.

    The latest human message is committed when the last message is the first AI
    message after it, so a tool loop commits it once. The last AI message is
    committed when it calls no tools, because only then is it the answer.
    """
    if not messages or not isinstance(messages[-1], AIMessage):
        return []
    last = messages[-1]
    human_index = next(
        (index for index in range(len(messages) - 1, -1, -1) if isinstance(messages[index], HumanMessage)), None
    )
    turns: list[tuple[str, str]] = []
    if human_index is not None:
        between = messages[human_index + 1 : -1]
        if not any(isinstance(message, AIMessage) for message in between):
            human_text = messages[human_index].text.strip()
            if human_text:
                turns.append((USER_ROLE, human_text))
    answer_text = last.text.strip()
    if not last.tool_calls and answer_text:
        turns.append((ASSISTANT_ROLE, answer_text))
    return turns
