"""OpenAICoach against a real local HTTP server that fakes the OpenAI API (no model, no network)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.coach_fixtures import DS_ROLES, MATH_ROLES, fake_server, missing_x_test_episode, record
    from tests.fake_openai_server import FakeOpenAIServer, Reply, closed_port, judgement
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from coach_fixtures import DS_ROLES, MATH_ROLES, fake_server, missing_x_test_episode, record  # type: ignore
    from fake_openai_server import FakeOpenAIServer, Reply, closed_port, judgement  # type: ignore

from mappa_envs.coach import MixtureCoach, OpenAICoach, RuleCoach, coach_messages
from mappa_envs.coach.openai_coach import CoachUnavailable
from mappa_envs.records import FileInfo, ToolResult

__all__ = ["fake_server"]  # the fixture is used by name

TEXT_ONLY = ("text",)
LLAMACPP = ("text", "json_object")


def make_coach(srv: FakeOpenAIServer | str, tmp_path: Path, **kw: Any) -> OpenAICoach:
    url = srv if isinstance(srv, str) else srv.base_url
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAICoach("fake-coach", base_url=url, cache_dir=tmp_path / "cache", **kw)


def one() -> list:
    return [record("solver", 0, "The answer is 4.", env_id="math-chat-v0")]


# ------------------------------------------------------------------------------------------------- happy path


def test_judges_with_json_schema_when_the_server_accepts_it(
    fake_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_server.replies = [judgement(8, "clear and correct")]
    with make_coach(fake_server, tmp_path) as coach:
        [j] = coach.judge(one(), MATH_ROLES, context="Three agents solve a maths problem.")
        assert (j.score, j.rationale, j.source) == (8.0, "clear and correct", "llm")
        assert coach.mode == "json_schema" and coach.mode_confirmed
        [req] = fake_server.requests
        assert req.format_type == "json_schema"
        assert req.body["response_format"]["json_schema"]["schema"]["required"] == ["rationale", "score"]
        assert req.body["temperature"] == 0.0 and req.body["model"] == "fake-coach"
        user = req.messages[-1]["content"]
        assert "Problem Solver" in user and "Three agents solve a maths problem." in user
        stats = coach.stats_dict()
        assert stats["calls"] == 1 and stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0


def test_negotiates_json_object_like_llamacpp_and_remembers_it(tmp_path: Path) -> None:
    with FakeOpenAIServer(accepted_formats=LLAMACPP) as srv, make_coach(srv, tmp_path, cache=False) as coach:
        [j] = coach.judge(one(), MATH_ROLES)
        assert j.source == "llm" and coach.mode == "json_object" and coach.mode_confirmed
        assert [r.format_type for r in srv.requests] == ["json_schema", "json_object"]
        assert srv.requests[1].body["response_format"]["schema"]["properties"]["score"]["type"] == "number"
        coach.judge([record("coder", 1, env_id="math-chat-v0")], MATH_ROLES)
        assert [r.format_type for r in srv.requests][2:] == ["json_object"]
        assert coach.stats.downgrades == 1 and coach.stats.retries == 0 and coach.stats.errors == 0


def test_negotiates_down_to_plain_text_and_parses_prose(tmp_path: Path) -> None:
    srv = FakeOpenAIServer(
        accepted_formats=TEXT_ONLY, replies=[Reply(text="Good work.\n**PROCESS_SCORE:** 6")]
    )
    with srv, make_coach(srv, tmp_path) as coach:
        [j] = coach.judge(one(), MATH_ROLES)
        assert (j.score, j.source, coach.mode) == (6.0, "llm", "text")
        assert [r.format_type for r in srv.requests] == ["json_schema", "json_object", "text"]
        assert "response_format" not in srv.requests[-1].body


def test_a_fixed_mode_the_server_rejects_is_an_error(tmp_path: Path) -> None:
    with FakeOpenAIServer(accepted_formats=LLAMACPP) as srv:
        coach = make_coach(srv, tmp_path, structured="json_schema")
        with pytest.raises(CoachUnavailable, match="json_schema"):
            coach.judge(one(), MATH_ROLES)
        coach.close()


def test_switches_to_max_completion_tokens_when_asked(tmp_path: Path) -> None:
    def behaviour(body: dict, index: int) -> Reply:
        if "max_tokens" in body:
            return Reply(
                status=400, error="Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens'."
            )
        return judgement(5)

    with FakeOpenAIServer(behaviour=behaviour) as srv, make_coach(srv, tmp_path, max_tokens=77) as coach:
        [j] = coach.judge(one(), MATH_ROLES)
        assert j.score == 5 and srv.requests[-1].body["max_completion_tokens"] == 77


# -------------------------------------------------------------------------------------- malformed replies


def test_malformed_reply_gets_one_reask_with_context(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_server.replies = [Reply(text="The agent did fine, I think."), judgement(6, "fixed")]
    with make_coach(fake_server, tmp_path) as coach:
        [j] = coach.judge(one(), MATH_ROLES)
        assert (j.score, j.source) == (6.0, "llm")
        first, second = fake_server.requests
        # the re-ask keeps the original prompt, shows the bad reply and says what was wrong
        assert second.messages[:2] == first.messages
        assert second.messages[2] == {"role": "assistant", "content": "The agent did fine, I think."}
        assert (
            "no score found" in second.messages[3]["content"] and '"score"' in second.messages[3]["content"]
        )
        s = coach.stats
        assert (s.parse_failures, s.reasks, s.retries, s.fallbacks) == (1, 1, 1, 0)


@pytest.mark.parametrize(
    "bad",
    [
        Reply(text="Score: 7\nFinal score: 8"),  # ambiguous
        Reply(text='{"score": 42, "rationale": "x"}'),  # out of range
        Reply(text='{"score": NaN, "rationale": "x"}'),
        Reply(text='{"rating": "good"}'),  # no score key
        Reply(text=""),
        Reply(text=None),  # content null
        Reply(text="<think>Score: 7</think>"),  # reasoning only
        Reply(raw=b"this is not json", content_type="text/plain"),  # a body that is no completion
        Reply(raw=b'{"id": "x", "choices": []}'),  # no choices
    ],
)
def test_unreadable_replies_end_in_a_counted_fallback(tmp_path: Path, bad: Reply, caplog: Any) -> None:
    with FakeOpenAIServer(replies=[bad]) as srv, make_coach(srv, tmp_path, fallback=4.0) as coach:
        with caplog.at_level(logging.WARNING, logger="mappa_envs.coach.openai_coach"):
            [j] = coach.judge(one(), MATH_ROLES)
        assert (j.score, j.source) == (4.0, "fallback")
        assert j.rationale.startswith("coach fallback:")
        assert coach.stats.fallbacks == 1 and len(srv.requests) <= 1 + coach.max_retries
        assert "fallback score 4.0" in caplog.text
        assert not list((tmp_path / "cache").rglob("*.json")), "fallbacks must never be cached"


def test_unreadable_replies_raise_with_the_reason_by_default(tmp_path: Path) -> None:
    with (
        FakeOpenAIServer(replies=[Reply(text='{"score": 12, "rationale": "x"}')]) as srv,
        make_coach(srv, tmp_path) as coach,
    ):
        with pytest.raises(CoachUnavailable, match="outside"):
            coach.judge(one(), MATH_ROLES)
        assert len(srv.requests) == 2  # the reply and one re-ask, no more


# --------------------------------------------------------------------------------- errors, retries, timeouts


def test_server_errors_are_retried_then_succeed(tmp_path: Path) -> None:
    replies = [Reply(status=500, error="boom"), Reply(status=503, error="busy"), judgement(9)]
    with FakeOpenAIServer(replies=replies) as srv, make_coach(srv, tmp_path) as coach:
        [j] = coach.judge(one(), MATH_ROLES)
        assert (j.score, j.source) == (9.0, "llm")
        assert (coach.stats.errors, coach.stats.retries, len(srv.requests)) == (2, 2, 3)


def test_retries_are_bounded(tmp_path: Path) -> None:
    with FakeOpenAIServer(replies=[Reply(status=500, error="always broken")]) as srv:
        coach = make_coach(srv, tmp_path, max_retries=2)
        start = time.monotonic()
        with pytest.raises(CoachUnavailable) as info:
            coach.judge(one(), MATH_ROLES)
        assert time.monotonic() - start < 2.0
        assert len(srv.requests) == 3
        message = str(info.value)
        assert srv.base_url in message and "always broken" in message and "fallback=" in message
        coach.close()


def test_dropped_connections_are_retried(tmp_path: Path) -> None:
    with (
        FakeOpenAIServer(replies=[Reply(drop=True), judgement(3)]) as srv,
        make_coach(srv, tmp_path) as coach,
    ):
        [j] = coach.judge(one(), MATH_ROLES)
        assert j.score == 3.0 and coach.stats.errors == 1


def test_dead_server_raises_quickly(tmp_path: Path) -> None:
    coach = make_coach(f"http://127.0.0.1:{closed_port()}/v1", tmp_path)
    start = time.monotonic()
    with pytest.raises(CoachUnavailable, match="connection error"):
        coach.judge(missing_x_test_episode(), DS_ROLES)
    assert time.monotonic() - start < 3.0
    coach.close()


def test_dead_server_falls_back_quickly_for_a_whole_batch(tmp_path: Path, caplog: Any) -> None:
    records = [record("modeler", i, f"attempt {i}", episode_id=f"ep-{i}") for i in range(40)]
    coach = make_coach(f"http://127.0.0.1:{closed_port()}/v1", tmp_path, fallback=5.0, concurrency=4)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        js = coach.judge(records, DS_ROLES)
    assert time.monotonic() - start < 3.0
    assert all(j.source == "fallback" and j.score == 5.0 for j in js)
    assert coach.stats.fallbacks == 40
    # after the first judgements exhausted their retries, the rest of the batch did not hammer the dead server
    assert coach.stats.calls <= 4 * (1 + coach.max_retries)
    assert "40 of 40 judgements got the fallback score 5.0" in caplog.text
    coach.close()


def test_slow_server_times_out_within_bounded_time(tmp_path: Path) -> None:
    with FakeOpenAIServer(replies=[Reply(delay_s=10)]) as srv:
        coach = make_coach(srv, tmp_path, timeout_s=0.3, max_retries=1, fallback=2.0)
        start = time.monotonic()
        [j] = coach.judge(one(), MATH_ROLES)
        assert time.monotonic() - start < 2.5
        assert j.source == "fallback" and coach.stats.timeouts == 2 and "timed out" in j.rationale
        coach.close()


def test_auth_errors_raise_even_with_a_fallback(tmp_path: Path) -> None:
    with FakeOpenAIServer(replies=[Reply(status=401, error="Incorrect API key")]) as srv:
        coach = make_coach(srv, tmp_path, fallback=5.0)
        with pytest.raises(CoachUnavailable, match="API key"):
            coach.judge(one(), MATH_ROLES)
        assert len(srv.requests) == 1  # no retries for a configuration error
        coach.close()


# ------------------------------------------------------------------------------------------------------ cache


def test_rerun_hits_the_cache_for_every_action(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    records = [record("modeler", i, f"action {i}", episode_id=f"ep-{i}") for i in range(10)]
    with make_coach(fake_server, tmp_path) as coach:
        first = coach.judge(records, DS_ROLES)
        assert {j.source for j in first} == {"llm"}
    with make_coach(
        fake_server, tmp_path
    ) as again:  # a new coach (fresh negotiation) reading the same folder
        second = again.judge(records, DS_ROLES)
        assert {j.source for j in second} == {"cache"}
        assert [j.score for j in second] == [j.score for j in first]
        assert again.stats_dict()["cache_hit_rate"] == 1.0 and again.stats.calls == 0
    assert len(fake_server.requests) == 10


def test_cache_key_does_not_depend_on_the_negotiated_mode(tmp_path: Path) -> None:
    with FakeOpenAIServer(accepted_formats=LLAMACPP) as srv, make_coach(srv, tmp_path) as coach:
        coach.judge(one(), MATH_ROLES)
    with FakeOpenAIServer() as srv2, make_coach(srv2, tmp_path) as coach2:
        [j] = coach2.judge(one(), MATH_ROLES)
        assert j.source == "cache" and not srv2.requests


def test_fallbacks_are_not_cached(tmp_path: Path) -> None:
    with (
        FakeOpenAIServer(replies=[Reply(status=500)]) as srv,
        make_coach(srv, tmp_path, fallback=5.0) as coach,
    ):
        assert coach.judge(one(), MATH_ROLES)[0].source == "fallback"
    with FakeOpenAIServer() as srv, make_coach(srv, tmp_path, fallback=5.0) as coach:
        assert coach.judge(one(), MATH_ROLES)[0].source == "llm"


def test_identical_prompts_in_a_batch_are_asked_once(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    with make_coach(fake_server, tmp_path, cache=False) as coach:
        js = coach.judge(one() * 5, MATH_ROLES)
        assert len(js) == 5 and len(fake_server.requests) == 1 and coach.stats.judgements == 5


def test_a_corrupt_cache_entry_is_a_miss(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    with make_coach(fake_server, tmp_path) as coach:
        coach.judge(one(), MATH_ROLES)
    [entry] = (tmp_path / "cache").rglob("*.json")
    entry.write_text("{not json")
    with make_coach(fake_server, tmp_path) as coach:
        assert coach.judge(one(), MATH_ROLES)[0].source == "llm"
    assert json.loads(entry.read_text())["score"] == 7


# ---------------------------------------------------------------------------------------- concurrency, loops


def test_requests_run_concurrently_up_to_the_limit(tmp_path: Path) -> None:
    records = [record("modeler", i, f"action {i}", episode_id=f"ep-{i}") for i in range(64)]
    with (
        FakeOpenAIServer(latency_s=0.2) as srv,
        make_coach(srv, tmp_path, concurrency=16, cache=False) as coach,
    ):
        coach.judge(records[:1], DS_ROLES)  # warm up: client, connection, negotiation
        start = time.monotonic()
        js = coach.judge(records, DS_ROLES)
        wall = time.monotonic() - start
        assert len(js) == 64 and all(j.source == "llm" for j in js)
        assert wall < 2.5, (
            f"64 x 200 ms at concurrency 16 should take ~0.8 s, took {wall:.2f} s (sequential 12.8 s)"
        )
        assert 12 <= srv.max_in_flight <= 16


def test_sync_judge_works_inside_a_running_event_loop(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    with make_coach(fake_server, tmp_path) as coach:

        async def notebook_cell() -> list:
            return coach.judge(one(), MATH_ROLES)  # as in Jupyter, where a loop is already running

        [j] = asyncio.run(notebook_cell())
        assert j.source == "llm"


def test_ajudge_from_the_callers_loop(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    records = [record("modeler", i, f"action {i}", episode_id=f"ep-{i}") for i in range(4)]
    with make_coach(fake_server, tmp_path, cache=False) as coach:

        async def main() -> tuple:
            return await asyncio.gather(
                coach.ajudge(records[:2], DS_ROLES), coach.ajudge(records[2:], DS_ROLES)
            )

        a, b = asyncio.run(main())
        assert len(a) == len(b) == 2 and coach.stats.calls == 4


# ------------------------------------------------------------------------------------------ prompt and mixture


def test_prompt_has_role_rubric_evidence_and_is_deterministic() -> None:
    long_obs = [
        {"role": "system", "content": "You are the analyst."},
        {"role": "user", "content": "x" * 50_000},
    ]
    r = record(
        "analyst",
        2,
        "<think>I should not be seen</think>Here is my code:\n```python\nprint(1)\n```",
        tool_results=[
            ToolResult(code="print(1)", stdout="1\n" * 5000, stderr="\x1b[0;31mWarning\x1b[0m: colour")
        ],
        before=[FileInfo("train.csv", 10), FileInfo("old.txt", 3), FileInfo("model.pkl", 5)],
        after=[FileInfo("train.csv", 10), FileInfo("model.pkl", 9), FileInfo("submission.csv", 42)],
        observation=long_obs,
    )
    messages = coach_messages(r, DS_ROLES["analyst"], context="DSBench team.")
    assert messages == coach_messages(r, DS_ROLES["analyst"], context="DSBench team.")
    user = messages[1]["content"]
    assert "Analyst (role `analyst`)" in user and DS_ROLES["analyst"].rubric in user
    assert "submission.csv" in user and "DSBench team." in user
    assert "I should not be seen" not in user and "print(1)" in user
    assert user.count("characters cut") == 2  # observation and tool output were trimmed, visibly
    assert "Warning: colour" in user and "\x1b" not in user
    assert "created `submission.csv` (42 bytes)" in user
    assert "changed `model.pkl` (5 -> 9 bytes)" in user and "removed `old.txt` (was 3 bytes)" in user
    assert '"score"' in messages[0]["content"] and "Episode outcome" not in user


def test_hindsight_prompt_shows_the_outcome_and_the_episode() -> None:
    ep = missing_x_test_episode()
    online = coach_messages(ep[0], DS_ROLES["data_engineer"])[1]["content"]
    hind = coach_messages(ep[0], DS_ROLES["data_engineer"], hindsight=True, episode=ep)[1]["content"]
    assert "Episode outcome" not in online
    assert "reason: submission.csv missing" in hind and "success: false" in hind
    assert "step 2: analyst (ran 1 code block(s), error: FileNotFoundError" in hind
    assert "step 0: data_engineer" in hind and "<- THIS ACTION" in hind


def test_mixture_keeps_components_observable(fake_server: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_server.replies = [judgement(9, "llm view")]
    with make_coach(fake_server, tmp_path) as llm:
        mix = MixtureCoach({"rules": (RuleCoach(hindsight=True), 1.0), "llm": (llm, 3.0)})
        ep = missing_x_test_episode()
        js = mix.judge(ep, DS_ROLES)
        rules = RuleCoach(hindsight=True).judge(ep, DS_ROLES)
        for j, r, comps in zip(js, rules, mix.last_components, strict=True):
            assert j.score == pytest.approx((r.score + 3 * 9) / 4)
            assert comps["rules"].score == r.score and comps["llm"].score == 9
            assert j.source == "llm" and "llm view" in j.rationale and "rules:" in j.rationale
        async_js = asyncio.run(mix.ajudge(ep, DS_ROLES))
        assert [j.score for j in async_js] == [j.score for j in js]
        assert {j.source for j in async_js} == {"cache"}


def test_mixture_surfaces_a_component_fallback(tmp_path: Path) -> None:
    dead = make_coach(f"http://127.0.0.1:{closed_port()}/v1", tmp_path, fallback=5.0)
    mix = MixtureCoach([(RuleCoach(), 1.0), (dead, 1.0)])
    [j] = mix.judge(one(), MATH_ROLES)
    assert j.source == "fallback" and "coach fallback" in j.rationale
    dead.close()
