"""Batching samples for the update, and log-probs of completion tokens without a full ``[B, L, V]`` logits tensor.

``pack_samples`` turns a list of :class:`~mappa_train.types.Sample` into right-padded tensors: the model input
(prompt + completion per row) and completion-aligned ``[B, T]`` tensors, the layout every function of
:mod:`mappa_train.algorithms` takes.

``token_logprobs`` runs the model body once, keeps only the hidden states that predict completion tokens, and
applies the LM head to them ``chunk_size`` tokens at a time (a "selective log-softmax"): at most one chunk's
float32 logits exist at a time, in the forward pass and — each chunk being recomputed under activation
checkpointing — in the backward pass. A full float32 logits tensor of 64 actions × 350 tokens × 49k vocabulary
is 4.45 GiB (DESIGN.md); with ``chunk_size=1024`` it is 0.2 GiB.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mappa_train.types import Sample


def pack_samples(
    samples: Sequence[Sample], pad_id: int, device: torch.device | str | None = None
) -> dict[str, torch.Tensor | list]:
    """Right-padded batch tensors for a list of actions.

    Model input, ``[B, L]`` with ``L = max(len(prompt) + len(completion))``: ``input_ids`` (prompt ids then
    completion ids, then ``pad_id``), ``attention_mask`` (1 on real tokens), ``position_ids`` (0, 1, 2, … on real
    tokens; 0 on padding — with right padding no real token attends to padding, so positions are plain offsets).

    Completion-aligned, ``[B, T]`` with ``T = max(len(completion))``: ``completion_mask`` (bool), and
    ``behaviour_logprobs`` (float32, 0 on padding). Per row, ``[B]``: ``prompt_lengths``, ``completion_lengths``
    (long), ``rewards``, ``outcome_rewards`` (float32), ``truncated`` (bool). Plain lists: ``roles``, ``groups``.

    Completion token ``j`` of row ``b`` is ``input_ids[b, prompt_lengths[b] + j]``. Right padding is used for
    training: every row starts at position 0, and no attention mask trickery is needed for causal attention.
    """
    if not samples:
        raise ValueError("no samples to pack")
    for i, s in enumerate(samples):
        if len(s.behaviour_logprobs) != len(s.completion_ids):
            raise ValueError(
                f"sample {i}: {len(s.completion_ids)} completion ids but {len(s.behaviour_logprobs)} log-probs"
            )
    out: dict[str, torch.Tensor | list] = right_padded(
        [s.prompt_ids for s in samples], [s.completion_ids for s in samples], pad_id
    )
    behaviour = torch.zeros(out["completion_mask"].shape, dtype=torch.float32)
    for b, s in enumerate(samples):
        behaviour[b, : len(s.completion_ids)] = torch.tensor(s.behaviour_logprobs, dtype=torch.float32)
    out |= {
        "behaviour_logprobs": behaviour,
        "rewards": torch.tensor([s.reward for s in samples], dtype=torch.float32),
        "outcome_rewards": torch.tensor([s.outcome_reward for s in samples], dtype=torch.float32),
        "truncated": torch.tensor([s.truncated for s in samples], dtype=torch.bool),
    }
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    out["roles"] = [s.role for s in samples]
    out["groups"] = [s.group for s in samples]
    return out


def right_padded(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """The model input of :func:`pack_samples` (and of :func:`token_logprobs`) for prompt/completion id pairs.

    ``input_ids``, ``attention_mask``, ``position_ids`` ``[B, L]``; ``prompt_lengths``, ``completion_lengths``
    ``[B]``; ``completion_mask`` ``[B, T]``.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    for i, prompt in enumerate(prompt_ids):
        if not prompt:
            raise ValueError(f"sample {i}: empty prompt (the first completion token needs a preceding token)")
    batch = len(prompt_ids)
    seq_len = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True))
    comp_len = max(len(c) for c in completion_ids)
    input_ids = torch.full((batch, seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, seq_len), dtype=torch.long)
    position_ids = torch.zeros((batch, seq_len), dtype=torch.long)
    completion_mask = torch.zeros((batch, comp_len), dtype=torch.bool)
    for b, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        ids = list(prompt) + list(completion)
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids, dtype=torch.long)
        attention_mask[b, :n] = 1
        position_ids[b, :n] = torch.arange(n)
        completion_mask[b, : len(completion)] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "prompt_lengths": torch.tensor([len(p) for p in prompt_ids], dtype=torch.long),
        "completion_lengths": torch.tensor([len(c) for c in completion_ids], dtype=torch.long),
        "completion_mask": completion_mask,
    }


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers ``*ForCausalLM`` inside DDP / DeepSpeed (``.module``) and peft (``get_base_model()``)."""
    while True:
        if hasattr(model, "get_base_model") and model.get_base_model() is not model:
            model = model.get_base_model()  # peft: LoRA layers are injected in place, so the base runs them
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def _logits_transform(config) -> float | None:
    """The final-logit soft-cap of the model (Gemma 2/3), or ``None``; refuses logit scalings it does not apply."""
    for name in ("logit_scale", "logits_scaling"):
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            raise NotImplementedError(f"token_logprobs does not apply config.{name}={value}")
    cap = getattr(config, "final_logit_softcapping", None)
    return float(cap) if cap else None


def _chunk_logprobs(
    head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    softcap: float | None,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``targets`` ``[N]`` and entropy ``[N]`` (zeros unless asked) from hidden states ``[N, H]``."""
    logits = head(hidden).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if with_entropy:
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)
    else:
        entropy = torch.zeros_like(logp)
    return logp, entropy


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_lengths: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every completion token under ``model``, completion-aligned ``[B, T]`` float32.

    ``input_ids`` / ``attention_mask`` / ``position_ids`` ``[B, L]`` and ``prompt_lengths`` ``[B]`` are as
    :func:`pack_samples` makes them; ``completion_mask`` ``[B, T]`` marks the completion tokens to score (token
    ``j`` of row ``b`` sits at ``prompt_lengths[b] + j``). Output is 0 where the mask is 0. With
    ``with_entropy=True`` also returns the entropy of the next-token distribution at each of those positions.
    ``temperature`` divides the logits first (match the sampler's, so the PPO ratio compares like with like).

    How: the full model is called with ``logits_to_keep=1`` (so its own head makes only ``[B, 1, V]`` logits)
    while a forward hook captures the final hidden states of its decoder body; the rows that predict completion
    tokens are gathered (``[N, H]``, N = completion tokens in the batch) and the LM head is applied to
    ``chunk_size`` of them at a time, each chunk followed by log-softmax and a gather. When gradients are on,
    every chunk runs under activation checkpointing, so backward too holds one chunk's logits at a time.
    Gradients reach the body and the head (and LoRA weights in either). Calling the model itself (not its body)
    keeps DDP, DeepSpeed and peft wrappers in the loop; the adapter that runs is whichever the caller selected
    (``set_adapter``, or ``disable_adapter()`` for the reference). Not for FSDP, whose sharded head cannot be
    called outside the root forward.
    """
    base = unwrap_model(model)
    body, head = base.get_decoder(), base.get_output_embeddings()
    if body is None or head is None:
        raise TypeError(f"{type(base).__name__} exposes no decoder body / output embeddings")
    softcap = _logits_transform(base.config)

    captured: list[torch.Tensor] = []

    def grab(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = body.register_forward_hook(grab)
    try:
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            logits_to_keep=1,
        )
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"decoder body ran {len(captured)} times in one forward")
    hidden = captured[0]

    completion_mask = completion_mask.to(device=hidden.device, dtype=torch.bool)
    rows, cols = completion_mask.nonzero(as_tuple=True)
    positions = prompt_lengths.to(hidden.device)[rows] + cols  # where each completion token sits in input_ids
    targets = input_ids.to(hidden.device)[rows, positions]
    states = hidden[rows, positions - 1]  # the hidden state that predicts it

    use_checkpoint = torch.is_grad_enabled()  # even a frozen body: a LoRA head still needs its logits
    logps, entropies = [], []
    for start in range(0, states.size(0), chunk_size):
        args = (head, states[start : start + chunk_size], targets[start : start + chunk_size])
        kwargs = {"temperature": temperature, "softcap": softcap, "with_entropy": with_entropy}
        if use_checkpoint:
            logp, entropy = checkpoint(_chunk_logprobs, *args, use_reentrant=False, **kwargs)
        else:
            logp, entropy = _chunk_logprobs(*args, **kwargs)
        logps.append(logp)
        entropies.append(entropy)

    shape = completion_mask.shape
    flat_logp = torch.cat(logps) if logps else states.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(shape, dtype=torch.float32, device=hidden.device).index_put((rows, cols), flat_logp)
    if not with_entropy:
        return out
    flat_entropy = torch.cat(entropies) if entropies else states.new_zeros(0, dtype=torch.float32)
    entropy = torch.zeros(shape, dtype=torch.float32, device=hidden.device).index_put(
        (rows, cols), flat_entropy
    )
    return out, entropy


def batch_logprobs(
    model: nn.Module, batch: dict, **kwargs
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs` on a batch laid out by :func:`right_padded` or :func:`pack_samples`."""
    return token_logprobs(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        batch["prompt_lengths"],
        batch["completion_mask"],
        position_ids=batch["position_ids"],
        **kwargs,
    )


def completion_logprobs(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
    **kwargs,
) -> list[torch.Tensor]:
    """Per-token log-probs of each completion given its prompt (one row of ``len(completion)`` per pair).

    :func:`token_logprobs` on :func:`right_padded` pairs — the scorer the update uses, for callers holding ids
    rather than samples. ``kwargs`` go to :func:`token_logprobs` (``temperature``, ``chunk_size``). Runs under the
    ambient grad mode and whichever adapter the caller selected (``policy.forward_role(role)`` /
    ``policy.reference()``).
    """
    if not prompt_ids:
        return []
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in right_padded(prompt_ids, completion_ids, pad_id).items()}
    logp = batch_logprobs(model, batch, **kwargs)
    return [logp[i, : len(c)] for i, c in enumerate(completion_ids)]
