"""Lockstep rollouts: one generation batch per role per tick, rewards as the env's wrapper paid them."""

from __future__ import annotations

import mappa_envs
from mappa_train.rollout import episodes_to_samples, run_rollouts
from mappa_train.types import Generation

TASKS = [{"problem": "What is 7 + 5?", "answer": "12"}, {"problem": "What is 2 + 2?", "answer": "4"}]


class ScriptedPolicy:
    """A policy that replies from a script and records every batch it was asked for."""

    roles = ["solver", "coder", "verifier"]

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def generate(self, role, prompts):
        self.calls.append((role, len(prompts)))
        text = {"solver": "\\boxed{12}", "coder": "no code: \\boxed{12}", "verifier": "\\boxed{12}"}[role]
        return [Generation(text, [1, 2], [3, 4], [-0.5, -0.1], False) for _ in prompts]


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
    assert policy.calls[:3] == [("solver", 3), ("coder", 3), ("verifier", 3)]  # 3 envs, one batch per role
    assert sum(n for _, n in policy.calls) == 5 * 3
    samples = episodes_to_samples(episodes)
    assert (
        len(samples) == 15
        and samples[0].completion_ids == [3, 4]
        and samples[0].behaviour_logprobs == [-0.5, -0.1]
    )
    assert [s.reward for s in samples[:3]] == [1.0, 1.0, 1.0]  # outcome reward for every action


def test_rollout_rewards_follow_the_reward_wrapper_including_mixtures():
    for reward in ({"coach": 0.5, "outcome": 0.5}, "coach"):
        env = mappa_envs.make("math-chat", tasks=TASKS, reward=reward, kernel_pool=0)
        (episode,) = run_rollouts(
            [env], ScriptedPolicy(), [{"seed": 0, "options": {"task_index": 0}}], progress=False
        )
        paid = env.agent_rewards()
        env.close()
        per_role = {r.role: x for r, x in zip(episode.records, episode.rewards, strict=True)}
        assert per_role == paid
