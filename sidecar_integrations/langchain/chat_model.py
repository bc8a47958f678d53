"""LangChain chat model over a local Hugging Face causal LM and its chat template.

``SidecarChatModel`` lets the examples and tests run LangChain chains and agents
on the embedded SmolLM2 model without a network. It renders LangChain messages
with the tokenizer's chat template, generates with ``model.generate`` and, when
tools are bound, follows a plain-text tool-call convention (see
:data:`TOOL_CALL_KEYWORD`) because small instruction models have no native
tool-call format.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sidecar_integrations.langchain._extras import require_module

require_module("langchain_core", purpose="sidecar_integrations.langchain.chat_model")

from langchain_core.callbacks import CallbackManagerForLLMRun  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.runnables import Runnable  # noqa: E402
from langchain_core.tools import BaseTool  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 96
"""New tokens generated per call when the caller sets no limit."""

DEFAULT_TOP_P = 0.9
"""Nucleus-sampling mass used when ``temperature`` is above zero."""

DEFAULT_REPETITION_PENALTY = 1.1
"""Penalty on repeated tokens. Without it, greedy decoding of small models repeats one sentence."""

TOOL_CALL_KEYWORD = "CALL"
"""First word of a tool-call line: ``CALL <tool name> <JSON object of arguments>``."""

FORCED_TOOL_CHOICES = frozenset({"any", "required"})
"""``tool_choice`` values that force some tool call without naming the tool."""

_TOOL_CALL_PATTERN = re.compile(
    rf"^\s*{TOOL_CALL_KEYWORD}\s+(?P<name>[A-Za-z_][\w\-]*)\s*(?P<args>\{{.*\}})?", re.DOTALL
)


class SidecarChatModel(BaseChatModel):
    """Chat model that runs a local transformers causal LM through its chat template.

    Message mapping: every system message is merged, in order, into one leading
    system turn, because small chat templates honor only a first system turn.
    Human messages become ``user`` turns and AI messages with text ``assistant``
    turns. An AI message that only calls tools leaves no turn, and each tool
    result (``Result of tool <name>: ...``) is appended to the user turn before
    it. Small models tend to copy a rendered call instead of answering, which is
    why the calls are left out.

    Tool calls: :meth:`bind_tools` lists the tools in the system turn and asks
    the model to answer a tool call as one line ``CALL <name> {json arguments}``.
    A reply in that form becomes an ``AIMessage`` with ``tool_calls``. When
    ``tool_choice`` forces a tool (a tool name, ``"any"`` or ``"required"``), the
    reply is started with ``CALL <name> {`` so the model only writes the arguments.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(
        exclude=True,
        description="A transformers causal LM (for example `AutoModelForCausalLM.from_pretrained(...)`).",
    )
    tokenizer: Any = Field(
        exclude=True,
        description="The model's tokenizer. It must define a chat template.",
    )
    max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        gt=0,
        description="Maximum number of tokens generated per call.",
    )
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        description="Sampling temperature. 0 selects greedy decoding, which makes outputs repeatable.",
    )
    top_p: float = Field(
        default=DEFAULT_TOP_P,
        gt=0.0,
        le=1.0,
        description="Nucleus-sampling mass, used only when temperature is above 0.",
    )
    repetition_penalty: float = Field(
        default=DEFAULT_REPETITION_PENALTY,
        ge=1.0,
        description="Penalty on tokens already in the prompt or reply (transformers' repetition_penalty). 1 turns it off.",
    )
    answer_after_tool_result: bool = Field(
        default=True,
        description=(
            "When the last message is a tool result, leave the tools out and generate a plain-text answer; "
            "small models otherwise tend to repeat the tool call."
        ),
    )

    _generate_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "sidecar-hf-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": getattr(getattr(self.model, "config", None), "_name_or_path", type(self.model).__name__),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """Bind tools so that the model can request them with a ``CALL`` line.

        ``tool_choice`` may be ``None``/``"auto"`` (the model decides), ``"none"``,
        a tool name, ``{"type": "function", "function": {"name": ...}}``,
        ``"any"``/``"required"``/``True`` (some tool must be called).
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [spec["function"]["name"] for spec in formatted]
        forced_name = _forced_tool_name(tool_choice, names)
        return self.bind(tools=formatted, tool_choice=forced_name, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        forced_tool: str | None = kwargs.get("tool_choice")
        if tools and self.answer_after_tool_result and messages and isinstance(messages[-1], ToolMessage):
            tools, forced_tool = [], None
        conversation = _to_chat_turns(messages, tools)
        reply_start = _forced_reply_start(forced_tool, tools) if tools else ""
        text = self._complete(conversation, reply_start=reply_start)
        text = _cut_at_stop(text, stop)
        if not tools:
            message = AIMessage(content=text.strip())
        elif forced_tool:
            message = _parse_forced_reply(reply_start, text, forced_tool, tools)
        else:
            message = _parse_reply(reply_start + text, tools)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _complete(self, conversation: list[dict[str, str]], *, reply_start: str) -> str:
        """Generate the rest of the assistant reply for ``conversation`` after ``reply_start``."""
        prompt = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        prompt += reply_start
        # Chat templates already contain the special tokens, so none are added again.
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        device = getattr(self.model, "device", None)
        if device is not None:
            encoded = encoded.to(device)

        generate_options: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.temperature > 0:
            generate_options.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            generate_options.update(do_sample=False, temperature=None, top_p=None, top_k=None)

        import torch

        # One generation at a time per chat model: concurrent async callers share the weights.
        with self._generate_lock, torch.inference_mode():
            output_ids = self.model.generate(**encoded, **generate_options)
        # output_ids: (1, prompt_tokens + new_tokens); keep only the new tokens.
        new_ids = output_ids[0, encoded["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)


def _forced_tool_name(tool_choice: str | bool | dict[str, Any] | None, names: list[str]) -> str | None:
    """Return the forced tool name, ``""`` when any tool is forced, or ``None`` when none is."""
    if tool_choice is None or tool_choice is False or tool_choice in ("auto", "none"):
        return None
    if tool_choice is True or tool_choice in FORCED_TOOL_CHOICES:
        return names[0] if len(names) == 1 else ""
    if isinstance(tool_choice, dict):
        tool_choice = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
    if isinstance(tool_choice, str) and tool_choice in names:
        return tool_choice
    raise ValueError(
        f"tool_choice={tool_choice!r} is not a bound tool; use one of {names}, 'auto', 'none', 'any' or 'required'."
    )


def _first_argument(tool_name: str, tools: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Return ``(name, JSON type)`` of the tool's first required (else first) argument."""
    for spec in tools:
        function = spec["function"]
        if function["name"] != tool_name:
            continue
        parameters = function.get("parameters", {})
        properties = parameters.get("properties", {})
        ordered = [*parameters.get("required", []), *properties]
        if not ordered:
            return None
        name = ordered[0]
        return name, properties.get(name, {}).get("type", "string")
    return None


def _forced_reply_start(forced_tool: str | None, tools: list[dict[str, Any]]) -> str:
    """Return the text that starts a reply whose tool call is forced.

    Writing the keyword, the tool name and the opening of the first argument
    leaves a small model only the argument values to generate.
    """
    if forced_tool is None:
        return ""
    if forced_tool == "":
        return f"{TOOL_CALL_KEYWORD} "
    start = f"{TOOL_CALL_KEYWORD} {forced_tool} {{"
    first = _first_argument(forced_tool, tools)
    if first is None:
        return start
    name, json_type = first
    start += f"{json.dumps(name)}: "
    return start + '"' if json_type == "string" else start


def _parse_forced_reply(reply_start: str, generated: str, forced_tool: str, tools: list[dict[str, Any]]) -> AIMessage:
    """Parse a forced tool call, closing a first string argument that the model left open."""
    message = _parse_reply(reply_start + generated, tools)
    if message.tool_calls or forced_tool == "":
        return message
    first = _first_argument(forced_tool, tools)
    if first is None or first[1] != "string":
        return message
    # The model wrote the value but not valid JSON after it: keep the value up to its quote or line end.
    value = generated.split('"', 1)[0].split("\n", 1)[0].strip()
    call = {"name": forced_tool, "args": {first[0]: value}, "id": _new_call_id(), "type": "tool_call"}
    return AIMessage(content="", tool_calls=[call])


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


def _describe_tools(tools: list[dict[str, Any]]) -> str:
    lines = ["You can call these tools:"]
    for spec in tools:
        function = spec["function"]
        properties = function.get("parameters", {}).get("properties", {})
        arguments = ", ".join(f'"{name}": {schema.get("type", "value")}' for name, schema in properties.items())
        description = function.get("description", "").strip()
        lines.append(f"- {function['name']}: {description} Arguments: {{{arguments}}}")
    lines.append("To call a tool, answer with one line and nothing else:")
    lines.append(f"{TOOL_CALL_KEYWORD} <tool name> <arguments as a JSON object>")
    lines.append("When a tool result is in the conversation, answer the user in plain text.")
    return "\n".join(lines)


def _to_chat_turns(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Map LangChain messages to chat-template turns ``{"role", "content"}``."""
    system_parts: list[str] = []
    turns: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system_parts.append(message.text)
        elif isinstance(message, HumanMessage):
            turns.append({"role": "user", "content": message.text})
        elif isinstance(message, AIMessage):
            # A reply that only calls tools leaves no turn: its results are shown with the user turn.
            if message.text.strip():
                turns.append({"role": "assistant", "content": message.text})
        elif isinstance(message, ToolMessage):
            tool_name = message.name or "tool"
            result = f"Result of tool {tool_name}: {message.text}"
            if turns and turns[-1]["role"] == "user":
                turns[-1] = {"role": "user", "content": f"{turns[-1]['content']}\n\n{result}"}
            else:
                turns.append({"role": "user", "content": result})
        else:
            raise ValueError(
                f"Unsupported message type {type(message).__name__}; "
                "pass SystemMessage, HumanMessage, AIMessage or ToolMessage."
            )
    if tools:
        system_parts.append(_describe_tools(tools))
    system_text = "\n\n".join(part for part in system_parts if part.strip())
    if system_text:
        turns.insert(0, {"role": "system", "content": system_text})
    return turns


def _cut_at_stop(text: str, stop: list[str] | None) -> str:
    for marker in stop or []:
        position = text.find(marker)
        if position >= 0:
            text = text[:position]
    return text


def _parse_reply(text: str, tools: list[dict[str, Any]]) -> AIMessage:
    """Turn a ``CALL <name> {json}`` reply into a tool call; anything else stays plain text."""
    match = _TOOL_CALL_PATTERN.match(text)
    names = {spec["function"]["name"] for spec in tools}
    if match is None or match.group("name") not in names:
        return AIMessage(content=text.strip())

    raw_arguments = _first_json_object(match.group("args") or "{}")
    try:
        arguments = json.loads(raw_arguments)
    except json.JSONDecodeError:
        logger.warning("Tool call %r has arguments that are not valid JSON: %r", match.group("name"), raw_arguments)
        return AIMessage(
            content=text.strip(),
            invalid_tool_calls=[
                {
                    "name": match.group("name"),
                    "args": raw_arguments,
                    "id": _new_call_id(),
                    "error": "arguments are not valid JSON",
                    "type": "invalid_tool_call",
                }
            ],
        )
    if not isinstance(arguments, dict):
        arguments = {"input": arguments}
    call = {"name": match.group("name"), "args": arguments, "id": _new_call_id(), "type": "tool_call"}
    return AIMessage(content="", tool_calls=[call])


def _first_json_object(text: str) -> str:
    """Return the prefix of ``text`` up to the brace that closes its first ``{``."""
    depth = 0
    in_string = False
    escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[: index + 1]
    return text
