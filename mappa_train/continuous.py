"""Continuous batching for :class:`~mappa_train.sampler.HFSampler`: every role in one decode batch, refilled.

One :class:`HFDecoder` holds the running batch: rows of any role (lora mode: peft's per-row ``adapter_names``, so
the base model's matmuls are shared and each row's LoRA delta is its own adapter's), one transformers
``DynamicCache`` over the left-padded rows, a boolean attention mask and per-row positions. :meth:`HFDecoder.step`
feeds every running row its last sampled token (one forward), samples the next, and retires the rows that stopped;
rows submitted since the previous step are prefilled in one forward and merged into the cache (the shorter of the
two caches is left-padded with masked columns). Retired rows are dropped from the cache (``batch_select_indices``)
and columns that are padding for every remaining row are cut, so the batch never decodes finished rows.

Why ``DynamicCache`` and not a hand-written KV store: the model writes and reads it through its own attention code,
and the only surgery needed (select rows, left-pad, concatenate, cut leading columns) is on its per-layer tensors.
Only full-attention layers (``DynamicLayer``) can be padded this way; a model with sliding-window layers raises.

Determinism: each row draws from its own ``torch.Generator`` seeded by the caller (the rollout derives it from
``(seed, episode, turn)``), so the draw sequence of a row does not depend on which other rows share its batch. The
logits can differ in the last float bits between batch compositions (padding, matmul blocking), so a token whose
sampling threshold falls inside that noise can differ; greedy decoding is the same up to exact ties. Token ids and
log-probs returned are exactly the sampled ones (the same contract as :meth:`HFSampler.generate`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from mappa_train.types import Generation

SampleFn = Callable[[torch.Tensor, Sequence[torch.Generator | None]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Row:
    key: Hashable
    role: str
    prompt_ids: list[int]
    generator: torch.Generator | None
    position: int = 0  # position id of the next token fed
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = list(cache.layers)
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise ValueError(
                f"continuous batching needs full-attention cache layers, got {type(layer).__name__}; "
                "use HFSampler.generate (per-role batches) for this model"
            )
    return layers


def _left_pad(cache: DynamicCache, mask: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad every layer of ``cache`` (and ``mask``) with masked columns up to ``width``."""
    extra = width - mask.shape[1]
    if extra <= 0:
        return mask
    for layer in _layers(cache):
        for name in ("keys", "values"):
            t = getattr(layer, name)
            pad = t.new_zeros((t.shape[0], t.shape[1], extra, t.shape[3]))
            setattr(layer, name, torch.cat([pad, t], dim=2))
    return torch.cat([mask.new_zeros((mask.shape[0], extra)), mask], dim=1)


class HFDecoder:
    """A running decode batch fed by :meth:`submit` and advanced one token per :meth:`step`."""

    def __init__(
        self,
        model: nn.Module,
        cache_arg: str,
        adapter_names: bool,
        stop_token_ids: Sequence[int],
        pad_id: int,
        max_new_tokens: int,
        sample: SampleFn,
        decode: Callable[[list[int]], str],
        check_role: Callable[[str], None],
        select: Callable[[str], nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.cache_arg = cache_arg
        self.adapter_names = adapter_names
        self.stops = set(stop_token_ids)
        self.pad_id = pad_id
        self.max_new = max_new_tokens
        self.sample = sample
        self.decode = decode
        self.check_role = check_role
        self.select = select
        self.device = next(model.parameters()).device
        self.rows: list[_Row] = []
        self.queued: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # rows x cache columns (+1 for the token fed next), long
        self.tokens_out = 0

    @property
    def active(self) -> int:
        """Rows running or queued."""
        return len(self.rows) + len(self.queued)

    def submit(self, key: Hashable, role: str, prompt_ids: Sequence[int], seed: int | None = None) -> None:
        """Queue one reply; it joins the batch at the next :meth:`step`. ``seed`` seeds the row's own generator."""
        self.check_role(role)
        if not prompt_ids:
            raise ValueError("empty prompt")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seed))
        self.queued.append(_Row(key, role, list(prompt_ids), generator))

    def _forward(self, rows: list[_Row], **kwargs):
        roles = [r.role for r in rows]
        model = self.model
        if self.select is not None and len(set(roles)) == 1:
            # one role: select its adapter and skip peft's per-adapter sub-batches (about 10-20% of a step on CPU)
            model = self.select(roles[0])
        elif self.adapter_names:
            kwargs["adapter_names"] = roles
        return model(use_cache=True, logits_to_keep=1, **kwargs)

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Generation]]:
        """Decode one token for every running row, admit the queued rows; return the replies that finished."""
        was_training = self.model.training
        self.model.eval()
        try:
            done = self._decode_running() if self.rows else []
            if self.queued:
                done += self._admit()
        finally:
            if was_training:
                self.model.train()
        return done

    def _sample_into(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Sample one token per row; return the indices of the rows that finished."""
        token, logprob = self.sample(logits.float(), [r.generator for r in rows])
        finished = []
        for i, (row, t, lp) in enumerate(zip(rows, token.tolist(), logprob.tolist(), strict=True)):
            row.tokens.append(t)
            row.logprobs.append(lp)
            if t in self.stops or len(row.tokens) >= self.max_new:
                finished.append(i)
        self.tokens_out += len(rows)
        return finished

    def _decode_running(self) -> list[tuple[Hashable, Generation]]:
        rows = self.rows
        ids = torch.tensor([[r.tokens[-1]] for r in rows], device=self.device)
        positions = torch.tensor([[r.position] for r in rows], device=self.device)
        mask = torch.cat([self.mask, self.mask.new_ones((len(rows), 1))], dim=1)
        out = self._forward(
            rows, input_ids=ids, attention_mask=mask, position_ids=positions, **{self.cache_arg: self.cache}
        )
        self.cache, self.mask = getattr(out, self.cache_arg), mask
        for r in rows:
            r.position += 1
        finished = self._sample_into(rows, out.logits[:, -1, :])
        return self._retire(finished)

    def _admit(self) -> list[tuple[Hashable, Generation]]:
        new, self.queued = self.queued, []
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - len(r.prompt_ids) :] = 1
            r.position = len(r.prompt_ids)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(
            new,
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self.cache_arg: DynamicCache()},
        )
        cache = getattr(out, self.cache_arg)
        finished = set(self._sample_into(new, out.logits[:, -1, :]))
        done = [self._reply(r) for i, r in enumerate(new) if i in finished]
        keep = [i for i in range(len(new)) if i not in finished]
        if not keep:
            return done
        if len(keep) < len(new):
            cache.batch_select_indices(torch.tensor(keep, device=self.device))
            mask = mask[keep]
        new = [new[i] for i in keep]
        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, new
            return done
        width = max(self.mask.shape[1], mask.shape[1])
        self.mask = _left_pad(self.cache, self.mask, width)
        mask = _left_pad(cache, mask, width)
        for mine, theirs in zip(_layers(self.cache), _layers(cache), strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.mask = torch.cat([self.mask, mask], dim=0)
        self.rows = self.rows + new
        return done

    def _retire(self, finished: list[int]) -> list[tuple[Hashable, Generation]]:
        if not finished:
            return []
        gone = set(finished)
        done = [self._reply(self.rows[i]) for i in finished]
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return done
        self.cache.batch_select_indices(torch.tensor(keep, device=self.device))
        mask = self.mask[keep]
        # cut the leading columns no remaining row attends to (they only cost attention work)
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first:
            for layer in _layers(self.cache):
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            mask = mask[:, first:]
        self.mask = mask
        return done

    def _reply(self, row: _Row) -> tuple[Hashable, Generation]:
        truncated = row.tokens[-1] not in self.stops
        gen = Generation(
            text=self.decode(row.tokens),
            prompt_ids=row.prompt_ids,
            completion_ids=row.tokens,
            logprobs=row.logprobs,
            truncated=truncated,
        )
        return row.key, gen
