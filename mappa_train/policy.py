"""``TeamPolicy``: the team's weights, prompting and sampler behind the one interface rollouts and the trainer use.

Three pieces, each replaceable alone:

* :class:`~mappa_train.weights.TeamWeights` — one LoRA adapter per role on a shared base (or full copies), the
  frozen reference for the KL term, save/load;
* :class:`~mappa_train.prompting.ChatPrompter` — chat template, ``tool`` turns, left truncation, stop ids;
* a :class:`~mappa_train.sampler.Sampler` — :class:`~mappa_train.sampler.HFSampler` by default (in-process
  KV-cached decoding); a served model or an inference engine is another module implementing the protocol, passed
  as ``sampler=``. :meth:`TeamPolicy.on_update` tells it the weights changed.

Log-probs for training (and any other scoring) come from :mod:`mappa_train.logprobs` under
:meth:`TeamPolicy.forward_role` / :meth:`TeamPolicy.reference`: one scoring path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mappa_train.prompting import ChatPrompter, stop_token_ids
from mappa_train.sampler import Decoder, HFSampler, Request, Sampler, SamplingSettings
from mappa_train.types import Generation, Message
from mappa_train.weights import TeamWeights, check_roles


class TeamPolicy:
    """One causal LM per role (LoRA adapters on one base, or full copies) with a shared frozen reference."""

    def __init__(
        self,
        base_model: nn.Module,
        tokenizer: Any,
        roles: Sequence[str],
        mode: Literal["lora", "full"] = "lora",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: str | list[str] = "all-linear",
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_prompt_tokens: int | None = None,
        tool_role: Literal["user", "tool"] = "user",
        tool_prefix: str = "Output of your code:\n",
        seed: int | None = 0,
        sampler: Sampler | None = None,
    ) -> None:
        roles = check_roles(roles, mode)  # before the prompter, so a bad role is named first
        self.prompter = ChatPrompter(
            tokenizer,
            max_prompt_tokens=max_prompt_tokens,
            context_length=getattr(base_model.config, "max_position_embeddings", None),
            tool_role=tool_role,
            tool_prefix=tool_prefix,
        )
        self.tokenizer = tokenizer
        self._stop_token_ids = stop_token_ids(tokenizer, getattr(base_model, "generation_config", None))
        self.weights = TeamWeights(
            base_model,
            roles,
            mode=mode,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules,
            seed=seed,
        )
        self.settings = SamplingSettings(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k
        )
        self.sampler: Sampler = sampler or HFSampler(
            self.weights,
            self._stop_token_ids,
            self.prompter.pad_id,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        )

    # ------------------------------------------------------------------------------------------------ views

    roles = property(lambda self: self.weights.roles)
    mode = property(lambda self: self.weights.mode)
    model = property(lambda self: self.weights.model, doc="The peft model holding every adapter (lora mode).")
    models = property(lambda self: self.weights.models, doc="One full copy per role (full mode).")
    ref_model = property(lambda self: self.weights.ref_model, doc="The frozen reference copy (full mode).")
    config = property(lambda self: self.weights.config)
    lora_settings = property(lambda self: self.weights.lora_settings)
    max_new_tokens = property(lambda self: self.settings.max_new_tokens)
    temperature = property(lambda self: self.settings.temperature)
    top_p = property(lambda self: self.settings.top_p)
    top_k = property(lambda self: self.settings.top_k)

    @property
    def pad_id(self) -> int:
        """The padding token id (the tokenizer's pad token, else eos)."""
        return self.prompter.pad_id

    @property
    def prompt_truncations(self) -> int:
        return self.prompter.truncations

    @property
    def stop_token_ids(self) -> list[int]:
        return self._stop_token_ids

    @stop_token_ids.setter
    def stop_token_ids(self, ids: Sequence[int]) -> None:
        self._stop_token_ids = list(ids)
        if hasattr(self.sampler, "stop_token_ids"):
            self.sampler.stop_token_ids = list(ids)

    @property
    def device(self) -> torch.device:
        return self.weights.device

    @contextmanager
    def sampling(
        self,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Iterator[TeamPolicy]:
        """Temporarily change the sampling settings (e.g. ``temperature=0`` for greedy evaluation)."""
        saved = self.settings
        self.settings = _with(
            saved, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
        )
        try:
            yield self
        finally:
            self.settings = saved

    # ------------------------------------------------------------------------------------------------ weights

    def forward_role(self, role: str):
        """The model to run for a training forward pass of ``role`` (its adapter selected and trainable)."""
        return self.weights.forward_role(role)

    def reference(self):
        """The frozen reference model: the base with adapters disabled (lora) or the reference copy (full)."""
        return self.weights.reference()

    def trainable_parameters(self, role: str) -> list[nn.Parameter]:
        """The parameters an optimiser for ``role`` should update (its LoRA A/B, or its whole copy)."""
        return self.weights.trainable_parameters(role)

    def enable_gradient_checkpointing(self) -> TeamPolicy:
        """See :meth:`TeamWeights.enable_gradient_checkpointing`."""
        self.weights.enable_gradient_checkpointing()
        return self

    def modules(self) -> list[nn.Module]:
        return self.weights.modules()

    def train(self) -> TeamPolicy:
        self.weights.train()
        return self

    def eval(self) -> TeamPolicy:
        self.weights.eval()
        return self

    @property
    def training(self) -> bool:
        return self.weights.training

    def on_update(self) -> None:
        """Tell the sampler the weights changed (after each optimiser update, and after loading)."""
        self.sampler.on_update(self.weights)

    def save(self, path: str | Path) -> Path:
        """See :meth:`TeamWeights.save`."""
        return self.weights.save(path)

    def load(self, path: str | Path) -> None:
        """Load weights written by :meth:`save` (same mode and roles), then tell the sampler."""
        self.weights.load(path)
        self.on_update()

    # ------------------------------------------------------------------------------------------------ prompts

    def normalise_messages(self, messages: Sequence[Message]) -> list[Message]:
        return self.prompter.normalise_messages(messages)

    def prompt_limit(self, max_new_tokens: int | None = None) -> int | None:
        """``max_prompt_tokens``, else the context length minus the reply budget (``None``: unlimited)."""
        return self.prompter.limit(self.max_new_tokens if max_new_tokens is None else max_new_tokens)

    def encode_prompt(self, messages: Sequence[Message], max_tokens: int | None = None) -> list[int]:
        """Prompt token ids (chat template + generation header), left-truncated to fit ``max_tokens``."""
        return self.prompter.encode(messages, max_tokens if max_tokens is not None else self.prompt_limit())

    # ------------------------------------------------------------------------------------------------ sampling

    def generate(
        self,
        role: str,
        prompts: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
    ) -> list[Generation]:
        """Sample one reply per prompt with ``role``'s weights, in one batch."""
        self.weights.check_role(role)
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        limit = self.prompt_limit(max_new)
        prompt_ids = [self.prompter.encode(p, limit) for p in prompts]
        return self.generate_ids(
            role, prompt_ids, max_new_tokens=max_new, temperature=temperature, top_p=top_p, top_k=top_k
        )

    def generate_ids(
        self,
        role: str,
        prompt_ids: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
    ) -> list[Generation]:
        """Like :meth:`generate` for already tokenised prompts (no truncation)."""
        self.weights.check_role(role)
        settings = _with(
            self.settings, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k
        )
        return self.sampler.generate([Request(role, list(p)) for p in prompt_ids], settings)

    def decoder(self) -> MessageDecoder | None:
        """A continuous-batching decoder over every role under the current settings, if the sampler offers one.

        ``None`` when the sampler only implements ``generate`` (a served model) or cannot mix roles (full mode);
        :func:`~mappa_train.rollout.run_rollouts` then decodes tick by tick, one batch per role.
        """
        open_ = getattr(self.sampler, "open", None)
        decoder = open_(self.settings) if open_ is not None else None
        return None if decoder is None else MessageDecoder(self, decoder)


class MessageDecoder:
    """A sampler's :class:`~mappa_train.sampler.Decoder` that takes chat messages (encoded as :meth:`generate` does)."""

    def __init__(self, policy: TeamPolicy, decoder: Decoder) -> None:
        self.policy = policy
        self.decoder = decoder
        self.limit = policy.prompt_limit()

    @property
    def active(self) -> int:
        return self.decoder.active

    def submit(self, key: Hashable, role: str, messages: Sequence[Message], seed: int | None = None) -> None:
        self.policy.weights.check_role(role)
        self.decoder.submit(key, role, self.policy.prompter.encode(messages, self.limit), seed)

    def step(self) -> list[tuple[Hashable, Generation]]:
        return self.decoder.step()


def _with(settings: SamplingSettings, **changes: Any) -> SamplingSettings:
    """``settings`` with every change that is not ``None``."""
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
