"""SidecarMemoryBlock inside LlamaIndex's Memory and agents, on the real engine.

Agents run with a scripted function-calling LLM that records its inputs, so the
tests can check which memories reached each prompt. The memory block, the
state store and the embedded model's encoder are real.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, TextBlock, ToolCallBlock  # noqa: E402
from llama_index.core.bridge.pydantic import Field  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.llms import MockFunctionCallingLLM  # noqa: E402
from llama_index.core.memory import (  # noqa: E402
    FactExtractionMemoryBlock,
    Memory,
    StaticMemoryBlock,
    VectorMemoryBlock,
)
from llama_index.core.schema import BaseNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    BasePydanticVectorStore,
    VectorStoreQuery,
    VectorStoreQueryResult,
)

from sidecar_integrations.llama_index import SidecarMemoryBlock  # noqa: E402
from sidecar_memory import SidecarConfig  # noqa: E402
from sidecar_memory.stores import DirectoryStore  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each observed turn is committed, so these tests do not depend on how the gate
# scores a sentence.
COMMIT_ALL = SidecarConfig(fixed_tau=-1.0)

# Memory flushes its oldest messages to the blocks once its queue passes
# token_limit * 0.7 tokens; a small limit makes a few short turns flush.
SMALL_TOKEN_LIMIT = 60

ALICE_FACT = "Please remember that my sister Marguerite lives in Lyon."
BOB_FACT = "Please remember that my cat Pistachio is afraid of thunder."
FILLER_TURNS = [
    ("assistant", "I will keep that in mind for later."),
    ("user", "Tomorrow I want to plan a long bicycle ride along the river."),
    ("assistant", "A river ride sounds lovely; bring water and a light jacket."),
]


class ListVectorStore(BasePydanticVectorStore):
    """Vector store that keeps nodes in a list and returns the newest first.

    It exists only so that VectorMemoryBlock can run next to the sidecar block
    without a network; ranking quality is not under test.
    """

    stores_text: bool = True
    nodes: list[BaseNode] = Field(default_factory=list, description="Stored nodes, oldest first.")

    @property
    def client(self) -> Any:
        return None

    def add(self, nodes: list[BaseNode], **add_kwargs: Any) -> list[str]:
        self.nodes.extend(nodes)
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        self.nodes = [node for node in self.nodes if node.ref_doc_id != ref_doc_id]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        newest = list(reversed(self.nodes))[: query.similarity_top_k]
        return VectorStoreQueryResult(
            nodes=newest, similarities=[1.0] * len(newest), ids=[node.node_id for node in newest]
        )


class ScriptedAgentLLM(MockFunctionCallingLLM):
    """Function-calling LLM with a fixed script that records every input.

    When tools are offered and the latest message is a user message that
    mentions the weather, it calls ``get_weather``. Otherwise it replies "Done.".
    """

    inputs: list[list[ChatMessage]] = Field(default_factory=list, description="Messages of each call.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.response_generator = self._respond

    def _respond(self, messages: Any, **kwargs: Any) -> ChatMessage:
        self.inputs.append(list(messages))
        latest = messages[-1]
        if kwargs.get("tools") and latest.role.value == "user" and "weather" in (latest.content or ""):
            call = ToolCallBlock(tool_call_id="call-1", tool_name="get_weather", tool_kwargs={"city": "Lyon"})
            return ChatMessage(role="assistant", blocks=[call])
        return ChatMessage(role="assistant", content="Done.")

    def all_input_text(self) -> str:
        return "\n".join(message.content or "" for call in self.inputs for message in call)


def get_weather(city: str) -> str:
    """Return the weather forecast for a city."""
    return f"It is sunny in {city}."


@pytest.fixture()
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "state")


def make_block(model_and_tokenizer: tuple[Any, Any], store: Any, **options: Any) -> SidecarMemoryBlock:
    model, tokenizer = model_and_tokenizer
    return SidecarMemoryBlock(model=model, tokenizer=tokenizer, store=store, config=COMMIT_ALL, **options)


def conversation(fact: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=fact)] + [
        ChatMessage(role=role, content=text) for role, text in FILLER_TURNS
    ]


def memory_text(messages: list[ChatMessage]) -> str:
    return "\n".join(message.content or "" for message in messages)


def test_block_in_memory_from_defaults(model_and_tokenizer, store):
    block = make_block(model_and_tokenizer, store)
    memory = Memory.from_defaults(session_id="alice", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[block])

    async def run_turns() -> list[ChatMessage]:
        await memory.aput_messages(conversation(ALICE_FACT))
        return await memory.aget(input="Where does my sister live?")

    messages = asyncio.run(run_turns())

    assert messages[0].role.value == "system"
    assert "<sidecar_memory>" in messages[0].content
    assert "Marguerite lives in Lyon" in messages[0].content
    assert all(message.content != ALICE_FACT for message in messages[1:])


def test_block_sync_memory_paths(model_and_tokenizer, store):
    block = make_block(model_and_tokenizer, store)
    memory = Memory.from_defaults(session_id="alice", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[block])

    memory.put_messages(conversation(ALICE_FACT))
    messages = memory.get(input="Where does my sister live?")

    assert "Marguerite lives in Lyon" in messages[0].content


def test_block_async_no_nested_loop(model_and_tokenizer, store, monkeypatch):
    block = make_block(model_and_tokenizer, store)
    memory = Memory.from_defaults(session_id="alice", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[block])
    nested_loop_calls: list[str] = []

    async def run_turns() -> list[ChatMessage]:
        # Any event loop started from here on would be nested inside this one.
        monkeypatch.setattr(asyncio, "new_event_loop", lambda *a, **k: nested_loop_calls.append("new_event_loop"))
        monkeypatch.setattr(asyncio, "run", lambda *a, **k: nested_loop_calls.append("run"))
        await block.aput(conversation(ALICE_FACT), session_id="alice")
        return await block.aget([ChatMessage(role="user", content="Where does my sister live?")], session_id="alice")

    content = asyncio.run(run_turns())

    assert nested_loop_calls == []
    assert any("Marguerite lives in Lyon" in block.text for block in content)


def test_block_beside_builtin_blocks(model_and_tokenizer, store):
    fact_llm = MockFunctionCallingLLM(
        response_generator=lambda messages, **kwargs: ChatMessage(
            role="assistant", content="<facts><fact>The user plans a bicycle ride.</fact></facts>"
        )
    )
    blocks = [
        StaticMemoryBlock(name="core_info", static_content="The user prefers metric units."),
        FactExtractionMemoryBlock(name="extracted_facts", llm=fact_llm),
        VectorMemoryBlock(name="vector_memory", vector_store=ListVectorStore(), embed_model=MockEmbedding(embed_dim=8)),
        make_block(model_and_tokenizer, store),
    ]
    memory = Memory.from_defaults(session_id="alice", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=blocks)

    async def run_turns() -> list[ChatMessage]:
        await memory.aput_messages(conversation(ALICE_FACT))
        return await memory.aget(input="Where does my sister live?")

    system_text = asyncio.run(run_turns())[0].content

    for tag in ("core_info", "extracted_facts", "vector_memory", "sidecar_memory"):
        assert f"<{tag}>" in system_text
    assert "metric units" in system_text
    assert "bicycle ride" in system_text
    sidecar_part = system_text.split("<sidecar_memory>")[1].split("</sidecar_memory>")[0]
    assert "Marguerite lives in Lyon" in sidecar_part


def run_agent_turns(
    memory_block: Any, *, session_id: str, runner: str, fact: str = ALICE_FACT
) -> ScriptedAgentLLM:
    """Run the same agent over three user turns, the first telling ``fact``; return its LLM."""
    llm = ScriptedAgentLLM()
    agent = FunctionAgent(name="assistant", tools=[get_weather], llm=llm, system_prompt="Be helpful.")
    workflow = AgentWorkflow(agents=[agent], root_agent="assistant") if runner == "agent_workflow" else agent
    memory = Memory.from_defaults(session_id=session_id, token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[memory_block])

    async def run_turns() -> None:
        await workflow.run(user_msg=fact, memory=memory)
        await workflow.run(user_msg="What is the weather in Lyon this weekend for my ride?", memory=memory)
        await workflow.run(user_msg="Where does my sister live?", memory=memory)

    asyncio.run(run_turns())
    return llm


@pytest.mark.parametrize("runner", ["function_agent", "agent_workflow"])
def test_block_in_agent(model_and_tokenizer, store, runner):
    llm = run_agent_turns(make_block(model_and_tokenizer, store), session_id="alice", runner=runner)

    last_input = llm.inputs[-1]
    assert last_input[-1].content == "Where does my sister live?"
    system_text = memory_text([m for m in last_input if m.role.value == "system"])
    assert "Marguerite lives in Lyon" in system_text
    assert all(m.content != ALICE_FACT for m in last_input if m.role.value == "user")


@pytest.mark.parametrize("block_kind", ["vector", "sidecar"])
def test_block_replaces_vector_block(model_and_tokenizer, store, block_kind):
    if block_kind == "vector":
        memory_block = VectorMemoryBlock(vector_store=ListVectorStore(), embed_model=MockEmbedding(embed_dim=8))
    else:
        memory_block = make_block(model_and_tokenizer, store)

    llm = run_agent_turns(memory_block, session_id="alice", runner="function_agent")

    system_text = memory_text([m for m in llm.inputs[-1] if m.role.value == "system"])
    assert "Marguerite lives in Lyon" in system_text


def test_block_sessions_isolated(model_and_tokenizer, store):
    shared_block = make_block(model_and_tokenizer, store)
    alice = Memory.from_defaults(session_id="alice", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[shared_block])
    bob = Memory.from_defaults(session_id="bob", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[shared_block])

    async def run_turns() -> tuple[list[ChatMessage], list[ChatMessage]]:
        await alice.aput_messages(conversation(ALICE_FACT))
        await bob.aput_messages(conversation(BOB_FACT))
        question = "Tell me about my sister and my cat."
        return await alice.aget(input=question), await bob.aget(input=question)

    alice_messages, bob_messages = asyncio.run(run_turns())

    assert "Marguerite" in alice_messages[0].content
    assert "Pistachio" not in memory_text(alice_messages)
    assert "Pistachio" in bob_messages[0].content
    assert "Marguerite" not in memory_text(bob_messages)
    assert sorted(store.list_sessions()) == ["alice", "bob"]


def test_block_agents_isolated(model_and_tokenizer, store):
    shared_block = make_block(model_and_tokenizer, store)
    run_agent_turns(shared_block, session_id="alice", runner="function_agent")

    bob_llm = run_agent_turns(shared_block, session_id="bob", runner="function_agent", fact=BOB_FACT)

    assert "Pistachio" in memory_text([m for m in bob_llm.inputs[-1] if m.role.value == "system"])
    assert "Marguerite" not in bob_llm.all_input_text()


def test_block_requires_session_id(model_and_tokenizer, store):
    block = make_block(model_and_tokenizer, store)

    with pytest.raises(ValueError, match="session id"):
        asyncio.run(block.aput([ChatMessage(role="user", content=ALICE_FACT)]))


def test_block_default_session_id(model_and_tokenizer, store):
    block = make_block(model_and_tokenizer, store, default_session_id="alice")

    asyncio.run(block.aput([ChatMessage(role="user", content=ALICE_FACT)]))

    content = asyncio.run(block.aget([ChatMessage(role="user", content="Where does my sister live?")]))
    assert any("Marguerite lives in Lyon" in part.text for part in content)


def test_block_needs_model_or_factory():
    with pytest.raises(ValueError, match="session_factory"):
        SidecarMemoryBlock()


def test_block_atruncate(model_and_tokenizer, store):
    block = make_block(model_and_tokenizer, store, default_session_id="alice")
    turns = [
        ALICE_FACT,
        "My favourite tea is genmaicha from Kyoto.",
        "I work as a lighthouse keeper on the coast.",
    ]
    asyncio.run(block.aput([ChatMessage(role="user", content=text) for text in turns]))
    content = asyncio.run(block.aget([ChatMessage(role="user", content="Tell me about myself.")]))
    memory_lines = [part for part in content if part.text.startswith("- ")]
    assert len(memory_lines) == 3

    shorter = asyncio.run(block.atruncate(content, 1))
    fully_truncated = asyncio.run(block.atruncate(content, 10_000))

    assert shorter == content[:-1]
    assert fully_truncated is None


def test_block_skips_tool_messages(model_and_tokenizer, store):
    block = make_block(model_and_tokenizer, store, default_session_id="alice")

    asyncio.run(
        block.aput(
            [
                ChatMessage(role="tool", content="Secret tool output: the vault code is 4417."),
                ChatMessage(
                    role="assistant",
                    blocks=[ToolCallBlock(tool_call_id="call-1", tool_name="get_weather", tool_kwargs={})],
                ),
            ]
        )
    )

    content = asyncio.run(block.aget([ChatMessage(role="user", content="What is the vault code?")]))
    assert all("4417" not in part.text for part in content if isinstance(part, TextBlock))


def test_block_recall_across_processes(model_and_tokenizer, tmp_path):
    state_dir = tmp_path / "state"
    writer = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from llama_index.core.base.llms.types import ChatMessage
        from llama_index.core.memory import Memory
        from sidecar_integrations.llama_index import SidecarMemoryBlock
        from sidecar_memory import SidecarConfig, load_default_model
        from sidecar_memory.stores import DirectoryStore

        model, tokenizer = load_default_model()
        block = SidecarMemoryBlock(
            model=model, tokenizer=tokenizer, store=DirectoryStore({str(state_dir)!r}),
            config=SidecarConfig(fixed_tau=-1.0),
        )
        memory = Memory.from_defaults(session_id="alice", token_limit={SMALL_TOKEN_LIMIT}, memory_blocks=[block])
        memory.put_messages([
            ChatMessage(role="user", content={ALICE_FACT!r}),
            *[ChatMessage(role=role, content=text) for role, text in {FILLER_TURNS!r}],
        ])
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
    block = make_block(model_and_tokenizer, DirectoryStore(state_dir))
    memory = Memory.from_defaults(session_id="alice", token_limit=SMALL_TOKEN_LIMIT, memory_blocks=[block])
    messages = memory.get(input="Where does my sister live?")
    assert "Marguerite lives in Lyon" in messages[0].content
