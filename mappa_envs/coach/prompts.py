"""The coach prompt for one action: who acted, under which rubric, what it saw, did and caused.

The text is a pure function of the record, its role, the pipeline's coach context, the limits and (in hindsight)
the rest of the episode, with no clocks, ids or dict-order accidents in it: the on-disk cache is keyed by this
text, so the same action must always produce the same prompt. Long parts are trimmed head+tail with a visible
marker (:func:`mappa_envs.records.trim`) rather than silently cut, so the coach knows something is missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, FileInfo, trim
from mappa_envs.text import strip_ansi, strip_think

SYSTEM_PROMPT = (
    "You are the coach of a team of AI agents that solve a task together, each in its own role. You score ONE "
    "action of ONE agent: how well it did its own job, given what it was shown. Judge the visible answer and "
    "what its code actually did, not promises. Do not blame an agent for failures caused by another agent; do "
    "blame the agent whose mistake caused a later failure.\n"
    'Reply with only a JSON object: {"rationale": "<one to three sentences>", "score": <number from 0 to 10>}.'
)

DEFAULT_RUBRIC = (
    "10: does its role's job completely and correctly; 8-9: correct with minor issues; 6-7: useful but with "
    "clear flaws; 4-5: partly useful, errors or missing outputs; 2-3: mostly wrong or failed; 0-1: nothing useful "
    "or harmful."
)

FORMAT_INSTRUCTION = (
    'Reply with only a JSON object and nothing else: {"rationale": "<one to three sentences>", '
    '"score": <number from 0 to 10>}'
)

JUDGEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string"},
        "score": {"type": "number", "minimum": 0, "maximum": 10},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}
"""JSON schema of a reply. ``rationale`` comes first so a model constrained to this order reasons before scoring."""

JSON_OBJECT_SCHEMA: dict[str, Any] = {
    **JUDGEMENT_SCHEMA,
    "properties": {
        "rationale": {"type": "string", "maxLength": 600},
        "score": JUDGEMENT_SCHEMA["properties"]["score"],
    },
}
"""The schema sent in ``json_object`` mode (llama.cpp turns it into a grammar): the rationale is length-capped so a
small model cannot ramble until ``max_tokens`` and cut the JSON before the score. (OpenAI's strict ``json_schema``
mode does not promise ``maxLength``, so :data:`JUDGEMENT_SCHEMA` goes without it.)"""


@dataclass(frozen=True)
class PromptLimits:
    """Character budgets for the long parts of a prompt (head+tail kept, a marker where cut)."""

    observation: int = 12_000
    action: int = 8_000
    tool_output: int = 4_000
    files: int = 40
    episode_steps: int = 40


DEFAULT_LIMITS = PromptLimits()


def build_messages(
    record: ActionRecord,
    role: Role,
    *,
    context: str = "",
    hindsight: bool = False,
    episode: Sequence[ActionRecord] = (),
    limits: PromptLimits = DEFAULT_LIMITS,
) -> list[dict[str, str]]:
    """Chat messages (system + user) asking the coach to judge ``record``.

    With ``hindsight`` and an outcome on the record, the prompt adds the episode outcome and a one-line-per-step
    summary of ``episode`` (the records of the same episode), so the coach can see what this action caused
    downstream. The messages do not depend on the structured-output mode, which is what the cache key needs.
    """
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": build_user_prompt(
                record, role, context=context, hindsight=hindsight, episode=episode, limits=limits
            ),
        },
    ]


def build_user_prompt(
    record: ActionRecord,
    role: Role,
    *,
    context: str = "",
    hindsight: bool = False,
    episode: Sequence[ActionRecord] = (),
    limits: PromptLimits = DEFAULT_LIMITS,
) -> str:
    """The user message of :func:`build_messages`, one ``## section`` per kind of evidence."""
    sections: list[tuple[str, str]] = []
    if context.strip():
        sections.append(("Team and task", context.strip()))
    agent = f"{role.title} (role `{role.name}`), action {record.turn + 1} of its turn"
    if record.round:
        agent += f", round {record.round + 1}"
    if role.required_artifacts:
        agent += "\nMust leave these files in the workspace: " + ", ".join(role.required_artifacts)
    sections.append(("Agent", agent))
    sections.append(("Rubric", role.rubric.strip() or DEFAULT_RUBRIC))
    sections.append(("What the agent saw", render_observation(record.observation, limits.observation)))
    action = strip_think(record.visible_action or record.action)
    action_text = trim(action, limits.action) if action else "(empty answer)"
    if record.action_clipped:
        action_text += "\n[the answer hit the length limit and was cut off]"
    sections.append(("The agent's answer", action_text))
    if record.tool_results:
        tool_text = strip_ansi(record.tool_output_text())  # kernel tracebacks are coloured
        sections.append(("Output of the code it ran", trim(tool_text, limits.tool_output)))
    else:
        sections.append(("Output of the code it ran", "(no code was run)"))
    sections.append(
        ("Workspace changes", render_file_changes(record.files_before, record.files_after, limits.files))
    )
    if hindsight and record.outcome is not None:
        if episode:
            sections.append(
                ("The whole episode (after it ended)", render_episode(episode, record, limits.episode_steps))
            )
        sections.append(("Episode outcome", render_outcome(record.outcome)))
    sections.append(("Your task", _task_text(hindsight and record.outcome is not None)))
    return "\n\n".join(f"## {title}\n{body}" for title, body in sections)


def _task_text(hindsight: bool) -> str:
    when = (
        "The episode is over and its outcome is known: credit this action for what it caused, and blame it if "
        "a later failure traces back to it. "
        if hindsight
        else ""
    )
    return f"Score this action from 0 to 10 following the rubric. {when}{FORMAT_INSTRUCTION}"


def render_observation(messages: Sequence[dict[str, str]], limit: int) -> str:
    """The chat the agent saw, one ``[role]`` header per message, trimmed as a whole (head and tail kept)."""
    if not messages:
        return "(nothing)"
    text = "\n\n".join(f"[{m.get('role', '?')}]\n{str(m.get('content', '')).rstrip()}" for m in messages)
    return trim(text, limit)


def render_file_changes(before: Sequence[FileInfo], after: Sequence[FileInfo], limit: int) -> str:
    """Files created, changed (with old and new size) and removed by the action, sorted by name."""
    old = {f.name: f.size for f in before}
    new = {f.name: f.size for f in after}
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            lines.append(f"created {name} ({new[name]} bytes)")
        elif name not in new:
            lines.append(f"removed {name} (was {old[name]} bytes)")
        elif old[name] != new[name]:
            lines.append(f"changed {name} ({old[name]} -> {new[name]} bytes)")
    if not lines:
        lines.append("(no files created, changed or removed)")
    elif len(lines) > limit:
        lines = lines[:limit] + [f"[... {len(lines) - limit} more file changes cut ...]"]
    present = ", ".join(f"{n} ({new[n]} bytes)" for n in sorted(new)[:limit]) or "(empty)"
    if len(new) > limit:
        present += f", [... {len(new) - limit} more]"
    return "\n".join(lines) + "\nFiles present after the action: " + present


def render_outcome(outcome: dict[str, Any]) -> str:
    """The graded outcome as sorted ``key: value`` lines (deterministic whatever the dict order)."""
    lines = []
    for key in sorted(outcome):
        value = outcome[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        lines.append(f"{key}: {trim(str(text), 500)}")
    return "\n".join(lines) or "(no outcome)"


def render_episode(episode: Sequence[ActionRecord], current: ActionRecord, limit: int) -> str:
    """One line per action of the episode, in step order, the judged action marked."""
    lines = []
    for r in sorted(episode, key=lambda r: r.step)[:limit]:
        if r.tool_results:
            errors = [t.error for t in r.tool_results if t.error]
            ran = f"ran {len(r.tool_results)} code block(s), " + (
                "error: " + trim(errors[0], 200) if errors else "no errors"
            )
        else:
            ran = "ran no code"
        written = ", ".join(f.name for f in r.files_written()) or "no files"
        mark = "  <- THIS ACTION" if r.step == current.step else ""
        lines.append(f"step {r.step}: {r.role} ({ran}; wrote {written}){mark}")
    if len(episode) > limit:
        lines.append(f"[... {len(episode) - limit} more steps cut ...]")
    return "\n".join(lines)
