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


class CallRecordingStore(DirectoryStore):
    """A real `DirectoryStore` that records which of its public sync and async methods were called."""

    SYNC_METHODS = ("load", "save", "update", "delete")
    ASYNC_METHODS = ("aload", "asave", "aupdate", "adelete")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def load(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("load")
        return super().load(*args, **kwargs)

    def save(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("save")
        return super().save(*args, **kwargs)

    def update(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("update")
        return super().update(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("delete")
        return super().delete(*args, **kwargs)

    async def aload(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("aload")
        return await super().aload(*args, **kwargs)

    async def asave(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("asave")
        return await super().asave(*args, **kwargs)

    async def aupdate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("aupdate")
        return await super().aupdate(*args, **kwargs)

    async def adelete(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("adelete")
        return await super().adelete(*args, **kwargs)

    def sync_calls(self) -> list[str]:
        return [call for call in self.calls if call in self.SYNC_METHODS]


def prompt_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(f"{message.type}: {message.text}" for message in messages)


@pytest.fixture
def store(tmp_path: Any) -> DirectoryStore:
    return DirectoryStore(tmp_path / "state")
