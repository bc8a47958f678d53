"""A LlamaIndex FunctionAgent with one tool and the sidecar memory as a Memory block.

The agent runs on the embedded model through ``SidecarToolCallingLLM``, and its
``Memory`` has one block, ``SidecarMemoryBlock``, in the place where
``VectorMemoryBlock`` would go. In the first conversation the user gives
their city and requests a forecast. The second one uses a new ``Memory``
with the same session id, as a new process would: the sidecar block recalls
the facts and they reach the prompt.

How the tool step works, honestly: SmolLM2-135M cannot decide on its own when
to call a tool, so the script forces the call for weather questions with
FunctionAgent's ``initial_tool_choice``. The model then writes the tool's
argument after the prefilled text ``CALL get_weather {"city": "`` (a plain-text
convention described in ``SidecarToolCallingLLM``) and writes the final answer
from the tool result. Other turns are answered by the model without tools.

Run from the repository root after ``make setup``::

    .venv/bin/python examples/llamaindex_agent.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

import torch
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.memory import Memory
from llama_index.core.storage.chat_store.sql import MessageStatus

from sidecar_integrations.llama_index import SidecarMemoryBlock, SidecarToolCallingLLM
from sidecar_memory import load_default_model
from sidecar_memory.stores import DirectoryStore

DEFAULT_SESSION_ID = "demo-user"
DEFAULT_MAX_NEW_TOKENS = 48

# Memory flushes its oldest messages to the blocks once its queue of recent
# messages passes token_limit * 0.7 tokens (tiktoken count). A small limit
# makes this short demo flush after a few turns.
MEMORY_TOKEN_LIMIT = 120

FORECASTS = {"lyon": "light rain, 14 °C", "paris": "cloudy, 12 °C", "lisbon": "sunny, 21 °C"}

# (user message, whether the weather tool is forced for it)
FIRST_CONVERSATION = [
    ("Please remember that I live in Lyon and I cycle to work every day.", False),
    ("What is the weather in Lyon tomorrow?", True),
]
SECOND_CONVERSATION = [
    ("Where do I live?", False),
    ("What is the weather in my city tomorrow?", True),
]


def get_weather(city: str) -> str:
    """Return tomorrow's weather forecast for a city."""
    forecast = FORECASTS.get(city.strip().lower())
    if forecast is None:
        return f"No forecast available for {city!r}; known cities: {', '.join(sorted(FORECASTS))}."
    return f"Tomorrow in {city}: {forecast}."


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
    parser.add_argument("--threads", type=int, default=0, help="Torch CPU threads (0 keeps the torch default).")
    return parser.parse_args()


async def converse(agent: FunctionAgent, memory: Memory, turns: list[tuple[str, bool]]) -> None:
    """Run one agent turn per user message, forcing the weather tool on the turns marked True."""
    for text, force_tool in turns:
        agent.initial_tool_choice = "get_weather" if force_tool else None
        print(f"user:      {text}")
        handler = agent.run(user_msg=text, memory=memory)
        async for event in handler.stream_events():
            if isinstance(event, ToolCallResult):
                print(f"tool:      {event.tool_name}({event.tool_kwargs}) -> {event.tool_output.content}")
        output = await handler
        print(f"assistant: {output}")


async def run(state_dir: Path, arguments: argparse.Namespace) -> None:
    model, tokenizer = load_default_model()
    # Tools are listed only on the forced turns: unforced, the small model tends
    # to recite the tool list instead of answering.
    llm = SidecarToolCallingLLM(
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=arguments.max_new_tokens,
        list_tools_when_optional=False,
    )
    block = SidecarMemoryBlock(model=model, tokenizer=tokenizer, store=DirectoryStore(state_dir))
    agent = FunctionAgent(
        tools=[get_weather],
        llm=llm,
        system_prompt="You are a helpful assistant. Use the memory about the user.",
    )

    print(f"== Conversation 1 (session {arguments.session_id!r}, state in {state_dir})")
    memory = Memory.from_defaults(
        session_id=arguments.session_id, token_limit=MEMORY_TOKEN_LIMIT, memory_blocks=[block]
    )
    await converse(agent, memory, FIRST_CONVERSATION)
    # Messages still in Memory's queue were never flushed to the blocks, and the
    # default queue lives in process memory. Commit them before the session ends.
    pending = await memory.aget_all(status=MessageStatus.ACTIVE)
    await block.aput(pending, session_id=memory.session_id)
    print()

    print("== Conversation 2: a new Memory with the same session id, no recent messages")
    memory = Memory.from_defaults(
        session_id=arguments.session_id, token_limit=MEMORY_TOKEN_LIMIT, memory_blocks=[block]
    )
    first_question = ChatMessage(role="user", content=SECOND_CONVERSATION[0][0])
    recalled = await block.aget([first_question], session_id=arguments.session_id)
    print("sidecar block content before the first question:")
    for part in recalled:
        print(f"    {part.text}")
    await converse(agent, memory, SECOND_CONVERSATION)


def main() -> None:
    arguments = parse_arguments()
    logging.basicConfig(level=logging.WARNING)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)

    if arguments.state_dir is not None:
        asyncio.run(run(arguments.state_dir, arguments))
        return
    with tempfile.TemporaryDirectory(prefix="sidecar-llamaindex-") as temporary:
        asyncio.run(run(Path(temporary), arguments))


if __name__ == "__main__":
    main()
