"""Shared pieces for the LangChain adapter tests: a prompt-recording chat model and fixtures.

The recording model replaces the LLM where a test checks what reaches the
model, and it replies from a script. Everything else (engine, stores,
chains, agents) is real.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from sidecar_memory.stores import DirectoryStore

DEFAULT_REPLY = "Noted."


class RecordingChatModel(BaseChatModel):
    """Chat model that records every prompt it receives and answers from a script.

    ``replies`` are used in order, then ``DEFAULT_REPLY`` forever. A reply may be
    an ``AIMessage`` (for example one with ``tool_calls``) or a plain string.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: list[Any] = Field(default_factory=list)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[Any] = Field(default_factory=list)

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _script: Iterator[Any] | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "recording"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        self.bound_tools = list(tools)
        return self.bind(**kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            self.prompts.append(list(messages))
            if self._script is None:
                self._script = itertools.chain(self.replies, itertools.repeat(DEFAULT_REPLY))
            reply = next(self._script)
        message = reply if isinstance(reply, AIMessage) else AIMessage(content=str(reply))
        return ChatResult(generations=[ChatGeneration(message=message.model_copy())])

    @property
    def last_prompt_text(self) -> str:
        """All message texts of the latest prompt, one per line."""
        return prompt_text(self.prompts[-1])


class PromptRecorder(BaseCallbackHandler):
    """Callback handler that records the messages each chat model call starts with."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.prompts.extend(list(batch) for batch in messages)


def prompt_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(f"{message.type}: {message.text}" for message in messages)


@pytest.fixture
def store(tmp_path: Any) -> DirectoryStore:
    return DirectoryStore(tmp_path / "state")
