"""Text helpers shared by the LlamaIndex adapters.

They turn LlamaIndex chat messages into the plain text the engine observes,
pick the recall query from the latest messages, and render a
``sidecar_memory.Recall`` as the lines a prompt carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, TextBlock

DEFAULT_MEMORY_HEADER = "Memories recalled for this turn, most relevant first:"
"""Line written between the steering prefix and the recalled memories."""

DEFAULT_MEMORY_LINE_TEMPLATE = "- {text}"
"""``str.format`` template of one recalled memory; see :data:`MEMORY_LINE_FIELDS`."""

MEMORY_LINE_FIELDS = ("text", "context", "role", "turn", "score", "slot", "strength")
"""Names a memory line template may use: the fields of ``sidecar_memory.MemoryItem``."""

DEFAULT_COMMIT_ROLES = ("user", "assistant")
"""Message roles whose text is observed (gate-and-commit). System and tool messages are not."""

DEFAULT_QUERY_ROLES = ("user",)
"""Message roles whose text forms the recall query."""

DEFAULT_RECALL_K = 5
"""Memories recalled per read, the engine's own default (``SidecarConfig.recall_k``)."""

_SAMPLE_MEMORY_FIELDS = {
    "text": "sample text",
    "context": "",
    "role": "user",
    "turn": 0,
    "score": 1.0,
    "slot": 0,
    "strength": 1.0,
}


def message_text(message: ChatMessage) -> str:
    """Return the text blocks of ``message`` joined by newlines, stripped ("" when it has none)."""
    parts = [block.text for block in message.blocks if isinstance(block, TextBlock)]
    return "\n".join(parts).strip()


def message_role(message: ChatMessage) -> str:
    """Return the role of ``message`` as a plain string such as ``"user"``."""
    return getattr(message.role, "value", str(message.role))


def validate_roles(field_name: str, roles: Iterable[str]) -> tuple[str, ...]:
    """Return ``roles`` as a tuple of lower-case strings, or raise ValueError naming the field."""
    if isinstance(roles, str):
        raise ValueError(
            f"{field_name} must be a sequence of role names such as ('user', 'assistant'), "
            f"not the single string {roles!r}"
        )
    checked = tuple(roles)
    if not checked or not all(isinstance(role, str) and role for role in checked):
        raise ValueError(
            f"{field_name} must be a non-empty sequence of role names such as ('user', 'assistant'); "
            f"got {roles!r}"
        )
    return tuple(role.lower() for role in checked)


def validate_line_template(template: str) -> str:
    """Return ``template`` if it formats a memory line, else raise ValueError naming the allowed fields."""
    try:
        template.format(**_SAMPLE_MEMORY_FIELDS)
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise ValueError(
            f"memory_line_template {template!r} is not a valid str.format template for a memory "
            f"({type(error).__name__}: {error}); use only the fields {list(MEMORY_LINE_FIELDS)}, "
            f"for example {DEFAULT_MEMORY_LINE_TEMPLATE!r}"
        ) from error
    return template


def build_query(messages: Sequence[ChatMessage], *, roles: Sequence[str], count: int) -> str:
    """Join the text of the latest ``count`` messages whose role is in ``roles``, oldest first.

    Messages without text (tool calls, images) are skipped. Returns "" when no
    message qualifies, in which case nothing is recalled.
    """
    selected: list[str] = []
    for message in reversed(messages):
        if len(selected) == count:
            break
        if message_role(message) not in roles:
            continue
        text = message_text(message)
        if text:
            selected.append(text)
    return "\n".join(reversed(selected))


def render_recall(
    recall: Any,
    *,
    include_prefix: bool,
    memory_header: str,
    memory_line_template: str,
    min_score: float | None,
) -> tuple[list[str], list[str]]:
    """Render a ``sidecar_memory.Recall`` as ``(lead_lines, memory_lines)``.

    ``lead_lines`` contains the steering prefix (when ``include_prefix`` is set and
    the prefix is not empty) and, when any memory is listed, ``memory_header``.
    ``memory_lines`` contains one formatted line per memory, most relevant first,
    without the memories whose score is below ``min_score``. Both lists are
    empty when there is nothing to show.
    """
    memories = [
        memory
        for memory in recall.memories
        if min_score is None or memory.score >= min_score
    ]
    memory_lines = [
        memory_line_template.format(**{name: getattr(memory, name) for name in MEMORY_LINE_FIELDS})
        for memory in memories
    ]

    lead_lines: list[str] = []
    prefix = recall.prefix.strip() if include_prefix else ""
    if prefix:
        lead_lines.append(prefix)
    if memory_lines and memory_header:
        lead_lines.append(memory_header)
    return lead_lines, memory_lines
