"""What an agent sees: pure functions from (pipeline, task, receipts so far) to chat messages.

Kept apart from the engine so it can be read and tested alone. An agent's observation is
``system`` (its role prompt) + ``user`` (the task, the workspace listing, what the roles it may see have done)
+ for each of its own earlier actions in this slot: ``assistant`` (its visible answer) and ``tool`` (what the code
printed). Reasoning inside ``<think>`` is never shown to other agents.
"""

from __future__ import annotations

from collections.abc import Sequence

from mappa_envs.pipeline import PipelineSpec, Role
from mappa_envs.records import ActionRecord, FileInfo, Message, format_tool_results


def visible_records(role: Role, round_: int, records: Sequence[ActionRecord]) -> list[ActionRecord]:
    """The other roles' actions this role may see, per its ``visibility``."""
    others = [r for r in records if r.role != role.name]
    if role.visibility == "previous_round":
        return [r for r in others if r.round == round_ - 1]
    return others


def render_files(files: Sequence[FileInfo]) -> str:
    if not files:
        return "## Files in the workspace\n(none)"
    lines = [f"- {f.name} ({f.size:,} bytes)" for f in files]
    return "## Files in the workspace\n" + "\n".join(lines)


FENCE_CLOSED_NOTE = "```\n(the reply ended inside this code block; closed here)"


def close_open_fence(text: str) -> str:
    """``text`` with a dangling code fence closed and marked.

    A reply cut at the token limit often ends inside a ```` ``` ```` block. Shown as it is inside the next agent's
    prompt, that open fence swallows everything after it, and a small model answers by closing it and continuing
    the prompt's own headers instead of replying (seen on DSBench: docs/RESULTS.md).
    """
    fences = sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))
    return f"{text.rstrip()}\n{FENCE_CLOSED_NOTE}" if fences % 2 else text


def render_record(
    record: ActionRecord, title: str, tool_chars: int, show_round: bool, close_fences: bool = False
) -> str:
    where = f"round {record.round + 1}" if show_round else f"turn {record.turn + 1}"
    action = record.visible_action or "(empty answer)"
    parts = [f"## {title} ({where})", close_open_fence(action) if close_fences else action]
    if record.tool_results:
        parts.append(
            "### Output of the code above\n" + format_tool_results(record.tool_results, limit=tool_chars)
        )
    return "\n\n".join(parts)


def build_messages(
    spec: PipelineSpec,
    task_text: str,
    role: Role,
    round_: int,
    records: Sequence[ActionRecord],
    own_turns: Sequence[ActionRecord],
    files: Sequence[FileInfo] | None,
    tool_chars: int = 4000,
    close_fences: bool = False,
) -> list[Message]:
    """The chat messages ``role`` receives before its next action.

    ``close_fences`` closes (and marks) a code fence left open by another agent's reply (``-v1`` envs).
    """
    sections = [task_text.strip()]
    if files is not None:
        sections.append(render_files(files))
    seen = visible_records(role, round_, records)
    show_round = any(r.round > 0 for r in records) or role.visibility != "upstream"
    if seen:
        header = "# What the other agents did" if show_round else "# Work of the agents before you"
        rendered = [
            render_record(r, spec.role(r.role).title, tool_chars, show_round, close_fences) for r in seen
        ]
        sections.append(header + "\n\n" + "\n\n".join(rendered))
    messages: list[Message] = [
        {"role": "system", "content": role.system_prompt},
        {"role": "user", "content": "\n\n".join(sections)},
    ]
    for r in own_turns:
        messages.append({"role": "assistant", "content": r.visible_action})
        messages.append({"role": "tool", "content": format_tool_results(r.tool_results, limit=tool_chars)})
    return messages
