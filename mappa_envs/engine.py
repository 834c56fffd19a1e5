"""``PipelineEnv``: one PettingZoo AEC engine for every pipeline (sequential roles, debate rounds, ...).

Each agent turn is one ``step``; the action is the agent's reply (text). The engine runs the fenced python blocks
of the visible reply in the episode's workspace kernel (for roles that run code), records a receipt
(:class:`~mappa_envs.records.ActionRecord`) in ``infos[agent]["record"]``, decides who acts next from the
pipeline's schedule, and when the schedule is done grades the episode and gives every agent the outcome reward.
What differs between pipelines is data (:class:`~mappa_envs.pipeline.PipelineSpec`), never code here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pettingzoo import AECEnv

from mappa_envs.context import build_messages
from mappa_envs.grading import isolated
from mappa_envs.pipeline import PipelineSpec, Role
from mappa_envs.records import ActionRecord, Message, ToolResult, trim
from mappa_envs.spaces import AgentText, observation_space
from mappa_envs.tasks import Task, TaskSet
from mappa_envs.text import python_blocks, strip_think
from mappa_envs.workspace import CellLimits, Workspace
from mappa_envs.workspace.kernel import GiB, Wrapper
from mappa_envs.workspace.sandbox import Protection, SandboxPolicy, make_wrapper

CLIP_MARKER = "\n[... action clipped at {n} characters ...]"


class PipelineEnv(AECEnv):
    """A team of text agents taking turns on one task; see the pipeline modules for each env's documentation.

    Args:
        spec: the pipeline (roles, schedule, grader, task loader).
        tasks: anything ``spec.load_tasks`` accepts (a list of dicts, a file or folder path, ``"embedded:eval"``),
            or a ready :class:`TaskSet`; defaults to ``spec.default_tasks``.
        env_id: the registry id, recorded in every receipt.
        max_action_chars: longer actions are clipped (with a marker) and flagged in the record.
        cell_timeout_s / cell_memory_gb / cell_output_kb: per-cell limits of the workspace kernel.
        tool_output_chars: how much of a cell's output other agents see (head and tail kept, marked).
        close_fences: show another agent's reply that ends inside a code block with the block closed and marked
            (the ``-v1`` envs; ``-v0`` shows it as it is, and the next agent's reply tends to start by closing it).
        kernel_pool: kernels kept started (and pre-imported) ahead of need; 0 starts one on first use.
        workspace_dir: where episode folders are created (default: the system temp folder).
        keep_workspace: keep each episode's folder after the episode for inspection.
        kernel_wrapper: turns the kernel command into a sandboxed one (see the sandbox module); given, it replaces
            the built-in sandbox.
        sandbox: ``"auto"`` (default) runs agent code in a bubblewrap sandbox where it can, else with the strongest
            fallback and a one-time warning naming what is not protected; ``"strict"`` refuses to run without
            bubblewrap; ``"none"`` runs agent code unconfined (trusted code only). See ``docs/SANDBOX.md``.
        sandbox_policy: the sandbox's resource caps (:class:`~mappa_envs.workspace.sandbox.SandboxPolicy`); by default
            memory for the whole sandbox is twice ``cell_memory_gb``.
        render_mode: ``"human"`` prints each action, ``"ansi"`` returns the transcript from ``render()``.
    """

    metadata = {"name": "mappa_pipeline", "render_modes": ["human", "ansi"], "is_parallelizable": False}

    def __init__(
        self,
        spec: PipelineSpec,
        tasks: Any = None,
        env_id: str | None = None,
        max_action_chars: int = 32_768,
        cell_timeout_s: float = 60.0,
        cell_memory_gb: float | None = 4.0,
        cell_output_kb: int = 64,
        tool_output_chars: int = 4000,
        close_fences: bool = False,
        kernel_pool: int = 1,
        workspace_dir: str | Path | None = None,
        keep_workspace: bool = False,
        kernel_wrapper: Wrapper | None = None,
        sandbox: str = "auto",
        sandbox_policy: SandboxPolicy | None = None,
        python: str = sys.executable,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.spec = spec
        self.env_id = env_id or spec.name
        self.metadata = {**self.metadata, "name": self.env_id}
        self.tasks: TaskSet = (
            tasks if isinstance(tasks, TaskSet) else spec.load_tasks(tasks or spec.default_tasks)
        )
        self.max_action_chars = int(max_action_chars)
        self.tool_output_chars = int(tool_output_chars)
        self.close_fences = bool(close_fences)
        self.render_mode = render_mode
        self.possible_agents = [r.name for r in spec.roles]
        self._roles: dict[str, Role] = {r.name: r for r in spec.roles}
        self._action_spaces = {a: AgentText(self.max_action_chars) for a in self.possible_agents}
        self._observation_spaces = {a: observation_space() for a in self.possible_agents}
        limits = CellLimits(
            timeout_s=float(cell_timeout_s),
            memory_bytes=int(cell_memory_gb * GiB) if cell_memory_gb else None,
            output_bytes=int(cell_output_kb * 1024),
        )
        self.sandbox: Protection | None = None  # what the agents' code is protected by, in words
        if spec.runs_code and kernel_wrapper is None:
            if sandbox_policy is None:
                memory = 2 * limits.memory_bytes if limits.memory_bytes else None
                sandbox_policy = SandboxPolicy(memory_bytes=memory)
            choice = make_wrapper(sandbox, sandbox_policy)  # type: ignore[arg-type]
            kernel_wrapper, self.sandbox = choice.wrapper, choice.protection
        elif kernel_wrapper is not None and sandbox == "strict":
            raise ValueError("sandbox='strict' cannot vouch for a custom kernel_wrapper; give one of them")
        self.workspace: Workspace | None = (
            Workspace(
                root=Path(workspace_dir) if workspace_dir else None,
                limits=limits,
                preload=spec.preload,
                pool_size=kernel_pool,
                wrapper=kernel_wrapper,
                python=python,
                keep=keep_workspace,
            )
            if spec.runs_code
            else None
        )
        self._rng = np.random.default_rng()
        self.task: Task | None = None
        self.records: list[ActionRecord] = []
        self.outcome: dict[str, Any] | None = None
        self.episode_id = ""

    # -- PettingZoo API ----------------------------------------------------------------------------------------
    def observation_space(self, agent: str):
        return self._observation_spaces[agent]

    def action_space(self, agent: str):
        return self._action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = options or {}
        if "task_index" in options:
            index = int(options["task_index"])
            if not 0 <= index < len(self.tasks):
                raise IndexError(
                    f"task_index {index} out of range: {self.tasks.name} has {len(self.tasks)} tasks"
                )
        else:
            index = int(self._rng.integers(len(self.tasks)))
        self.task = self.tasks[index]
        self.episode_id = f"{self.task.id}-{int(self._rng.integers(2**32)):08x}"
        self.records = []
        self.outcome = None
        self._slot = 0
        self._turn = 0
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {"task_id": self.task.id, "episode_id": self.episode_id} for a in self.agents}
        self.agent_selection = self.spec.schedule[0].role
        self._transcript: list[str] = []
        self._kernel_owner: str | None = None
        if self.workspace is not None:
            self.workspace.open(self.episode_id, self.task.files)
        isolated.warm()  # the grader process imports while the agents act

    def observe(self, agent: str) -> dict[str, list[Message]]:
        return {"messages": self._messages_for(agent)}

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if not isinstance(action, str):
            raise TypeError(
                f"{self.env_id}: the action of {agent!r} must be a str (the agent's reply), got "
                f"{type(action).__name__}; decode model output to text before calling step()"
            )
        self._cumulative_rewards[agent] = 0.0
        agent_error = getattr(action, "agent_error", None)  # an AgentReply from a served agent that failed
        action = str(action)  # receipts hold plain data
        role = self._roles[agent]
        slot = self.spec.schedule[self._slot]
        observation = self._messages_for(agent)
        clipped = len(action) > self.max_action_chars
        if clipped:
            action = action[: self.max_action_chars] + CLIP_MARKER.format(n=self.max_action_chars)
        files_before = self.workspace.files() if self.workspace else []
        results = self._run_code(agent, action) if role.runs_code else []
        files_after = self.workspace.files() if self.workspace else []
        continues = bool(results) and self._turn + 1 < role.max_turns
        record = ActionRecord(
            env_id=self.env_id,
            task_id=self.task.id,  # type: ignore[union-attr]
            task_tags=tuple(self.task.tags),  # type: ignore[union-attr]
            episode_id=self.episode_id,
            step=len(self.records),
            role=agent,
            turn=self._turn,
            round=slot.round,
            observation=observation,
            action=action,
            visible_action=strip_think(action),
            tool_results=results,
            files_before=files_before,
            files_after=files_after,
            action_clipped=clipped,
            ends_turn=not continues,
            agent_error=agent_error,
        )
        self.records.append(record)
        self._clear_rewards()
        self.infos[agent] = {"task_id": record.task_id, "episode_id": self.episode_id, "record": record}
        if agent_error is not None:
            self.infos[agent]["agent_error"] = agent_error
        if self.render_mode is not None:
            self._render_record(record)
        if continues:
            self._turn += 1
        else:
            self._turn = 0
            self._slot += 1
            if self._slot >= len(self.spec.schedule):
                self._finish()
            else:
                self.agent_selection = self.spec.schedule[self._slot].role
        self._accumulate_rewards()

    def render(self) -> str | None:
        text = "\n\n".join(self._transcript)
        if self.render_mode == "ansi":
            return text
        return None

    def close(self) -> None:
        if self.workspace is not None:
            self.workspace.close()

    # -- internals ------------------------------------------------------------------------------------------------
    def _own_turns(self, agent: str) -> list[ActionRecord]:
        """This role's earlier actions in its current slot (they become assistant/tool messages)."""
        if self._slot >= len(self.spec.schedule) or self.spec.schedule[self._slot].role != agent:
            return []
        return self.records[len(self.records) - self._turn :] if self._turn else []

    def _messages_for(self, agent: str) -> list[Message]:
        if self.task is None:
            raise RuntimeError("call reset() before observe()")
        role = self._roles[agent]
        round_ = self.spec.schedule[min(self._slot, len(self.spec.schedule) - 1)].round
        return build_messages(
            self.spec,
            self.spec.render_task(self.task),
            role,
            round_,
            self.records,
            self._own_turns(agent),
            self.workspace.files() if self.workspace and role.runs_code else None,
            tool_chars=self.tool_output_chars,
            close_fences=self.close_fences,
        )

    def _run_code(self, agent: str, action: str) -> list[ToolResult]:
        """Run the visible python blocks in order; stop at the first failing block, like a notebook's "run all".

        With ``spec.kernel_per_role`` a role never inherits another role's variables: hand-offs go through files.
        """
        blocks = python_blocks(action)
        if not blocks:
            return []
        if self.spec.kernel_per_role and self._kernel_owner not in (None, agent):
            self.workspace.release_kernel()  # type: ignore[union-attr]
        self._kernel_owner = agent
        results: list[ToolResult] = []
        for block in blocks:
            result = self.workspace.run(block)  # type: ignore[union-attr]
            results.append(result)
            if not result.ok:
                break
        return results

    def _finish(self) -> None:
        """Grade, attach the outcome to every receipt and info, pay every agent the outcome reward."""
        outcome = self.spec.grade(self.task, self.records, self.workspace.path if self.workspace else None)  # type: ignore[arg-type]
        self.outcome = outcome
        for r in self.records:
            r.outcome = outcome
        for a in self.agents:
            self.rewards[a] = float(outcome["reward"])
            self.terminations[a] = True
            self.infos[a] = {**self.infos[a], "outcome": outcome}
        if (
            self.workspace is not None
        ):  # free the kernel now; the folder stays until reset/close for inspection
            self.workspace.release_kernel()
        self.agent_selection = self.agents[0]
        if self.render_mode is not None:
            self._render_line(f"=== outcome: {outcome}")

    def _render_record(self, record: ActionRecord) -> None:
        title = self._roles[record.role].title
        text = f"--- {title} (step {record.step}, turn {record.turn + 1}) ---\n{trim(record.action, 4000)}"
        if record.tool_results:
            text += "\n[tool]\n" + record.tool_output_text(limit=2000)
        self._render_line(text)

    def _render_line(self, text: str) -> None:
        self._transcript.append(text)
        if self.render_mode == "human":
            print(text)


def run_episode(
    env: AECEnv, team: dict[str, Any] | Any, seed: int | None = None, options: dict | None = None
):
    """Play one episode with ``team`` (a callable ``(agent, messages) -> str`` or a dict of such per agent).

    Returns the unwrapped env's records and outcome; a helper for scripted teams, demos and tests.
    """
    env.reset(seed=seed, options=options)
    for agent in env.agent_iter():
        obs, _, term, trunc, _ = env.last()
        if term or trunc:
            env.step(None)
            continue
        policy = team[agent] if isinstance(team, dict) else team
        env.step(policy(agent, obs["messages"]) if not isinstance(team, dict) else policy(obs["messages"]))
    raw = env.unwrapped
    return list(raw.records), raw.outcome


def team_from_replies(replies: dict[str, Sequence[str]]):
    """A scripted team: each agent answers with its next reply from a list (the last one repeats)."""
    counters = {a: 0 for a in replies}

    def policy(agent: str, messages: list[Message]) -> str:
        seq = replies[agent]
        i = min(counters[agent], len(seq) - 1)
        counters[agent] += 1
        return seq[i]

    return policy
