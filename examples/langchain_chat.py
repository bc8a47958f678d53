"""Chat with the embedded model through RunnableWithMessageHistory and SidecarChatMessageHistory.

The first conversation tells the assistant a few facts. The second one builds
a new chain and new history objects over the same state store, as a new
process would, and keeps only the last exchange in the recent-message window,
so what the model knows about the user comes from the sidecar memory. For
every turn of the second conversation the script prints the memory message
that reaches the model.

Run from the repository root after ``make setup``::

    .venv/bin/python examples/langchain_chat.py
    .venv/bin/python examples/langchain_chat.py --state-dir ./sidecar-state  # keep the state

The history recalls for the latest human message it has stored, so on each
turn the memory message matches the previous question; see docs/langchain.md
for recalling on the current question. SmolLM2-135M-Instruct is small and
often ignores what the memory message says: read the replies as a
demonstration of the wiring, not of answer quality.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from sidecar_integrations.langchain import SidecarChatMessageHistory, SidecarChatModel
from sidecar_integrations.langchain.history import MEMORY_MESSAGE_NAME
from sidecar_memory import load_default_model
from sidecar_memory.stores import DirectoryStore

DEFAULT_SESSION_ID = "demo-user"
DEFAULT_MAX_NEW_TOKENS = 48
WINDOW_MESSAGES = 2
SYSTEM_PROMPT = "You are a friendly assistant. Use the memory notes about the user when they help."

FIRST_CONVERSATION = [
    "Hi! Please remember that my sister Marguerite lives in Lyon.",
    "Also, I am allergic to peanuts, which is dangerous for me.",
    "Thanks, that is all for today.",
]
SECOND_CONVERSATION = [
    "Hello again, I am planning a trip to France.",
    "Which city should I visit to see my sister?",
    "Can you suggest a snack for the train?",
]

# RunnableWithMessageHistory is deprecated in langchain-core 1.x in favor of LangGraph
# persistence, but it is still the documented way to attach a chat history to a chain.
warnings.filterwarnings("ignore", message=".*RunnableWithMessageHistory is deprecated.*")


class MemoryMessagePrinter(BaseCallbackHandler):
    """Print the sidecar memory message of every prompt that reaches the chat model."""

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        for prompt in messages:
            for message in prompt:
                if isinstance(message, SystemMessage) and message.name == MEMORY_MESSAGE_NAME:
                    print(f"  [memory message] {message.text}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="Directory of the sidecar state store (default: a temporary directory, removed at exit).",
    )
    parser.add_argument("--session-id", default=DEFAULT_SESSION_ID, help="Id of the user whose memory is used.")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="Tokens generated per reply.")
    return parser.parse_args()


def build_chain(model: Any, tokenizer: Any, store: DirectoryStore, max_new_tokens: int) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), MessagesPlaceholder("history"), ("human", "{input}")]
    )
    chat_model = SidecarChatModel(model=model, tokenizer=tokenizer, max_new_tokens=max_new_tokens)

    def get_session_history(session_id: str) -> SidecarChatMessageHistory:
        return SidecarChatMessageHistory(
            session_id, model=model, tokenizer=tokenizer, store=store, window_messages=WINDOW_MESSAGES
        )

    return RunnableWithMessageHistory(
        prompt | chat_model,
        get_session_history,
        input_messages_key="input",
        history_messages_key="history",
    )


def converse(chain: RunnableWithMessageHistory, session_id: str, turns: list[str], callbacks: list[Any]) -> None:
    config = {"configurable": {"session_id": session_id}, "callbacks": callbacks}
    for text in turns:
        print(f"user: {text}")
        reply = chain.invoke({"input": text}, config=config)
        print(f"assistant: {reply.text}\n")


def main() -> None:
    arguments = parse_arguments()
    torch.set_num_threads(1)
    model, tokenizer = load_default_model()

    with tempfile.TemporaryDirectory(prefix="sidecar-langchain-") as temporary:
        state_dir = arguments.state_dir or Path(temporary)
        print(f"state store: {state_dir}\n")

        print("== first conversation ==")
        chain = build_chain(model, tokenizer, DirectoryStore(state_dir), arguments.max_new_tokens)
        converse(chain, arguments.session_id, FIRST_CONVERSATION, callbacks=[])

        print("== second conversation: new chain and store objects, same state directory ==")
        chain = build_chain(model, tokenizer, DirectoryStore(state_dir), arguments.max_new_tokens)
        converse(chain, arguments.session_id, SECOND_CONVERSATION, callbacks=[MemoryMessagePrinter()])


if __name__ == "__main__":
    main()
