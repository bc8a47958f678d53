"""SidecarChatMessageHistory under RunnableWithMessageHistory, with the real engine and stores."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from transformers import LlamaConfig, LlamaForCausalLM

from sidecar_integrations.langchain import SidecarChatMessageHistory
from sidecar_integrations.langchain.history import MEMORY_MESSAGE_NAME
from sidecar_integrations.langchain.window import window_session_id
from sidecar_memory import SidecarConfig
from sidecar_memory.stores import DirectoryStore, SQLiteStore
from test_langchain_helpers import CallRecordingStore, RecordingChatModel, prompt_text, store  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]

FACT = "Please remember this: my sister Alice Zephyrine lives in Lisbon."
FILLER = [
    "Can you suggest a name for a goldfish?",
    "How long should I boil an egg?",
    "What is a good stretch for my back?",
]
QUESTION = "What is my sister's name?"

pytestmark = pytest.mark.filterwarnings("ignore:.*RunnableWithMessageHistory is deprecated")


def build_chain(model: Any, get_history: Any) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a helpful assistant."),
            MessagesPlaceholder("history"),
            ("human", "{input}"),
        ]
    )
    return RunnableWithMessageHistory(
        prompt | model,
        get_history,
        input_messages_key="input",
        history_messages_key="history",
    )


def memory_messages(prompt: list[Any]) -> list[SystemMessage]:
    return [m for m in prompt if isinstance(m, SystemMessage) and m.name == MEMORY_MESSAGE_NAME]


def test_history_prompt_has_recalled_fact(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()

    def get_history(session_id: str) -> SidecarChatMessageHistory:
        return SidecarChatMessageHistory(session_id, model=model, tokenizer=tokenizer, store=store, window_messages=2)

    chain = build_chain(recorder, get_history)
    config = {"configurable": {"session_id": "alice"}}
    for text in [FACT, *FILLER, QUESTION]:
        chain.invoke({"input": text}, config=config)

    last = recorder.prompts[-1]
    memory = memory_messages(last)
    assert len(memory) == 1
    assert "Zephyrine" in memory[0].text
    window_texts = [m.text for m in last if not isinstance(m, SystemMessage)]
    # The window holds only the last exchange, so the fact reaches the model through recall alone.
    assert FACT not in window_texts
    assert window_texts[-1] == QUESTION
    assert len(window_texts) == 3


def test_history_without_history_key(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    """Without history_messages_key the chain strips the history it read from the input; lengths must match."""
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel(replies=["First answer.", "Second answer."])

    def get_history(session_id: str) -> SidecarChatMessageHistory:
        return SidecarChatMessageHistory(session_id, model=model, tokenizer=tokenizer, store=store)

    chain = RunnableWithMessageHistory(recorder, get_history)
    config = {"configurable": {"session_id": "plain"}}
    chain.invoke([HumanMessage(FACT)], config=config)
    chain.invoke([HumanMessage(QUESTION)], config=config)

    stored = [m.text for m in get_history("plain").messages if not isinstance(m, SystemMessage)]
    assert stored == [FACT, "First answer.", QUESTION, "Second answer."]
    assert isinstance(recorder.prompts[-1][0], SystemMessage)
    assert [m.text for m in recorder.prompts[-1][1:]] == [FACT, "First answer.", QUESTION]


def test_history_default_store_in_cwd(model_and_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = model_and_tokenizer
    monkeypatch.chdir(tmp_path)
    history = SidecarChatMessageHistory("default-store", model=model, tokenizer=tokenizer)
    history.add_messages([HumanMessage(FACT), AIMessage("Noted.")])

    reopened = DirectoryStore(tmp_path / ".sidecar-memory" / "langchain")
    assert reopened.list_sessions() == ["default-store", window_session_id("default-store")]


def test_history_first_turn_has_no_memory(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory("fresh", model=model, tokenizer=tokenizer, store=store)
    assert history.messages == []


def test_history_sessions_isolated(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()

    def get_history(session_id: str) -> SidecarChatMessageHistory:
        return SidecarChatMessageHistory(session_id, model=model, tokenizer=tokenizer, store=store)

    chain = build_chain(recorder, get_history)
    chain.invoke({"input": FACT}, config={"configurable": {"session_id": "session-a"}})
    prompts_before_b = len(recorder.prompts)
    for text in [*FILLER, QUESTION]:
        chain.invoke({"input": text}, config={"configurable": {"session_id": "session-b"}})

    for prompt in recorder.prompts[prompts_before_b:]:
        assert "Zephyrine" not in prompt_text(prompt)
    assert "Zephyrine" in prompt_text(get_history("session-a").messages)


def test_history_window_messages_limit(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory("window", model=model, tokenizer=tokenizer, store=store, window_messages=4)
    for index in range(5):
        history.add_messages([HumanMessage(f"question {index}"), AIMessage(f"answer {index}")])

    window = [m for m in history.messages if not isinstance(m, SystemMessage)]
    assert [m.text for m in window] == ["question 3", "answer 3", "question 4", "answer 4"]


def test_history_window_tokens_limit(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory(
        "tokens", model=model, tokenizer=tokenizer, store=store, window_messages=None, window_tokens=40
    )
    for index in range(10):
        history.add_messages([HumanMessage(f"Tell me about topic number {index}."), AIMessage(f"Topic {index} is fine.")])

    window = [m for m in history.messages if not isinstance(m, SystemMessage)]
    used = sum(len(tokenizer.encode(m.text, add_special_tokens=False)) + 5 for m in window)
    assert 0 < used <= 40
    assert isinstance(window[0], HumanMessage)
    assert window[-1].text == "Topic 9 is fine."


def test_history_messages_for_uses_query(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory("query", model=model, tokenizer=tokenizer, store=store, window_messages=2)
    history.add_messages([HumanMessage(FACT), AIMessage("Lisbon is lovely.")])
    for text in FILLER:
        history.add_messages([HumanMessage(text), AIMessage("Here is an idea.")])

    memory = memory_messages(history.messages_for(QUESTION))
    assert len(memory) == 1
    assert "Zephyrine" in memory[0].text


def test_history_clear_removes_state(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory("clear-me", model=model, tokenizer=tokenizer, store=store)
    history.add_messages([HumanMessage(FACT), AIMessage("Noted.")])
    assert history.messages

    history.clear()

    assert history.messages == []
    assert "Zephyrine" not in prompt_text(history.messages_for(QUESTION))


def test_history_async_ainvoke(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()

    def get_history(session_id: str) -> SidecarChatMessageHistory:
        return SidecarChatMessageHistory(session_id, model=model, tokenizer=tokenizer, store=store, window_messages=2)

    chain = build_chain(recorder, get_history)
    config = {"configurable": {"session_id": "async-user"}}

    async def run() -> None:
        for text in [FACT, *FILLER, QUESTION]:
            await chain.ainvoke({"input": text}, config=config)

    asyncio.run(run())

    memory = memory_messages(recorder.prompts[-1])
    assert len(memory) == 1
    assert "Zephyrine" in memory[0].text
    # The sync view of the same session agrees with what the async path stored.
    sync_view = get_history("async-user").messages
    assert [m.text for m in sync_view if not isinstance(m, SystemMessage)] == [QUESTION, "Noted."]


def test_history_async_methods(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory("async-methods", model=model, tokenizer=tokenizer, store=store)

    async def run() -> tuple[list[Any], list[Any]]:
        await history.aadd_messages([HumanMessage(FACT), AIMessage("Noted.")])
        before = await history.aget_messages()
        await history.aclear()
        after = await history.aget_messages()
        return before, after

    before, after = asyncio.run(run())
    assert "Zephyrine" in prompt_text(memory_messages(before))
    assert [m.text for m in before if not isinstance(m, SystemMessage)] == [FACT, "Noted."]
    assert after == []


def test_history_async_paths_use_async_store(model_and_tokenizer: Any, tmp_path: Path) -> None:
    model, tokenizer = model_and_tokenizer
    recording_store = CallRecordingStore(tmp_path / "state")
    history = SidecarChatMessageHistory("async-store", model=model, tokenizer=tokenizer, store=recording_store)

    async def run() -> None:
        await history.aadd_messages([HumanMessage(FACT), AIMessage("Noted.")])
        await history.aget_messages()
        await history.amessages_for(QUESTION)
        await history.aclear()

    asyncio.run(run())

    assert recording_store.sync_calls() == []
    assert "aupdate" in recording_store.calls
    assert "aload" in recording_store.calls
    assert "adelete" in recording_store.calls


def tiny_model(vocab_size: int) -> Any:
    """A 2-layer random Llama: the engine runs unchanged, but each forward pass costs about a millisecond."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config).eval()


# About 60 s on two shared CPU cores and up to three minutes when they are busy: every turn
# makes three durable store writes.
@pytest.mark.slow
def test_history_500_turns_bounded(model_and_tokenizer: Any, tmp_path: Path) -> None:
    _, tokenizer = model_and_tokenizer
    model = tiny_model(len(tokenizer))
    sqlite_store = SQLiteStore(tmp_path / "state.db")
    engine_config = SidecarConfig(key_layer=1, d_key=128, rank=8)
    recorder = RecordingChatModel()

    def get_history(session_id: str) -> SidecarChatMessageHistory:
        return SidecarChatMessageHistory(
            session_id, model=model, tokenizer=tokenizer, store=sqlite_store, config=engine_config, window_messages=6
        )

    chain = build_chain(recorder, get_history)
    config = {"configurable": {"session_id": "long"}}
    message_counts = []
    prompt_chars = []
    for turn in range(500):
        chain.invoke({"input": f"Turn {turn}: today I tried recipe number {turn} and liked it."}, config=config)
        message_counts.append(len(recorder.prompts[-1]))
        prompt_chars.append(len(prompt_text(recorder.prompts[-1])))

    # prompt = template system + memory system + 6 window messages + new human message
    assert max(message_counts) == 9
    assert message_counts[-1] == 9
    # Five recalled memories with their contexts and seven short turns come to about 900
    # characters. The limit leaves room for longer recalled contexts, not for growth.
    assert max(prompt_chars) < 2_000
    conversation = [m.text for m in recorder.prompts[-1] if not isinstance(m, SystemMessage)]
    assert conversation[0].startswith("Turn 496:")
    assert conversation[-1].startswith("Turn 499:")
    window_blob = sqlite_store.load(window_session_id("long"))
    assert window_blob is not None
    assert window_blob.blob.nbytes < 8_000


def test_history_new_process_recalls_fact(tmp_path: Path) -> None:
    """A fact taught through a SmolLM2 chain in one process reaches the prompt in another."""
    state_dir = tmp_path / "state"
    teach = run_chain_process(state_dir, [FACT, *FILLER[:2]])
    assert teach["replies"], "the teaching process produced no reply"

    ask = run_chain_process(state_dir, [QUESTION])
    first_prompt = ask["prompts"][0]
    memory_texts = [m["text"] for m in first_prompt if m["name"] == MEMORY_MESSAGE_NAME]
    assert len(memory_texts) == 1
    assert "Zephyrine" in memory_texts[0]
    assert ask["replies"][0].strip()


CHAIN_PROCESS = textwrap.dedent(
    """
    import json, sys, warnings
    import torch
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory
    from sidecar_integrations.langchain import SidecarChatMessageHistory, SidecarChatModel
    from sidecar_memory import load_default_model
    from sidecar_memory.stores import DirectoryStore

    class Recorder(BaseCallbackHandler):
        def __init__(self):
            self.prompts = []
        def on_chat_model_start(self, serialized, messages, **kwargs):
            for batch in messages:
                self.prompts.append([{"type": m.type, "name": m.name, "text": m.text} for m in batch])

    state_dir, turns = sys.argv[1], json.loads(sys.argv[2])
    model, tokenizer = load_default_model()
    store = DirectoryStore(state_dir)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful assistant."), MessagesPlaceholder("history"), ("human", "{input}")]
    )
    chain = RunnableWithMessageHistory(
        prompt | SidecarChatModel(model=model, tokenizer=tokenizer, max_new_tokens=16),
        lambda session_id: SidecarChatMessageHistory(
            session_id, model=model, tokenizer=tokenizer, store=store, window_messages=2
        ),
        input_messages_key="input",
        history_messages_key="history",
    )
    recorder = Recorder()
    replies = []
    for text in turns:
        reply = chain.invoke(
            {"input": text}, config={"configurable": {"session_id": "alice"}, "callbacks": [recorder]}
        )
        replies.append(reply.text)
    print(json.dumps({"prompts": recorder.prompts, "replies": replies}))
    """
)


def run_chain_process(state_dir: Path, turns: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "core"), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", CHAIN_PROCESS, str(state_dir), json.dumps(turns)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])
