"""LlamaIndex LLMs over a local Hugging Face causal LM and its chat template.

``SidecarLLM`` lets chat engines run on the embedded SmolLM2 model (or any
transformers causal LM) without a network. ``SidecarToolCallingLLM`` adds a
plain-text tool-call convention for agents such as ``FunctionAgent``, because
small instruction models have no native tool-call format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import torch
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from transformers import TextIteratorStreamer

from sidecar_integrations.llama_index._text import message_role, message_text

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128
"""New tokens generated per call unless the call passes ``max_new_tokens``."""

DEFAULT_TEMPERATURE = 0.0
"""Sampling temperature; 0 means greedy decoding, which makes replies reproducible."""

DEFAULT_TOP_P = 0.9
"""Nucleus-sampling mass used when ``temperature`` is above zero."""

DEFAULT_CONTEXT_WINDOW = 2048
"""Context window reported when the model config has no ``max_position_embeddings``."""

DEFAULT_MODEL_NAME = "sidecar-local-hf"
"""Model name reported in ``LLMMetadata`` when the caller gives none."""

TOOL_CALL_KEYWORD = "CALL"
"""First word of a tool call in :class:`SidecarToolCallingLLM` replies: ``CALL <tool name> <JSON object>``."""

DEFAULT_TOOL_CALL_MAX_NEW_TOKENS = 64
"""New tokens generated for a tool call's name and arguments."""

TOOL_RESULT_PREFIX = "Result of tool"
"""Start of the user turn that carries a tool result to the model."""

FORCED_TOOL_CHOICES = ("any", "required")
"""``tool_choice`` values that force some tool call without naming the tool."""


def to_template_turns(
    messages: Sequence[ChatMessage], *, include_tool_calls: bool = True
) -> list[dict[str, str]]:
    """Map LlamaIndex messages to ``{"role", "content"}`` turns for ``apply_chat_template``.

    Every system (and developer) message is merged, in order, into one leading
    system turn. A chat template reads a leading system turn as the system
    prompt, and SmolLM2's template adds a default one when the first turn is
    not a system turn.
    Tool results become user turns that start with ``Result of tool <name>``.
    An assistant tool call becomes the text ``CALL <name> <JSON arguments>``,
    or is left out when ``include_tool_calls`` is False (an assistant message
    with no other text is then dropped).
    """
    system_parts: list[str] = []
    turns: list[dict[str, str]] = []
    tool_names: dict[str, str] = {}
    for message in messages:
        role = message_role(message)
        text = message_text(message)
        if role in ("system", "developer"):
            if text:
                system_parts.append(text)
        elif role in ("tool", "function"):
            extra = message.additional_kwargs
            tool_name = extra.get("name") or extra.get("tool_name") or tool_names.get(extra.get("tool_call_id", ""))
            label = f"{TOOL_RESULT_PREFIX} {tool_name}" if tool_name else TOOL_RESULT_PREFIX
            turns.append({"role": "user", "content": f"{label}: {text}"})
        elif role == "user":
            turns.append({"role": "user", "content": text})
        else:
            calls = [block for block in message.blocks if isinstance(block, ToolCallBlock)]
            for call in calls:
                tool_names[call.tool_call_id or ""] = call.tool_name
            call_lines = [
                f"{TOOL_CALL_KEYWORD} {call.tool_name} {json.dumps(call.tool_kwargs)}" for call in calls
            ]
            content = "\n".join([text, *call_lines]) if include_tool_calls else text
            if content.strip():
                turns.append({"role": "assistant", "content": content.strip()})

    if system_parts:
        turns.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
    return turns


class SidecarLLM(CustomLLM):
    """LlamaIndex LLM that runs a transformers causal LM through its tokenizer's chat template.

    ``chat`` renders the messages with :func:`to_template_turns` and the chat
    template; ``complete`` wraps an unformatted prompt as one user turn. The
    reply is generated with ``model.generate`` (greedy unless ``temperature``
    is above zero). Calls on one instance run one at a time; async calls run
    in a worker thread so they do not block the event loop.
    """

    model: Any = Field(
        exclude=True,
        description="A transformers causal LM, for example the first value of sidecar_memory.load_default_model().",
    )
    tokenizer: Any = Field(
        exclude=True,
        description="The model's tokenizer; it must have a chat template.",
    )
    max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        description="New tokens generated per call unless the call passes max_new_tokens.",
    )
    temperature: float = Field(
        default=DEFAULT_TEMPERATURE,
        description="Sampling temperature; 0 decodes greedily.",
    )
    top_p: float = Field(
        default=DEFAULT_TOP_P,
        description="Nucleus-sampling mass, used when temperature is above zero.",
    )
    context_window: int = Field(
        default=0,
        description="Tokens the model reads; 0 takes max_position_embeddings from the model config.",
    )
    model_name: str = Field(
        default=DEFAULT_MODEL_NAME,
        description="Model name reported in the LLM metadata.",
    )

    _generate_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **kwargs: Any) -> None:
        custom_messages_to_prompt = kwargs.get("messages_to_prompt") is not None
        custom_completion_to_prompt = kwargs.get("completion_to_prompt") is not None
        super().__init__(**kwargs)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"tokenizer {type(self.tokenizer).__name__} has no chat_template; use an "
                "instruction-tuned model's tokenizer or set tokenizer.chat_template"
            )
        if not custom_messages_to_prompt:
            self.messages_to_prompt = self.render_messages
        if not custom_completion_to_prompt:
            self.completion_to_prompt = self.render_completion
        if self.context_window == 0:
            self.context_window = getattr(self.model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT_WINDOW

    @field_validator("max_new_tokens")
    @classmethod
    def _check_max_new_tokens(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"max_new_tokens must be at least 1; got {value!r}")
        return value

    @field_validator("temperature")
    @classmethod
    def _check_temperature(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"temperature must be >= 0 (0 decodes greedily); got {value!r}")
        return value

    @field_validator("top_p")
    @classmethod
    def _check_top_p(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {value!r}")
        return value

    @classmethod
    def class_name(cls) -> str:
        return "SidecarLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

    # -- prompt rendering ------------------------------------------------------

    def render_messages(self, messages: Sequence[ChatMessage], *, include_tool_calls: bool = True) -> str:
        """Render ``messages`` with the chat template, ending with the assistant generation prompt."""
        return self.tokenizer.apply_chat_template(
            to_template_turns(messages, include_tool_calls=include_tool_calls),
            tokenize=False,
            add_generation_prompt=True,
        )

    def render_completion(self, prompt: str) -> str:
        """Render a bare prompt as one user turn with the chat template."""
        return self.render_messages([ChatMessage(role=MessageRole.USER, content=prompt)])

    # -- completion ------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Generate a reply to ``prompt``; ``formatted=True`` means it is already a rendered chat prompt."""
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        text = self.generate_text(prompt, max_new_tokens=kwargs.get("max_new_tokens"))
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Generate a reply to ``prompt`` and yield it piece by piece as the model decodes."""
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        max_new_tokens = kwargs.get("max_new_tokens")

        def generate_pieces() -> CompletionResponseGen:
            text = ""
            for piece in self.stream_text(prompt, max_new_tokens=max_new_tokens):
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return generate_pieces()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`, run in a worker thread."""
        return await asyncio.to_thread(self.complete, prompt, formatted, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async ``chat``, run in a worker thread."""
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    # -- generation ------------------------------------------------------------

    def generate_text(self, prompt: str, *, max_new_tokens: int | None = None) -> str:
        """Generate the continuation of a rendered ``prompt`` and return it without special tokens."""
        inputs, generate_kwargs = self._prepare_generation(prompt, max_new_tokens)
        prompt_length = inputs["input_ids"].shape[1]
        with self._generate_lock, torch.no_grad():
            output_ids = self.model.generate(**inputs, **generate_kwargs)
        return self.tokenizer.decode(output_ids[0, prompt_length:], skip_special_tokens=True).strip()

    def stream_text(self, prompt: str, *, max_new_tokens: int | None = None) -> Any:
        """Yield the continuation of a rendered ``prompt`` in text pieces as they are decoded."""
        inputs, generate_kwargs = self._prepare_generation(prompt, max_new_tokens)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run_generation() -> None:
            with self._generate_lock, torch.no_grad():
                self.model.generate(**inputs, **generate_kwargs, streamer=streamer)

        worker = threading.Thread(target=run_generation, name="sidecar-llm-generate", daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            worker.join()

    def _prepare_generation(self, prompt: str, max_new_tokens: int | None) -> tuple[dict, dict]:
        new_tokens = max_new_tokens or self.max_new_tokens
        device = next(self.model.parameters()).device
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
        prompt_length = inputs["input_ids"].shape[1]
        if prompt_length + new_tokens > self.context_window:
            raise ValueError(
                f"prompt of {prompt_length} tokens plus max_new_tokens {new_tokens} exceeds the "
                f"context window of {self.context_window} tokens; lower the memory's token_limit "
                "or max_new_tokens"
            )

        pad_token_id = self.tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = self.tokenizer.eos_token_id
        generate_kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "pad_token_id": pad_token_id}
        if self.temperature > 0:
            generate_kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            generate_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return dict(inputs), generate_kwargs


class SidecarToolCallingLLM(SidecarLLM, FunctionCallingLLM):
    """:class:`SidecarLLM` with a plain-text tool-call convention, for ``FunctionAgent``.

    Convention:

    * When tools are offered, the system turn lists them and requests a tool
      call as one line ``CALL <tool name> <JSON object of arguments>``. A reply
      in that form becomes an assistant message with a ``ToolCallBlock``, and
      any other reply is a plain text answer. Arguments the tool does not
      declare are dropped. With ``list_tools_when_optional=False`` tools are
      offered only when the call forces one.
    * When the call forces a tool (``tool_choice`` names one, or is ``"any"``
      or ``"required"``, or ``tool_required=True``), the reply is started with
      ``CALL <name> {"<first parameter>": `` (and an opening quote for a string
      parameter), so the model writes only the values. With ``"any"`` and
      several tools the model also writes the name.
    * One tool round per user turn: once a tool result follows the latest user
      message, tools are no longer offered and the model answers in text. Small
      models otherwise tend to repeat the call.

    NOTE: a 135M-parameter model often writes wrong argument values, and only
    the argument names are checked (against the tool's schema). A reply that
    does not parse is returned as text, and ``FunctionAgent`` then ends the
    turn without a tool call.
    """

    tool_call_max_new_tokens: int = Field(
        default=DEFAULT_TOOL_CALL_MAX_NEW_TOKENS,
        description="New tokens generated for a tool call's name and arguments.",
    )
    list_tools_when_optional: bool = Field(
        default=True,
        description=(
            "Whether the system turn lists the tools when the call does not force one. Small models "
            "often repeat the list instead of answering; False answers such turns in plain text."
        ),
    )

    @classmethod
    def class_name(cls) -> str:
        return "SidecarToolCallingLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model_name,
        )

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": list(tools),
            "tool_required": tool_required,
            "tool_choice": tool_choice,
            **kwargs,
        }

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Generate the reply to ``messages``. With ``tools=`` the reply may be a tool call (see the class docstring)."""
        tools = kwargs.pop("tools", None) or []
        tool_required = bool(kwargs.pop("tool_required", False))
        tool_choice = kwargs.pop("tool_choice", None)
        forced_name = self._forced_tool_name(tools, tool_choice, tool_required) if tools else None
        forced = forced_name is not None or tool_required or tool_choice in FORCED_TOOL_CHOICES
        offer_tools = bool(tools) and (forced or self.list_tools_when_optional)
        if not offer_tools or self._tool_round_done(messages):
            # Earlier CALL lines are left out of this prompt, because small models
            # that see them repeat the call instead of using its result.
            prompt = self.render_messages(messages, include_tool_calls=False)
            text = self.generate_text(prompt, max_new_tokens=kwargs.get("max_new_tokens"))
            return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

        # The tool list goes last in the merged system turn, nearest to the reply.
        prompt = self.render_messages(
            [*messages, ChatMessage(role=MessageRole.SYSTEM, content=self._tool_instructions(tools))]
        )
        if forced_name is not None:
            prefill = f"{TOOL_CALL_KEYWORD} {forced_name} " + self._arguments_prefill(tools, forced_name)
        elif forced:
            prefill = f"{TOOL_CALL_KEYWORD} "
        else:
            prefill = ""
        reply = prefill + self.generate_text(
            prompt + prefill,
            max_new_tokens=self.tool_call_max_new_tokens if forced else kwargs.get("max_new_tokens"),
        )
        return ChatResponse(message=self._parse_reply(reply, tools))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Yield the :meth:`chat` response whole: a tool call cannot be parsed from a partial reply."""
        response = self.chat(messages, **kwargs)

        def single() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content or "")

        return single()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`; generation runs in a worker thread."""
        response = await asyncio.to_thread(self.chat, messages, **kwargs)

        async def single() -> ChatResponseAsyncGen:
            yield ChatResponse(message=response.message, delta=response.message.content or "")

        return single()

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """Return the tool calls in ``response``; raise ValueError when there are none and ``error_on_no_tool_call``."""
        selections = [
            ToolSelection(
                tool_id=block.tool_call_id or "",
                tool_name=block.tool_name,
                tool_kwargs=block.tool_kwargs if isinstance(block.tool_kwargs, dict) else {},
            )
            for block in response.message.blocks
            if isinstance(block, ToolCallBlock)
        ]
        if not selections and error_on_no_tool_call:
            raise ValueError(
                f"expected a tool call, but the reply was plain text: {response.message.content!r}"
            )
        return selections

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _tool_round_done(messages: Sequence[ChatMessage]) -> bool:
        for message in reversed(messages):
            role = message_role(message)
            if role in ("tool", "function"):
                return True
            if role == "user":
                return False
        return False

    @staticmethod
    def _forced_tool_name(tools: Sequence[Any], tool_choice: Any, tool_required: bool) -> str | None:
        names = [tool.metadata.get_name() for tool in tools]
        if isinstance(tool_choice, str) and tool_choice in names:
            return tool_choice
        if isinstance(tool_choice, dict):
            name = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
            if name in names:
                return name
        if (tool_required or tool_choice in FORCED_TOOL_CHOICES) and len(names) == 1:
            return names[0]
        return None

    @staticmethod
    def _arguments_prefill(tools: Sequence[Any], tool_name: str) -> str:
        """Start the JSON arguments up to the first parameter's value, so the model writes only values."""
        tool = next(tool for tool in tools if tool.metadata.get_name() == tool_name)
        properties = tool.metadata.get_parameters_dict().get("properties", {})
        if not properties:
            return "{"
        first_name, first_spec = next(iter(properties.items()))
        opening_quote = '"' if first_spec.get("type") == "string" else ""
        return f'{{"{first_name}": {opening_quote}'

    @staticmethod
    def _tool_instructions(tools: Sequence[Any]) -> str:
        lines = [
            "You can call these tools:",
        ]
        for tool in tools:
            parameters = tool.metadata.get_parameters_dict().get("properties", {})
            argument_list = ", ".join(
                f"{name}: {spec.get('type', 'any')}" for name, spec in parameters.items()
            )
            lines.append(f"- {tool.metadata.get_name()}({argument_list}): {tool.metadata.description}")
        lines.append(
            f"To call a tool, reply with one line: {TOOL_CALL_KEYWORD} <tool name> <JSON object of arguments>. "
            f'Example: {TOOL_CALL_KEYWORD} {tools[0].metadata.get_name()} {{"argument": "value"}}. '
            "Otherwise answer in plain text."
        )
        return "\n".join(lines)

    @staticmethod
    def _parse_reply(reply: str, tools: Sequence[Any]) -> ChatMessage:
        names = {tool.metadata.get_name() for tool in tools}
        stripped = reply.strip()
        parts = stripped.split(None, 2)
        if len(parts) >= 2 and parts[0] == TOOL_CALL_KEYWORD and parts[1] in names:
            arguments = _decode_arguments(parts[2] if len(parts) == 3 else "{}")
            if isinstance(arguments, dict):
                block = ToolCallBlock(
                    tool_call_id=f"call-{uuid.uuid4().hex[:12]}",
                    tool_name=parts[1],
                    tool_kwargs=_known_arguments(arguments, tools, parts[1]),
                )
                return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])
            logger.info("tool call %r has arguments that are not a JSON object; returning it as text", stripped)
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[TextBlock(text=stripped)])


_BARE_KEY = re.compile(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*:)")


def _decode_arguments(text: str) -> Any:
    """Decode the first JSON object in ``text``; return None when there is none.

    Small models often write keys without quotes (``{city: "Paris"}``), so a
    failed decode is retried once with bare keys quoted. Text after the
    object is ignored.
    """
    for candidate in (text, _BARE_KEY.sub(r'\1"\2"\3', text)):
        try:
            value, _ = json.JSONDecoder().raw_decode(candidate.strip())
        except json.JSONDecodeError:
            continue
        return value
    return None


def _known_arguments(arguments: dict[str, Any], tools: Sequence[Any], tool_name: str) -> dict[str, Any]:
    """Drop the arguments that the tool's schema does not name; small models invent extra ones."""
    tool = next(tool for tool in tools if tool.metadata.get_name() == tool_name)
    known = set(tool.metadata.get_parameters_dict().get("properties", {}))
    unknown = sorted(set(arguments) - known)
    if unknown:
        logger.info("dropping argument(s) %s that tool %r does not declare", unknown, tool_name)
    return {name: value for name, value in arguments.items() if name in known}
