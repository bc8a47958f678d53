"""SidecarLLM and SidecarToolCallingLLM on the embedded model, end to end with SidecarMemory.

Replies of a 135M-parameter model are not checked for correctness. The tests
check what reaches the model (the rendered prompt), that it generates text, and
that the tool-call convention drives a real FunctionAgent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.agent.workflow import FunctionAgent  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock  # noqa: E402
from llama_index.core.bridge.pydantic import Field  # noqa: E402
from llama_index.core.chat_engine import SimpleChatEngine  # noqa: E402
from llama_index.core.memory import Memory  # noqa: E402

from sidecar_integrations.llama_index import (  # noqa: E402
    SidecarLLM,
    SidecarMemory,
    SidecarMemoryBlock,
    SidecarToolCallingLLM,
)
from sidecar_memory import SidecarConfig  # noqa: E402
from sidecar_memory.stores import DirectoryStore  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each observed turn is committed, so these tests do not depend on how the gate
# scores a sentence.
COMMIT_ALL = SidecarConfig(fixed_tau=-1.0)

ALICE_FACT = "Please remember that my sister Marguerite lives in Lyon."


class PromptRecordingLLM(SidecarLLM):
    """SidecarLLM that keeps each rendered prompt and reply."""

    prompts: list[str] = Field(default_factory=list, description="Rendered prompts, in call order.")
    replies: list[str] = Field(default_factory=list, description="Generated replies, in call order.")

    def generate_text(self, prompt: str, *, max_new_tokens: int | None = None) -> str:
        reply = super().generate_text(prompt, max_new_tokens=max_new_tokens)
        self.prompts.append(prompt)
        self.replies.append(reply)
        return reply


class PromptRecordingToolLLM(SidecarToolCallingLLM):
    """SidecarToolCallingLLM that keeps each rendered prompt and reply."""

    prompts: list[str] = Field(default_factory=list, description="Rendered prompts, in call order.")
    replies: list[str] = Field(default_factory=list, description="Generated replies, in call order.")

    def generate_text(self, prompt: str, *, max_new_tokens: int | None = None) -> str:
        reply = super().generate_text(prompt, max_new_tokens=max_new_tokens)
        self.prompts.append(prompt)
        self.replies.append(reply)
        return reply


def test_llm_render_merges_system(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    llm = SidecarLLM(model=model, tokenizer=tokenizer)

    prompt = llm.render_messages(
        [
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hello"),
            ChatMessage(role="system", content="Memory: the user likes tea."),
            ChatMessage(role="tool", content="sunny", additional_kwargs={"name": "get_weather"}),
        ]
    )

    assert prompt.count("<|im_start|>system") == 1
    assert "Be brief.\n\nMemory: the user likes tea." in prompt
    assert "Result of tool get_weather: sunny" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_llm_rejects_long_prompt(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    llm = SidecarLLM(model=model, tokenizer=tokenizer, context_window=64, max_new_tokens=8)

    with pytest.raises(ValueError, match="context window of 64"):
        llm.complete("word " * 100)


def test_chat_engine_end_to_end(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path / "state")
    llm = PromptRecordingLLM(model=model, tokenizer=tokenizer, max_new_tokens=24)
    memory = SidecarMemory.from_defaults(
        model=model, tokenizer=tokenizer, store=store, session_id="alice", config=COMMIT_ALL, llm=llm
    )
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)

    engine.chat(ALICE_FACT)
    engine.reset()
    response = engine.chat("Where does my sister live?")

    assert "Marguerite lives in Lyon" in llm.prompts[-1]
    assert "Where does my sister live?" in llm.prompts[-1]
    assert response.response == llm.replies[-1]
    assert response.response.strip()


def test_chat_engine_streaming_end_to_end(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    store = DirectoryStore(tmp_path / "state")
    llm = SidecarLLM(model=model, tokenizer=tokenizer, max_new_tokens=16)
    memory = SidecarMemory.from_defaults(
        model=model, tokenizer=tokenizer, store=store, session_id="alice", config=COMMIT_ALL
    )
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)

    async def run_turn() -> str:
        response = await engine.astream_chat("Please remember that my bicycle is green.")
        pieces = [piece async for piece in response.async_response_gen()]
        return "".join(pieces)

    streamed = asyncio.run(run_turn())

    assert streamed.strip()
    assert [m.role.value for m in memory.get_all()] == ["user", "assistant"]
    assert memory.get_all()[1].content.strip() == streamed.strip()


def test_tool_llm_function_agent(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    calls: list[str] = []

    def get_weather(city: str) -> str:
        """Return the weather forecast for a city."""
        calls.append(city)
        return f"It is sunny in {city}."

    llm = PromptRecordingToolLLM(
        model=model, tokenizer=tokenizer, max_new_tokens=24, list_tools_when_optional=False
    )
    block = SidecarMemoryBlock(
        model=model, tokenizer=tokenizer, store=DirectoryStore(tmp_path / "state"), config=COMMIT_ALL
    )
    memory = Memory.from_defaults(session_id="alice", token_limit=60, memory_blocks=[block])
    agent = FunctionAgent(tools=[get_weather], llm=llm)

    async def run_turns() -> Any:
        await agent.run(user_msg=ALICE_FACT, memory=memory)
        agent.initial_tool_choice = "get_weather"
        return await agent.run(user_msg="What is the weather in Paris?", memory=memory)

    output = asyncio.run(run_turns())

    # Greedy decoding makes the argument the model writes reproducible.
    assert calls == ["Paris"]
    assert "CALL get_weather" not in llm.prompts[0]
    assert 'CALL get_weather {"city": "' in llm.prompts[1]
    history = asyncio.run(memory.aget_all())
    assert any(isinstance(part, ToolCallBlock) for message in history for part in message.blocks)
    assert str(output).strip()
    assert "Marguerite lives in Lyon" in llm.prompts[-1]


def test_import_error_names_extra():
    script = (
        "import sys\n"
        "sys.modules['llama_index.core'] = None\n"
        "try:\n"
        "    import sidecar_integrations.llama_index\n"
        "except ImportError as error:\n"
        "    print(error)\n"
        "else:\n"
        "    print('imported')\n"
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environment.get("PYTHONPATH", "")])

    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert 'pip install "sidecar-memory[llama-index]"' in result.stdout


def test_integrations_package_framework_free():
    script = (
        "import sys\n"
        "import sidecar_integrations\n"
        "print('llama_index' in sys.modules)\n"
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environment.get("PYTHONPATH", "")])

    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
