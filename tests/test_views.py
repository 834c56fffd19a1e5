"""The single-agent Gymnasium view: env_checker, seeding, the reward the wrapper paid, teammates hidden, episode end."""

from __future__ import annotations

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mappa_envs
from mappa_envs.rewards import paid
from mappa_envs.scripted import scripted_team
from mappa_envs.views import SingleAgentEnv

TASKS = [
    {"id": "t-add", "problem": "What is 7 + 5?", "answer": "12"},
    {"id": "t-mul", "problem": "What is 6 times 7?", "answer": "42"},
    {"id": "t-hard", "problem": "How many primes are there below 30?", "answer": "10"},
]


def view(**kwargs) -> SingleAgentEnv:
    kwargs.setdefault("tasks", TASKS)
    return SingleAgentEnv("math-chat-v2", role=kwargs.pop("role", "coder"), **kwargs)


def play(env, policy, seed, options=None):
    """One view episode with ``policy(messages) -> str`` for the learner: (observations, rewards, infos)."""
    obs, info = env.reset(seed=seed, options=options)
    observations, rewards, infos = [obs], [], [info]
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs["messages"]))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
    return observations, rewards, infos


def scripted_coder():
    team = scripted_team("math-chat")
    return lambda messages: team("coder", messages)


def test_env_checker_passes_directly_and_through_gymnasium_make():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns that a text env declares no render fps
        env = view()
        check_env(env)
        env.close()
        made = gymnasium.make("mappa/math-chat-v2", role="verifier", tasks=TASKS)
        check_env(made.unwrapped)
        assert made.unwrapped.role == "verifier"
        made.close()


def test_every_mappa_id_is_registered_with_gymnasium():
    ids = set(gymnasium.envs.registration.registry)
    assert {f"mappa/{i}" for i in mappa_envs.registry} <= ids
    spec = gymnasium.spec("mappa/dsbench-3agent-v1")
    assert spec.entry_point == "mappa_envs.views:SingleAgentEnv" and spec.kwargs == {
        "env": "dsbench-3agent-v1"
    }


def test_same_seed_same_episode_other_seed_other_task():
    a, b = view(), view()
    try:
        runs = [play(e, scripted_coder(), seed=3) for e in (a, b)]
        (obs_a, rew_a, info_a), (obs_b, rew_b, info_b) = runs
        assert obs_a == obs_b and rew_a == rew_b
        assert [i.get("record") for i in info_a] == [i.get("record") for i in info_b]
        assert info_a[0]["episode_id"] == info_b[0]["episode_id"]
        tasks = {a.reset(seed=s)[1]["task_id"] for s in range(8)}
        assert len(tasks) > 1, "seeds should pick different tasks"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("hindsight", [True, False])
def test_reward_is_what_the_aec_wrapper_paid_the_role(hindsight):
    """Per step, the view's reward equals the role's PettingZoo reward in a plain AEC loop over the same episode."""
    team = scripted_team("math-chat")
    aec = mappa_envs.make("math-chat-v2", tasks=TASKS, hindsight=hindsight)
    aec_rewards = []  # the coder's last() reward at each of its turns and at the end
    aec.reset(seed=1)
    for agent in aec.agent_iter():
        obs, reward, term, trunc, _ = aec.last()
        if agent == "coder":
            aec_rewards.append(reward)
        aec.step(None if term or trunc else team(agent, obs["messages"]))
    aec_paid = [v for r, v in zip(aec.unwrapped.records, paid(aec), strict=True) if r.role == "coder"]
    aec.close()

    env = view(hindsight=hindsight)
    try:
        _, rewards, infos = play(env, scripted_coder(), seed=1)
        assert rewards == aec_rewards[1:]  # the first reading is from before the coder acted
        assert infos[-1]["paid"] == aec_paid == env.paid()
        assert sum(rewards) == pytest.approx(sum(aec_paid))
        assert sum(aec_paid) > 0  # the rules coach pays a coder that computed the answer
        if hindsight:
            assert rewards[:-1] == [0.0] * (len(rewards) - 1)  # the hindsight coach pays at the end
        else:
            assert rewards[0] > 0  # online: paid at once, seen on the next step
    finally:
        env.close()


def test_outcome_reward_is_paid_to_every_learner_action():
    env = view(reward="outcome")
    try:
        _, rewards, infos = play(env, scripted_coder(), seed=0, options={"task_index": 0})
        assert infos[-1]["outcome"]["success"] is True
        assert infos[-1]["paid"] == [1.0, 1.0] and sum(rewards) == 2.0
    finally:
        env.close()


def test_teammates_turns_are_not_steps():
    calls: list[str] = []
    team = scripted_team("math-chat")

    def teammate(agent, messages):
        calls.append(agent)
        return team(agent, messages)

    env = view(teammates=teammate)
    try:
        observations, _, infos = play(env, scripted_coder(), seed=0, options={"task_index": 1})
        assert "Problem Solver" in observations[0]["messages"][1]["content"]
        steps = infos[1:]
        assert all(i["record"].role == "coder" for i in steps)
        assert len(steps) == len(env.records) == 2  # code, then the answer: the coder's max_turns
        assert calls == ["solver", "verifier"]  # at reset, then after the coder's last turn
        records = env.aec.unwrapped.records
        assert [r.role for r in records] == ["solver", "coder", "coder", "verifier"]
    finally:
        env.close()


def test_episode_ends_properly_and_the_env_resets():
    env = view()
    try:
        obs, _, infos = play(env, scripted_coder(), seed=0)
        last = infos[-1]
        assert last["outcome"] is not None and "paid" in last
        assert env.observation_space.contains(obs[-1])
        with pytest.raises(RuntimeError, match="call reset"):
            env.step("again")
        second = play(env, lambda m: "I pass.", seed=5)
        assert len(second[1]) == 1  # an answer without code ends the coder's part at once
    finally:
        env.close()


def test_per_role_teammates_and_bad_input():
    team = scripted_team("math-chat")
    env = view(teammates={"solver": team, "verifier": team})
    env.close()
    with pytest.raises(ValueError, match=r"teammates has no policy for \['verifier'\]"):
        view(teammates={"solver": team})
    with pytest.raises(ValueError, match="role 'judge' is not an agent"):
        view(role="judge")
    with pytest.raises(TypeError, match="no reward wrapper"):
        SingleAgentEnv(mappa_envs.raw_env("math-chat-v2", tasks=TASKS), role="coder")


def test_a_frozen_local_model_plays_the_teammates():
    pytest.importorskip("torch")
    from mappa_train.models import tiny_model_and_tokenizer
    from mappa_train.policy import TeamPolicy

    model, tokenizer = tiny_model_and_tokenizer()
    policy = TeamPolicy(model, tokenizer, ["solver", "coder", "verifier"], max_new_tokens=8).eval()
    said: dict[str, str] = {}

    def teammate(agent, messages):
        said[agent] = policy.generate(agent, [messages])[0].text
        return said[agent]

    env = view(teammates=teammate)
    try:
        _, rewards, infos = play(env, lambda m: "I pass.", seed=0)
        records = env.aec.unwrapped.records
        assert [r.role for r in records] == ["solver", "coder", "verifier"]
        assert records[0].action == said["solver"] and records[2].action == said["verifier"]
        assert len(rewards) == 1 and infos[-1]["outcome"] is not None
    finally:
        env.close()
