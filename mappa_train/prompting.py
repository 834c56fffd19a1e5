"""``ChatPrompter``: messages → prompt token ids (chat template, ``tool`` turns, left truncation) and stop ids.

Messages are rendered with the tokenizer's chat template (``add_generation_prompt=True``) and tokenised without
extra special tokens. ``tool`` turns: most chat templates (SmolLM2's ChatML among them) were never trained on a
``tool`` role, so by default (``tool_role="user"``) a tool message becomes a ``user`` message whose content starts
with ``tool_prefix`` ("Output of your code:\\n"); ``tool_role="tool"`` passes the role through unchanged for
templates that support it.

Prompts longer than the limit are cut from the LEFT of the non-system content (earliest message first, normally
the user message holding the task and the other agents' work; a ``[...]`` marker shows the cut). The system prompt
and the chat headers — including the trailing ``<|im_start|>assistant\\n`` generation header — are never cut; if
they alone do not fit, :meth:`ChatPrompter.encode` raises ``ValueError``. ``truncations`` counts cuts. The limit is
``max_prompt_tokens``, else ``context_length - max_new_tokens`` (``None`` context: unlimited).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mappa_train.types import Message

TRUNCATION_MARKER = "[...]\n"
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every id that ends a turn: the tokenizer's eos, the generation config's eos, and known end-of-turn tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(generation_config, "eos_token_id", None)
    if gen_eos is not None:
        ids.update([int(gen_eos)] if isinstance(gen_eos, int) else [int(i) for i in gen_eos])
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            ids.add(int(vocab[token]))
    if not ids:
        raise ValueError("the tokenizer has no eos / end-of-turn token")
    return sorted(ids)


class ChatPrompter:
    """Renders one role's conversation into the prompt ids the sampler continues and the trainer scores."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_prompt_tokens: int | None = None,
        context_length: int | None = None,
        tool_role: Literal["user", "tool"] = "user",
        tool_prefix: str = "Output of your code:\n",
    ) -> None:
        if tool_role not in ("user", "tool"):
            raise ValueError(f"tool_role must be 'user' or 'tool', got {tool_role!r}")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template (models.prepare_tokenizer sets ChatML)")
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.context_length = context_length
        self.tool_role = tool_role
        self.tool_prefix = tool_prefix
        self.truncations = 0
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

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

    def limit(self, max_new_tokens: int) -> int | None:
        """``max_prompt_tokens``, else the context length minus the reply budget (``None``: unlimited)."""
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        return None if self.context_length is None else self.context_length - max_new_tokens

    def encode(self, messages: Sequence[Message], max_tokens: int | None) -> list[int]:
        """Prompt token ids (chat template + generation header), left-truncated to fit ``max_tokens``."""
        messages = self.normalise_messages(messages)
        ids = self._render_ids(messages)
        if max_tokens is None or len(ids) <= max_tokens:
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
        if len(floor) > max_tokens:
            raise ValueError(
                f"prompt does not fit in {max_tokens} tokens even with all non-system content removed "
                f"({len(floor)} tokens of system prompt and chat headers); raise max_prompt_tokens"
            )
        lo, hi, best = 0, total, floor  # invariant: cutting hi characters fits
        while lo < hi:
            mid = (lo + hi) // 2
            ids = self._render_ids(cut(mid))
            if len(ids) <= max_tokens:
                hi, best = mid, ids
            else:
                lo = mid + 1
        self.truncations += 1
        return best

    def encode_reply(self, text: str, max_tokens: int | None = None) -> list[int]:
        """The ids of ``text`` written as this template writes an assistant reply after the generation header,
        up to and including its end-of-turn token: what a sampled reply that stopped by itself is, so a
        supervised target (a coach's correction) continues the very prompt ids the agent saw. ``max_tokens`` keeps
        the first ``max_tokens`` (a reply the sampler could not have finished is learned as its prefix)."""
        probe: list[Message] = [{"role": "user", "content": "?"}]
        head = self.tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            [*probe, {"role": "assistant", "content": text}], tokenize=False
        )
        if not full.startswith(head):
            raise ValueError(
                "the chat template does not render an assistant reply as a continuation of its generation "
                "header, so a correction cannot be tokenised as a reply; use a ChatML-style template"
            )
        ids = list(self.tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"])
        stops = set(stop_token_ids(self.tokenizer))
        ends = [i for i, t in enumerate(ids) if t in stops]
        if ends:
            ids = ids[
                : ends[-1] + 1
            ]  # the template's trailing newline after the end-of-turn token is not sampled
        return ids if max_tokens is None else ids[:max_tokens]
