"""Continuous batching: mixed-adapter rows, refilled batches, rollouts that step an episode when its reply ends."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import mappa_envs
from mappa_train.models import tiny_model_and_tokenizer
from mappa_train.policy import TeamPolicy
from mappa_train.rollout import episodes_to_samples, run_rollouts
from mappa_train.sampler import Request, SamplingSettings

ROLES = ["solver", "coder", "verifier"]
TASKS = [{"problem": "What is 7 + 5?", "answer": "12"}, {"problem": "What is 2 + 2?", "answer": "4"}]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer()


def make_policy(tiny, **kwargs) -> TeamPolicy:
    model, tokenizer = tiny
    kwargs.setdefault("max_new_tokens", 8)
    policy = TeamPolicy(copy.deepcopy(model), tokenizer, ROLES, **kwargs)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # adapters that differ (LoRA B starts at zero)
        torch.manual_seed(1)
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return policy


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(5, 200, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


def test_mixed_adapter_batch_gives_the_per_role_logits(tiny):
    policy = make_policy(tiny)
    rows = prompts(6)
    roles = ["solver", "coder", "verifier", "coder", "solver", "verifier"]
    width = max(map(len, rows))
    ids = torch.tensor([[policy.pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        mixed = policy.model(input_ids=ids, attention_mask=mask, position_ids=pos, adapter_names=roles).logits
        for role in ROLES:
            idx = [i for i, r in enumerate(roles) if r == role]
            alone = policy.weights.model_for(role)(
                input_ids=ids[idx], attention_mask=mask[idx], position_ids=pos[idx]
            ).logits
            assert torch.allclose(mixed[idx] * mask[idx, :, None], alone * mask[idx, :, None], atol=1e-5)
        # the adapters really differ: otherwise the check above could not fail
        a = policy.weights.model_for("solver")(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        b = policy.weights.model_for("coder")(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        assert (a - b).abs().max() > 1e-2


def drain(decoder, feed: dict[int, list[tuple]]) -> tuple[dict, list[int]]:
    """Step ``decoder``, submitting ``feed[step]`` before that step; the replies by key and the batch sizes."""
    out, sizes, step = {}, [], 0
    while decoder.active or any(s >= step for s in feed):
        for key, role, ids, seed in feed.pop(step, []):
            decoder.submit(key, role, ids, seed)
        sizes.append(decoder.active)
        for key, gen in decoder.step():
            out[key] = gen
        step += 1
    return out, sizes


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_continuous_batching_returns_the_ids_of_one_at_a_time(tiny, temperature):
    policy = make_policy(tiny, max_new_tokens=10)
    tokenizer = tiny[1]
    # stop tokens the random model emits sometimes, so rows end at different steps and the batch is refilled
    vocab = policy.config.vocab_size
    policy.stop_token_ids = [7, 11, 23, 42, 99, 150] if temperature == 0 else list(range(0, vocab, 6))
    settings = SamplingSettings(max_new_tokens=10, temperature=temperature)
    rows = prompts(7, seed=3)
    roles = [ROLES[i % 3] for i in range(7)]
    feed = {0: [], 2: [], 5: []}
    for i, (role, ids) in enumerate(zip(roles, rows, strict=True)):
        feed[[0, 0, 0, 2, 2, 5, 5][i]].append((i, role, ids, 1000 + i))
    out, sizes = drain(policy.sampler.open(settings), feed)
    assert sorted(out) == list(range(7)) and max(sizes) > 3
    lengths = {len(g.completion_ids) for g in out.values()}
    assert len(lengths) > 1, "every row had the same length: the refill path was not exercised"
    for i, (role, ids) in enumerate(zip(roles, rows, strict=True)):
        alone, _ = drain(policy.sampler.open(settings), {0: [(0, role, ids, 1000 + i)]})
        assert out[i].completion_ids == alone[0].completion_ids
        assert out[i].logprobs == pytest.approx(alone[0].logprobs, abs=1e-4)
        assert out[i].prompt_ids == ids and out[i].text == tokenizer.decode(
            out[i].completion_ids, skip_special_tokens=True
        )
        if temperature == 0:  # greedy: exactly the per-role batch of HFSampler.generate
            (ref,) = policy.sampler.generate([Request(role, ids)], settings)
            assert out[i].completion_ids == ref.completion_ids and out[i].truncated == ref.truncated


class GenerateOnly:
    """The policy behind a sampler that offers only ``generate``: run_rollouts falls back to the lockstep loop."""

    def __init__(self, policy: TeamPolicy) -> None:
        self.policy, self.roles, self.calls = policy, policy.roles, []

    def generate(self, role, prompts):
        self.calls.append((role, len(prompts)))
        return self.policy.generate(role, prompts)


class Watched:
    """A continuous decoder that records the roles of the rows each step decodes."""

    def __init__(self, inner, seen: list[list[str]]) -> None:
        self.inner, self.seen = inner, seen

    active = property(lambda self: self.inner.active)

    def submit(self, *args) -> None:
        self.inner.submit(*args)

    def step(self):
        self.seen.append([r.role for r in self.inner.decoder.rows])
        return self.inner.step()


def test_rollouts_with_refill_play_every_episode_aligned(tiny, monkeypatch):
    policy = make_policy(tiny, max_new_tokens=6, temperature=0.0)
    # many stop ids: replies end at different lengths, so episodes drift apart and roles share decode steps
    policy.stop_token_ids = list(range(0, policy.config.vocab_size, 5))
    envs = [mappa_envs.make("math-chat", tasks=TASKS, reward="outcome", kernel_pool=0) for _ in range(3)]
    resets = [{"seed": i, "options": {"task_index": i % 2}} for i in range(7)]
    seen: list[list[str]] = []
    opened = policy.decoder
    monkeypatch.setattr(policy, "decoder", lambda: Watched(opened(), seen))
    try:
        refill = run_rollouts(envs, policy, resets, progress=False)
        monkeypatch.undo()
        tick_policy = GenerateOnly(policy)
        tick = run_rollouts(envs, tick_policy, resets, progress=False)
    finally:
        for env in envs:
            env.close()
    assert tick_policy.calls  # the fallback path really ran
    mixed = sum(len(set(roles)) > 1 for roles in seen)
    print(f"{mixed} of {len(seen)} decode steps mixed roles")
    assert mixed, "no decode step mixed roles"
    assert len(refill) == 7 and [e.task_id for e in refill] == [e.task_id for e in tick]
    assert refill[0].task_id != refill[1].task_id  # in the order of `resets`
    for a, b in zip(refill, tick, strict=True):
        assert len(a.records) == len(a.generations) == len(a.rewards) > 0
        assert [r.role for r in a.records] == [r.role for r in b.records]
        # greedy: the refilled mixed-role batch sampled the same ids as the per-role lockstep batches
        assert [g.completion_ids for g in a.generations] == [g.completion_ids for g in b.generations]
        assert [g.prompt_ids for g in a.generations] == [g.prompt_ids for g in b.generations]
    samples = episodes_to_samples(refill)
    assert len(samples) == sum(len(e.generations) for e in refill)


def test_sampled_rollouts_are_reproducible_under_manual_seed(tiny):
    policy = make_policy(tiny, max_new_tokens=6, temperature=1.0)
    envs = [mappa_envs.make("math-chat", tasks=TASKS, reward="outcome", kernel_pool=0) for _ in range(2)]
    resets = [{"seed": i, "options": {"task_index": i % 2}} for i in range(3)]
    try:
        runs = []
        for _ in range(2):
            torch.manual_seed(5)
            runs.append(run_rollouts(envs, policy, resets, progress=False))
        torch.manual_seed(6)
        other = run_rollouts(envs, policy, resets, progress=False)
    finally:
        for env in envs:
            env.close()
    ids = [[[g.completion_ids for g in e.generations] for e in run] for run in (*runs, other)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_full_mode_has_no_decoder_and_falls_back(tiny):
    model, tokenizer = tiny
    policy = TeamPolicy(copy.deepcopy(model), tokenizer, ROLES, mode="full", max_new_tokens=4)
    assert policy.decoder() is None
