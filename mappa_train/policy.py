"""``TeamPolicy``: one policy per role over one base causal LM, plus the frozen reference for the KL term.

Modes
-----
* ``lora`` (default): ONE base model, one peft LoRA adapter per role (``get_peft_model`` for the first role,
  ``add_adapter`` for the others; ``set_adapter(role)`` selects one). LoRA B starts at zero, so at init every role
  *is* the base model and the KL to the reference is exactly 0. The reference is the same model with adapters
  disabled (``disable_adapter()``) — no second copy. The base model object passed in is wrapped in place.
* ``full``: one full deep copy of the base per role (all parameters trainable); the base model passed in becomes
  the frozen reference (``requires_grad=False``). Memory: roles + 1 copies.

Prompts
-------
Messages are rendered with the tokenizer's chat template (``add_generation_prompt=True``) and tokenised without
extra special tokens. ``tool`` turns: most chat templates (SmolLM2's ChatML among them) were never trained on a
``tool`` role, so by default (``tool_role="user"``) a tool message becomes a ``user`` message whose content starts
with ``tool_prefix`` ("Output of your code:\\n"); ``tool_role="tool"`` passes the role through unchanged for
templates that support it.

Prompts longer than ``max_prompt_tokens`` are cut from the LEFT of the non-system content (earliest message
first, normally the user message holding the task and the other agents' work; a ``[...]`` marker shows the cut).
The system prompt and the chat headers — including the trailing ``<|im_start|>assistant\\n`` generation header —
are never cut; if they alone do not fit, ``generate`` raises ``ValueError``. ``prompt_truncations`` counts cuts.
``max_prompt_tokens=None`` means ``max_position_embeddings - max_new_tokens``.

Sampling and log-probs
----------------------
A manual KV-cached decode loop over a left-padded batch (one forward for the prompts, ``logits_to_keep=1``, then
one forward per new token). At each step the next-token distribution is ``p = softmax(logits / temperature)``,
optionally restricted by ``top_k`` / ``top_p`` (renormalised), and the token is drawn with ``torch.multinomial``
from the global torch RNG (so ``torch.manual_seed`` makes generation reproducible). The behaviour log-prob stored
for each token is ``log_softmax(logits / temperature)[token]`` over the FULL vocabulary — the temperature-scaled
distribution, before top-k/top-p truncation. With ``top_p=1, top_k=0`` (the defaults) that is exactly the
distribution sampled from; with truncation it is the distribution a training forward pass recomputes
(:meth:`TeamPolicy.logprobs` uses the same temperature), which is what PPO-style ratios need. ``temperature=0``
means greedy decoding, with log-probs of the untempered (T=1) distribution.

A completion is cut at its first end-of-turn token (eos / ``<|im_end|>`` / ``<|endoftext|>``), which is kept as
the last completion id; ``truncated=True`` when ``max_new_tokens`` ran out first. ``text`` is the decoded
completion without special tokens. Token ids are never re-tokenised from text.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mappa_train.logprobs import batch_logprobs, right_padded, unwrap_model
from mappa_train.types import Generation, Message

_ROLE_NAME = re.compile(r"[A-Za-z0-9_\-]+")
TRUNCATION_MARKER = "[...]\n"


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
    ) -> None:
        roles = list(roles)
        if not roles or len(set(roles)) != len(roles):
            raise ValueError(f"roles must be non-empty and unique, got {roles}")
        for role in roles:
            if not _ROLE_NAME.fullmatch(role):
                raise ValueError(
                    f"role name {role!r} must match [A-Za-z0-9_-]+ (it names an adapter and a folder)"
                )
            # peft looks adapter names up inside parameter names: "a", "lo", "ra" ... would match "lora_"
            if mode == "lora" and role in "lora_":
                raise ValueError(
                    f"role name {role!r} clashes with peft's 'lora_' parameter prefix; pick another"
                )
        if mode not in ("lora", "full"):
            raise ValueError(f"mode must be 'lora' or 'full', got {mode!r}")
        if tool_role not in ("user", "tool"):
            raise ValueError(f"tool_role must be 'user' or 'tool', got {tool_role!r}")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template (models.prepare_tokenizer sets ChatML)")
        self.roles = roles
        self.mode = mode
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_prompt_tokens = max_prompt_tokens
        self.tool_role = tool_role
        self.tool_prefix = tool_prefix
        self.prompt_truncations = 0
        self.lora_settings = {
            "r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "target_modules": target_modules,
        }
        self.config = base_model.config
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.stop_token_ids = self._stop_ids(base_model, tokenizer)

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if mode == "lora":
                self._build_lora(base_model)
            else:
                self._build_full(base_model)
        self.eval()

    # ------------------------------------------------------------------------------------------------ construction

    @staticmethod
    def _stop_ids(model: nn.Module, tokenizer: Any) -> list[int]:
        ids: set[int] = set()
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update([int(gen_eos)] if isinstance(gen_eos, int) else [int(i) for i in gen_eos])
        vocab = tokenizer.get_vocab()
        for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            if token in vocab:
                ids.add(int(vocab[token]))
        if not ids:
            raise ValueError("the tokenizer has no eos / end-of-turn token")
        return sorted(ids)

    def _build_lora(self, base_model: nn.Module) -> None:
        from peft import LoraConfig, get_peft_model

        for p in base_model.parameters():
            p.requires_grad_(False)
        config = LoraConfig(task_type="CAUSAL_LM", bias="none", **self.lora_settings)
        with warnings.catch_warnings():  # peft 0.21 calls transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(base_model, config, adapter_name=self.roles[0])
        for role in self.roles[1:]:
            model.add_adapter(role, LoraConfig(task_type="CAUSAL_LM", bias="none", **self.lora_settings))
        self.model = model
        self.models: dict[str, nn.Module] = {}
        self.ref_model: nn.Module | None = None
        self._active: str | None = None
        self._activate(self.roles[0])

    def _build_full(self, base_model: nn.Module) -> None:
        for p in base_model.parameters():
            p.requires_grad_(False)
        self.ref_model = base_model
        self.models = {}
        for role in self.roles:
            copy_ = copy.deepcopy(base_model)
            for p in copy_.parameters():
                p.requires_grad_(True)
            self.models[role] = copy_
        self.model = None

    # ------------------------------------------------------------------------------------------------ selection

    @property
    def pad_id(self) -> int:
        """The padding token id (the tokenizer's pad token, else eos)."""
        return self.pad_token_id

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
        names = ("temperature", "top_p", "top_k", "max_new_tokens")
        saved = {n: getattr(self, n) for n in names}
        new = dict(zip(names, (temperature, top_p, top_k, max_new_tokens), strict=True))
        try:
            for name, value in new.items():
                if value is not None:
                    setattr(self, name, value)
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    @property
    def device(self) -> torch.device:
        # Never via _model_for: selecting an adapter here would switch the active LoRA adapter under a caller that
        # already selected its role (the update would then run, and train, the first role's adapter).
        model = self.model if self.mode == "lora" else self.models[self.roles[0]]
        return next(model.parameters()).device

    def _check_role(self, role: str) -> None:
        if role not in self.roles:
            raise KeyError(f"unknown role {role!r}; roles: {self.roles}")

    def _activate(self, role: str) -> None:
        if self.mode == "lora" and self._active != role:
            self.model.set_adapter(role)  # also makes only this adapter's parameters require grad
            self._active = role

    def _model_for(self, role: str) -> nn.Module:
        if self.mode == "lora":
            self._activate(role)
            return self.model
        return self.models[role]

    @contextmanager
    def forward_role(self, role: str) -> Iterator[nn.Module]:
        """The model to run for a training forward pass of ``role`` (its adapter selected and trainable)."""
        self._check_role(role)
        yield self._model_for(role)

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen reference model: the base with adapters disabled (lora) or the reference copy (full)."""
        if self.mode == "lora":
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.ref_model

    def trainable_parameters(self, role: str) -> list[nn.Parameter]:
        """The parameters an optimiser for ``role`` should update (its LoRA A/B, or its whole copy)."""
        self._check_role(role)
        if self.mode == "full":
            return list(self.models[role].parameters())
        params = []
        for name, param in self.model.named_parameters():
            parts = name.split(".")
            if any(parts[i].startswith("lora_") and parts[i + 1] == role for i in range(len(parts) - 1)):
                params.append(param)
        return params

    def enable_gradient_checkpointing(self) -> TeamPolicy:
        """Recompute each decoder layer in backward instead of keeping its activations (training mode only).

        Why: on long rows (DSBench: 1k-token prompts + 512-token replies) the activations, not the weights, are
        what fills memory, so without it only one row fits per micro-batch on a 24 GiB machine. Costs about one
        more forward per backward. Non-reentrant checkpointing, so frozen inputs (LoRA on a frozen base) still get
        gradients. Generation and no-grad scoring are unaffected (transformers checkpoints only in training).
        """
        for module in self.modules():
            if module is self.ref_model:
                continue
            base = unwrap_model(module)
            if not getattr(base, "supports_gradient_checkpointing", False):
                raise ValueError(f"{type(base).__name__} does not support gradient checkpointing")
            kwargs = {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return self

    def modules(self) -> list[nn.Module]:
        return [self.model] if self.mode == "lora" else [*self.models.values(), self.ref_model]

    def train(self) -> TeamPolicy:
        for m in self.modules():
            m.train()
        if self.mode == "full":
            self.ref_model.eval()
        return self

    def eval(self) -> TeamPolicy:
        for m in self.modules():
            m.eval()
        return self

    @property
    def training(self) -> bool:
        return self.modules()[0].training

    # ------------------------------------------------------------------------------------------------ prompts

    def normalise_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Map ``tool`` turns to what the template supports (see the module docstring)."""
        out: list[Message] = []
        for m in messages:
            role, content = m["role"], m.get("content") or ""
            if role == "tool" and self.tool_role == "user":
                role, content = "user", self.tool_prefix + content
            out.append({"role": role, "content": content})
        return out

    def _render_ids(self, messages: list[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_limit(self, max_new_tokens: int | None = None) -> int | None:
        """``max_prompt_tokens``, else the context length minus the reply budget (``None``: unlimited)."""
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        max_pos = getattr(self.config, "max_position_embeddings", None)
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        return None if max_pos is None else max_pos - max_new

    def encode_prompt(self, messages: Sequence[Message], max_tokens: int | None = None) -> list[int]:
        """Prompt token ids (chat template + generation header), left-truncated to fit ``max_tokens``."""
        messages = self.normalise_messages(messages)
        limit = max_tokens if max_tokens is not None else self.prompt_limit()
        ids = self._render_ids(messages)
        if limit is None or len(ids) <= limit:
            return ids
        cuttable = [i for i, m in enumerate(messages) if m["role"] != "system"]
        total = sum(len(messages[i]["content"]) for i in cuttable)

        def cut(k: int) -> list[Message]:
            out = [dict(m) for m in messages]
            for i in cuttable:
                content = out[i]["content"]
                if k >= len(content):
                    k -= len(content)
                    out[i]["content"] = ""
                else:
                    if k > 0:
                        out[i]["content"] = TRUNCATION_MARKER + content[k:]
                    break
            return out

        floor = self._render_ids(cut(total))
        if len(floor) > limit:
            raise ValueError(
                f"prompt does not fit in {limit} tokens even with all non-system content removed "
                f"({len(floor)} tokens of system prompt and chat headers); raise max_prompt_tokens"
            )
        lo, hi, best = 0, total, floor  # invariant: cutting hi characters fits
        while lo < hi:
            mid = (lo + hi) // 2
            ids = self._render_ids(cut(mid))
            if len(ids) <= limit:
                hi, best = mid, ids
            else:
                lo = mid + 1
        self.prompt_truncations += 1
        return best

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
        """Sample one reply per prompt with ``role``'s weights, in one left-padded batch."""
        self._check_role(role)
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        limit = self.prompt_limit(max_new)
        prompt_ids = [self.encode_prompt(p, max_tokens=limit) for p in prompts]
        return self.generate_ids(
            role, prompt_ids, max_new_tokens=max_new, temperature=temperature, top_p=top_p, top_k=top_k
        )

    @torch.no_grad()
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
        self._check_role(role)
        if not prompt_ids:
            return []
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("empty prompt")
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        temp = self.temperature if temperature is None else temperature
        top_p = self.top_p if top_p is None else top_p
        top_k = self.top_k if top_k is None else top_k
        model = self._model_for(role)
        was_training = model.training
        model.eval()
        try:
            tokens, logprobs = self._decode(model, prompt_ids, max_new, temp, top_p, top_k)
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
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    prompt_ids=list(prompt),
                    completion_ids=ids,
                    logprobs=lps[:end],
                    truncated=truncated,
                )
            )
        return out

    def _decode(
        self,
        model: nn.Module,
        prompt_ids: Sequence[Sequence[int]],
        max_new: int,
        temperature: float,
        top_p: float,
        top_k: int,
    ) -> tuple[list[list[int]], list[list[float]]]:
        device = next(model.parameters()).device
        batch, width = len(prompt_ids), max(len(p) for p in prompt_ids)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
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
        for step in range(max_new):
            logits = out.logits[:, -1, :].float()
            token, logprob = sample_next(logits, temperature, top_p, top_k)
            token = torch.where(done, torch.full_like(token, self.pad_token_id), token)
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
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            next_pos = next_pos + 1
        if not tokens:
            return [[] for _ in range(batch)], [[] for _ in range(batch)]
        tok = torch.stack(tokens, dim=1).cpu().tolist()
        lp = torch.stack(logprobs, dim=1).cpu().tolist()
        return tok, lp

    # ------------------------------------------------------------------------------------------------ scoring

    def logprobs(
        self,
        role: str | None,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        *,
        temperature: float | None = None,
        chunk_tokens: int = 1024,
    ) -> list[torch.Tensor]:
        """Per-token log-probs of each completion given its prompt, under ``role`` (``None``: the reference).

        Uses the policy's sampling temperature (``temperature=0`` → 1), so at init the result equals the behaviour
        log-probs of :meth:`generate`. Runs under the ambient grad mode: call it under ``torch.no_grad()`` for old /
        reference log-probs, with grad enabled for the loss. The vocabulary projection runs over the completion
        positions only, in chunks of ``chunk_tokens`` (checkpointed when grad is enabled), so the full
        batch × length × vocabulary logits tensor is never built.
        """
        if len(prompt_ids) != len(completion_ids):
            raise ValueError("prompt_ids and completion_ids differ in length")
        if not prompt_ids:
            return []
        temp = self.temperature if temperature is None else temperature
        temp = temp if temp > 0 else 1.0
        if role is None:
            with self.reference() as model:
                return self._score(model, prompt_ids, completion_ids, temp, chunk_tokens)
        with self.forward_role(role) as model:
            return self._score(model, prompt_ids, completion_ids, temp, chunk_tokens)

    def _score(
        self, model, prompt_ids, completion_ids, temperature: float, chunk_tokens: int
    ) -> list[torch.Tensor]:
        device = next(model.parameters()).device
        batch = {
            k: v.to(device) for k, v in right_padded(prompt_ids, completion_ids, self.pad_token_id).items()
        }
        logp = batch_logprobs(model, batch, chunk_size=chunk_tokens, temperature=temperature)
        return [logp[i, : len(c)] for i, c in enumerate(completion_ids)]

    # ------------------------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write every role's weights under ``path`` atomically (a temporary folder renamed into place).

        Layout: ``team.json`` (mode, roles, LoRA settings) and one folder per role: a standard peft adapter
        (``adapter_model.safetensors`` + ``adapter_config.json``, loadable by ``PeftModel.from_pretrained`` or
        a vLLM LoRA server) in lora mode, ``model.safetensors`` in full mode.
        """
        from safetensors.torch import save_file, save_model

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            for role in self.roles:
                folder = tmp / role
                folder.mkdir()
                if self.mode == "lora":
                    from peft import get_peft_model_state_dict

                    state = get_peft_model_state_dict(self.model, adapter_name=role)
                    save_file(
                        {k: v.detach().contiguous().cpu() for k, v in state.items()},
                        folder / "adapter_model.safetensors",
                    )
                    self.model.peft_config[role].save_pretrained(str(folder))
                else:
                    save_model(self.models[role], str(folder / "model.safetensors"))
            manifest = {
                "mode": self.mode,
                "roles": self.roles,
                "lora": {
                    k: v if isinstance(v, str | int | float) else list(v)
                    for k, v in self.lora_settings.items()
                },
                "base_model": getattr(self.config, "_name_or_path", ""),
            }
            (tmp / "team.json").write_text(json.dumps(manifest, indent=2))
            tmp.chmod(0o755)
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.rename(path, old)
            os.rename(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    def load(self, path: str | Path) -> None:
        """Load weights written by :meth:`save` into this policy (same mode and roles)."""
        from safetensors.torch import load_file, load_model

        path = Path(path)
        manifest = json.loads((path / "team.json").read_text())
        if manifest["mode"] != self.mode or sorted(manifest["roles"]) != sorted(self.roles):
            raise ValueError(
                f"{path} holds mode={manifest['mode']} roles={manifest['roles']}; "
                f"this policy is mode={self.mode} roles={self.roles}"
            )
        for role in self.roles:
            folder = path / role
            if self.mode == "lora":
                from peft import set_peft_model_state_dict

                saved = json.loads((folder / "adapter_config.json").read_text())
                for key in ("r", "lora_alpha"):
                    if saved.get(key) != self.lora_settings[key]:
                        raise ValueError(
                            f"{folder}: {key}={saved.get(key)}, this policy has {self.lora_settings[key]}"
                        )
                state = load_file(str(folder / "adapter_model.safetensors"), device=str(self.device))
                result = set_peft_model_state_dict(self.model, state, adapter_name=role)
                unexpected = getattr(result, "unexpected_keys", [])
                if unexpected:
                    raise ValueError(f"{folder}: unexpected adapter keys {unexpected[:5]}")
            else:
                load_model(
                    self.models[role], str(folder / "model.safetensors"), strict=True, device=str(self.device)
                )


def sample_next(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0):
    """Draw one token per row from ``logits`` (batch × vocab, float32).

    Returns ``(token, logprob)`` with ``logprob = log_softmax(logits / temperature)[token]`` (full vocabulary,
    before top-k/top-p); ``temperature <= 0`` is greedy with the T=1 log-prob.
    """
    if temperature <= 0:
        token = logits.argmax(-1)
        return token, logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
    logp = (logits / temperature).log_softmax(-1)
    probs = logp.exp()
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(-1)
        sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs > top_p * cumulative[:, -1:], 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    token = torch.multinomial(probs, 1).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)
