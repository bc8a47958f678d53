"""SidecarChatModel on the embedded SmolLM2 model: plain replies and the CALL tool convention."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from sidecar_integrations.langchain import SidecarChatModel


@tool
def get_weather(city: str) -> str:
    """Return the weather for a city."""
    return f"It is sunny in {city}."


@tool
def get_time(timezone: str) -> str:
    """Return the local time in a timezone."""
    return "12:00"


@pytest.fixture
def chat(model_and_tokenizer: Any) -> SidecarChatModel:
    model, tokenizer = model_and_tokenizer
    return SidecarChatModel(model=model, tokenizer=tokenizer, max_new_tokens=24)


def test_chat_model_plain_reply(chat: SidecarChatModel) -> None:
    reply = chat.invoke([SystemMessage("Answer in one short sentence."), HumanMessage("What is the capital of France?")])
    assert isinstance(reply, AIMessage)
    assert "Paris" in reply.text
    assert reply.tool_calls == []


def test_chat_model_greedy_is_repeatable(chat: SidecarChatModel) -> None:
    first = chat.invoke("Name a color.").text
    second = chat.invoke("Name a color.").text
    assert first == second


def test_chat_model_async_reply(chat: SidecarChatModel) -> None:
    reply = asyncio.run(chat.ainvoke("What is the capital of France?"))
    assert "Paris" in reply.text


def test_chat_model_forced_tool_call(chat: SidecarChatModel) -> None:
    bound = chat.bind_tools([get_weather], tool_choice="get_weather")
    reply = bound.invoke("What is the weather in Paris?")
    assert reply.text == ""
    assert len(reply.tool_calls) == 1
    assert reply.tool_calls[0]["name"] == "get_weather"
    assert reply.tool_calls[0]["args"] == {"city": "Paris"}


def test_chat_model_any_tool_with_one_tool(chat: SidecarChatModel) -> None:
    reply = chat.bind_tools([get_weather], tool_choice="any").invoke("What is the weather in Rome?")
    assert [call["name"] for call in reply.tool_calls] == ["get_weather"]
    assert reply.tool_calls[0]["args"]["city"] == "Rome"


def test_chat_model_unknown_tool_choice_raises(chat: SidecarChatModel) -> None:
    with pytest.raises(ValueError, match="not a bound tool"):
        chat.bind_tools([get_weather, get_time], tool_choice="get_news")


def test_chat_model_answers_after_tool_result(chat: SidecarChatModel) -> None:
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
    messages = [
        HumanMessage("What is the weather in Paris?"),
        AIMessage(content="", tool_calls=[call]),
        ToolMessage("It is sunny in Paris.", tool_call_id="call_1", name="get_weather"),
    ]
    reply = chat.bind_tools([get_weather]).invoke(messages)
    assert reply.tool_calls == []
    assert reply.text.strip()
