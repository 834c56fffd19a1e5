"""TeamPolicy on the tiny model: chat rendering, sampling contract, adapter separation, KL 0 at init, save/load."""

from __future__ import annotations

import copy
import json
import math
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from mappa_train.logprobs import completion_logprobs
from mappa_train.models import CHATML_TEMPLATE, load_base, tiny_model_and_tokenizer
from mappa_train.policy import TeamPolicy
from mappa_train.prompting import TRUNCATION_MARKER
from mappa_train.sampler import Request, SamplingSettings, sample_next
from mappa_train.types import Generation

ROLES = ["solver", "coder", "verifier"]
SYSTEM = {"role": "system", "content": "You are the Solver. Put your final answer in \\boxed{}."}
PROMPTS = [
    [SYSTEM, {"role": "user", "content": "What is 7 + 5?"}],
    [SYSTEM, {"role": "user", "content": "What is 20 + 22? Show the python code and then the answer."}],
    [
        SYSTEM,
        {"role": "user", "content": "Compute 3 * 4."},
        {"role": "assistant", "content": "```python\nprint(3 * 4)\n```"},
        {"role": "tool", "content": "12"},
    ],
]


def score(policy: TeamPolicy, role: str | None, prompts, completions) -> list[torch.Tensor]:
    """Log-probs of completions under ``role`` (``None``: the reference) via the trainer's scorer."""
    context = policy.reference() if role is None else policy.forward_role(role)
    temperature = policy.temperature if policy.temperature > 0 else 1.0
    with context as model:
        return completion_logprobs(model, prompts, completions, policy.pad_id, temperature=temperature)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer()


def make_policy(tiny, **kwargs) -> TeamPolicy:
    model, tokenizer = tiny
    kwargs.setdefault("max_new_tokens", 8)
    return TeamPolicy(copy.deepcopy(model), tokenizer, ROLES, **kwargs)


def pairs(gens: list[Generation]):
    return [g.prompt_ids for g in gens], [g.completion_ids for g in gens]


def lm_head_of(policy: TeamPolicy, role: str = "solver"):
    with policy.forward_role(role) as model:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return base.get_output_embeddings()


def add_logit_bias(policy: TeamPolicy, bias_for_call):
    """Forward hook on the LM head adding ``bias_for_call(call_index)`` (batch × vocab) to the logits."""
    calls = {"n": 0}

    def hook(_module, _inputs, output):
        bias = bias_for_call(calls["n"]).to(output.dtype)
        calls["n"] += 1
        return output + bias[:, None, :]

    return lm_head_of(policy).register_forward_hook(hook)


def one_step(policy: TeamPolicy, role: str, gens: list[Generation], lr: float = 1e-2) -> None:
    policy.train()
    opt = torch.optim.Adam(policy.trainable_parameters(role), lr=lr)
    prompts, completions = pairs(gens)
    loss = -torch.cat(score(policy, role, prompts, completions)).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    policy.eval()


def scores(policy: TeamPolicy, gens: list[Generation]) -> dict[str | None, torch.Tensor]:
    prompts, completions = pairs(gens)
    with torch.no_grad():
        return {r: torch.cat(score(policy, r, prompts, completions)) for r in [*ROLES, None]}


# ------------------------------------------------------------------------------------------------------- prompts


def test_tiny_model_is_deterministic_and_tokenizer_round_trips(tiny):
    model, tokenizer = tiny
    model2, tokenizer2 = tiny_model_and_tokenizer()
    assert tokenizer.get_vocab() == tokenizer2.get_vocab()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))
    text = "héllo wörld 🙂\n\tprint(1 + 1)  # \\boxed{2}"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"


def test_chat_template_renders_all_roles(tiny):
    _, tokenizer = tiny
    assert tokenizer.chat_template == CHATML_TEMPLATE
    text = tokenizer.apply_chat_template(PROMPTS[2], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are the Solver. Put your final answer in \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nCompute 3 * 4.<|im_end|>\n"
        "<|im_start|>assistant\n```python\nprint(3 * 4)\n```<|im_end|>\n"
        "<|im_start|>tool\n12<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    policy = make_policy(tiny)
    # default: a tool turn becomes a user turn with a prefix (SmolLM2 never saw a "tool" role)
    rendered = tokenizer.decode(policy.encode_prompt(PROMPTS[2]))
    assert "<|im_start|>user\nOutput of your code:\n12<|im_end|>\n<|im_start|>assistant\n" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    passthrough = make_policy(tiny, tool_role="tool")
    assert "<|im_start|>tool\n12<|im_end|>" in tokenizer.decode(passthrough.encode_prompt(PROMPTS[2]))


def test_long_prompt_is_cut_from_the_left_of_user_content(tiny):
    _, tokenizer = tiny
    policy = make_policy(tiny, max_prompt_tokens=60)
    long_task = " ".join(f"word{i}" for i in range(300)) + " END OF TASK"
    ids = policy.encode_prompt([SYSTEM, {"role": "user", "content": long_task}])
    text = tokenizer.decode(ids)
    assert len(ids) <= 60 and policy.prompt_truncations == 1
    assert text.startswith("<|im_start|>system\n" + SYSTEM["content"] + "<|im_end|>")  # system kept whole
    assert TRUNCATION_MARKER in text and "END OF TASK<|im_end|>\n<|im_start|>assistant\n" in text
    assert "word0 " not in text
    assert len(policy.encode_prompt([SYSTEM, {"role": "user", "content": "short"}])) < 60
    with pytest.raises(ValueError, match="even with all non-system content removed"):
        policy.encode_prompt([{"role": "system", "content": long_task}, {"role": "user", "content": "hi"}])
    gens = policy.generate("solver", [[SYSTEM, {"role": "user", "content": long_task}]])
    assert len(gens[0].prompt_ids) <= 60


# ------------------------------------------------------------------------------------------------------- sampling


def test_generate_returns_sampled_ids_text_and_logprobs(tiny):
    _, tokenizer = tiny
    policy = make_policy(tiny, max_new_tokens=10)
    torch.manual_seed(0)
    gens = policy.generate("solver", PROMPTS)
    assert len(gens) == 3
    for g, prompt in zip(gens, PROMPTS, strict=True):
        assert g.prompt_ids == policy.encode_prompt(prompt)
        assert g.text == tokenizer.decode(g.completion_ids, skip_special_tokens=True)
        assert len(g.logprobs) == len(g.completion_ids) > 0
        assert all(math.isfinite(x) and x <= 0 for x in g.logprobs)
        stops = set(policy.stop_token_ids)
        assert g.truncated == (g.completion_ids[-1] not in stops)
        assert not any(t in stops for t in g.completion_ids[:-1])
        if g.truncated:
            assert len(g.completion_ids) == 10
    torch.manual_seed(0)
    again = policy.generate("solver", PROMPTS)
    assert again == gens  # deterministic under a torch seed
    with policy.sampling(temperature=0, max_new_tokens=3):
        greedy = policy.generate("solver", PROMPTS)
        assert greedy == policy.generate("solver", PROMPTS, temperature=0, max_new_tokens=3)
    assert all(len(g.completion_ids) <= 3 for g in greedy)
    assert (policy.temperature, policy.max_new_tokens) == (1.0, 10)
    assert policy.generate("solver", []) == []


def test_stop_token_cuts_each_row_and_sets_truncated(tiny):
    policy = make_policy(tiny, max_new_tokens=6)
    eos = policy.tokenizer.eos_token_id
    vocab = len(policy.tokenizer)

    def bias(call):  # row 0 must end its turn at its 3rd token, row 1 can never end
        b = torch.zeros(2, vocab)
        b[1, policy.stop_token_ids] = -1e4
        if call >= 2:
            b[0, eos] = 1e4
        return b

    handle = add_logit_bias(policy, bias)
    try:
        gens = policy.generate("coder", PROMPTS[:2])
    finally:
        handle.remove()
    first, second = gens
    assert len(first.completion_ids) == 3 and first.completion_ids[-1] == eos and not first.truncated
    assert first.logprobs[-1] == pytest.approx(0.0, abs=1e-4)
    assert len(second.completion_ids) == 6 and second.truncated and eos not in second.completion_ids
    assert "<|im_end|>" not in first.text


def test_batched_prompts_of_different_lengths_match_unbatched(tiny):
    policy = make_policy(tiny, max_new_tokens=8)
    torch.manual_seed(1)
    gens = policy.generate("verifier", PROMPTS)
    assert len({len(g.prompt_ids) for g in gens}) == 3  # different lengths → left padding was exercised
    for g in gens:  # behaviour log-probs == a teacher-forced forward on the lone, unpadded sequence
        with torch.no_grad():
            (alone,) = score(policy, "verifier", [g.prompt_ids], [g.completion_ids])
        assert torch.allclose(torch.tensor(g.logprobs), alone, atol=1e-4)
    greedy_batch = policy.generate("verifier", PROMPTS, temperature=0)
    greedy_alone = [policy.generate("verifier", [p], temperature=0)[0] for p in PROMPTS]
    assert [g.completion_ids for g in greedy_batch] == [g.completion_ids for g in greedy_alone]


def test_sample_next_reports_temperature_scaled_full_vocab_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    token, logprob = sample_next(logits, temperature=0.7, top_p=0.5)
    expected = (logits / 0.7).log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
    assert torch.allclose(logprob, expected)
    probs = (logits / 0.7).softmax(-1)  # every sampled token lies inside its row's top-p nucleus
    for row, t in enumerate(token.tolist()):
        assert probs[row][probs[row] > probs[row, t]].sum() <= 0.5
    greedy, _ = sample_next(logits, temperature=0)
    assert torch.equal(greedy, logits.argmax(-1))
    top1, _ = sample_next(logits, temperature=1.0, top_k=1)
    assert torch.equal(top1, greedy)


# ------------------------------------------------------------------------------------------------------- weights


def test_kl_is_zero_at_init_and_reference_is_the_base(tiny):
    model, _ = tiny
    policy = make_policy(tiny)
    torch.manual_seed(2)
    gens = policy.generate("solver", PROMPTS)
    s = scores(policy, gens)
    for role in ROLES:
        assert torch.equal(s[role], s[None])  # LoRA B = 0: exactly the base
    with torch.no_grad():  # ... and the reference is the untouched base model
        for g, ref in zip(gens, score(policy, None, *pairs(gens)), strict=True):
            ids = torch.tensor([g.prompt_ids + g.completion_ids])
            logits = model(ids).logits[0, len(g.prompt_ids) - 1 : -1].float()
            direct = logits.log_softmax(-1).gather(-1, torch.tensor(g.completion_ids)[:, None]).squeeze(-1)
            assert torch.allclose(ref, direct, atol=1e-5)


def test_adapters_are_separate(tiny):
    policy = make_policy(tiny)
    torch.manual_seed(3)
    gens = policy.generate("solver", PROMPTS)
    names = {p: n for n, p in policy.model.named_parameters()}
    assert all(".solver." in names[p] for p in policy.trainable_parameters("solver"))
    assert not set(map(id, policy.trainable_parameters("solver"))) & set(
        map(id, policy.trainable_parameters("coder"))
    )
    before = scores(policy, gens)
    coder_before = [p.detach().clone() for p in policy.trainable_parameters("coder")]
    one_step(policy, "solver", gens)
    after = scores(policy, gens)
    assert not torch.allclose(after["solver"], before["solver"])
    assert after["solver"].mean() > before["solver"].mean()  # the step raised the likelihood it was asked to
    for role in ("coder", "verifier", None):
        assert torch.equal(after[role], before[role])
    assert all(
        torch.equal(a, b) for a, b in zip(coder_before, policy.trainable_parameters("coder"), strict=True)
    )
    assert all(p.grad is None for p in policy.trainable_parameters("coder"))


def test_save_load_round_trip(tiny, tmp_path):
    policy = make_policy(tiny)
    torch.manual_seed(4)
    gens = policy.generate("coder", PROMPTS)
    one_step(policy, "coder", gens)
    one_step(policy, "verifier", gens, lr=3e-2)
    out = policy.save(tmp_path / "team")
    assert sorted(p.name for p in out.iterdir()) == sorted([*ROLES, "team.json"])
    assert (out / "coder" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "coder" / "adapter_config.json").read_text())["r"] == 16
    policy.save(tmp_path / "team")  # overwriting an existing save works (atomic replace)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    fresh = make_policy(tiny)
    fresh.load(out)
    s_old, s_new = scores(policy, gens), scores(fresh, gens)
    for role in [*ROLES, None]:
        assert torch.equal(s_old[role], s_new[role])
    for role in ROLES:
        torch.manual_seed(5)
        a = policy.generate(role, PROMPTS)
        torch.manual_seed(5)
        assert fresh.generate(role, PROMPTS) == a

    model, tokenizer = tiny
    with pytest.raises(ValueError, match="roles"):
        TeamPolicy(copy.deepcopy(model), tokenizer, ["solver", "coder"]).load(out)
    with pytest.raises(ValueError, match="r="):
        make_policy(tiny, lora_r=4).load(out)


def test_full_mode(tiny, tmp_path):
    policy = make_policy(tiny, mode="full")
    assert policy.model is None and set(policy.models) == set(ROLES)
    assert all(not p.requires_grad for p in policy.ref_model.parameters())
    torch.manual_seed(6)
    gens = policy.generate("solver", PROMPTS)
    assert all(len(g.completion_ids) == len(g.logprobs) > 0 for g in gens)
    before = scores(policy, gens)
    for role in ROLES:
        assert torch.equal(before[role], before[None])
    one_step(policy, "solver", gens, lr=1e-3)
    after = scores(policy, gens)
    assert not torch.allclose(after["solver"], before["solver"])
    for role in ("coder", "verifier", None):
        assert torch.equal(after[role], before[role])
    policy.save(tmp_path / "full")
    fresh = make_policy(tiny, mode="full")
    fresh.load(tmp_path / "full")
    assert torch.equal(scores(fresh, gens)["solver"], after["solver"])
    with pytest.raises(ValueError, match="mode"):
        make_policy(tiny).load(tmp_path / "full")


def test_policy_rejects_bad_roles_and_unknown_role(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError):
        TeamPolicy(copy.deepcopy(model), tokenizer, ["a.b"])
    with pytest.raises(ValueError):
        TeamPolicy(copy.deepcopy(model), tokenizer, ["x", "x"])
    with pytest.raises(ValueError, match="lora_"):
        TeamPolicy(copy.deepcopy(model), tokenizer, ["lora"])
    policy = make_policy(tiny)
    with pytest.raises(KeyError):
        policy.generate("judge", PROMPTS[:1])


def test_load_base_tiny():
    model, tokenizer = load_base("tiny", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None and tokenizer.chat_template
    policy = TeamPolicy(model, tokenizer, ["x"], max_new_tokens=4)
    gens = policy.generate("x", PROMPTS[:2])
    assert all(math.isfinite(x) for g in gens for x in g.logprobs)


def _grads_and_layer_calls(policy: TeamPolicy, role: str, gens: list[Generation]):
    """LoRA gradients of one backward, and how often the first decoder layer ran (2 = recomputed in backward)."""
    from mappa_train.logprobs import unwrap_model

    with policy.forward_role(role) as model:
        mlp = unwrap_model(model).get_decoder().layers[0].mlp  # inside the checkpointed layer's forward
    calls = {"n": 0}
    forward = mlp.forward

    def counted(*args, **kwargs):  # not a forward hook: torch's checkpoint replays the layer without hooks
        calls["n"] += 1
        return forward(*args, **kwargs)

    mlp.forward = counted
    policy.train()
    try:
        prompts, completions = pairs(gens)
        params = policy.trainable_parameters(role)
        loss = -torch.cat(score(policy, role, prompts, completions)).mean()
        grads = torch.autograd.grad(loss, params)
    finally:
        del mlp.forward
        policy.eval()
    return grads, calls["n"]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_gradient_checkpointing_recomputes_layers_and_keeps_the_gradients(tiny, mode):
    policy = make_policy(tiny, mode=mode)
    torch.manual_seed(7)
    gens = policy.generate("coder", PROMPTS)
    one_step(policy, "coder", gens)  # LoRA-B leaves zero: every LoRA weight now has a non-zero gradient
    plain, calls_plain = _grads_and_layer_calls(policy, "coder", gens)
    policy.enable_gradient_checkpointing()
    checkpointed, calls_ckpt = _grads_and_layer_calls(policy, "coder", gens)
    # the layer ran again in backward instead of keeping its activations
    assert (calls_plain, calls_ckpt) == (1, 2)
    assert len(plain) == len(checkpointed) and any(g.abs().max() > 0 for g in plain)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert all(len(g.completion_ids) > 0 for g in policy.generate("coder", PROMPTS))  # generation still works


# ------------------------------------------------------------------------------------------------------- sampler


def test_generation_raises_no_deprecation_warning(tiny):
    """Our decode loop passes the KV cache under the name this transformers takes (no ``past_key_values`` warning)."""
    policy = make_policy(tiny, max_new_tokens=4)
    policy.stop_token_ids = [-1]  # no early stop: the cached decode step runs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gens = policy.generate("solver", PROMPTS[:2])
    assert all(len(g.completion_ids) == 4 for g in gens)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)], [
        str(w.message) for w in caught
    ]


class ScriptedSampler:
    """A second backend in a few lines: replies with fixed ids, counts the update hooks it received."""

    def __init__(self) -> None:
        self.updates = 0
        self.seen: list[Request] = []

    def generate(self, requests, settings: SamplingSettings) -> list[Generation]:
        self.seen.extend(requests)
        n = settings.max_new_tokens
        return [Generation("x", list(r.prompt_ids), [5] * n, [-1.0] * n, True) for r in requests]

    def on_update(self, weights) -> None:
        self.updates += 1


def test_a_new_sampler_is_one_object_implementing_the_protocol(tiny, tmp_path):
    sampler = ScriptedSampler()
    model, tokenizer = tiny
    policy = TeamPolicy(copy.deepcopy(model), tokenizer, ROLES, max_new_tokens=3, sampler=sampler)
    gens = policy.generate("coder", PROMPTS[:2])
    assert [r.role for r in sampler.seen] == ["coder", "coder"]
    assert [g.prompt_ids for g in gens] == [policy.encode_prompt(p) for p in PROMPTS[:2]]
    assert all(g.completion_ids == [5, 5, 5] for g in gens)
    with policy.sampling(max_new_tokens=1):
        assert policy.generate("coder", PROMPTS[:1])[0].completion_ids == [5]
    policy.save(tmp_path / "team")
    policy.load(tmp_path / "team")
    assert sampler.updates == 1  # loading new weights tells the sampler
