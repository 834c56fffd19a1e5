"""Reward wrappers (coach online/hindsight, outcome, mixtures), make() defaults and the coach bias monitor.

Maths episodes use two tiny tasks and scripted replies (milliseconds each); the credit-assignment story runs the
scripted data-science team on dsbench-3agent's quick iris task, three episodes on one shared raw env.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import ADD_TASKS
from pettingzoo.test import api_test
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

try:
    from tests.coach_fixtures import DS_ROLES, FAILED, SUCCEEDED, missing_x_test_episode, record
    from tests.fake_openai_server import FakeOpenAIServer, Reply, judgement
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from coach_fixtures import DS_ROLES, FAILED, SUCCEEDED, missing_x_test_episode, record  # type: ignore
    from fake_openai_server import FakeOpenAIServer, Reply, judgement  # type: ignore

import mappa_envs
from mappa_envs import team_from_replies
from mappa_envs.coach import BiasMonitor, CoachBiasWarning, OpenAICoach, RuleCoach
from mappa_envs.coach.openai_coach import CoachUnavailable
from mappa_envs.records import Judgement
from mappa_envs.rewards import CoachReward, MixedReward, OutcomeReward, action_rewards, paid
from mappa_envs.scripted import data_science_team

FAST = {"tasks": ADD_TASKS, "cell_timeout_s": 5, "kernel_pool": 0}

RIGHT = {
    "solver": ["7 + 5 = 12, so \\boxed{12}"],
    "coder": ["```python\nprint(7 + 5)\n```", "It printed 12: \\boxed{12}"],
    "verifier": ["Agreed. \\boxed{12}"],
}
WRONG = {  # the coder's code crashes, the verifier answers wrongly
    "solver": ["\\boxed{11}"],
    "coder": ["```python\nundefined_name + 1\n```", "no luck"],
    "verifier": ["I think \\boxed{11}"],
}


def raw_chat():
    return mappa_envs.raw_env("math-chat", **FAST)


def play(
    env, replies_or_team, options=None, seed=0, from_infos=None, final_infos=None
) -> dict[str, list[float]]:
    """Play one episode through the AEC loop; every ``last()`` reward per agent, in order.

    ``from_infos``: a list that receives ``infos[agent]["record"]`` after every live step; ``final_infos``: a dict
    that receives each agent's info at its final ``last()``.
    """
    team = team_from_replies(replies_or_team) if isinstance(replies_or_team, dict) else replies_or_team
    env.reset(seed=seed, options=options if options is not None else {"task_index": 0})
    seen: dict[str, list[float]] = {}
    for agent in env.agent_iter():
        obs, reward, term, trunc, info = env.last()
        seen.setdefault(agent, []).append(reward)
        if term or trunc:
            if final_infos is not None:
                final_infos[agent] = info
            env.step(None)
            continue
        env.step(team(agent, obs["messages"]))
        if from_infos is not None:
            from_infos.append(env.infos[agent]["record"])
    return seen


def score_sums(records) -> dict[str, float]:
    sums: dict[str, float] = {}
    for r in records:
        sums[r.role] = sums.get(r.role, 0.0) + r.judgement.score / 10
    return sums


# -------------------------------------------------------------------------------------------------- api_test


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda e: CoachReward(e, RuleCoach(), when="online"), id="coach-online"),
        pytest.param(
            lambda e: CoachReward(e, RuleCoach(hindsight=True), when="hindsight"), id="coach-hindsight"
        ),
        pytest.param(OutcomeReward, id="outcome"),
        pytest.param(lambda e: MixedReward(e, {"rules": 0.6, "outcome": 0.4}), id="mixed"),
    ],
)
def test_api_test_passes_with_each_wrapper(build) -> None:
    env = OrderEnforcingWrapper(build(raw_chat()))
    api_test(env, num_cycles=60)
    env.close()


def test_api_test_passes_on_dsbench_with_the_default_stack() -> None:
    env = mappa_envs.make("dsbench-3agent", cell_timeout_s=30)
    assert isinstance(env.env, CoachReward)
    api_test(env, num_cycles=15)
    env.close()


# ---------------------------------------------------------------------------------------- AEC reward timing


def test_online_rewards_arrive_at_the_next_last_and_replace_the_outcome() -> None:
    env = CoachReward(raw_chat(), "rules", when="online")
    seen = play(env, WRONG)
    records = env.unwrapped.records
    assert [r.role for r in records] == ["solver", "coder", "coder", "verifier"]
    assert all(r.judgement is not None and r.judgement.source == "rules" for r in records)
    s = [r.judgement.score / 10 for r in records]
    # solver: first last() before acting (0), then its score at its final last()
    assert seen["solver"] == [0.0, pytest.approx(s[0])]
    # coder: 0 before acting; its first action's score before its second action; then the second's at the end
    assert seen["coder"] == [0.0, pytest.approx(s[1]), pytest.approx(s[2])]
    assert seen["verifier"] == [0.0, pytest.approx(s[3])]
    assert env.unwrapped.outcome["reward"] == 0.0  # the bare env paid 0, the coach pays something else
    # 5 - 3 (NameError), capped at 0 since v2: the coder's own crash moved nothing on (no_progress), judged at once
    assert records[1].judgement.score == 0.0 and "no_progress" in records[1].judgement.rationale
    env.close()


def test_hindsight_rewards_all_arrive_at_the_end_as_sums_of_scores() -> None:
    env = OrderEnforcingWrapper(CoachReward(raw_chat(), "rules", when="hindsight"))
    from_infos: list = []
    seen = play(env, RIGHT, from_infos=from_infos)
    records = env.unwrapped.records
    assert len(from_infos) == 4 and all(a is b for a, b in zip(from_infos, records, strict=True))
    sums = score_sums(records)
    for agent, rewards in seen.items():
        assert all(r == 0.0 for r in rewards[:-1]), (agent, rewards)  # nothing before the end
        assert rewards[-1] == pytest.approx(sums[agent])  # final last(): the sum of its scores / 10
    assert sums == pytest.approx({"solver": 0.7, "coder": 1.5, "verifier": 0.9})
    assert "team_success" in records[0].judgement.rationale  # the coach saw the outcome
    assert env.action_rewards() == pytest.approx([r.judgement.score / 10 for r in records])
    assert action_rewards(records) == pytest.approx(env.action_rewards())
    assert env.agent_rewards() == pytest.approx(sums)
    assert env.stats_dict()["judgements"] == 4 and env.stats_dict()["sources"] == {"rules": 4}
    env.close()


def test_outcome_wrapper_pays_the_outcome_to_every_action_of_every_agent() -> None:
    raw = raw_chat()
    env = OutcomeReward(raw)
    right = play(env, RIGHT)
    assert [r.role for r in raw.records] == ["solver", "coder", "coder", "verifier"]
    assert all(r.judgement is None for r in raw.records)  # no coach was called
    assert env.action_rewards() == [1.0, 1.0, 1.0, 1.0]  # the coder's code-running turn too
    assert paid(env) == env.action_rewards()
    assert action_rewards(raw.records, coach_weight=0, outcome_weight=1) == env.action_rewards()
    # an agent's last() total is the sum over its actions: the coder acted twice
    assert {a: sum(r) for a, r in right.items()} == {"solver": 1.0, "coder": 2.0, "verifier": 1.0}
    wrong = play(env, WRONG)
    assert env.action_rewards() == [0.0, 0.0, 0.0, 0.0]
    assert {a: sum(r) for a, r in wrong.items()} == {"solver": 0.0, "coder": 0.0, "verifier": 0.0}
    env.close()


def test_v1_ids_keep_the_outcome_on_each_agents_last_action() -> None:
    """The published configs pin -v0/-v1: their outcome baseline booked the outcome on each agent's last action."""
    for version, expected in (("v1", [1.0, 0.0, 1.0, 1.0]), ("v2", [1.0, 1.0, 1.0, 1.0])):
        env = mappa_envs.make(f"math-chat-{version}", reward="outcome", **FAST)
        play(env, RIGHT)
        assert paid(env) == expected, version
        env.close()
    records = []
    env = mappa_envs.make("math-chat-v1", reward={"coach": 0.5, "outcome": 0.5}, **FAST)
    play(env, RIGHT)
    records = env.unwrapped.records
    assert paid(env) == pytest.approx(
        action_rewards(records, coach_weight=0.5, outcome_weight=0.5, outcome_to="last_action")
    )
    env.close()


def test_dsbench_outcome_is_paid_to_every_turn_of_a_multi_turn_role() -> None:
    env = mappa_envs.make("dsbench-3agent", reward="outcome", tasks="embedded:train", cell_timeout_s=60)
    team = data_science_team()
    play(env, team, options={"task_index": 0})
    records, outcome = env.unwrapped.records, env.unwrapped.outcome
    roles = [r.role for r in records]
    assert (
        outcome["valid"] and roles.count("data_engineer") >= 2
    )  # the data engineer ran code, then handed over
    assert paid(env) == pytest.approx([outcome["reward"]] * len(records))
    env.close()


def test_paid_needs_a_reward_wrapper() -> None:
    with pytest.raises(TypeError, match="no reward wrapper"):
        paid(mappa_envs.raw_env("math-chat", **FAST))


def test_mixture_uses_the_weights_as_given() -> None:
    env = MixedReward(raw_chat(), {"rules": 0.5, "outcome": 0.25})
    seen = play(env, RIGHT)
    records = env.unwrapped.records
    sums = score_sums(records)
    finals = {a: r[-1] for a, r in seen.items()}
    actions = {a: sum(r.role == a for r in records) for a in sums}  # the coder acts twice
    assert actions == {"solver": 1, "coder": 2, "verifier": 1}
    assert finals == pytest.approx({a: 0.5 * sums[a] + 0.25 * 1.0 * actions[a] for a in sums})
    assert env.weights == {"rules": 0.5, "outcome": 0.25}
    assert action_rewards(records, coach_weight=0.5, outcome_weight=0.25) == pytest.approx(
        env.action_rewards()
    )
    env.close()


def test_mixture_of_two_coaches_stores_one_observable_judgement() -> None:
    online, hindsight = RuleCoach(), RuleCoach(hindsight=True)
    env = MixedReward(raw_chat(), {online: 1.0, hindsight: 1.0, "outcome": 0.0})
    seen = play(env, RIGHT)
    records = env.unwrapped.records
    assert all(r.judgement.rationale.startswith("mixture ") for r in records)
    assert "rules=" in records[0].judgement.rationale and "rules-hindsight=" in records[0].judgement.rationale
    # two coaches of weight 1 each: the action pays 2 x the mean score / 10
    assert {a: r[-1] for a, r in seen.items()} == pytest.approx(
        {a: 2 * v for a, v in score_sums(records).items()}
    )
    env.close()


def test_wrapper_arguments_are_checked() -> None:
    raw = raw_chat()
    with pytest.raises(ValueError, match="online' or 'hindsight"):
        CoachReward(raw, "rules", when="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown coach"):
        CoachReward(raw, "gpt-4")
    with pytest.raises(ValueError, match="fallback"):
        CoachReward(raw, "rules", fallback=11)
    with pytest.raises(ValueError, match="weight"):
        MixedReward(raw, {"rules": -1})
    with pytest.raises(ValueError, match="all be zero"):
        MixedReward(raw, {"rules": 0, "outcome": 0})
    with pytest.raises(ValueError, match="needs a coach"):
        MixedReward(raw, {"outcome": 1}, monitor=BiasMonitor())
    raw.close()


# ------------------------------------------------------------------------------------- credit assignment


@pytest.fixture(scope="module")
def ds_raw():
    env = mappa_envs.raw_env("dsbench-3agent", tasks="embedded:train", cell_timeout_s=60)
    yield env
    env.close()


def _iris(env) -> dict[str, int]:
    return {"task_index": [t.id for t in env.unwrapped.tasks].index("iris-species")}


def test_hindsight_blames_the_data_engineer_not_the_analyst(ds_raw) -> None:
    forgetful = data_science_team(forget=("X_test.pkl",))

    hindsight = CoachReward(ds_raw, "rules", when="hindsight")
    seen_h = play(hindsight, forgetful, options=_iris(ds_raw))
    records_h = list(ds_raw.records)
    assert records_h[-1].outcome["reward"] == 0.0
    sums_h = score_sums(records_h)
    assert {a: v[-1] for a, v in seen_h.items()} == pytest.approx(sums_h)  # final last() = Σ score / 10
    assert min(sums_h, key=sums_h.get) == "data_engineer"
    de_h = [r for r in records_h if r.role == "data_engineer"]
    assert all("caused_downstream_failure" in r.judgement.rationale for r in de_h)
    crash_h = next(r for r in records_h if r.role == "analyst" and r.had_error)
    assert "error_caused_upstream" in crash_h.judgement.rationale
    assert "code_error" not in crash_h.judgement.rationale  # the analyst's crash is not held against it

    online = CoachReward(ds_raw, "rules", when="online")
    seen_o = play(online, forgetful, options=_iris(ds_raw))
    records_o = list(ds_raw.records)
    assert [(r.role, r.turn) for r in records_o] == [(r.role, r.turn) for r in records_h]
    sums_o = score_sums(records_o)
    for agent, rewards in seen_o.items():  # online: the rewards seen through last() add up to the same sums
        assert math.fsum(rewards) == pytest.approx(sums_o[agent])
    # online, the analyst takes the blame for the crash; in hindsight it moves upstream to the data engineer
    assert min(sums_o, key=sums_o.get) == "analyst"
    crash_o = next(r for r in records_o if r.role == "analyst" and r.had_error)
    assert "code_error" in crash_o.judgement.rationale and crash_o.judgement.score < crash_h.judgement.score
    assert sums_o["data_engineer"] > sums_h["data_engineer"]

    outcome = OutcomeReward(ds_raw)
    seen_out = play(outcome, forgetful, options=_iris(ds_raw))
    finals = {a: v[-1] for a, v in seen_out.items()}
    assert finals == {"data_engineer": 0.0, "modeler": 0.0, "analyst": 0.0}
    assert ds_raw.outcome["reward"] == 0.0 and all(r.judgement is None for r in ds_raw.records)


def test_hindsight_does_not_charge_the_analysts_follow_up_for_the_upstream_failure() -> None:
    episode = missing_x_test_episode()
    crash = episode[-1]
    crash.ends_turn = False  # as in the env: code ran, so the analyst keeps the turn and replies once more
    follow_up = record(
        "analyst",
        3,
        "My code failed (X_test.pkl is missing); I cannot complete my part.",
        turn=1,
        outcome=FAILED,
    )
    follow_up.files_before = follow_up.files_after = list(crash.files_after)
    judgements = RuleCoach(hindsight=True).judge([*episode, follow_up], DS_ROLES)
    rationale = judgements[-1].rationale
    assert "artifact_missing (" not in rationale and "outcome_failure (" not in rationale, rationale


# ---------------------------------------------------------------------------------------- failing coaches


def _openai(srv: FakeOpenAIServer, tmp_path: Path, **kw: Any) -> OpenAICoach:
    kw.setdefault("max_retries", 1)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAICoach("fake-coach", base_url=srv.base_url, cache_dir=tmp_path / "cache", **kw)


@pytest.mark.parametrize(
    "bad",
    [Reply(status=500, error="internal error"), Reply(text="I'd say it is pretty good!!")],
    ids=["http-500", "garbage"],
)
def test_a_failing_coach_with_a_fallback_continues_and_counts_it(tmp_path: Path, bad: Reply, caplog) -> None:
    with FakeOpenAIServer(replies=[bad]) as srv:
        env = CoachReward(raw_chat(), _openai(srv, tmp_path, fallback=4.0), when="hindsight")
        start = time.monotonic()
        final_infos: dict = {}
        with caplog.at_level(logging.WARNING):
            seen = play(env, RIGHT, final_infos=final_infos)
        assert time.monotonic() - start < 10
        assert set(final_infos) == {"solver", "coder", "verifier"}
        records = env.unwrapped.records
        assert [r.judgement.source for r in records] == ["fallback"] * 4
        assert all(r.judgement.score == 4.0 for r in records)
        assert {a: v[-1] for a, v in seen.items()} == pytest.approx(
            {"solver": 0.4, "coder": 0.8, "verifier": 0.4}
        )
        stats = env.stats_dict()
        assert stats["fallbacks"] == 4 and stats["fallback_rate"] == 1.0 and stats["coach"]["fallbacks"] == 4
        assert all(info["coach"]["fallbacks"] == 4 for info in final_infos.values())
        assert "fallback score 4.0" in caplog.text
        env.close()


def test_a_failing_coach_without_a_fallback_raises_a_clear_error(tmp_path: Path) -> None:
    with FakeOpenAIServer(replies=[Reply(status=500, error="internal error")]) as srv:
        env = CoachReward(raw_chat(), _openai(srv, tmp_path), when="online")
        start = time.monotonic()
        with pytest.raises(CoachUnavailable, match="internal error") as info:
            play(env, RIGHT)
        assert time.monotonic() - start < 10
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert env.unwrapped.env_id in notes and "online" in notes and "fallback=" in notes
        assert env.unwrapped.env_id.startswith("math-chat-v")
        env.close()


def test_the_wrapper_fallback_catches_a_coach_that_raises(tmp_path: Path, caplog) -> None:
    class Broken:
        name = "broken"

        def judge(self, records, roles, context=""):
            raise ConnectionError("coach host unreachable")

        async def ajudge(self, records, roles, context=""):
            raise ConnectionError("coach host unreachable")

    env = CoachReward(raw_chat(), Broken(), when="online", fallback=5.0)
    with caplog.at_level(logging.WARNING, logger="mappa_envs.coach.wrappers"):
        seen = play(env, RIGHT)
    records = env.unwrapped.records
    assert [r.judgement.source for r in records] == ["fallback"] * 4
    assert "ConnectionError" in records[0].judgement.rationale
    assert env.stats_dict()["coach_errors"] == 4 and env.stats_dict()["fallbacks"] == 4
    assert math.fsum(seen["coder"]) == pytest.approx(1.0)
    assert "coach host unreachable" in caplog.text
    with pytest.raises(ConnectionError):
        play(CoachReward(raw_chat(), Broken(), when="hindsight"), RIGHT)


# ---------------------------------------------------------------------------------------------- make()


def test_make_defaults_to_the_hindsight_rule_coach_offline() -> None:
    env = mappa_envs.make("math-chat", **FAST)
    assert isinstance(env, OrderEnforcingWrapper) and isinstance(env.env, CoachReward)
    assert type(env.env.env).__name__ == "PipelineEnv"
    assert isinstance(env.env.coach, RuleCoach) and env.env.coach.hindsight and env.env.when == "hindsight"
    seen = play(env, RIGHT)
    assert {a: v[-1] for a, v in seen.items()} == pytest.approx(score_sums(env.unwrapped.records))
    assert all(r.judgement.source == "rules" for r in env.unwrapped.records)
    env.close()

    online = mappa_envs.make("math-chat", hindsight=False, **FAST)
    assert online.env.when == "online" and not online.env.coach.hindsight
    online.close()


def test_make_outcome_gives_one_or_zero_per_action() -> None:
    env = mappa_envs.make("math-chat", reward="outcome", **FAST)
    assert isinstance(env.env, OutcomeReward)
    # paid at the end, once per action: the coder acted twice
    assert {a: v[-1] for a, v in play(env, RIGHT).items()} == {"solver": 1.0, "coder": 2.0, "verifier": 1.0}
    assert {a: v[-1] for a, v in play(env, WRONG).items()} == {"solver": 0.0, "coder": 0.0, "verifier": 0.0}
    env.close()


def test_make_with_weights_and_bad_arguments() -> None:
    env = mappa_envs.make("math-chat", reward={"coach": 0.5, "outcome": 0.5}, **FAST)
    assert isinstance(env.env, MixedReward) and env.env.weights == {"rules-hindsight": 0.5, "outcome": 0.5}
    seen = play(env, RIGHT)
    sums = score_sums(env.unwrapped.records)
    actions = {"solver": 1, "coder": 2, "verifier": 1}  # the outcome part is paid on each action
    assert {a: v[-1] for a, v in seen.items()} == pytest.approx(
        {a: 0.5 * s + 0.5 * actions[a] for a, s in sums.items()}
    )
    env.close()
    with pytest.raises(ValueError, match="reward must be"):
        mappa_envs.make("math-chat", reward="coach-ish", **FAST)
    with pytest.raises(ValueError, match="unknown coach"):
        mappa_envs.make("math-chat", coach="claude", **FAST)
    with pytest.raises(ValueError, match="does not use"):
        mappa_envs.make("math-chat", reward="outcome", coach_base_url="http://x", **FAST)


def test_make_with_an_openai_coach_end_to_end(tmp_path: Path) -> None:
    with FakeOpenAIServer(replies=[judgement(7, "solid")]) as srv:
        env = mappa_envs.make(
            "math-chat",
            coach="openai:fake-coach",
            coach_base_url=srv.base_url,
            coach_api_key="sk-test",
            coach_kwargs={"cache_dir": tmp_path / "cache", "timeout_s": 5},
            **FAST,
        )
        coach = env.env.coach
        assert isinstance(coach, OpenAICoach) and coach.model == "fake-coach"
        seen = play(env, RIGHT)
        records = env.unwrapped.records
        assert [(r.judgement.score, r.judgement.source) for r in records] == [(7.0, "llm")] * 4
        assert {a: v[-1] for a, v in seen.items()} == pytest.approx(
            {"solver": 0.7, "coder": 1.4, "verifier": 0.7}
        )
        assert len(srv.requests) == 4
        assert "Episode outcome" in srv.requests[0].messages[-1]["content"]  # hindsight prompt
        env.close()
        assert coach._client is None  # the coach make() built is closed with the env


def test_make_takes_the_openai_clients_environment_by_default(tmp_path: Path, monkeypatch) -> None:
    with FakeOpenAIServer(replies=[judgement(6)]) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        env = mappa_envs.make(
            "math-chat",
            coach="openai:fake-coach",
            hindsight=False,
            coach_kwargs={"cache_dir": tmp_path / "cache"},
            **FAST,
        )
        play(env, RIGHT)
        assert [r.judgement.source for r in env.unwrapped.records] == ["llm"] * 4
        assert "Episode outcome" not in srv.requests[0].messages[-1]["content"]  # online: no outcome yet
        env.close()


def test_make_coach_fallback_reaches_coach_and_wrapper(tmp_path: Path) -> None:
    with FakeOpenAIServer(replies=[Reply(status=500, error="down for maintenance")]) as srv:
        env = mappa_envs.make(
            "math-chat",
            coach="openai:fake-coach",
            coach_base_url=srv.base_url,
            coach_fallback=3.0,
            coach_kwargs={"cache_dir": tmp_path / "cache", "max_retries": 0},
            **FAST,
        )
        play(env, RIGHT)
        assert [r.judgement.source for r in env.unwrapped.records] == ["fallback"] * 4
        assert env.env.stats_dict()["fallbacks"] == 4
        env.close()


# -------------------------------------------------------------------------------------------- bias monitor


def _episode(i: int, tag: str, score: float, success: bool) -> list:
    outcome = SUCCEEDED if success else FAILED
    records = [
        record(role, step, episode_id=f"ep-{tag}-{i}", outcome=outcome)
        for step, role in enumerate(("data_engineer", "modeler", "analyst"))
    ]
    for r in records:
        r.task_tags = (tag,)
        r.judgement = Judgement(score=score, rationale="synthetic", source="llm")
    return records


def test_monitor_warns_when_the_coach_favours_failing_regression_tasks(caplog) -> None:
    monitor = BiasMonitor(threshold=0.3, min_count=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # balanced episodes: no warning at all
        for i in range(12):
            monitor.update(_episode(i, "classification", 8.0, True))
            monitor.update(_episode(i, "classification", 1.0, False))
    assert monitor.drifting() == []
    with caplog.at_level(logging.WARNING, logger="mappa_envs.coach.monitor"):
        with pytest.warns(CoachBiasWarning, match="tag:regression") as caught:
            for i in range(12):
                monitor.update(_episode(i, "regression", 9.0, False))
    assert len([w for w in caught if "tag:regression" in str(w.message)]) == 1  # once per slice
    assert "tag:regression" in monitor.drifting() and "tag:classification" not in monitor.drifting()
    assert "coach bias on tag:regression" in caplog.text
    rows = {r["slice"]: r for r in monitor.summary()}
    reg = rows["tag:regression"]
    assert reg["episodes"] == 12 and reg["coach_score"] == 9.0 and reg["outcome_rate"] == 0.0
    assert reg["gap"] == pytest.approx(0.9) and reg["drifting"] is True
    assert rows["tag:classification"]["gap"] == pytest.approx((0.8 + 0.1) / 2 - 0.4)
    assert list(rows)[0] == "all" and "role:analyst" in rows
    assert monitor.metrics()["coach_bias/tag:regression/gap"] == pytest.approx(0.9)
    assert "tag:regression" in monitor.format()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # still drifting: no second warning
        monitor.update(_episode(99, "regression", 9.0, False))


def test_monitor_recovers_then_warns_again_and_relative_mode() -> None:
    monitor = BiasMonitor(threshold=0.3, min_count=3, window=4)
    with pytest.warns(CoachBiasWarning):
        for i in range(3):
            monitor.update(_episode(i, "regression", 9.0, False))
    for i in range(4):  # the window fills with honest episodes: the slice recovers
        monitor.update(_episode(10 + i, "regression", 8.0, True))
    assert "tag:regression" not in monitor.drifting()
    with pytest.warns(CoachBiasWarning):
        for i in range(4):
            monitor.update(_episode(20 + i, "regression", 9.0, False))

    # relative: a coach generous everywhere has no excess; only the favoured slice stands out
    relative = BiasMonitor(threshold=0.3, min_count=5, relative=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(20):
            relative.update(_episode(i, "classification", 3.0, False))
    with pytest.warns(CoachBiasWarning, match="tag:regression"):
        for i in range(6):
            relative.update(_episode(i, "regression", 10.0, False))
    assert relative.drifting() == ["tag:regression"]


def test_monitor_attached_to_the_wrapper_sees_every_episode() -> None:
    monitor = BiasMonitor(min_count=1, threshold=0.95)
    env = mappa_envs.make("math-chat", monitor=monitor, **FAST)
    play(env, RIGHT)
    play(env, WRONG)
    rows = {r["slice"]: r for r in monitor.summary()}
    assert monitor.episodes == 2 and rows["all"]["episodes"] == 2 and rows["all"]["success_rate"] == 0.5
    assert rows["role:coder"]["actions"] == 4
    env.close()


def test_make_passes_coach_kwargs_to_the_rule_coach() -> None:
    """``coach_kwargs`` reach the rule coach: a right solver behind a wrong verifier earns answer_correct."""
    team = {"solver": ["\\boxed{12}"], "coder": ["No code needed."], "verifier": ["The answer is 11."]}
    plain = mappa_envs.make("math-chat", **FAST)
    kwargs = {
        "check_answers": True
    }  # the answer format is the env's, set once: the coach reads it from the roles
    checking = mappa_envs.make("math-chat", answer_format="boxed_or_statement", coach_kwargs=kwargs, **FAST)
    try:
        before, after = play(plain, team), play(checking, team)
        assert after["solver"][-1] == pytest.approx(before["solver"][-1] + 0.2)
        assert after["verifier"][-1] == pytest.approx(before["verifier"][-1] + 0.3)  # its statement counts
        assert "answer_correct" in checking.unwrapped.records[0].judgement.rationale
        assert "answer_stated" in checking.unwrapped.records[-1].judgement.rationale
    finally:
        plain.close()
        checking.close()


def test_make_passes_require_output_to_the_rule_coach() -> None:
    """Through a real kernel: a coder cell that prints nothing earns code_silent, not code_clean, when asked."""
    team = {**RIGHT, "coder": ["```python\nx = 7 + 5\n```", "It computed 12: \\boxed{12}"]}
    # on -v1 (since v2 a silent turn that ends nothing scores 0 either way: no_progress)
    lenient = mappa_envs.make("math-chat-v1", **FAST)
    strict = mappa_envs.make("math-chat-v1", coach_kwargs={"require_output": True}, **FAST)
    try:
        before, after = play(lenient, team), play(strict, team)
        # hindsight: the coder's two actions are paid together at the end; +2 clean -> -1 silent
        assert after["coder"][-1] == pytest.approx(before["coder"][-1] - 0.3)
        assert "code_silent" in strict.unwrapped.records[1].judgement.rationale
        assert "code_clean" in lenient.unwrapped.records[1].judgement.rationale
    finally:
        lenient.close()
        strict.close()
