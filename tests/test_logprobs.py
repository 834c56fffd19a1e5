"""Chunked completion log-probs equal the naive full-logits ones (values, entropy and gradients); batch packing."""

from __future__ import annotations

import pytest
import torch

from mappa_train.algorithms import entropy_from_logits
from mappa_train.logprobs import batch_logprobs, pack_samples
from mappa_train.types import Sample

transformers = pytest.importorskip("transformers")

PAD = 0


def tiny_llama(seed: int = 0, vocab_size: int = 128):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    return transformers.LlamaForCausalLM(config).eval()


def samples() -> list[Sample]:
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(1, 128, (n,), generator=g).tolist()

    shapes = [(5, 4), (2, 7), (9, 1), (4, 0), (3, 3)]  # (prompt length, completion length)
    return [
        Sample(role="r", prompt_ids=ids(p), completion_ids=ids(c), behaviour_logprobs=[-1.0] * c, reward=0.0)
        for p, c in shapes
    ]


def naive(model, batch, temperature: float = 1.0):
    """Log-probs and entropies from the full [B, L, V] logits, completion-aligned by an explicit loop."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits.float()
    logits = logits / temperature
    logsm = logits.log_softmax(-1)
    mask = batch["completion_mask"]
    logp = torch.zeros(mask.shape)
    entropy = torch.zeros(mask.shape)
    for b in range(mask.size(0)):
        p = int(batch["prompt_lengths"][b])
        for j in range(int(batch["completion_lengths"][b])):
            logp[b, j] = logsm[b, p + j - 1, batch["input_ids"][b, p + j]]
            entropy[b, j] = entropy_from_logits(logits[b, p + j - 1])
    return logp, entropy


chunked = batch_logprobs  # the chunked path under test, on a packed batch


def test_pack_samples_right_pads():
    s = [
        Sample(
            role="a",
            prompt_ids=[5, 6],
            completion_ids=[7, 8, 9],
            behaviour_logprobs=[-0.1, -0.2, -0.3],
            reward=1.0,
            truncated=True,
            outcome_reward=0.5,
            group="g1",
        ),
        Sample(
            role="b", prompt_ids=[3], completion_ids=[4], behaviour_logprobs=[-0.4], reward=-1.0, group="g2"
        ),
    ]
    out = pack_samples(s, pad_id=PAD)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9], [3, 4, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 0, 0, 0]]
    assert out["completion_mask"].tolist() == [[True, True, True], [True, False, False]]
    torch.testing.assert_close(
        out["behaviour_logprobs"], torch.tensor([[-0.1, -0.2, -0.3], [-0.4, 0.0, 0.0]])
    )
    assert out["prompt_lengths"].tolist() == [2, 1]
    assert out["completion_lengths"].tolist() == [3, 1]
    assert out["rewards"].tolist() == [1.0, -1.0]
    assert out["outcome_rewards"].tolist() == [0.5, 0.0]
    assert out["truncated"].tolist() == [True, False]
    assert out["roles"] == ["a", "b"] and out["groups"] == ["g1", "g2"]
    with pytest.raises(ValueError):
        pack_samples([Sample("a", [1], [2, 3], [-1.0], 0.0)], PAD)  # one log-prob for two tokens
    with pytest.raises(ValueError):
        pack_samples([], PAD)


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_chunked_equals_naive_values_and_entropy(chunk_size):
    model = tiny_llama()
    batch = pack_samples(samples(), PAD)
    with torch.no_grad():
        want_logp, want_entropy = naive(model, batch)
        got_logp, got_entropy = chunked(model, batch, chunk_size=chunk_size, with_entropy=True)
        only_logp = chunked(model, batch, chunk_size=chunk_size)
    torch.testing.assert_close(got_logp, want_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_entropy, want_entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(only_logp, want_logp, atol=1e-5, rtol=0)
    assert (got_logp[~batch["completion_mask"]] == 0).all()


def test_temperature_matches_naive():
    model = tiny_llama()
    batch = pack_samples(samples(), PAD)
    with torch.no_grad():
        want, _ = naive(model, batch, temperature=0.7)
        got = chunked(model, batch, chunk_size=4, temperature=0.7)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradients_match_naive():
    model = tiny_llama()
    batch = pack_samples(samples(), PAD)
    weights = torch.randn(batch["completion_mask"].shape, generator=torch.Generator().manual_seed(2))

    model.zero_grad()
    want_logp, want_entropy = naive(model, batch)
    ((want_logp * weights).sum() + 0.1 * want_entropy.sum()).backward()
    want = _grads(model)

    model.zero_grad()
    got_logp, got_entropy = chunked(model, batch, chunk_size=3, with_entropy=True)
    ((got_logp * weights).sum() + 0.1 * got_entropy.sum()).backward()
    got = _grads(model)

    assert want.keys() == got.keys() and "lm_head.weight" in got and "model.embed_tokens.weight" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)


def test_frozen_body_still_trains_the_head():
    model = tiny_llama()
    for name, param in model.named_parameters():
        param.requires_grad_(name == "lm_head.weight")
    batch = pack_samples(samples(), PAD)
    want_logp, _ = naive(model, batch)
    (want,) = torch.autograd.grad(want_logp.sum(), model.lm_head.weight)
    got_logp = chunked(model, batch, chunk_size=2)
    (got,) = torch.autograd.grad(got_logp.sum(), model.lm_head.weight)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def _largest_saved_logits(fn, vocab: int, weight: torch.Tensor) -> int:
    """Rows of the largest [rows, ..., vocab] tensor autograd saves for backward while ``fn`` runs."""
    rows = [0]
    storage = weight.untyped_storage().data_ptr()

    def pack(t):
        if t.dim() >= 2 and t.shape[-1] == vocab and t.untyped_storage().data_ptr() != storage:
            rows.append(t.numel() // vocab)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(rows)


def test_no_full_logits_kept_for_backward():
    vocab = 1000  # no other activation of the tiny model has a last dimension of 1000
    model = tiny_llama(vocab_size=vocab)
    batch = pack_samples(samples(), PAD)
    n_tokens = int(batch["completion_mask"].sum())  # 15 completion tokens
    weight = model.lm_head.weight
    assert (
        _largest_saved_logits(lambda: naive(model, batch), vocab, weight) >= n_tokens
    )  # the probe sees logits
    assert _largest_saved_logits(lambda: chunked(model, batch, chunk_size=4), vocab, weight) == 0


def test_peft_model_adapter_and_reference():
    peft = pytest.importorskip("peft")
    model = tiny_llama()
    batch = pack_samples(samples(), PAD)
    with torch.no_grad():
        base_logp, _ = naive(model, batch)
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False
    )
    wrapped = peft.get_peft_model(model, lora)

    # the adapter runs (values differ from the base) and chunked == naive through the peft wrapper
    wrapped.zero_grad()
    want_logp, _ = naive(wrapped, batch)
    want_logp.sum().backward()
    want = _grads(wrapped)
    wrapped.zero_grad()
    got_logp = chunked(wrapped, batch, chunk_size=2)
    got_logp.sum().backward()
    got = _grads(wrapped)
    torch.testing.assert_close(got_logp, want_logp, atol=1e-5, rtol=0)
    assert (got_logp - base_logp).abs().max() > 1e-3
    lora_grads = [n for n in got if "lora_" in n]
    assert any("lm_head" in n for n in lora_grads) and any("q_proj" in n for n in lora_grads)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)

    # with the adapter disabled the same model is the reference
    with torch.no_grad(), wrapped.disable_adapter():
        ref_logp = chunked(wrapped, batch, chunk_size=2)
    torch.testing.assert_close(ref_logp, base_logp, atol=1e-5, rtol=0)
