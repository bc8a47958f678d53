"""SidecarMemory in LlamaIndex chat engines, on the real engine and the embedded model.

A recording LLM replaces the chat model so that the tests can read the exact
prompts the engines build. The memory itself is real: every put runs the
engine's gate-and-commit, and every get recalls from a state store.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field  # noqa: E402
from llama_index.core.chat_engine import (  # noqa: E402
    CondensePlusContextChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.storage.chat_store import SimpleChatStore  # noqa: E402

from sidecar_integrations.llama_index import SidecarMemory  # noqa: E402
from sidecar_memory import SessionMemory, SidecarConfig  # noqa: E402
from sidecar_memory.stores import DirectoryStore  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# A gate threshold below every possible gate value: each observed turn is committed,
# so these adapter tests do not depend on how the gate scores a sentence.
COMMIT_ALL = SidecarConfig(fixed_tau=-1.0)

ALICE_FACT = "Please remember that my sister Marguerite lives in Lyon."
BOB_FACT = "Please remember that my cat Pistachio is afraid of thunder."


class RecordingLLM(CustomLLM):
    """Chat LLM that answers with a fixed reply and keeps every prompt it receives."""

    reply: str = Field(default="Noted.", description="Text of every reply.")
    chat_inputs: list[list[ChatMessage]] = Field(default_factory=list, description="Messages of each chat call.")
    completion_inputs: list[str] = Field(default_factory=list, description="Prompt of each complete call.")

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=64, is_chat_model=True, model_name="recording")

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.chat_inputs.append(list(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.completion_inputs.append(prompt)
        return CompletionResponse(text=self.reply)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self.completion_inputs.append(prompt)
        yield CompletionResponse(text=self.reply, delta=self.reply)

    def all_prompt_text(self) -> str:
        """Return every recorded prompt as one text, for substring checks."""
        parts = [message.content or "" for call in self.chat_inputs for message in call]
        return "\n".join([*parts, *self.completion_inputs])


class FixedRetriever(BaseRetriever):
    """Retriever that returns one fixed document, so the context chat engines have context."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(text="Lyon is a city in France."), score=1.0)]


@pytest.fixture()
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "state")


def make_memory(model_and_tokenizer: tuple[Any, Any], store: Any, session_id: str, **options: Any) -> SidecarMemory:
    model, tokenizer = model_and_tokenizer
    options.setdefault("config", COMMIT_ALL)
    return SidecarMemory.from_defaults(
        model=model, tokenizer=tokenizer, store=store, session_id=session_id, **options
    )


def test_memory_put_get_sync(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice")
    memory.put(ChatMessage(role="user", content=ALICE_FACT))
    memory.put(ChatMessage(role="assistant", content="I will remember that."))
    memory.put(ChatMessage(role="user", content="Where does my sister live?"))

    messages = memory.get()

    assert messages[0].role.value == "system"
    assert "Marguerite lives in Lyon" in messages[0].content
    assert [m.content for m in messages[1:]] == [
        ALICE_FACT,
        "I will remember that.",
        "Where does my sister live?",
    ]


def test_memory_get_input_is_query(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice", recall_k=1)
    memory.put(ChatMessage(role="user", content=ALICE_FACT))
    memory.put(ChatMessage(role="user", content="I bought a blue bicycle with twenty one gears."))

    messages = memory.get(input="Which city does Marguerite live in?")

    memory_lines = [line for line in messages[0].content.splitlines() if line.startswith("- ")]
    assert memory_lines == [f"- {ALICE_FACT}"]


def test_memory_async_paths(model_and_tokenizer, store, monkeypatch):
    memory = make_memory(model_and_tokenizer, store, "alice")
    nested_loop_calls: list[str] = []

    async def run_conversation() -> list[ChatMessage]:
        # Any event loop started from here on would be nested inside this one.
        monkeypatch.setattr(asyncio, "new_event_loop", lambda *a, **k: nested_loop_calls.append("new_event_loop"))
        monkeypatch.setattr(asyncio, "run", lambda *a, **k: nested_loop_calls.append("run"))
        await memory.aput(ChatMessage(role="user", content=ALICE_FACT))
        await memory.aput_messages([ChatMessage(role="assistant", content="Noted.")])
        await memory.aset(await memory.aget_all())
        return await memory.aget(input="Where does my sister live?")

    messages = asyncio.run(run_conversation())

    assert nested_loop_calls == []
    assert "Marguerite lives in Lyon" in messages[0].content
    assert [m.content for m in messages[1:]] == [ALICE_FACT, "Noted."]


def test_memory_token_limit(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice", token_limit=60)
    for index in range(6):
        memory.put(ChatMessage(role="user", content=f"Message number {index} talks about the weather in spring."))
        memory.put(ChatMessage(role="assistant", content=f"Reply number {index} agrees about the spring weather."))
    memory.put(ChatMessage(role="user", content="What did we talk about?"))

    messages = memory.get()

    total = sum(len(memory.tokenizer_fn(m.content or "")) for m in messages)
    assert total <= 60
    assert messages[-1].content == "What did we talk about?"
    assert messages[1].role.value == "user"
    assert len(messages) < 14


def test_memory_initial_token_count(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice", token_limit=50)

    with pytest.raises(ValueError, match="initial_token_count 50"):
        memory.get(initial_token_count=50)


def test_memory_reset_keeps_long_term(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice")
    memory.put(ChatMessage(role="user", content=ALICE_FACT))

    memory.reset()

    assert memory.get_all() == []
    messages = memory.get(input="Where does my sister live?")
    assert "Marguerite lives in Lyon" in messages[0].content

    memory.clear()

    messages = memory.get(input="Where does my sister live?")
    assert all("Marguerite" not in (m.content or "") for m in messages)


def test_memory_set_does_not_commit(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice")

    memory.set([ChatMessage(role="user", content=ALICE_FACT)])

    assert [m.content for m in memory.get_all()] == [ALICE_FACT]
    fresh = make_memory(model_and_tokenizer, store, "alice")
    messages = fresh.get(input="Where does my sister live?")
    assert all("Marguerite" not in (m.content or "") for m in messages)


def test_memory_skips_system_messages(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice")

    memory.put(ChatMessage(role="system", content="You are a terse assistant named Quill."))

    fresh = make_memory(model_and_tokenizer, store, "alice")
    messages = fresh.get(input="What is your name?")
    assert all("Quill" not in (m.content or "") for m in messages)


def test_from_defaults_missing_store(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer

    with pytest.raises(ValueError, match="store"):
        SidecarMemory.from_defaults(model=model, tokenizer=tokenizer, session_id="alice")


def test_from_defaults_token_limit_from_llm(model_and_tokenizer, store):
    memory = make_memory(model_and_tokenizer, store, "alice", llm=RecordingLLM())

    assert memory.token_limit == 3072


def test_memory_bad_line_template(model_and_tokenizer, store):
    with pytest.raises(ValueError, match="memory_line_template"):
        make_memory(model_and_tokenizer, store, "alice", memory_line_template="- {missing}")


def test_simple_chat_engine_prompt(model_and_tokenizer, store):
    llm = RecordingLLM()
    memory = make_memory(model_and_tokenizer, store, "alice")
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt="Be brief.")

    engine.chat(ALICE_FACT)
    engine.reset()
    engine.chat("Where does my sister live?")

    last_prompt = llm.chat_inputs[-1]
    assert last_prompt[0].content == "Be brief."
    assert last_prompt[1].role.value == "system"
    assert "Marguerite lives in Lyon" in last_prompt[1].content
    assert last_prompt[-1].content == "Where does my sister live?"


def test_simple_chat_engine_async(model_and_tokenizer, store, monkeypatch):
    llm = RecordingLLM()
    memory = make_memory(model_and_tokenizer, store, "alice")
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
    nested_loop_calls: list[str] = []

    async def run_turns() -> None:
        monkeypatch.setattr(asyncio, "new_event_loop", lambda *a, **k: nested_loop_calls.append("new_event_loop"))
        await engine.achat(ALICE_FACT)
        await engine.achat("Where does my sister live?")

    asyncio.run(run_turns())

    assert nested_loop_calls == []
    assert "Marguerite lives in Lyon" in llm.chat_inputs[-1][0].content
    assert [m.content for m in memory.get_all()] == [ALICE_FACT, "Noted.", "Where does my sister live?", "Noted."]


def test_context_chat_engine_prompt(model_and_tokenizer, store):
    llm = RecordingLLM()
    memory = make_memory(model_and_tokenizer, store, "alice")
    memory.put(ChatMessage(role="user", content=ALICE_FACT))
    memory.reset()
    engine = ContextChatEngine.from_defaults(retriever=FixedRetriever(), llm=llm, memory=memory)

    engine.chat("Where does my sister live?")

    prompt_text = llm.all_prompt_text()
    assert "Marguerite lives in Lyon" in prompt_text
    assert "Lyon is a city in France." in prompt_text


def test_condense_plus_context_prompt(model_and_tokenizer, store):
    llm = RecordingLLM()
    memory = make_memory(model_and_tokenizer, store, "alice")
    memory.put(ChatMessage(role="user", content=ALICE_FACT))
    memory.reset()
    engine = CondensePlusContextChatEngine.from_defaults(retriever=FixedRetriever(), llm=llm, memory=memory)

    asyncio.run(engine.achat("Where does my sister live?"))

    assert "Marguerite lives in Lyon" in llm.all_prompt_text()


@pytest.mark.parametrize("store_kind", ["directory", "redis"])
def test_sessions_isolated_on_one_store(model_and_tokenizer, tmp_path, store_kind):
    if store_kind == "directory":
        shared_store = DirectoryStore(tmp_path / "state")
    else:
        from sidecar_memory.stores import RedisStore

        # The local Redis server is part of the test environment: a missing
        # server fails this test with the connection error instead of skipping.
        shared_store = RedisStore("redis://127.0.0.1:6379/0", namespace=f"test-li-{uuid.uuid4().hex[:12]}")
    shared_chat_store = SimpleChatStore()
    alice = make_memory(model_and_tokenizer, shared_store, "alice", chat_store=shared_chat_store)
    bob = make_memory(model_and_tokenizer, shared_store, "bob", chat_store=shared_chat_store)
    alice_llm, bob_llm = RecordingLLM(), RecordingLLM()
    alice_engine = SimpleChatEngine.from_defaults(llm=alice_llm, memory=alice)
    bob_engine = SimpleChatEngine.from_defaults(llm=bob_llm, memory=bob)

    try:
        alice_engine.chat(ALICE_FACT)
        bob_engine.chat(BOB_FACT)
        alice_engine.chat("Where does my sister live?")
        bob_engine.chat("Where does my sister live?")
    finally:
        if store_kind == "redis":
            for session_id in ("alice", "bob"):
                shared_store.delete(session_id)
            shared_store.close()

    bob_text = bob_llm.all_prompt_text()
    alice_text = alice_llm.all_prompt_text()
    assert "Marguerite" not in bob_text
    assert "Pistachio" in bob_text
    assert "Pistachio" not in alice_text
    assert "Marguerite" in alice_text


def test_memory_recall_across_processes(model_and_tokenizer, tmp_path):
    state_dir = tmp_path / "state"
    writer = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from llama_index.core.base.llms.types import ChatMessage
        from sidecar_integrations.llama_index import SidecarMemory
        from sidecar_memory import SidecarConfig, load_default_model
        from sidecar_memory.stores import DirectoryStore

        model, tokenizer = load_default_model()
        memory = SidecarMemory.from_defaults(
            model=model, tokenizer=tokenizer, store=DirectoryStore({str(state_dir)!r}),
            session_id="alice", config=SidecarConfig(fixed_tau=-1.0),
        )
        memory.put(ChatMessage(role="user", content={ALICE_FACT!r}))
        """
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "core"), str(REPO_ROOT), environment.get("PYTHONPATH", "")]
    )

    result = subprocess.run(
        [sys.executable, "-c", writer], env=environment, capture_output=True, text=True, timeout=600
    )

    assert result.returncode == 0, result.stderr
    reader = make_memory(model_and_tokenizer, DirectoryStore(state_dir), "alice")
    assert reader.get_all() == []
    messages = reader.get(input="Where does my sister live?")
    assert "Marguerite lives in Lyon" in messages[0].content


def test_memory_accepts_session_object(model_and_tokenizer, store):
    model, tokenizer = model_and_tokenizer
    session = SessionMemory(model, tokenizer, store, "carol", config=COMMIT_ALL)

    memory = SidecarMemory.from_defaults(session=session, tokenizer_fn=lambda text: text.split())
    memory.put(ChatMessage(role="user", content="My favourite tea is genmaicha."))

    assert memory.chat_store_key == "carol"
    assert "genmaicha" in memory.get(input="Which tea do I like?")[0].content
