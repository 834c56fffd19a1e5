"""The TRL bridge: GRPOTrainer trains math-chat's coder on the env's reward, with the env's tokens masked."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from mappa_envs.records import Judgement  # noqa: E402
from mappa_envs.scripted import scripted_team  # noqa: E402
from mappa_train.bridges.trl import TOOL_PREFIX, TRLBridge  # noqa: E402
from mappa_train.models import tiny_model_and_tokenizer  # noqa: E402

pytestmark = pytest.mark.slow

TASKS = [
    {"id": "t-add", "problem": "What is 7 + 5?", "answer": "12"},
    {"id": "t-mul", "problem": "What is 6 times 7?", "answer": "42"},
]


class DigitCoach:
    """Scores an action by how many digits its visible text has (capped at 10): a coach whose scores vary even
    over a random tiny model's replies, so GRPO's group advantages are not all zero."""

    name = "digits"

    def judge(self, records, roles, context=""):
        return [
            Judgement(min(10.0, float(len(re.findall(r"\d", r.visible_action)))), "digits", "rules")
            for r in records
        ]

    async def ajudge(self, records, roles, context=""):
        return self.judge(records, roles, context)


def test_grpo_trainer_trains_the_coder_on_the_rewards_the_env_paid(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import GRPOConfig

    model, tokenizer = tiny_model_and_tokenizer()
    bridge = TRLBridge("math-chat-v2", role="coder", tasks=TASKS, coach=DigitCoach(), kernel_pool=0)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_steps=2,
        max_completion_length=32,
        learning_rate=1e-2,
        use_cpu=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = bridge.trainer(model, args, processing_class=tokenizer)
    try:
        trainer.train()
        episodes = bridge.episodes
        assert len(episodes) == 8  # 2 steps x 1 task x 4 generations
        for e in episodes:  # what the wrapper paid each coder action: its coach score / 10
            coder = [r for r in e.records if r.role == "coder"]
            assert e.action_rewards == [r.judgement.score / 10 for r in coder]
            assert e.action_rewards == [min(10, len(re.findall(r"\d", r.visible_action))) / 10 for r in coder]
        logged = list(trainer._logs["rewards"]["mappa_reward"])  # TRL keeps the last logging window's rewards
        assert len(logged) >= 4
        assert logged == pytest.approx([e.reward for e in episodes[-len(logged) :]], abs=1e-6)
        per_step = [h["rewards/mappa_reward/mean"] for h in trainer.state.log_history if "reward" in h]
        means = [sum(e.reward for e in episodes[i : i + 4]) / 4 for i in (0, 4)]
        assert per_step == pytest.approx(means, abs=1e-6)
        assert len({e.reward for e in episodes}) > 1, "the rewards must vary for GRPO to have a gradient"
        moved = [n for n, p in model.named_parameters() if not torch.equal(before[n].cpu(), p.detach().cpu())]
        assert moved, "no weight of the coder moved"
    finally:
        bridge.close()


def _scripted_generator(tokenizer, replies):
    """A stand-in for ``GRPOTrainer._generate_single_turn`` that 'samples' the scripted coder's replies."""
    calls = []

    def generate(prompt_ids, images, multimodal_fields, num_generations):
        calls.append([list(p) for p in prompt_ids])
        reply = replies[len(calls) - 1]
        ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return [list(ids) for _ in prompt_ids], None

    return generate, calls


def test_completion_is_the_learners_turns_with_the_env_tokens_masked():
    """Two coder turns: sampled ids, then the tool output rendered by the chat template (mask 0), then sampled ids;
    each turn is generated from exactly the env's observation rendered, and the return is what the coach paid."""
    _, tokenizer = tiny_model_and_tokenizer()
    team = scripted_team("math-chat")
    bridge = TRLBridge("math-chat-v2", role="coder", tasks=TASKS, kernel_pool=0)
    try:
        prompt = bridge.dataset()[0]["prompt"]
        env = bridge._pool[0]
        obs, _ = env.reset(seed=0, options={"task_index": 0})
        first = team("coder", obs["messages"])
        replies = [first, "The code printed 12, so the answer is \\boxed{12}."]
        generate, calls = _scripted_generator(tokenizer, replies)
        trainer = SimpleNamespace(
            processing_class=tokenizer, max_completion_length=512, _generate_single_turn=generate
        )
        out = bridge.rollout([prompt], trainer)
        ids, mask = out["completion_ids"][0], out["env_mask"][0]
        turn1 = tokenizer(replies[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        turn2 = tokenizer(replies[1], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        n_env = len(ids) - len(turn1) - len(turn2)
        assert n_env > 0
        assert ids[: len(turn1)] == turn1 and ids[len(ids) - len(turn2) :] == turn2
        assert mask == [1] * len(turn1) + [0] * n_env + [1] * len(turn2)
        env_text = tokenizer.decode(ids[len(turn1) : len(turn1) + n_env])
        assert env_text.startswith("\n<|im_start|>user\n" + TOOL_PREFIX) and "12" in env_text
        assert env_text.endswith("<|im_start|>assistant\n")
        # turn 2 was generated from the env's own observation, rendered: no token of turn 1 re-tokenised
        episode = bridge.episodes[-1]
        second_obs = [r for r in episode.records if r.role == "coder"][1].observation
        assert calls[1][0] == bridge._render(trainer, second_obs, generation_prompt=True)
        assert calls[0][0] == out["prompt_ids"][0]
        coder = [r for r in episode.records if r.role == "coder"]
        assert out["action_rewards"] == [[r.judgement.score / 10 for r in coder]]
        assert (
            out["mappa_return"] == [pytest.approx(sum(out["action_rewards"][0]))]
            and out["mappa_return"][0] > 0
        )
        assert episode.outcome["success"] is True and bridge.cut_turns == 0
    finally:
        bridge.close()


def test_budget_cuts_the_turn_and_the_episode_still_ends():
    _, tokenizer = tiny_model_and_tokenizer()
    bridge = TRLBridge("math-chat-v2", role="coder", tasks=TASKS, kernel_pool=0)
    try:
        replies = ["```python\nprint(7 + 5)\n```", "unused"]
        generate, calls = _scripted_generator(tokenizer, replies)
        trainer = SimpleNamespace(
            processing_class=tokenizer, max_completion_length=6, _generate_single_turn=generate
        )
        out = bridge.rollout(bridge.dataset()[:1]["prompt"], trainer)
        assert len(out["completion_ids"][0]) == 6 and out["env_mask"][0] == [1] * 6
        assert len(calls) == 1 and bridge.cut_turns == 0  # the cut reply had no code: the coder's part ended
        assert bridge.episodes[-1].outcome is not None
    finally:
        bridge.close()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="tool_role"):
        TRLBridge("math-chat-v2", role="coder", tasks=TASKS, tool_role="system")
    bridge = TRLBridge("math-chat-v2", role="coder", tasks=TASKS, kernel_pool=0)
    try:
        with pytest.raises(ValueError, match=r"names no task of math-chat-v2: build the train_dataset"):
            bridge.rollout([[{"role": "user", "content": "What is 1 + 1?"}]], SimpleNamespace())
    finally:
        bridge.close()


def test_an_observation_that_rewrites_earlier_messages_is_counted_and_the_context_extended():
    """The coder writes a file, so its next observation's user message lists it: the bridge keeps the tokens the
    model holds, appends the tool output, counts the rewrite, and the episode is graded as usual."""
    _, tokenizer = tiny_model_and_tokenizer()
    bridge = TRLBridge("math-chat-v2", role="coder", tasks=TASKS, kernel_pool=0)
    try:
        replies = ["```python\nopen('note.txt', 'w').write('12')\nprint(7 + 5)\n```", "So \\boxed{12}."]
        generate, calls = _scripted_generator(tokenizer, replies)
        trainer = SimpleNamespace(
            processing_class=tokenizer, max_completion_length=512, _generate_single_turn=generate
        )
        out = bridge.rollout(bridge.dataset()[:1]["prompt"], trainer)
        episode = bridge.episodes[-1]
        second_obs = [r for r in episode.records if r.role == "coder"][1].observation
        assert "note.txt" in second_obs[1]["content"] and bridge.rewritten_contexts == 1
        assert calls[1][0][: len(out["prompt_ids"][0])] == out["prompt_ids"][0]  # the held context, extended
        assert calls[1][0] != bridge._render(trainer, second_obs, generation_prompt=True)
        assert "12" in tokenizer.decode(
            [t for t, m in zip(out["completion_ids"][0], out["env_mask"][0], strict=True) if not m]
        )
        assert episode.outcome["success"] is True
    finally:
        bridge.close()
