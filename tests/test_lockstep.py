"""mappa_envs.lockstep.play: several envs, any policy, the same episodes as one at a time."""

from __future__ import annotations

import pytest

import mappa_envs
from mappa_envs.lockstep import play
from mappa_envs.scripted import scripted_team

TASKS = "embedded:one-step-eval"


def _sequential(team, resets):
    env = mappa_envs.make("math-chat", tasks=TASKS)
    out = []
    try:
        for kwargs in resets:
            env.reset(**kwargs)
            total: dict[str, float] = {}
            for agent in env.agent_iter():
                obs, reward, term, trunc, _ = env.last()
                total[agent] = total.get(agent, 0.0) + reward
                env.step(None if term or trunc else team(agent, obs["messages"]))
            out.append((env.unwrapped.task.id, env.unwrapped.outcome["correct"], total))
    finally:
        env.close()
    return out


@pytest.mark.slow
def test_lockstep_plays_the_same_episodes_with_batched_calls():
    team = scripted_team("math-chat")
    resets = [{"seed": i, "options": {"task_index": i}} for i in range(5)]
    calls: list[tuple[str, int]] = []

    def act_batch(agent, many):
        calls.append((agent, len(many)))
        return [team(agent, m) for m in many]

    envs = [mappa_envs.make("math-chat", tasks=TASKS) for _ in range(3)]
    try:
        played = play(envs, resets, act_batch=act_batch)
    finally:
        for env in envs:
            env.close()
    assert [(p.task_id, p.outcome["correct"], p.returns) for p in played] == _sequential(team, resets)
    assert max(n for _, n in calls) == 3  # three envs answered in one call
    assert all(len(p.records) >= 3 for p in played)


def test_play_wants_one_policy():
    with pytest.raises(TypeError, match="exactly one of"):
        play([object()], [{}])
    with pytest.raises(ValueError, match="at least one env"):
        play([], [{}], act=lambda a, m: "")
