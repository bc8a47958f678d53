"""Chat with the embedded model in a LlamaIndex SimpleChatEngine that remembers across conversations.

In the first conversation the user gives the assistant a few facts. The second one starts
from a new chat engine and a new SidecarMemory, with no recent messages, as a
new process would; what it knows about the user comes from the sidecar memory
saved in the state store. The script prints the gate decision for every
message (from SidecarMemory's DEBUG log) and, for every question in the second
conversation, the memory message the model sees.

Run from the repository root after ``make setup``::

    .venv/bin/python examples/llamaindex_chat_engine.py
    .venv/bin/python examples/llamaindex_chat_engine.py --state-dir ./sidecar-state  # keep the state

The embedded model (SmolLM2-135M-Instruct) is small: it often ignores or
garbles what the memory message says, so read the replies as a demonstration
of the wiring, not of answer quality.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch
from llama_index.core.chat_engine import SimpleChatEngine

from sidecar_integrations.llama_index import SidecarLLM, SidecarMemory
from sidecar_memory import load_default_model
from sidecar_memory.stores import DirectoryStore

DEFAULT_SESSION_ID = "demo-user"
DEFAULT_MAX_NEW_TOKENS = 48
SYSTEM_PROMPT = "You are a friendly assistant. Use what you remember about the user."

FIRST_CONVERSATION = [
    "Hi! Please remember that my sister Marguerite lives in Lyon.",
    "Please also remember that I am allergic to peanuts; they are dangerous for me.",
    "Thanks, that is all for today.",
]
SECOND_CONVERSATION = [
    "Where does my sister live?",
    "Can you suggest a snack for me?",
]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="Directory of the sidecar state store (default: a temporary directory, removed at exit).",
    )
    parser.add_argument("--session-id", default=DEFAULT_SESSION_ID, help="Id of the user whose memory is used.")
    parser.add_argument(
        "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="Tokens generated per reply."
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="Torch CPU threads (0 keeps the torch default)."
    )
    return parser.parse_args()


def build_engine(model, tokenizer, llm: SidecarLLM, store: DirectoryStore, session_id: str):
    """Return a chat engine and its memory, both new, over the session's saved sidecar state."""
    # Only user turns are observed: the small model's replies often echo the
    # user's words ("I'm ready to remember that ..."), and would fill slots.
    memory = SidecarMemory.from_defaults(
        model=model,
        tokenizer=tokenizer,
        store=store,
        session_id=session_id,
        llm=llm,
        commit_roles=("user",),
    )
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt=SYSTEM_PROMPT)
    return engine, memory


def run(state_dir: Path, arguments: argparse.Namespace) -> None:
    model, tokenizer = load_default_model()
    llm = SidecarLLM(model=model, tokenizer=tokenizer, max_new_tokens=arguments.max_new_tokens)
    store = DirectoryStore(state_dir)

    print(f"== Conversation 1 (session {arguments.session_id!r}, state in {state_dir})")
    engine, memory = build_engine(model, tokenizer, llm, store, arguments.session_id)
    for text in FIRST_CONVERSATION:
        print(f"user:      {text}")
        response = engine.chat(text)
        print(f"assistant: {response.response}")
    print()

    print("== Conversation 2: a new engine and memory, no recent messages")
    engine, memory = build_engine(model, tokenizer, llm, store, arguments.session_id)
    for text in SECOND_CONVERSATION:
        memory_message = memory.get(input=text)[0]
        print(f"user:      {text}")
        print(f"memory message the model sees:\n    {memory_message.content.replace(chr(10), chr(10) + '    ')}")
        response = engine.chat(text)
        print(f"assistant: {response.response}")
        print()


def main() -> None:
    arguments = parse_arguments()
    logging.basicConfig(level=logging.WARNING)
    # SidecarMemory logs the gate decision of every observed message at DEBUG level.
    gate_handler = logging.StreamHandler()
    gate_handler.setFormatter(logging.Formatter("    [gate] %(message)s"))
    adapter_logger = logging.getLogger("sidecar_integrations.llama_index.memory")
    adapter_logger.setLevel(logging.DEBUG)
    adapter_logger.addHandler(gate_handler)
    adapter_logger.propagate = False
    if arguments.threads:
        torch.set_num_threads(arguments.threads)

    if arguments.state_dir is not None:
        run(arguments.state_dir, arguments)
        return
    with tempfile.TemporaryDirectory(prefix="sidecar-llamaindex-") as temporary:
        run(Path(temporary), arguments)


if __name__ == "__main__":
    main()
