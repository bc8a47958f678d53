"""LangChain and LlamaIndex sessions kept side by side in one state store."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from test_stores_support import store, store_spec  # noqa: F401

from sidecar_integrations.langchain import SidecarChatMessageHistory
from sidecar_integrations.llama_index import SidecarMemory
from sidecar_memory import SessionMemory
from sidecar_memory.stores import StateStore


@pytest.mark.parametrize("store_spec", ["sqlite", "redis"], indirect=True)
def test_adapters_share_one_store(model_and_tokenizer, store: StateStore):
    model, tokenizer = model_and_tokenizer
    history = SidecarChatMessageHistory("lc-user", model=model, tokenizer=tokenizer, store=store)
    memory = SidecarMemory.from_defaults(model=model, tokenizer=tokenizer, store=store, session_id="li-user")

    history.add_messages([
        HumanMessage("My favourite climbing spot is Kalymnos."),
        AIMessage("Kalymnos has great limestone."),
    ])
    memory.put(ChatMessage(role=MessageRole.USER, content="I keep bees on my roof in Ghent."))
    sessions = store.list_sessions()

    assert "lc-user" in sessions
    assert "li-user" in sessions
    assert SessionMemory(model, tokenizer, store, "lc-user").stats["turns"] == 2
    assert SessionMemory(model, tokenizer, store, "li-user").stats["turns"] == 1

    assert SessionMemory(model, tokenizer, store, "lc-user").clear() is True
    assert store.load("lc-user") is None
    assert SessionMemory(model, tokenizer, store, "li-user").stats["turns"] == 1
    for session_id in store.list_sessions():
        store.delete(session_id)
