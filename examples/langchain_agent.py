"""A LangChain v1 agent (create_agent) with one tool and SidecarMiddleware, on the embedded model.

Each user's memory is kept apart by the ``user_id`` of the runtime context.
The agent runs without a checkpointer, so every ``invoke`` starts from an
empty message list and whatever the model knows about the user comes from the
sidecar memory. The script prints, for each model call, the system message the
middleware built and the tool calls the model made.

Run from the repository root after ``make setup``::

    .venv/bin/python examples/langchain_agent.py
    .venv/bin/python examples/langchain_agent.py --state-dir ./sidecar-state  # keep the state

What is real and what is forced: SmolLM2-135M-Instruct does not decide on
its own to call a tool. The small ``ForceWeatherTool`` middleware below
therefore sets ``tool_choice`` to the weather tool on the first model call of a
turn that mentions the weather. The model still writes the tool argument (the
city) itself, following SidecarChatModel's ``CALL <tool> {json}`` convention,
and writes the final answer from the tool result. Everything else, including
the memory, is the real model and the real middleware.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from sidecar_integrations.langchain import SidecarChatModel, SidecarMiddleware
from sidecar_memory import load_default_model
from sidecar_memory.stores import DirectoryStore

DEFAULT_MAX_NEW_TOKENS = 40
SYSTEM_PROMPT = "You are a helpful assistant. Use the memory notes about the user when they help."
WEATHER_WORD = "weather"

CONVERSATION = [
    ("alice", "Hi! Please remember that I live in Lisbon and I love sunny days."),
    ("bob", "Hello, please remember that I live in Oslo and I like skiing."),
    ("alice", "What is the weather like in my city today?"),
    ("bob", "What is the weather like in my city today?"),
]

FORECASTS = {"lisbon": "sunny, 24 °C", "oslo": "light snow, -3 °C"}


@dataclass
class UserContext:
    user_id: str


@tool
def get_weather(city: str) -> str:
    """Return today's weather for a city."""
    forecast = FORECASTS.get(city.strip().lower())
    return f"{city}: {forecast}" if forecast else f"No forecast for {city!r}."


class ForceWeatherTool(AgentMiddleware):
    """Force the weather tool on the first model call of a turn that mentions the weather."""

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        last = request.messages[-1] if request.messages else None
        if isinstance(last, HumanMessage) and WEATHER_WORD in last.text.lower():
            request = request.override(tool_choice="get_weather")
        return handler(request)


class PrintModelCalls(AgentMiddleware):
    """Print the system message and tool calls of each model call (innermost, so the memory text is included)."""

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        system = request.system_message.text if request.system_message else ""
        print(f"  [system message] {system}")
        response = handler(request)
        for message in response.result:
            if isinstance(message, AIMessage) and message.tool_calls:
                for call in message.tool_calls:
                    print(f"  [tool call] {call['name']}({call['args']})")
        return response


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="Directory of the sidecar state store (default: a temporary directory, removed at exit).",
    )
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="Tokens generated per reply.")
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    torch.set_num_threads(1)
    model, tokenizer = load_default_model()

    with tempfile.TemporaryDirectory(prefix="sidecar-agent-") as temporary:
        state_dir = arguments.state_dir or Path(temporary)
        print(f"state store: {state_dir}\n")
        agent = create_agent(
            SidecarChatModel(model=model, tokenizer=tokenizer, max_new_tokens=arguments.max_new_tokens),
            tools=[get_weather],
            system_prompt=SYSTEM_PROMPT,
            # The first middleware is the outermost: memory is added before the call is printed.
            middleware=[
                SidecarMiddleware(model=model, tokenizer=tokenizer, store=DirectoryStore(state_dir)),
                ForceWeatherTool(),
                PrintModelCalls(),
            ],
            context_schema=UserContext,
        )
        for user_id, text in CONVERSATION:
            print(f"{user_id}: {text}")
            result = agent.invoke({"messages": [HumanMessage(text)]}, context=UserContext(user_id=user_id))
            print(f"assistant: {result['messages'][-1].text}\n")


if __name__ == "__main__":
    main()
