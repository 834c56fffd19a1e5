"""The AEC engine: conformance, turn schedules, receipts, outcome rewards, bad input."""

from __future__ import annotations

import json

import pytest
from conftest import ADD_TASKS
from pettingzoo.test import api_test, seed_test

import mappa_envs
import mappa_envs.pipelines.math_chat
from mappa_envs import run_episode, team_from_replies
from mappa_envs.context import FENCE_CLOSED_NOTE, close_open_fence
from mappa_envs.engine import CLIP_MARKER

FAST = {"cell_timeout_s": 5, "kernel_pool": 0}


@pytest.mark.parametrize("env_id", sorted(mappa_envs.registry))
def test_api_test_passes_for_every_registered_env(env_id):
    env = mappa_envs.make(env_id)
    api_test(env, num_cycles=300)
    env.close()


@pytest.mark.parametrize("env_id", sorted(mappa_envs.registry))
def test_seed_test_passes_for_every_registered_env(env_id):
    seed_test(lambda: mappa_envs.make(env_id), num_cycles=100)


def test_registry_resolves_unversioned_ids_and_rejects_unknown():
    assert mappa_envs.registry["math-chat"].id == "math-chat-v2"  # the highest version
    assert "math-debate-v0" in mappa_envs.registry
    assert "math-chat-v0" in str(mappa_envs.registry)
    for version in (0, 1, 2):  # every version is its own id, recorded in every receipt
        raw = mappa_envs.raw_env(f"math-chat-v{version}")
        assert raw.env_id == f"math-chat-v{version}" and raw.close_fences == (version >= 1)
        raw.close()
    assert mappa_envs.registry["math-chat-v1"].reward_kwargs == {"outcome_to": "last_action"}
    assert mappa_envs.registry["math-chat-v2"].reward_kwargs == {}
    with pytest.raises(ValueError, match="version must be"):
        mappa_envs.pipelines.math_chat.raw_env(version=3)
    with pytest.raises(KeyError, match="registered"):
        mappa_envs.make("no-such-env")
    with pytest.raises(ValueError, match="malformed env id"):
        mappa_envs.make("Bad Id!")


def test_raw_env_is_unwrapped_and_make_enforces_order():
    raw = mappa_envs.raw_env("math-chat")
    assert type(raw).__name__ == "PipelineEnv"
    env = mappa_envs.make("math-chat")
    with pytest.raises(AttributeError):  # OrderEnforcingWrapper: nothing before reset()
        env.agent_selection  # noqa: B018


def _chat(**kw):
    return mappa_envs.make("math-chat", reward="outcome", tasks=ADD_TASKS, **{**FAST, **kw})


def test_right_answer_is_correct_and_every_action_gets_the_outcome():
    env = _chat()
    team = team_from_replies(
        {
            "solver": ["7 + 5 = 12, so \\boxed{12}"],
            "coder": ["```python\nprint(7 + 5)\n```", "It printed 12: \\boxed{12}"],
            "verifier": ["Agreed. \\boxed{12}"],
        }
    )
    env.reset(seed=0, options={"task_index": 0})
    finals = {}
    for agent in env.agent_iter():
        obs, reward, term, trunc, info = env.last()
        if term or trunc:
            finals[agent] = (reward, info["outcome"])
            env.step(None)
            continue
        env.step(team(agent, obs["messages"]))
    assert set(finals) == {"solver", "coder", "verifier"}
    for agent, (reward, outcome) in finals.items():
        # reward="outcome" pays the outcome to every action: the coder acted twice
        assert reward == (2.0 if agent == "coder" else 1.0), agent
        assert outcome["correct"] is True and outcome["answer"] == "12"
    records = env.unwrapped.records
    assert [(r.role, r.turn) for r in records] == [("solver", 0), ("coder", 0), ("coder", 1), ("verifier", 0)]
    assert records[1].tool_results[0].stdout == "12\n" and records[1].ends_turn is False
    assert all(r.outcome == env.unwrapped.outcome for r in records)
    json.dumps([r.to_dict() for r in records])  # receipts are JSON-serialisable
    env.close()


def test_wrong_answer_is_incorrect_and_rewards_zero():
    env = _chat()
    team = team_from_replies(
        {"solver": ["\\boxed{11}"], "coder": ["no code, \\boxed{11}"], "verifier": ["\\boxed{11}"]}
    )
    records, outcome = run_episode(env, team, seed=0, options={"task_index": 0})
    assert outcome["correct"] is False and outcome["expected"] == "12" and outcome["reward"] == 0.0
    assert [r.role for r in records] == [
        "solver",
        "coder",
        "verifier",
    ]  # a reply without code ends the coder's part
    env.close()


def test_code_error_traceback_reaches_the_next_observation():
    env = _chat()
    seen = {}

    def team(agent, messages):
        seen.setdefault(agent, []).append(messages)
        return {
            "solver": "\\boxed{12}",
            "coder": "```python\nundefined_name + 1\n```",
            "verifier": "\\boxed{12}",
        }[agent]

    records, outcome = run_episode(env, team, seed=0, options={"task_index": 0})
    coder_records = [r for r in records if r.role == "coder"]
    assert coder_records[0].tool_results[0].error.startswith("NameError")
    second = seen["coder"][1]
    assert second[-1]["role"] == "tool" and "NameError" in second[-1]["content"]
    assert second[-2]["role"] == "assistant"
    assert "NameError" in seen["verifier"][0][1]["content"]  # downstream agents see the tool output too
    env.close()


@pytest.mark.parametrize("env_id", ["math-chat-v0", "math-chat-v1"])
def test_a_reply_cut_inside_a_code_block_is_shown_closed_from_v1(env_id):
    """v1 closes (and marks) the code fence an upstream reply left open; v0 shows it as it was."""
    env = mappa_envs.make(env_id, reward="outcome", tasks=ADD_TASKS, **FAST)
    assert env.unwrapped.env_id == env_id
    cut = "7 + 5 is\n```python\nx = 7 +"  # cut at the token limit inside its block
    team = team_from_replies(
        {"solver": [cut], "coder": ["It is 12. \\boxed{12}"], "verifier": ["\\boxed{12}"]}
    )
    records, _ = run_episode(env, team, seed=0, options={"task_index": 0})
    coder_view = records[1].observation[1]["content"]
    assert cut in coder_view
    closed = FENCE_CLOSED_NOTE in coder_view
    assert closed == (env_id == "math-chat-v1")
    assert records[0].env_id == env_id  # receipts name the version that produced them
    env.close()


def test_close_open_fence_only_touches_an_odd_number_of_fences():
    assert close_open_fence("no code") == "no code"
    whole = "```python\nprint(1)\n```\nDone."
    assert close_open_fence(whole) == whole
    assert close_open_fence("```python\nx = 1\n") == "```python\nx = 1\n" + FENCE_CLOSED_NOTE
    # a closed block then an open one: three fence lines, so the last is closed
    assert close_open_fence(whole + "\n```python\ny =").endswith("y =\n" + FENCE_CLOSED_NOTE)
    assert close_open_fence("inline ```code``` mention") == "inline ```code``` mention"


def test_code_inside_think_is_not_run_and_not_shown():
    env = _chat()
    team = team_from_replies(
        {
            "solver": ["<think>secret plan</think>\\boxed{12}"],
            "coder": ["<think>```python\nprint('hidden')\n```</think>Answer: \\boxed{12}"],
            "verifier": ["\\boxed{12}"],
        }
    )
    records, _ = run_episode(env, team, seed=0, options={"task_index": 0})
    assert records[1].tool_results == []
    verifier_view = records[-1].observation[1]["content"]
    assert "secret plan" not in verifier_view and "hidden" not in verifier_view
    env.close()


def test_kernel_state_persists_across_an_agents_turns():
    env = _chat()
    team = team_from_replies(
        {
            "solver": ["\\boxed{12}"],
            "coder": ["```python\nx = 7 + 5\n```", "```python\nprint(x)\n```"],
            "verifier": ["\\boxed{12}"],
        }
    )
    records, _ = run_episode(env, team, seed=0, options={"task_index": 0})
    assert records[2].tool_results[0].stdout.strip() == "12"
    env.close()


def test_bad_actions_raise_clear_errors_or_are_clipped():
    env = _chat(max_action_chars=100)
    env.reset(seed=0)
    agent = env.agent_selection
    with pytest.raises(TypeError, match="must be a str"):
        env.step(123)
    assert env.agent_selection == agent and env.unwrapped.records == []  # nothing lost or advanced
    env.step("x" * 500)
    record = env.unwrapped.records[0]
    assert record.action_clipped and record.action.endswith(CLIP_MARKER.format(n=100))
    env.step("")  # an empty answer is a valid (bad) action: it ends the coder's part
    env.step("no boxed answer at all")
    assert env.unwrapped.outcome["answer"] is None and env.unwrapped.outcome["correct"] is False
    env.close()


def test_task_index_and_seed_pick_tasks_deterministically():
    env = _chat()
    env.reset(options={"task_index": 1})
    assert env.unwrapped.task.id == "add-2"
    with pytest.raises(IndexError, match="out of range"):
        env.reset(options={"task_index": 5})
    picks = []
    for _ in range(2):
        env.reset(seed=123)
        picks.append((env.unwrapped.task.id, env.unwrapped.episode_id))
    assert picks[0] == picks[1]
    env.close()


def test_records_are_reproducible_for_a_seed():
    def play():
        env = _chat()
        team = team_from_replies(
            {
                "solver": ["\\boxed{1}"],
                "coder": ["```python\nprint(2)\n```", "done"],
                "verifier": ["\\boxed{12}"],
            }
        )
        records, _ = run_episode(env, team, seed=7)
        env.close()
        return records

    assert play() == play()


def test_debate_visibility_follows_rounds():
    env = mappa_envs.make("math-debate", tasks=ADD_TASKS, debaters=2, rounds=2)
    replies = {
        "debater_0": ["A0 says \\boxed{12}", "A1 \\boxed{12}"],
        "debater_1": ["B0 says \\boxed{13}", "B1 \\boxed{12}"],
        "judge": ["\\boxed{12}"],
    }
    records, outcome = run_episode(env, team_from_replies(replies), seed=0, options={"task_index": 0})
    order = [(r.role, r.round) for r in records]
    assert order == [("debater_0", 0), ("debater_1", 0), ("debater_0", 1), ("debater_1", 1), ("judge", 1)]
    user = [r.observation[1]["content"] for r in records]
    assert "B0" not in user[0] and "A0" not in user[1]  # round 1: nobody sees anybody
    assert "B0" in user[2] and "A0" not in user[2]  # round 2: the others' previous round only
    assert "A0" in user[3] and "A1" not in user[3]  # not the current round's answers
    assert all(s in user[4] for s in ("A0", "B0", "A1", "B1"))  # the judge sees everything
    assert outcome["correct"] is True
    assert env.unwrapped.workspace is None  # no role runs code: no kernel, no folder
    env.close()


def test_render_ansi_returns_the_transcript():
    env = _chat(render_mode="ansi")
    run_episode(
        env,
        team_from_replies({"solver": ["\\boxed{12}"], "coder": ["ok"], "verifier": ["\\boxed{12}"]}),
        seed=0,
    )
    text = env.render()
    assert "Problem Solver" in text and "outcome" in text
    env.close()
