"""SidecarMiddleware in LangChain v1 agents (create_agent), with the real engine and stores."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool

from sidecar_integrations.langchain import SidecarMiddleware
from sidecar_memory import SessionMemory
from sidecar_memory.stores import DirectoryStore
from test_langchain_helpers import CallRecordingStore, RecordingChatModel, prompt_text, store  # noqa: F401

FACT = "Please remember this: my sister Alice Zephyrine lives in Lisbon."
QUESTION = "What is my sister's name?"
SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class UserContext:
    user_id: str


@tool
def get_weather(city: str) -> str:
    """Return the weather for a city."""
    return f"It is sunny in {city}."


def system_text(prompt: list[Any]) -> str:
    assert isinstance(prompt[0], SystemMessage)
    return prompt[0].text


def make_agent(model: Any, middleware: SidecarMiddleware, **kwargs: Any) -> Any:
    return create_agent(
        model, tools=[get_weather], system_prompt=SYSTEM_PROMPT, middleware=[middleware], **kwargs
    )


def test_middleware_prompt_has_recalled_fact(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()
    agent = make_agent(recorder, SidecarMiddleware(model=model, tokenizer=tokenizer, store=store), context_schema=UserContext)

    agent.invoke({"messages": [HumanMessage(FACT)]}, context=UserContext(user_id="alice"))
    # A new run without a checkpointer: the agent state starts empty, so only the middleware can carry the fact.
    agent.invoke({"messages": [HumanMessage(QUESTION)]}, context=UserContext(user_id="alice"))

    last = recorder.prompts[-1]
    assert system_text(last).startswith(SYSTEM_PROMPT)
    assert "Zephyrine" in system_text(last)
    assert [m.text for m in last[1:]] == [QUESTION]


def test_middleware_users_isolated(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()
    agent = make_agent(recorder, SidecarMiddleware(model=model, tokenizer=tokenizer, store=store), context_schema=UserContext)

    agent.invoke({"messages": [HumanMessage(FACT)]}, context=UserContext(user_id="alice"))
    agent.invoke({"messages": [HumanMessage("Please remember this: I enjoy hiking on weekends.")]}, context=UserContext(user_id="bob"))
    agent.invoke({"messages": [HumanMessage(QUESTION)]}, context=UserContext(user_id="bob"))

    assert "Zephyrine" not in prompt_text(recorder.prompts[-1])
    assert "hiking" in system_text(recorder.prompts[-1])


def test_middleware_thread_id_from_config(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()
    agent = make_agent(recorder, SidecarMiddleware(model=model, tokenizer=tokenizer, store=store))

    agent.invoke({"messages": [HumanMessage(FACT)]}, config={"configurable": {"thread_id": "thread-7"}})
    agent.invoke({"messages": [HumanMessage(QUESTION)]}, config={"configurable": {"thread_id": "thread-7"}})

    assert "thread-7" in store.list_sessions()
    assert "Zephyrine" in system_text(recorder.prompts[-1])


def test_middleware_without_session_raises(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    agent = make_agent(RecordingChatModel(), SidecarMiddleware(model=model, tokenizer=tokenizer, store=store))
    with pytest.raises(ValueError, match="no memory session id"):
        agent.invoke({"messages": [HumanMessage(FACT)]})


def test_middleware_tool_loop_commits_turn_once(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    tool_call = AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Lisbon"}, "id": "call_1"}])
    recorder = RecordingChatModel(replies=[tool_call, "It is sunny in Lisbon today."])
    agent = make_agent(recorder, SidecarMiddleware(model=model, tokenizer=tokenizer, store=store), context_schema=UserContext)

    result = agent.invoke({"messages": [HumanMessage("What is the weather in Lisbon?")]}, context=UserContext(user_id="carol"))

    assert result["messages"][-1].text == "It is sunny in Lisbon today."
    assert len(recorder.prompts) == 2
    # Both model calls of the tool loop see the memory message.
    for prompt in recorder.prompts:
        assert "Memory from earlier turns" in system_text(prompt)
    session = SessionMemory(model, tokenizer, store, "carol")
    # One user turn and one final answer; the tool-call step commits nothing of its own.
    assert session.stats["turns"] == 2


def test_middleware_async_ainvoke(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()
    agent = make_agent(recorder, SidecarMiddleware(model=model, tokenizer=tokenizer, store=store), context_schema=UserContext)

    async def run() -> None:
        await agent.ainvoke({"messages": [HumanMessage(FACT)]}, context=UserContext(user_id="dave"))
        await agent.ainvoke({"messages": [HumanMessage(QUESTION)]}, context=UserContext(user_id="dave"))

    asyncio.run(run())

    assert "Zephyrine" in system_text(recorder.prompts[-1])


def test_middleware_async_uses_async_store(model_and_tokenizer: Any, tmp_path: Path) -> None:
    model, tokenizer = model_and_tokenizer
    recording_store = CallRecordingStore(tmp_path / "state")
    middleware = SidecarMiddleware(model=model, tokenizer=tokenizer, store=recording_store)
    agent = make_agent(RecordingChatModel(), middleware, context_schema=UserContext)

    asyncio.run(agent.ainvoke({"messages": [HumanMessage(FACT)]}, context=UserContext(user_id="erin")))

    assert recording_store.sync_calls() == []
    assert "aupdate" in recording_store.calls
    assert "aload" in recording_store.calls
