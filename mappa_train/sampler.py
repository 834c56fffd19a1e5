"""The sampler protocol (prompt ids in, replies with token ids and behaviour log-probs out) and ``HFSampler``.

A sampler turns :class:`Request` s (a role and the prompt ids :class:`~mappa_train.prompting.ChatPrompter` made)
into :class:`~mappa_train.types.Generation` s under :class:`SamplingSettings`, and is told after every optimiser
update (:meth:`Sampler.on_update`) so that one holding its own copy of the weights (a served model, an inference
engine with one LoRA per role) can reload them. A new backend is one module implementing these two methods; token
ids are never re-tokenised from text, so the trainer scores exactly what was sampled.

``HFSampler`` runs the team's in-process weights: a manual KV-cached decode loop over a left-padded batch per role
(one forward for the prompts, ``logits_to_keep=1``, then one forward per new token). At each step the next-token
distribution is ``p = softmax(logits / temperature)``, optionally restricted by ``top_k`` / ``top_p``
(renormalised), and the token is drawn with ``torch.multinomial`` from the global torch RNG (so
``torch.manual_seed`` makes generation reproducible). The behaviour log-prob stored for each token is
``log_softmax(logits / temperature)[token]`` over the FULL vocabulary — the temperature-scaled distribution, before
top-k/top-p truncation. With ``top_p=1, top_k=0`` (the defaults) that is exactly the distribution sampled from;
with truncation it is the distribution a training forward pass recomputes (:mod:`mappa_train.logprobs` at the same
temperature), which is what PPO-style ratios need. ``temperature=0`` means greedy decoding, with log-probs of the
untempered (T=1) distribution.

A completion is cut at its first stop token (eos / ``<|im_end|>`` / ``<|endoftext|>``), which is kept as the last
completion id; ``truncated=True`` when ``max_new_tokens`` ran out first. ``text`` is the decoded completion without
special tokens.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mappa_train.logprobs import unwrap_model

if TYPE_CHECKING:
    from mappa_train.continuous import HFDecoder
from mappa_train.types import Generation
from mappa_train.weights import TeamWeights


@dataclass(frozen=True)
class Request:
    """One reply to sample: the acting role and its prompt token ids (chat template applied, truncated)."""

    role: str
    prompt_ids: list[int]


@dataclass(frozen=True)
class SamplingSettings:
    """How to draw tokens: ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable truncation."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


class Sampler(Protocol):
    """What a generation backend provides; :class:`HFSampler` is the in-process one."""

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        """One reply per request, in the order of ``requests``."""
        ...

    def on_update(self, weights: TeamWeights) -> None:
        """Called after every optimiser update (and after loading weights) with the team's new weights."""
        ...


class Decoder(Protocol):
    """A running batch that replies can join at any step (continuous batching); see :mod:`mappa_train.continuous`."""

    @property
    def active(self) -> int:
        """Replies submitted and not yet returned by :meth:`step`."""
        ...

    def submit(self, key: Hashable, role: str, prompt_ids: Sequence[int], seed: int | None = None) -> None:
        """Queue one reply of ``role``; ``seed`` seeds that reply's own sampling generator."""
        ...

    def step(self) -> list[tuple[Hashable, Generation]]:
        """Advance the batch by one token (admitting what was queued); the ``(key, reply)`` s that finished."""
        ...


class ContinuousSampler(Sampler, Protocol):
    """An optional capability: a sampler that can also run a :class:`Decoder` (rollouts then refill the batch).

    A sampler offering only :meth:`Sampler.generate` (a served model) is driven tick by tick instead.
    """

    def open(self, settings: SamplingSettings) -> Decoder | None:
        """A decoder sampling under ``settings``, or ``None`` when this sampler cannot batch continuously now."""
        ...


def sample_next(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0):
    """Draw one token per row from ``logits`` (batch × vocab, float32).

    Returns ``(token, logprob)`` with ``logprob = log_softmax(logits / temperature)[token]`` (full vocabulary,
    before top-k/top-p); ``temperature <= 0`` is greedy with the T=1 log-prob.
    """
    if temperature <= 0:
        token = logits.argmax(-1)
        return token, logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
    logp = (logits / temperature).log_softmax(-1)
    probs = _truncate(logp.exp(), top_p, top_k)
    token = torch.multinomial(probs, 1).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def sample_rows(
    logits: torch.Tensor,
    generators: Sequence[torch.Generator | None],
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_next` with one generator per row (``None``: the global torch RNG).

    Why: a row's draws then depend only on its own seed and logits, not on the other rows in the batch.
    """
    if temperature <= 0:
        return sample_next(logits, temperature)
    logp = (logits / temperature).log_softmax(-1)
    probs = _truncate(logp.exp(), top_p, top_k)
    token = torch.cat(
        [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]  # one draw per row
    )
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def _truncate(probs: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """``probs`` with everything outside the top-k / top-p set zeroed (not renormalised: multinomial does it)."""
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(-1)
        sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs > top_p * cumulative[:, -1:], 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return probs


def cache_argument(model: nn.Module) -> str:
    """The name under which ``model``'s forward takes and returns its KV cache.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns on every call); older releases
    only know ``past_key_values``. Asking the signature keeps both working without filtering the warning.
    """
    return (
        "cache" if "cache" in inspect.signature(unwrap_model(model).forward).parameters else "past_key_values"
    )


def rows_by_role(requests: Sequence[Request], check_role: Callable[[str], Any]) -> dict[str, list[int]]:
    """The indices of ``requests`` per role, in order; every role checked and every prompt non-empty."""
    by_role: dict[str, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        check_role(request.role)
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        by_role[request.role].append(i)
    return by_role


class HFSampler:
    """Samples with the in-process weights of :class:`~mappa_train.weights.TeamWeights`, one batch per role."""

    def __init__(
        self,
        weights: TeamWeights,
        stop_token_ids: Sequence[int],
        pad_id: int,
        decode: Callable[[list[int]], str],
    ) -> None:
        self.weights = weights
        self.stop_token_ids = list(stop_token_ids)
        self.pad_id = pad_id
        self.decode = decode
        self._cache_arg: str | None = None

    def on_update(self, weights: TeamWeights) -> None:
        """Nothing to do: the sampler runs the very modules the optimisers update."""

    def open(self, settings: SamplingSettings) -> HFDecoder | None:
        """A continuous-batching decoder over every role at once (lora mode: per-row ``adapter_names``).

        Full-copy mode has one model per role, so rows of different roles cannot share a forward: ``None`` (the
        rollout then falls back to per-role batches through :meth:`generate`).
        """
        from mappa_train.continuous import HFDecoder

        if self.weights.mode != "lora":
            return None
        if settings.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {settings.max_new_tokens}")
        model = self.weights.model
        if self._cache_arg is None:
            self._cache_arg = cache_argument(model)
        return HFDecoder(
            model,
            self._cache_arg,
            adapter_names=True,
            stop_token_ids=self.stop_token_ids,
            pad_id=self.pad_id,
            max_new_tokens=settings.max_new_tokens,
            sample=lambda logits, gens: sample_rows(
                logits, gens, settings.temperature, settings.top_p, settings.top_k
            ),
            decode=self.decode,
            check_role=self.weights.check_role,
            select=self.weights.model_for,
        )

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        out: list[Generation | None] = [None] * len(requests)
        for role, rows in rows_by_role(requests, self.weights.check_role).items():
            gens = self._generate_role(role, [requests[i].prompt_ids for i in rows], settings)
            for i, gen in zip(rows, gens, strict=True):
                out[i] = gen
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_role(
        self, role: str, prompt_ids: list[list[int]], settings: SamplingSettings
    ) -> list[Generation]:
        model = self.weights.model_for(role)
        was_training = model.training
        model.eval()
        try:
            tokens, logprobs = self._decode(model, prompt_ids, settings)
        finally:
            if was_training:
                model.train()
        stops = set(self.stop_token_ids)
        out = []
        for i, prompt in enumerate(prompt_ids):
            row, lps = tokens[i], logprobs[i]
            end = next((j + 1 for j, t in enumerate(row) if t in stops), None)
            truncated = end is None
            end = len(row) if end is None else end
            ids = row[:end]
            out.append(
                Generation(
                    text=self.decode(ids),
                    prompt_ids=list(prompt),
                    completion_ids=ids,
                    logprobs=lps[:end],
                    truncated=truncated,
                )
            )
        return out

    def _decode(
        self, model: nn.Module, prompt_ids: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> tuple[list[list[int]], list[list[float]]]:
        if self._cache_arg is None:
            self._cache_arg = cache_argument(model)
        cache_arg = self._cache_arg
        device = next(model.parameters()).device
        batch, width = len(prompt_ids), max(len(p) for p in prompt_ids)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            input_ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        stop = torch.tensor(self.stop_token_ids, device=device)
        out = model(
            input_ids=input_ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1
        )
        next_pos = position[:, -1:] + 1
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens, logprobs = [], []
        max_new = settings.max_new_tokens
        for step in range(max_new):
            logits = out.logits[:, -1, :].float()
            token, logprob = sample_next(logits, settings.temperature, settings.top_p, settings.top_k)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens.append(token)
            logprobs.append(logprob)
            done |= torch.isin(token, stop)
            if bool(done.all()) or step == max_new - 1:
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
            out = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_pos,
                use_cache=True,
                **{cache_arg: getattr(out, cache_arg)},
            )
            next_pos = next_pos + 1
        if not tokens:
            return [[] for _ in range(batch)], [[] for _ in range(batch)]
        tok = torch.stack(tokens, dim=1).cpu().tolist()
        lp = torch.stack(logprobs, dim=1).cpu().tolist()
        return tok, lp
