"""The coach reply parser: every accepted shape gives the intended score, every ambiguous one is refused."""

from __future__ import annotations

import pytest

from mappa_envs.coach.parse import CoachParseError, parse_judgement, parse_score
from mappa_envs.coach.think import strip_reasoning

ACCEPTED = [
    # JSON, the requested shape
    ('{"score": 7, "rationale": "ran cleanly"}', 7.0, "ran cleanly"),
    ('{"rationale": "ok", "score": 7.5}', 7.5, "ok"),
    ('{"score": 0, "rationale": "nothing useful"}', 0.0, "nothing useful"),
    ('{"score": 10, "rationale": "perfect"}', 10.0, "perfect"),
    ('```json\n{"score": 8, "rationale": "x"}\n```', 8.0, "x"),
    ('```\n{"score": 8, "rationale": "x"}\n```', 8.0, "x"),
    ('Here is my verdict:\n{"score": 6, "rationale": "minor issues"}\nHope this helps.', 6.0, "minor issues"),
    ('{"score": 6, "rationale": "trailing comma",}', 6.0, "trailing comma"),
    ("{'score': 6, 'rationale': 'python quotes'}", 6.0, "python quotes"),
    ('{"score": "7", "rationale": "string"}', 7.0, "string"),
    ('{"score": "7/10", "rationale": "fraction string"}', 7.0, "fraction string"),
    ('{"score": "7 out of 10", "rationale": "words"}', 7.0, "words"),
    ('{"Score": 4, "Reason": "capitalised keys"}', 4.0, "capitalised keys"),
    ('{"process_score": 3, "explanation": "reference key"}', 3.0, "reference key"),
    (
        '{"rationale": "braces {in} strings and \\"quotes\\"", "score": 9}',
        9.0,
        'braces {in} strings and "quotes"',
    ),
    ('{"score": 5}', 5.0, "(no rationale given)"),
    ('{"score": 7, "rationale": "a"} and again {"score": 7.0, "rationale": "b"}', 7.0, "a"),
    (
        '<think>maybe {"score": 2}? no...</think>{"score": 8, "rationale": "after thinking"}',
        8.0,
        "after thinking",
    ),
    (
        'reasoning without an opening tag</think>\n{"score": 8, "rationale": "qwen thinking"}',
        8.0,
        "qwen thinking",
    ),
    # labelled scores in prose
    ("PROCESS_SCORE: 7", 7.0, None),
    ("Analysis: files ok.\nPROCESS_SCORE: 7\nANSWER_CORRECT: 1", 7.0, None),
    ("**PROCESS_SCORE:** 7", 7.0, None),
    ("PROCESS_SCORE: [7]", 7.0, None),
    ("**Score:** 7/10", 7.0, None),
    ("Score: 8.5", 8.5, None),
    ("score = 6", 6.0, None),
    ("Rating: 9 out of 10", 9.0, None),
    ("Final score is 4", 4.0, None),
    ("Score (0-10): 6", 6.0, None),
    ("1. Files check: ok\n2. Execution: fine\nScore: 8", 8.0, None),
    ('{"score": 7, "rationale": "cut off mid-str', 7.0, None),  # broken JSON, still labelled
    ("Score: 7/10. I considered 9/10 but the plot is missing.", 7.0, None),  # a label beats a mere fraction
    # fraction of 10 in prose
    ("I give this 10 out of 10 points but it is verbose.", 10.0, None),
    ("Solid work overall: 8/10.", 8.0, None),
    ("A 6 / 10 effort.", 6.0, None),
    # bare reply
    ("7", 7.0, ""),
    ("[7]", 7.0, ""),
    ("7.5.", 7.5, ""),
    ('"8"', 8.0, ""),
]


@pytest.mark.parametrize(("reply", "score", "rationale"), ACCEPTED)
def test_accepted_shapes(reply: str, score: float, rationale: str | None) -> None:
    j = parse_judgement(reply)
    assert j.score == score
    assert j.source == "llm"
    if rationale is not None:
        assert j.rationale == rationale


REJECTED = [
    (None, "empty"),
    ("", "empty"),
    ("   \n", "empty"),
    ("<think>Score: 7</think>", "only reasoning"),
    ("<think>still thinking when the tokens ran out, score 7/10", "only reasoning"),
    ("The agent did well.", "no score"),
    ("1. Files check: ok\n2. Execution: 3 errors fixed", "no score"),  # the reference would take "1."
    ("It ran 3 blocks in 2.5 seconds and saved 4 files.", "no score"),
    ("See [7] for details.", "no score"),  # brackets inside prose are citations, not scores
    ("Score: 7\nFinal score: 8", "several different"),
    ("PROCESS_SCORE: 6 ... PROCESS_SCORE: 9", "several different"),
    ("Between 6/10 and 8/10.", "several different"),
    ('{"score": 7} {"score": 3}', "several different"),
    ('{"score": 7, "process_score": 4}', "several different"),
    ("Score: 11", "outside"),
    ("Score: -1", "outside"),
    ('{"score": 42, "rationale": "x"}', "outside"),
    ('{"score": -0.5}', "outside"),
    ("11/10, exceptional", "outside"),
    ('{"score": NaN}', "finite"),
    ('{"score": Infinity}', "finite"),
    ('{"score": "high", "rationale": "x"}', "not a number"),
    ('{"score": null}', "not a number"),
    ('{"score": true}', "not a number"),
    ('{"score": [7]}', "not a number"),
    ("Score: 4/5", "0-10 scale"),
    ('{"score": "80/100"}', "0-10 scale"),
    ("Score: NaN", "no score"),
    ("3/100 of rows were wrong", "no score"),
    ("Released 7/10/2024.", "no score"),
]


@pytest.mark.parametrize(("reply", "reason"), REJECTED)
def test_rejected_shapes(reply: str | None, reason: str) -> None:
    with pytest.raises(CoachParseError) as info:
        parse_judgement(reply)
    assert reason in info.value.reason
    assert info.value.reply == reply


def test_parse_score_returns_whole_reply_as_rationale_for_prose() -> None:
    score, rationale = parse_score("The code ran and saved all files.\nPROCESS_SCORE: 8")
    assert score == 8.0
    assert "saved all files" in rationale


def test_long_rationale_is_trimmed_with_marker() -> None:
    j = parse_judgement('{"score": 5, "rationale": "' + "x" * 10_000 + '"}')
    assert len(j.rationale) < 2100
    assert "characters cut" in j.rationale


@pytest.mark.parametrize(
    ("text", "visible"),
    [
        ("<think>secret</think>answer", "answer"),
        ("<THINK>a</THINK> b <think>c</think> d", "b  d"),
        ("plan...</think>answer", "answer"),
        ("answer<think>unfinished", "answer"),
        ("<thinking>x</thinking>y", "y"),
        ("no tags", "no tags"),
    ],
)
def test_strip_think(text: str, visible: str) -> None:
    assert strip_reasoning(text) == visible
