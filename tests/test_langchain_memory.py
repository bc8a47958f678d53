"""SidecarMemory (langchain-classic BaseMemory) in real chains, and the adapters' missing-extra errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.chains import LLMChain
from langchain_core.documents import Document
from langchain_core.prompts import PromptTemplate

from sidecar_integrations.langchain import SidecarMemory
from sidecar_memory.stores import DirectoryStore
from test_langchain_helpers import CallRecordingStore, RecordingChatModel, store  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
FACT = "Please remember this: my sister Alice Zephyrine lives in Lisbon."
QUESTION = "What is my sister's name?"
PROMPT = PromptTemplate.from_template("Relevant memory:\n{history}\n\nUser: {question}\nAssistant:")

pytestmark = pytest.mark.filterwarnings("ignore:.*LLMChain.*")


def make_chain(model: Any, memory: SidecarMemory) -> LLMChain:
    return LLMChain(llm=model, prompt=PROMPT, memory=memory)


def test_memory_chain_prompt_has_fact(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel(replies=["Lovely, Lisbon is sunny.", "Her name is Alice."])
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store, session_id="alice", input_key="question")
    chain = make_chain(recorder, memory)

    chain.invoke({"question": FACT})
    result = chain.invoke({"question": QUESTION})

    assert result["text"] == "Her name is Alice."
    assert "Zephyrine" in recorder.last_prompt_text
    assert "Memory from earlier turns" in recorder.last_prompt_text


def test_memory_variables_match_vectorstore_keys(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store, memory_key="context", input_key="q")
    assert memory.memory_variables == ["context"]

    memory.save_context({"q": FACT}, {"text": "Noted."})
    loaded = memory.load_memory_variables({"q": QUESTION})

    assert list(loaded) == ["context"]
    assert isinstance(loaded["context"], str)
    assert "Zephyrine" in loaded["context"]


def test_memory_return_docs(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store, return_docs=True)
    memory.save_context({"input": FACT}, {"output": "Noted."})

    documents = memory.load_memory_variables({"input": QUESTION})["history"]

    assert all(isinstance(document, Document) for document in documents)
    assert documents[0].metadata["kind"] == "steering_prefix"
    memory_texts = [d.page_content for d in documents if d.metadata["kind"] == "memory"]
    assert FACT in memory_texts


def test_memory_infers_single_input_key(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store)
    memory.save_context({"input": FACT}, {"output": "Noted."})
    with pytest.raises(ValueError, match="One input key expected"):
        memory.load_memory_variables({"a": QUESTION, "b": "other"})


def test_memory_ambiguous_output_raises(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store)
    with pytest.raises(ValueError, match="set output_key"):
        memory.save_context({"input": FACT}, {"text": "a", "extra": "b"})


def test_memory_sessions_isolated(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    alice = SidecarMemory(model=model, tokenizer=tokenizer, store=store, session_id="alice")
    bob = SidecarMemory(model=model, tokenizer=tokenizer, store=store, session_id="bob")
    alice.save_context({"input": FACT}, {"output": "Noted."})
    bob.save_context({"input": "I enjoy hiking on weekends."}, {"output": "Nice."})

    assert "Zephyrine" not in bob.load_memory_variables({"input": QUESTION})["history"]
    assert "Zephyrine" in alice.load_memory_variables({"input": QUESTION})["history"]


def test_memory_clear(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store)
    memory.save_context({"input": FACT}, {"output": "Noted."})
    memory.clear()
    assert "Zephyrine" not in memory.load_memory_variables({"input": QUESTION})["history"]


def test_memory_async_ainvoke(model_and_tokenizer: Any, store: DirectoryStore) -> None:
    model, tokenizer = model_and_tokenizer
    recorder = RecordingChatModel()
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=store, session_id="async", input_key="question")
    chain = make_chain(recorder, memory)

    async def run() -> dict[str, Any]:
        await chain.ainvoke({"question": FACT})
        loaded = await memory.aload_memory_variables({"question": QUESTION})
        await chain.ainvoke({"question": QUESTION})
        await memory.aclear()
        cleared = await memory.aload_memory_variables({"question": QUESTION})
        return {"loaded": loaded, "cleared": cleared}

    results = asyncio.run(run())

    assert "Zephyrine" in results["loaded"]["history"]
    assert "Zephyrine" in recorder.last_prompt_text
    assert "Zephyrine" not in results["cleared"]["history"]


def test_memory_async_paths_use_async_store(model_and_tokenizer: Any, tmp_path: Path) -> None:
    model, tokenizer = model_and_tokenizer
    recording_store = CallRecordingStore(tmp_path / "state")
    memory = SidecarMemory(model=model, tokenizer=tokenizer, store=recording_store)

    async def run() -> None:
        await memory.asave_context({"input": FACT}, {"output": "Noted."})
        await memory.aload_memory_variables({"input": QUESTION})
        await memory.aclear()

    asyncio.run(run())

    assert recording_store.sync_calls() == []
    assert "aupdate" in recording_store.calls
    assert "adelete" in recording_store.calls


BLOCKED_IMPORT = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == sys.argv[1] or name.startswith(sys.argv[1] + "."):
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import importlib
        module = importlib.import_module(sys.argv[2])
        getattr(module, sys.argv[3])
    except ImportError as error:
        print(error)
    else:
        print("imported")
    """
)


@pytest.mark.parametrize(
    ("blocked", "module", "name"),
    [
        ("langchain_classic", "sidecar_integrations.langchain", "SidecarMemory"),
        ("langchain_core", "sidecar_integrations.langchain", "SidecarChatMessageHistory"),
        ("langchain", "sidecar_integrations.langchain.middleware", "SidecarMiddleware"),
    ],
)
def test_adapter_missing_framework_names_extra(blocked: str, module: str, name: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "core"), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, blocked, module, name],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 'pip install "sidecar-memory[langchain]"' in completed.stdout
    assert blocked.replace("_", "-") in completed.stdout


def test_integrations_package_imports_without_frameworks() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "core"), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    code = "import sys, sidecar_integrations; print(sorted(m for m in sys.modules if m.startswith('lang')))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]"
