"""Lockstep rollouts: one generation batch per role per tick, rewards as the env's wrapper paid them."""

from __future__ import annotations

import pytest

import mappa_envs
from mappa_train.rollout import draw_resets, episodes_to_samples, run_rollouts
from mappa_train.types import Generation

TASKS = [{"problem": "What is 7 + 5?", "answer": "12"}, {"problem": "What is 2 + 2?", "answer": "4"}]


class ScriptedPolicy:
    """A policy that replies from a script and records every batch it was asked for."""

    roles = ["solver", "coder", "verifier"]

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def generate(self, role, prompts):
        self.calls.append((role, len(prompts)))
        replies = []
        for messages in prompts:
            if role == "coder" and messages[-1]["role"] != "tool":  # first turn: run code, keep the turn
                text = "```python\nprint(7 + 5)\n```"
            else:
                text = "\\boxed{12}"
            replies.append(Generation(text, [1, 2], [3, 4], [-0.5, -0.1], False))
        return replies


def test_episodes_run_in_lockstep_batched_by_role():
    envs = [mappa_envs.make("math-chat", tasks=TASKS, reward="outcome", kernel_pool=0) for _ in range(3)]
    policy = ScriptedPolicy()
    resets = [{"seed": i, "options": {"task_index": i % 2}} for i in range(5)]
    episodes = run_rollouts(envs, policy, resets, progress=False)
    for env in envs:
        env.close()
    ids = [e.task_id for e in episodes]
    assert ids[0] != ids[1] and ids == [ids[i % 2] for i in range(5)]  # in the order of `resets`
    assert [e.success for e in episodes] == [True, False, True, False, True]  # 12 is right only for task 0
    # 3 envs, one batch per role; the coder runs code, then answers on its second turn
    assert policy.calls[:4] == [("solver", 3), ("coder", 3), ("coder", 3), ("verifier", 3)]
    assert sum(n for _, n in policy.calls) == 5 * 4
    samples = episodes_to_samples(episodes)
    assert (
        len(samples) == 20
        and samples[0].completion_ids == [3, 4]
        and samples[0].behaviour_logprobs == [-0.5, -0.1]
    )
    assert [s.role for s in samples[:4]] == ["solver", "coder", "coder", "verifier"]
    # the outcome for every action, the coder's code-running turn included
    assert [s.reward for s in samples[:4]] == [1.0, 1.0, 1.0, 1.0]
    assert [s.reward for s in samples[4:8]] == [0.0, 0.0, 0.0, 0.0]


def test_rollout_rewards_follow_the_reward_wrapper_including_mixtures():
    for reward in ({"coach": 0.5, "outcome": 0.5}, "coach"):
        env = mappa_envs.make("math-chat", tasks=TASKS, reward=reward, kernel_pool=0)
        (episode,) = run_rollouts(
            [env], ScriptedPolicy(), [{"seed": 0, "options": {"task_index": 0}}], progress=False
        )
        totals, per_action = env.agent_rewards(), env.action_rewards()
        env.close()
        assert episode.rewards == per_action  # exactly what the wrapper paid, action by action
        per_role: dict[str, float] = {}
        for r, x in zip(episode.records, episode.rewards, strict=True):
            per_role[r.role] = per_role.get(r.role, 0.0) + x
        assert per_role == totals


def test_draw_resets_group_size_one_is_the_plain_draw_and_groups_repeat_a_task():
    import numpy as np

    plain = draw_resets(seed=3, step=7, n_tasks=50, episodes=6)
    rng = np.random.default_rng([3, 7])  # the draw every published run used: unchanged by the group sampler
    tasks, seeds = rng.integers(50, size=6), rng.integers(2**31, size=6)
    assert plain == [
        {"seed": int(s), "options": {"task_index": int(t)}} for t, s in zip(tasks, seeds, strict=True)
    ]
    grouped = draw_resets(seed=3, step=7, n_tasks=50, episodes=6, group_size=3)
    task_of = [r["options"]["task_index"] for r in grouped]
    assert task_of[:3] == [task_of[0]] * 3 and task_of[3:] == [task_of[3]] * 3  # 2 tasks x 3 replies
    assert len({r["seed"] for r in grouped}) == 6  # each reply its own episode seed
    # data parallel: whole groups per rank, together exactly the single-process draw
    ranks = [draw_resets(3, 7, 50, 6, group_size=3, rank=r, world=2) for r in (0, 1)]
    assert ranks[0] == grouped[:3] and ranks[1] == grouped[3:]
    with pytest.raises(ValueError, match="multiple of group_size"):
        draw_resets(3, 7, 50, 5, group_size=2)
