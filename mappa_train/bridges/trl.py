"""Train one role of a mappa pipeline with TRL's ``GRPOTrainer``, on the pipeline's own reward.

::

    from mappa_train.bridges.trl import TRLBridge
    bridge = TRLBridge("math-chat-v2", role="coder")                # teammates: the scripted team
    trainer = bridge.trainer(model, GRPOConfig(...), processing_class=tokenizer)
    trainer.train()
    bridge.episodes[-1].records                                     # every receipt of the last episode

How it keeps mappa's semantics, through TRL's ``rollout_func`` hook (the environment interface, ``environment
_factory``, makes the env a set of tools the model calls; a mappa env is a turn schedule, not tools):

- **One TRL sample = one episode of the learning role.** Each dataset row names a task; ``rollout`` plays it in a
  :class:`~mappa_envs.views.SingleAgentEnv` (teammates act inside the env; their words reach the learner only as
  prompt text, never as completion tokens). GRPO's groups are then ``num_generations`` episodes of one task.
- **The learner's tokens are trained, the env's are masked.** The completion is the learner's turns as one
  token sequence: the sampled ids of turn 1, then the env's tokens (the tool output and the next generation
  header, rendered with the chat template) with ``env_mask`` 0, then the sampled ids of turn 2, ... — as TRL's
  own tool loop builds it. Sampled ids are never re-tokenised; each later turn is generated from exactly that
  sequence, so training scores the context the model sampled from.
- **The reward is what the env's reward wrapper paid the role** (coach, outcome or a mixture): the sum of its
  per-action rewards (:func:`mappa_envs.rewards.paid`), which is the role's PettingZoo return and the single-agent
  view's episode return. :meth:`TRLBridge.mappa_reward` returns it; the per-action list reaches every reward
  function as the ``action_rewards`` column (with ``mappa_return``, ``task_index``, ``episode_id``), so another
  reduction is one reward function away. GRPO gives one advantage per completion: credit between the role's own
  turns of one episode is summed; credit between roles is the wrapper's (each role is paid for its own actions).
- **Budget.** The completion (learner and env tokens) never exceeds ``max_completion_length``: a turn is cut at
  what is left, and once nothing is left the role's remaining turns are sent to the env as empty replies, so the
  episode still ends and is graded (counted in ``cut_turns``).

A learner observation that rewrites earlier messages instead of extending them (a refreshed workspace listing in
the user message) keeps the token context the model already holds and appends only the new messages; such turns
are counted in ``rewritten_contexts`` and warned about once.

Generation goes through ``GRPOTrainer._generate_single_turn`` (transformers ``generate`` or TRL's vLLM client, as
configured), the call TRL's own tool loop makes; it is private API, which is why the ``trl`` extra pins TRL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mappa_envs.records import ActionRecord, Message
from mappa_envs.views import SingleAgentEnv, Teammate

log = logging.getLogger(__name__)

TOOL_PREFIX = "Output of your code:\n"


@dataclass
class Episode:
    """One rollout: which task, what the learner generated, what the wrapper paid it, and every receipt."""

    task_index: int
    episode_id: str
    completion: str
    """The learner's replies as the env received them, joined by blank lines."""
    action_rewards: list[float]
    records: list[ActionRecord] = field(repr=False)
    outcome: dict[str, Any] | None = None

    @property
    def reward(self) -> float:
        """The learner's return: the sum of what the wrapper paid its actions."""
        return float(sum(self.action_rewards))


@dataclass
class _Rollout:
    env: SingleAgentEnv
    messages: list[Message]
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    pending_suffix: list[int] = field(default_factory=list)
    done: bool = False


class TRLBridge:
    """One learning role of a mappa env, served to ``GRPOTrainer`` as a dataset, a rollout hook and a reward.

    Args:
        env: a registered env id (``"math-chat-v2"``); ``make_kwargs`` go to :func:`mappa_envs.make`.
        role: the role to train.
        teammates: the other roles, as for :class:`~mappa_envs.views.SingleAgentEnv` (default: scripted team).
        tool_role: ``"user"`` (default) renders the env's ``tool`` messages as user turns starting with
            ``tool_prefix`` (most chat templates were never trained on a ``tool`` role); ``"tool"`` keeps them.
        seed: episode ``k`` of this bridge resets its env with ``seed + k`` (episode ids, reproducible runs).
    """

    def __init__(
        self,
        env: str,
        role: str,
        teammates: Teammate | Mapping[str, Teammate] | None = None,
        *,
        tool_role: str = "user",
        tool_prefix: str = TOOL_PREFIX,
        seed: int = 0,
        **make_kwargs: Any,
    ) -> None:
        if tool_role not in ("user", "tool"):
            raise ValueError(f"tool_role must be 'user' or 'tool', got {tool_role!r}")
        self.env_id, self.role, self.teammates = env, role, teammates
        self.tool_role, self.tool_prefix, self.seed = tool_role, tool_prefix, int(seed)
        self._make_kwargs = make_kwargs
        self._pool: list[SingleAgentEnv] = [self._new_env()]  # built now: bad arguments fail here
        raw = self._pool[0].aec.unwrapped
        self.tasks = raw.tasks
        self._render_task: Callable[[Any], str] = raw.spec.render_task
        self._index: dict[str, int] = {}
        for i, task in enumerate(self.tasks):
            self._index.setdefault(self._render_task(task), i)
        self.episodes: list[Episode] = []
        self.cut_turns = 0
        self.rewritten_contexts = 0

    def _new_env(self) -> SingleAgentEnv:
        return SingleAgentEnv(self.env_id, self.role, self.teammates, **self._make_kwargs)

    # -------------------------------------------------------------------------------------------- for TRL

    def dataset(self, indices: Sequence[int] | None = None):
        """A ``datasets.Dataset`` with one row per task: a conversational ``prompt`` naming the task, ``task_index``.

        The prompt only identifies the task (and shows in TRL's logs); the learner's real prompt is its first
        observation in the episode, built by the env (system prompt, task, the teammates' work before it).
        """
        from datasets import Dataset

        chosen = range(len(self.tasks)) if indices is None else indices
        rows = [self._index[self._render_task(self.tasks[i])] for i in chosen]
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": self._render_task(self.tasks[i])}] for i in rows],
                "task_index": rows,
            }
        )

    def trainer(self, model: Any, args: Any = None, **kwargs: Any):
        """A ``GRPOTrainer`` wired to this bridge: ``train_dataset``, ``rollout_func`` and ``mappa_reward``.

        ``kwargs`` go to ``GRPOTrainer`` (``processing_class=``, ``peft_config=``, ``callbacks=`` ...); pass
        ``reward_funcs=[bridge.mappa_reward, ...]`` to add rewards of your own.
        """
        from trl import GRPOTrainer

        kwargs.setdefault("reward_funcs", [self.mappa_reward])
        kwargs.setdefault("train_dataset", self.dataset())
        return GRPOTrainer(model, args=args, rollout_func=self.rollout, **kwargs)

    def mappa_reward(
        self, prompts: list, completions: list, mappa_return: list[float], **_: Any
    ) -> list[float]:
        """TRL reward function: each completion's episode return (what the env's reward wrapper paid the role)."""
        return [float(r) for r in mappa_return]

    def rollout(self, prompts: list, trainer: Any) -> dict[str, list]:
        """TRL ``rollout_func``: play one episode per prompt (in lockstep), return ids, env mask and rewards."""
        indices = [self._task_index(p) for p in prompts]
        tokenizer = trainer.processing_class
        budget = int(trainer.max_completion_length)
        while len(self._pool) < len(prompts):
            self._pool.append(self._new_env())
        rollouts: list[_Rollout] = []
        for index, env in zip(indices, self._pool, strict=False):
            obs, _ = env.reset(
                seed=self.seed + len(self.episodes) + len(rollouts), options={"task_index": index}
            )
            messages = list(obs["messages"])
            rollouts.append(_Rollout(env, messages, self._render(trainer, messages, generation_prompt=True)))
        while True:
            active = [r for r in rollouts if not r.done]
            if not active:
                break
            generating = [r for r in active if len(r.completion_ids) + len(r.pending_suffix) < budget]
            for r in active:
                if r not in generating:  # no budget left: the role's remaining turns are empty replies
                    self.cut_turns += 1
                    self._act(trainer, r, "")
            if not generating:
                continue
            for r in generating:  # the env tokens before this turn join the completion, masked
                r.completion_ids += r.pending_suffix
                r.env_mask += [0] * len(r.pending_suffix)
                r.logprobs += [0.0] * len(r.pending_suffix)
                r.pending_suffix = []
            inputs = [r.prompt_ids + r.completion_ids for r in generating]
            ids, logprobs = trainer._generate_single_turn(inputs, None, {}, num_generations=1)
            for i, r in enumerate(generating):
                left = budget - len(r.completion_ids)
                new = list(ids[i])[:left]
                r.completion_ids += new
                r.env_mask += [1] * len(new)
                r.logprobs += list(logprobs[i])[:left] if logprobs is not None else [0.0] * len(new)
                self._act(trainer, r, tokenizer.decode(new, skip_special_tokens=True))
        episodes = [self._finish(r, i) for r, i in zip(rollouts, indices, strict=True)]
        self.episodes.extend(episodes)
        return {
            "prompt_ids": [r.prompt_ids for r in rollouts],
            "completion_ids": [r.completion_ids for r in rollouts],
            "logprobs": [r.logprobs for r in rollouts],
            "env_mask": [r.env_mask for r in rollouts],
            "mappa_return": [e.reward for e in episodes],
            "action_rewards": [e.action_rewards for e in episodes],
            "episode_id": [e.episode_id for e in episodes],
            "task_index": [e.task_index for e in episodes],
        }

    def close(self) -> None:
        """Close every env (kernels, workspaces)."""
        for env in self._pool:
            env.close()
        self._pool = []

    # ---------------------------------------------------------------------------------------------- internals

    def _task_index(self, prompt: Any) -> int:
        content = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        try:
            return self._index[content]
        except KeyError:
            raise ValueError(
                f"prompt {str(content)[:80]!r}... names no task of {self.env_id}: build the train_dataset with "
                "bridge.dataset() (its prompts name the env's tasks)"
            ) from None

    def _normalise(self, messages: Sequence[Message]) -> list[Message]:
        out = []
        for m in messages:
            if m["role"] == "tool" and self.tool_role == "user":
                out.append({"role": "user", "content": self.tool_prefix + m["content"]})
            else:
                out.append({"role": m["role"], "content": m["content"]})
        return out

    def _render(self, trainer: Any, messages: Sequence[Message], generation_prompt: bool) -> list[int]:
        tokenizer = trainer.processing_class
        text = tokenizer.apply_chat_template(
            self._normalise(messages),
            tokenize=False,
            add_generation_prompt=generation_prompt,
            chat_template=getattr(trainer, "chat_template", None),
            **(getattr(trainer, "chat_template_kwargs", None) or {}),
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _act(self, trainer: Any, r: _Rollout, reply: str) -> None:
        """Send the learner's reply; teammates play on; keep the env tokens the learner's next turn starts with."""
        r.replies.append(reply)
        obs, _, terminated, truncated, info = r.env.step(reply)
        if terminated or truncated:
            r.done = True
            return
        record: ActionRecord = info["record"]
        held = [*r.messages, {"role": "assistant", "content": record.visible_action}]
        new = list(obs["messages"])
        if new[: len(held)] != held:
            self.rewritten_contexts += 1
            if self.rewritten_contexts == 1:
                log.warning(
                    "%s: %s's observation rewrote earlier messages; the bridge keeps the token context the model "
                    "holds and appends only the new messages (counted in rewritten_contexts)",
                    self.env_id,
                    self.role,
                )
        r.pending_suffix = self._suffix(trainer, held, new[len(held) :])
        r.messages = new

    def _suffix(self, trainer: Any, held: list[Message], added: list[Message]) -> list[int]:
        """Token ids the chat template puts after the learner's end-of-turn token: ``added`` + generation header.

        Like TRL's ``_get_tool_suffix_ids``: render with and without the new messages, align the cut to the last
        end-of-turn (eos) token of the shorter rendering, and keep what follows.
        """
        prefix = self._render(trainer, held, generation_prompt=False)
        full = self._render(trainer, [*held, *added], generation_prompt=True)
        eos = trainer.processing_class.eos_token_id
        ends = [i for i, t in enumerate(prefix) if t == eos]
        if ends:
            prefix = prefix[: ends[-1] + 1]
        if full[: len(prefix)] != prefix:
            raise ValueError(
                f"{self.env_id}: the chat template does not render the learner's turns as a prefix of the next "
                "prompt, so its context cannot be extended token by token; use a template that renders each message "
                "independently (ChatML does)"
            )
        return full[len(prefix) :]

    def _finish(self, r: _Rollout, index: int) -> Episode:
        env = r.env
        raw = env.aec.unwrapped
        return Episode(
            task_index=index,
            episode_id=raw.episode_id,
            completion="\n\n".join(r.replies),
            action_rewards=env.paid(),
            records=list(raw.records),
            outcome=raw.outcome,
        )
