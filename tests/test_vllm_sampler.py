"""The vLLM sampler against a fake server that speaks vLLM's multi-LoRA API (tests/fake_vllm_server.py)."""

from __future__ import annotations

import socket

import pytest
import torch

from mappa_train.config import TrainConfig
from mappa_train.logprobs import completion_logprobs
from mappa_train.models import tiny_model_and_tokenizer
from mappa_train.policy import TeamPolicy
from mappa_train.sampler import Request, SamplingSettings
from mappa_train.trainer import Trainer
from mappa_train.validation import ConfigError
from mappa_train.vllm_sampler import VLLMError, VLLMSampler, adapter_name
from tests.fake_vllm_server import FakeVLLM
from tests.test_trainer import tiny_config

ROLES = ["coder", "verifier"]


@pytest.fixture(scope="module")
def fake():
    with FakeVLLM("tiny") as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.adapters.clear()
    fake.paths.clear()
    fake.calls.clear()
    fake.allow_runtime_lora, fake.max_lora_rank, fake.legacy, fake.fail_next = True, 64, False, None


def tiny_policy(**kwargs) -> TeamPolicy:
    model, tokenizer = tiny_model_and_tokenizer()
    return TeamPolicy(model, tokenizer, ROLES, max_new_tokens=8, **kwargs)


def vllm_sampler(policy: TeamPolicy, url: str, tmp_path, **kwargs) -> VLLMSampler:
    sampler = VLLMSampler(url, tmp_path / "adapters", policy.weights, policy.stop_token_ids, **kwargs)
    policy.sampler = sampler
    return sampler


def perturb(policy: TeamPolicy, seed: int) -> None:
    """Move every adapter off zero (LoRA B starts at 0, where an adapter cannot be told from the base)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for role in policy.roles:
            for p in policy.trainable_parameters(role):
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


def lora_state(policy: TeamPolicy, role: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(policy.model, adapter_name=role)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("legacy", [False, True], ids=["token_ids", "token_id-strings"])
def test_ids_and_logprobs_round_trip_and_match_the_trainers_scorer(fake, tmp_path, legacy):
    fake.legacy = legacy
    policy = tiny_policy()
    perturb(policy, seed=1)
    vllm_sampler(policy, fake.url, tmp_path)
    prompts = [
        policy.encode_prompt([{"role": "user", "content": q}]) for q in ("What is 2+2?", "Hi", "Solve x")
    ]
    requests = [Request("coder", prompts[0]), Request("verifier", prompts[1]), Request("coder", prompts[2])]
    gens = policy.sampler.generate(requests, SamplingSettings(max_new_tokens=8, temperature=1.0))

    completions = [c for p, c in fake.calls if p == "/v1/completions"]
    assert sorted(c["model"] for c in completions) == [adapter_name("coder"), adapter_name("verifier")]
    sent = {c["model"]: c["prompt"] for c in completions}
    assert sent[adapter_name("coder")] == [prompts[0], prompts[2]]  # token ids, in request order
    assert sent[adapter_name("verifier")] == [prompts[1]]
    for request, gen in zip(requests, gens, strict=True):
        assert gen.prompt_ids == request.prompt_ids
        assert len(gen.completion_ids) == len(gen.logprobs) > 0
        assert gen.truncated == (
            len(gen.completion_ids) == 8 and gen.completion_ids[-1] not in policy.stop_token_ids
        )
        with policy.forward_role(request.role) as model, torch.no_grad():
            scored = completion_logprobs(model, [gen.prompt_ids], [gen.completion_ids], policy.pad_id)[0]
        with policy.reference() as model, torch.no_grad():
            base = completion_logprobs(model, [gen.prompt_ids], [gen.completion_ids], policy.pad_id)[0]
        # the server sampled with the trainer's adapter (not the base): same ids, same log-probs
        assert torch.allclose(scored, torch.tensor(gen.logprobs), atol=1e-4)
        assert not torch.allclose(base, torch.tensor(gen.logprobs), atol=1e-3)


def test_greedy_generation_equals_the_in_process_sampler(fake, tmp_path):
    policy = tiny_policy()
    perturb(policy, seed=2)
    prompts = [policy.encode_prompt([{"role": "user", "content": q}]) for q in ("1+1", "2*3")]
    settings = SamplingSettings(max_new_tokens=8, temperature=0.0)
    local = policy.sampler.generate([Request("coder", p) for p in prompts], settings)
    vllm_sampler(policy, fake.url, tmp_path)
    served = policy.sampler.generate([Request("coder", p) for p in prompts], settings)
    assert [g.completion_ids for g in served] == [g.completion_ids for g in local]
    assert [g.text for g in served] == [g.text for g in local]
    for a, b in zip(served, local, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_a_training_run_reloads_every_adapter_after_each_update(fake, tmp_path):
    config = tiny_config(
        tmp_path,
        "sampler=vllm",
        f"vllm_url={fake.url}/v1",
        "steps=2",
        "eval_at_start=false",
        "eval_episodes=2",
        "kl_beta=0.5",
    )
    trainer = Trainer(config)
    roles = trainer.policy.roles
    # a random tiny model's rules-coach rewards are all equal (nothing would move): off the reference, the KL term
    # in the reward differs per token, so every update moves every adapter
    perturb(trainer.policy, seed=4)
    start = {r: {k: v.clone() for k, v in lora_state(trainer.policy, r).items()} for r in roles}
    trainer.fit()

    loads = [b for p, b in fake.calls if p == "/v1/load_lora_adapter"]
    unloads = [b for p, b in fake.calls if p == "/v1/unload_lora_adapter"]
    assert len(loads) == len(roles) * 3  # before the first rollout, then after each of the 2 updates
    assert len(unloads) == len(roles) * 2
    assert [b["lora_path"] for b in loads][-len(roles) :] == [
        str(tmp_path.resolve() / "vllm-adapters" / "v000003" / r) for r in roles
    ]
    assert sorted((tmp_path / "vllm-adapters").glob("v*")) == [
        tmp_path / "vllm-adapters" / "v000002",
        tmp_path / "vllm-adapters" / "v000003",
    ]
    assert any(p == "/v1/completions" for p, _ in fake.calls)
    for role in roles:
        ours, served = lora_state(trainer.policy, role), fake.adapter_state(adapter_name(role))
        assert ours.keys() == served.keys()
        assert all(torch.equal(ours[k].cpu(), served[k].cpu()) for k in ours)
        assert any(not torch.equal(start[role][k], ours[k]) for k in ours)  # the update moved it


def test_adapters_the_server_started_with_are_replaced(fake, tmp_path):
    policy = tiny_policy()
    stale = tmp_path / "stale"
    policy.weights.save(stale)
    fake.load({"lora_name": adapter_name("coder"), "lora_path": str(stale / "coder")})  # --lora-modules
    perturb(policy, seed=3)
    sampler = vllm_sampler(policy, fake.url, tmp_path)
    sampler.on_update(policy.weights)
    for role in ROLES:
        assert fake.paths[adapter_name(role)] == str(sampler.adapter_dir / "v000001" / role)
        ours = lora_state(policy, role)
        assert all(torch.equal(ours[k], v) for k, v in fake.adapter_state(adapter_name(role)).items())


def test_an_unreachable_server_names_the_url_and_how_to_start_one(tmp_path):
    policy = tiny_policy()
    url = f"http://127.0.0.1:{free_port()}"
    vllm_sampler(policy, url, tmp_path, timeout=5)
    with pytest.raises(
        VLLMError, match=rf"cannot reach the vLLM server at {url}.*VLLM_ALLOW_RUNTIME_LORA_UPDATING"
    ):
        policy.generate_ids("coder", [[1, 2, 3]])


def test_a_server_without_runtime_lora_updating_says_which_variable_to_set(fake, tmp_path):
    fake.allow_runtime_lora = False
    policy = tiny_policy()
    vllm_sampler(policy, fake.url, tmp_path)
    with pytest.raises(VLLMError, match=r"HTTP 404.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        policy.generate_ids("coder", [[1, 2, 3]])


def test_a_rank_above_the_servers_limit_names_max_lora_rank(fake, tmp_path):
    fake.max_lora_rank = 8
    policy = tiny_policy()  # lora_r=16
    vllm_sampler(policy, fake.url, tmp_path)
    with pytest.raises(VLLMError, match=r"rank 16 is greater than max_lora_rank 8.*--max-lora-rank"):
        policy.generate_ids("coder", [[1, 2, 3]])


def test_an_adapter_folder_the_server_cannot_read_is_named(fake, tmp_path):
    policy = tiny_policy()
    sampler = vllm_sampler(policy, fake.url, tmp_path)
    sampler._post = _rewriting_post(sampler, "/nowhere")  # the server sees another file system
    with pytest.raises(VLLMError, match=r"No adapter found for /nowhere.*vllm_adapter_dir"):
        sampler.on_update(policy.weights)


def _rewriting_post(sampler: VLLMSampler, root: str):
    post = sampler._post

    def rewritten(path, body):
        if "lora_path" in body:
            body = {**body, "lora_path": root + "/" + body["lora_name"]}
        return post(path, body)

    return rewritten


def test_server_errors_and_a_restarted_server_give_clear_messages(fake, tmp_path):
    policy = tiny_policy()
    vllm_sampler(policy, fake.url, tmp_path)
    assert len(policy.generate_ids("coder", [[1, 2, 3]])) == 1
    fake.fail_next = (400, "This model's maximum context length is 32 tokens.")
    with pytest.raises(VLLMError, match=r"HTTP 400: This model's maximum context length is 32"):
        policy.generate_ids("coder", [[1, 2, 3]])
    fake.adapters.clear()  # the server restarted and lost the adapters
    with pytest.raises(VLLMError, match=r"model `mappa-coder` does not exist.*restarted"):
        policy.generate_ids("coder", [[1, 2, 3]])


def test_config_selects_the_sampler_and_refuses_what_vllm_cannot_do(tmp_path):
    assert TrainConfig.from_dict({}).sampler == "hf"
    with pytest.raises(ConfigError, match="sampler"):
        TrainConfig.from_dict({}, ["sampler=sglang"])
    with pytest.raises(ConfigError, match="sampler=vllm serves one LoRA adapter per role; set mode=lora"):
        TrainConfig.from_dict({}, ["sampler=vllm", "mode=full"])
    with pytest.raises(ConfigError, match="sampler=vllm needs old_logprobs=recompute"):
        TrainConfig.from_dict({}, ["sampler=vllm", "old_logprobs=sampler"])
    with pytest.raises(ConfigError, match="vllm_url='localhost:8000' must start with http://"):
        TrainConfig.from_dict({}, ["sampler=vllm", "vllm_url=localhost:8000"])


def test_data_parallel_processes_push_adapters_under_their_own_names(fake, tmp_path):
    policy = tiny_policy()
    vllm_sampler(policy, fake.url, tmp_path, name_suffix="-rank1")
    assert len(policy.generate_ids("verifier", [[1, 2, 3]])) == 1
    assert sorted(fake.adapters) == [adapter_name(r, "-rank1") for r in ROLES]
    assert [b["model"] for p, b in fake.calls if p == "/v1/completions"] == ["mappa-verifier-rank1"]


def test_an_update_that_failed_half_way_does_not_break_the_next_one(fake, tmp_path):
    policy = tiny_policy()
    sampler = vllm_sampler(policy, fake.url, tmp_path)
    sampler.on_update(policy.weights)
    sampler.loaded.pop("verifier")  # as if the process died between the coder's and the verifier's swap
    perturb(policy, seed=5)
    sampler.on_update(policy.weights)
    for role in ROLES:
        ours = lora_state(policy, role)
        assert all(torch.equal(ours[k], v) for k, v in fake.adapter_state(adapter_name(role)).items())
