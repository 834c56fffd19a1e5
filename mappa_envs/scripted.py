r"""Scripted teams: deterministic agents written by hand, for demos, tests and sanity checks of an env.

They read only what a model would read (the observation's messages) and act through the same API, so a scripted
team exercises the whole pipeline: prompts, code execution in the workspace, hand-offs, grading. They are not
clever: the arithmetic team translates simple questions ("What is 7 + 5?", "… remainder when 22 is divided by 5")
into Python for the coder to run, and fails honestly on anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mappa_envs.records import Message

Policy = Callable[[str, list[Message]], str]

_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"remainder when (\d+) is divided by (\d+)"), lambda m: f"{m[1]} % {m[2]}"),
    (re.compile(r"(\d+) squared"), lambda m: f"{m[1]} ** 2"),
    (re.compile(r"(\d+) cubed"), lambda m: f"{m[1]} ** 3"),
    (re.compile(r"(\d+) to the power of (\d+)"), lambda m: f"{m[1]} ** {m[2]}"),
    (re.compile(r"(\d+) times (\d+)"), lambda m: f"{m[1]} * {m[2]}"),
    (re.compile(r"greatest common divisor of (\d+) and (\d+)"), lambda m: f"math.gcd({m[1]}, {m[2]})"),
    (re.compile(r"least common multiple of (\d+) and (\d+)"), lambda m: f"math.lcm({m[1]}, {m[2]})"),
    (re.compile(r"What is ([\d\s+\-*/()]+)\?"), lambda m: m[1].strip()),
]


def problem_text(messages: list[Message]) -> str:
    user = next(m["content"] for m in messages if m["role"] == "user")
    match = re.search(r"## Problem\n(.*?)(?:\n\n#|\Z)", user, re.DOTALL)
    return match.group(1) if match else user


def translate(problem: str) -> str | None:
    """A Python expression for a simple arithmetic question, or None."""
    for pattern, build in _RULES:
        m = pattern.search(problem)
        if m:
            return build(m)
    return None


def _last_number(text: str) -> str | None:
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else None


def arithmetic_team() -> Policy:
    """Solver frames the question, coder computes it in the kernel, verifier boxes what the code printed."""

    def act(agent: str, messages: list[Message]) -> str:
        problem = problem_text(messages)
        expr = translate(problem)
        if agent == "solver":
            if expr is None:
                return "I do not know how to set this problem up."
            return f"The question asks for `{expr}`. The Code Executor should compute it exactly."
        if agent == "coder":
            if messages[-1]["role"] == "tool":  # second turn: report what the code printed
                number = _last_number(messages[-1]["content"])
                return (
                    f"The code printed {number}, so the answer is \\boxed{{{number}}}."
                    if number
                    else "No result."
                )
            if expr is None:
                return "I cannot translate this problem into code."
            return f"```python\nimport math\nprint({expr})\n```"
        # verifier (or judge): trust the last number the code printed
        user = messages[1]["content"]
        outputs = re.findall(r"### Output of the code above\n(.*?)(?:\n## |\Z)", user, re.DOTALL)
        number = _last_number(outputs[-1]) if outputs else None
        if number is None:
            return "Nobody computed an answer, and I cannot decide."
        return f"The Code Executor's computation gives {number}. Final answer: \\boxed{{{number}}}"

    return act


SCRIPTED_TEAMS: dict[str, Callable[[], Policy]] = {"math-chat": arithmetic_team}


def scripted_team(pipeline: str) -> Policy:
    """The scripted team for a pipeline name (e.g. ``"math-chat"``)."""
    try:
        return SCRIPTED_TEAMS[pipeline]()
    except KeyError:
        raise KeyError(f"no scripted team for {pipeline!r}; available: {sorted(SCRIPTED_TEAMS)}") from None
