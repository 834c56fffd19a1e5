"""Served agents against a real local HTTP server that fakes the OpenAI chat API (no model, no network).

Each failure mode is performed for real (HTTP 500, a server that hangs, an unreadable body, a refused connection)
and the test asserts the receipt, the counters, the time bound and that the episode carries on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.fake_openai_server import FakeOpenAIServer, Reply, closed_port
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fake_openai_server import FakeOpenAIServer, Reply, closed_port  # type: ignore

import mappa_envs
from mappa_envs.agents import AgentReply, Endpoint, ServedTeam, parse_served, team_from_specs
from mappa_envs.engine import run_episode
from mappa_envs.scripted import scripted_team

CODE = "```python\nprint(6 * 7)\n```"
MSGS = [{"role": "system", "content": "You are a coder."}, {"role": "user", "content": "What is 6 * 7?"}]


def team(url: str, role: str = "coder", **kw: Any) -> ServedTeam:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return ServedTeam({role: Endpoint(model="fake-agent", base_url=url, max_tokens=64)}, **kw)


def test_reply_and_token_usage_are_counted_per_role() -> None:
    with FakeOpenAIServer(replies=[Reply(text=CODE)]) as srv:
        t = team(srv.base_url)
        reply = t("coder", MSGS)
        body = srv.chat_requests()[0].body
    assert isinstance(reply, AgentReply) and reply == CODE and reply.agent_error is None
    assert body["model"] == "fake-agent" and body["messages"] == MSGS and body["max_tokens"] == 64
    s = t.stats["coder"]
    assert (s.turns, s.calls, s.failed_turns, s.retries) == (1, 1, 0, 0)
    assert s.prompt_tokens == sum(len(m["content"]) for m in MSGS) // 4 > 0
    assert s.completion_tokens == len(CODE) // 4 > 0
    assert "coder" in t.usage_table() and "fake-agent" in t.usage_table()


def test_tool_turns_go_out_as_user_messages() -> None:
    with FakeOpenAIServer(replies=[Reply(text="42")]) as srv:
        team(srv.base_url)(
            "coder", [*MSGS, {"role": "assistant", "content": CODE}, {"role": "tool", "content": "42"}]
        )
        sent = srv.chat_requests()[0].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[-1]["content"] == "Output of your code:\n42"


def test_a_500_is_retried_then_the_reply_arrives() -> None:
    with FakeOpenAIServer(replies=[Reply(status=500, error="overloaded"), Reply(text="ok")]) as srv:
        t = team(srv.base_url)
        reply = t("coder", MSGS)
    assert reply == "ok" and reply.agent_error is None
    assert (t.stats["coder"].calls, t.stats["coder"].retries, t.stats["coder"].errors) == (2, 1, 1)


def test_retries_are_bounded_and_the_failure_is_an_empty_reply_that_is_logged(caplog: Any) -> None:
    with FakeOpenAIServer(replies=[Reply(status=503, error="down for maintenance")]) as srv:
        t = team(srv.base_url, max_retries=2)
        with caplog.at_level(logging.WARNING, logger="mappa_envs.agents.served"):
            reply = t("coder", MSGS)
        sent = len(srv.chat_requests())
    assert reply == "" and "HTTP 503" in reply.agent_error and "3 attempt(s)" in reply.agent_error
    assert sent == 3 and t.stats["coder"].failed_turns == 1 and t.stats["coder"].retries == 2
    assert "empty reply" in caplog.text and "down for maintenance" in caplog.text


def test_a_client_error_is_not_retried() -> None:
    with FakeOpenAIServer(replies=[Reply(status=404, error="model 'nope' not found")]) as srv:
        t = team(srv.base_url, max_retries=3)
        reply = t("coder", MSGS)
        sent = len(srv.chat_requests())
    assert sent == 1 and "HTTP 404" in reply.agent_error and "not found" in reply.agent_error


def test_switches_to_max_completion_tokens_when_the_server_asks() -> None:
    def reply(body: dict, index: int) -> Reply:
        if "max_tokens" in body:
            return Reply(
                status=400, error="Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens'."
            )
        return Reply(text="ok")

    with FakeOpenAIServer(behaviour=reply) as srv:
        t = team(srv.base_url, max_retries=0)
        first, second = t("coder", MSGS), t("coder", MSGS)
        bodies = [r.body for r in srv.chat_requests()]
    assert first == second == "ok" and first.agent_error is None
    assert [("max_tokens" in b, b.get("max_completion_tokens")) for b in bodies] == [
        (True, None),
        (False, 64),
        (False, 64),
    ]
    assert t.stats["coder"].retries == 0  # a parameter switch is not a retry


def test_a_hanging_server_times_out_within_the_bound() -> None:
    with FakeOpenAIServer(replies=[Reply(text="late", delay_s=30)]) as srv:
        t = team(srv.base_url, timeout_s=0.5, max_retries=1)
        start = time.monotonic()
        reply = t("coder", MSGS)
        wall = time.monotonic() - start
    assert "timed out after 0.5 s" in reply.agent_error
    assert t.stats["coder"].timeouts == 2
    assert wall < 2 * (0.5 + 1.0) + 0.5  # (1 + max_retries) × (timeout + wait_for slack) + backoff


@pytest.mark.parametrize(
    "bad",
    [
        Reply(raw=b"<html>bad gateway</html>", content_type="text/html"),
        Reply(raw=b'{"id": "x", "object": "chat.completion", "choices": []}'),
        Reply(text=None),  # a message without content
    ],
    ids=["not-json", "no-choices", "null-content"],
)
def test_malformed_replies_are_retried_then_reported(bad: Reply) -> None:
    with FakeOpenAIServer(replies=[bad]) as srv:
        t = team(srv.base_url, max_retries=1)
        reply = t("coder", MSGS)
        sent = len(srv.chat_requests())
    assert sent == 2 and reply == "" and reply.agent_error
    assert t.stats["coder"].failed_turns == 1


def test_malformed_then_good_reply_recovers() -> None:
    with FakeOpenAIServer(replies=[Reply(raw=b"{}"), Reply(text="fine")]) as srv:
        reply = team(srv.base_url)("coder", MSGS)
    assert reply == "fine" and reply.agent_error is None


def test_concurrency_limit_is_respected_and_used() -> None:
    with FakeOpenAIServer(replies=[Reply(text="x")], latency_s=0.2) as srv:
        t = team(srv.base_url, concurrency=3)
        start = time.monotonic()
        replies = t.generate("coder", [MSGS] * 12)
        wall = time.monotonic() - start
        peak = srv.max_in_flight
    assert replies == ["x"] * 12 and peak == 3
    assert 0.8 <= wall < 0.8 * 1.5  # 12 / 3 waves × 0.2 s


def test_a_failed_served_turn_is_in_the_receipt_and_the_episode_carries_on() -> None:
    env = mappa_envs.make("math-chat", tasks="embedded:eval", reward="outcome")
    served = team(f"http://127.0.0.1:{closed_port()}/v1", max_retries=1)
    scripted = scripted_team("math-chat")
    errors: list[str] = []

    def play(agent: str, messages: list) -> str:
        return served(agent, messages) if served.serves(agent) else scripted(agent, messages)

    try:
        records, outcome = run_episode(env, play, seed=0)
        for agent in env.possible_agents:  # infos of the last step of each agent
            if "agent_error" in env.unwrapped.infos.get(agent, {}):
                errors.append(agent)
    finally:
        env.close()
    coder = [r for r in records if r.role == "coder"]
    assert coder and all(r.action == "" and "connection error" in r.agent_error for r in coder)
    assert all(r.agent_error is None for r in records if r.role != "coder")
    assert outcome is not None and "success" in outcome
    assert json.loads(json.dumps(coder[0].to_dict()))["agent_error"] == coder[0].agent_error
    assert served.stats["coder"].failed_turns == len(coder)


def test_parse_served_and_team_maps(tmp_path: Path) -> None:
    role, ep = parse_served("coder=http://127.0.0.1:8080/v1@smollm2")
    assert (role, ep.base_url, ep.model) == ("coder", "http://127.0.0.1:8080/v1", "smollm2")
    for bad in ["coder", "coder=http://x/v1", "=http://x/v1@m", "coder=@m"]:
        with pytest.raises(ValueError, match="ROLE=URL@MODEL"):
            parse_served(bad)
    with pytest.raises(ValueError, match="not an http"):
        parse_served("coder=127.0.0.1:8080@m")
    path = tmp_path / "team.yaml"
    path.write_text(
        "concurrency: 4\ntimeout_s: 9\nroles:\n"
        "  '*': {base_url: 'http://a/v1', model: big}\n  coder: {base_url: 'http://b/v1', model: small, max_tokens: 32}\n"
    )
    t = team_from_specs([str(path), "verifier=http://c/v1@judge"])
    assert (t.concurrency, t.timeout_s) == (4, 9.0)
    assert t.endpoint("solver").model == "big" and t.endpoint("coder").max_tokens == 32
    assert t.endpoint("verifier").model == "judge"
    path.write_text("roles:\n  coder: {base_url: 'http://b/v1', modle: small}\n")
    with pytest.raises(ValueError, match="unknown keys \\['modle'\\]"):
        team_from_specs([str(path)])
    with pytest.raises(KeyError, match="add solver=URL@MODEL"):
        team_from_specs(["coder=http://b/v1@m"]).endpoint("solver")
