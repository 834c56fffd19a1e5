"""Served agents: any role played by a chat model behind an OpenAI-compatible endpoint (vLLM, SGLang, Ollama,
llama.cpp server, an API).

A :class:`ServedTeam` maps roles to :class:`Endpoint` s (``base_url`` + model name) and answers an agent's turn with
one chat completion of the agent's observation messages. It shares the coach's client discipline
(:mod:`mappa_envs.coach.openai_coach`): one async client per server, a concurrency semaphore, a per-call timeout, a
bounded number of retries with jittered exponential backoff, and HTTP errors classified the same way.

A turn that cannot be had never stops the episode and is never silent: the reply is an empty
:class:`AgentReply` whose ``agent_error`` says why; the engine copies it into the receipt
(``ActionRecord.agent_error``), the failure is counted per role in :attr:`ServedTeam.stats` and logged as a
warning. Worst-case time of one turn: ``(1 + max_retries)`` calls of at most ``timeout_s`` plus the backoff
sleeps (each at most ``max_backoff_s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mappa_envs.coach.base import LoopThread
from mappa_envs.coach.openai_coach import _classify_status, _Fatal, _Rejected, _short, _Transient
from mappa_envs.records import Message
from mappa_envs.request_limits import RequestLimits

log = logging.getLogger(__name__)

ALL_ROLES = "*"
"""Key of a team map that applies to every role without an entry of its own."""


TOOL_PREFIX = "Output of your code:\n"  # what the in-process policy writes before tool output, too


def to_chat_api(messages: Sequence[Message]) -> list[Message]:
    """The observation as the chat API takes it: a ``tool`` message must answer an assistant ``tool_calls``
    entry there (llama.cpp server answers HTTP 500, OpenAI 400), and the agent made none, so code output becomes a
    ``user`` message that says what it is, as the in-process policy renders it."""
    out: list[Message] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "tool":
            role, content = "user", TOOL_PREFIX + content
        out.append({"role": role, "content": content})
    return out


class AgentReply(str):
    """An agent's reply text that also carries why it is empty (``agent_error``) and what it cost.

    It is a ``str``, so any env step or MARL loop takes it unchanged; the mappa engine reads ``agent_error`` into
    the receipt.
    """

    agent_error: str | None
    prompt_tokens: int
    completion_tokens: int
    truncated: bool

    def __new__(
        cls,
        text: str,
        *,
        agent_error: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        truncated: bool = False,
    ) -> AgentReply:
        reply = super().__new__(cls, text)
        reply.agent_error = agent_error
        reply.prompt_tokens = prompt_tokens
        reply.completion_tokens = completion_tokens
        reply.truncated = truncated
        return reply


@dataclass(frozen=True)
class Endpoint:
    """Where one role's model is served. ``api_key_env`` names the environment variable holding the key (keys
    do not belong in team files); without it ``OPENAI_API_KEY`` is used, or a placeholder local servers ignore."""

    model: str
    base_url: str
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    api_key_env: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError(
                "Endpoint.model is empty: give the model name the server serves (GET <base_url>/models)"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"Endpoint.base_url {self.base_url!r} is not an http(s) URL; give the OpenAI-compatible root, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        if self.max_tokens < 1:
            raise ValueError(f"Endpoint.max_tokens must be >= 1, got {self.max_tokens}")

    def api_key(self) -> str:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"api_key_env {self.api_key_env!r} is not set in the environment; export it")
            return key
        return os.environ.get("OPENAI_API_KEY") or "EMPTY"


@dataclass
class RoleStats:
    """Counters of one role since the team was created: ``turns`` answered (failed ones included), ``calls``
    HTTP requests sent, ``retries`` extra attempts, ``errors`` failed requests (``timeouts`` the subset that timed
    out), ``failed_turns`` turns that got the empty reply, ``truncated`` replies cut by ``max_tokens``."""

    turns: int = 0
    calls: int = 0
    retries: int = 0
    errors: int = 0
    timeouts: int = 0
    failed_turns: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ServedTeam:
    """Roles played by served chat models: ``team(agent, messages) -> AgentReply`` (the callable team shape
    :func:`mappa_envs.engine.run_episode` takes) or ``team.generate(role, prompts)`` for many turns at once.

    ``concurrency`` bounds the requests in flight across all roles and servers of the team.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        *,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        if not endpoints:
            raise ValueError("a served team needs at least one role: map role -> Endpoint")
        self.limits = RequestLimits(
            concurrency, float(timeout_s), max_retries, float(backoff_s), float(max_backoff_s)
        )
        self.endpoints = dict(endpoints)
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.stats: dict[str, RoleStats] = {}
        self._runner = LoopThread("mappa-served")
        self._clients: dict[tuple[str, str], Any] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._max_tokens_param: dict[str, str] = {}

    # ----------------------------------------------------------------------------------------------- public API

    def endpoint(self, role: str) -> Endpoint:
        found = self.endpoints.get(role) or self.endpoints.get(ALL_ROLES)
        if found is None:
            raise KeyError(
                f"role {role!r} has no served model; the team map covers {sorted(self.endpoints)} "
                f"(add {role}=URL@MODEL or '*=URL@MODEL')"
            )
        return found

    def serves(self, role: str) -> bool:
        return role in self.endpoints or ALL_ROLES in self.endpoints

    def check_roles(self, roles: Sequence[str], *, others: bool) -> None:
        """Fail early, naming the fix, when the map names a role the env lacks, or leaves roles with no player."""
        unknown = sorted(r for r in self.endpoints if r != ALL_ROLES and r not in roles)
        if unknown:
            raise ValueError(
                f"--served names roles {unknown} that this env does not have; its roles: {list(roles)}"
            )
        missing = [r for r in roles if not self.serves(r)]
        if missing and not others:
            raise ValueError(
                f"roles {missing} have no served model and no other player; map them with --served ROLE=URL@MODEL "
                "(or '*=URL@MODEL'), or let a scripted or trained team play them (--others scripted|model)"
            )

    def __call__(self, agent: str, messages: list[Message]) -> AgentReply:
        return self.generate(agent, [messages])[0]

    def generate(self, role: str, prompts: Sequence[list[Message]]) -> list[AgentReply]:
        """One reply per prompt, the requests sent concurrently (up to ``concurrency``)."""
        return self._runner.run(self.agenerate(role, prompts))

    async def agenerate(self, role: str, prompts: Sequence[list[Message]]) -> list[AgentReply]:
        return list(await asyncio.gather(*(self.areply(role, p) for p in prompts)))

    async def areply(self, role: str, messages: list[Message]) -> AgentReply:
        """One turn: the model's reply, or an empty reply carrying ``agent_error`` after bounded retries."""
        endpoint = self.endpoint(role)
        stats = self.stats.setdefault(role, RoleStats())
        stats.turns += 1
        attempts = 0
        last = ""
        while True:
            attempts += 1
            try:
                reply = await self._call(role, endpoint, messages, stats)
            except _Fatal as e:
                last = str(e)
                break
            except (
                _Rejected
            ) as e:  # the server wants max_completion_tokens: switch once, not counted as a retry
                if self._max_tokens_param.get(endpoint.base_url) == "max_completion_tokens":
                    last = str(e)
                    break
                self._max_tokens_param[endpoint.base_url] = "max_completion_tokens"
                attempts -= 1
                continue
            except _Transient as e:
                last = str(e)
                if attempts > self.max_retries:
                    break
                stats.retries += 1
                await asyncio.sleep(self.limits.backoff(attempts))
                continue
            stats.prompt_tokens += reply.prompt_tokens
            stats.completion_tokens += reply.completion_tokens
            stats.truncated += reply.truncated
            return reply
        stats.failed_turns += 1
        error = f"model {endpoint.model!r} at {endpoint.base_url} failed after {attempts} attempt(s): {last}"
        log.warning("served %s: %s; the turn gets an empty reply", role, error)
        return AgentReply("", agent_error=error)

    def stats_dict(self) -> dict[str, dict[str, int]]:
        return {role: asdict(s) for role, s in sorted(self.stats.items())}

    def usage_table(self) -> str:
        """Per-role token usage and failures, for a person reading ``mappa play``/``mappa eval`` output."""
        head = f"{'role':<12} {'model':<24} {'turns':>6} {'failed':>6} {'retries':>7} {'prompt tok':>10} {'compl tok':>10}"
        rows = [head]
        for role, s in sorted(self.stats.items()):
            model = _short(self.endpoint(role).model, 24)
            rows.append(
                f"{role:<12} {model:<24} {s.turns:>6} {s.failed_turns:>6} {s.retries:>7} "
                f"{s.prompt_tokens:>10} {s.completion_tokens:>10}"
            )
        return "\n".join(rows)

    def close(self) -> None:
        for client in self._clients.values():
            try:
                self._runner.run(client.close())
            except Exception:  # noqa: BLE001 - closing a pool on shutdown must not mask the run's result
                pass
        self._clients.clear()

    # ----------------------------------------------------------------------------------------------- HTTP

    def _client(self, endpoint: Endpoint) -> Any:
        key = (endpoint.base_url, endpoint.api_key())
        if key not in self._clients:
            try:
                from openai import AsyncOpenAI
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "served agents need the openai package: pip install 'mappa-rl[coach]'"
                ) from e
            self._clients[key] = AsyncOpenAI(
                base_url=endpoint.base_url, api_key=key[1], max_retries=0, timeout=self.timeout_s
            )
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._clients[key]

    async def _call(
        self, role: str, endpoint: Endpoint, messages: list[Message], stats: RoleStats
    ) -> AgentReply:
        import openai

        client = self._client(endpoint)
        assert self._semaphore is not None
        body: dict[str, Any] = {
            **endpoint.extra_body,
            "model": endpoint.model,
            "messages": to_chat_api(messages),
            "temperature": endpoint.temperature,
            self._max_tokens_param.get(endpoint.base_url, "max_tokens"): endpoint.max_tokens,
        }
        if endpoint.top_p is not None:
            body["top_p"] = endpoint.top_p
        # The client's documented raw route (``client.post``) sends this JSON body as is and hands back the JSON:
        # ``chat.completions.create`` walks the messages through its TypedDict transform and builds pydantic models
        # of the reply, a third of the client's CPU per request, which at concurrency 16 is what separates the wall
        # time from the ideal (bench/served.py).
        async with self._semaphore:
            stats.calls += 1
            try:
                request = client.post(
                    "/chat/completions",
                    body=body,
                    cast_to=dict,
                    options={"timeout": self.timeout_s},
                )
                # The client has its own timeout; wait_for also bounds a server that trickles bytes forever.
                resp = await asyncio.wait_for(request, self.timeout_s + 1.0)
            except (TimeoutError, openai.APITimeoutError):
                stats.errors += 1
                stats.timeouts += 1
                raise _Transient(f"timed out after {self.timeout_s:g} s", timeout=True) from None
            except openai.APIConnectionError as e:
                stats.errors += 1
                raise _Transient(f"connection error: {e.__cause__ or e}", transport=True) from None
            except openai.APIStatusError as e:
                stats.errors += 1
                raise _classify_status(e, "text") from None
            except (openai.OpenAIError, ValueError) as e:  # unreadable body
                stats.errors += 1
                raise _Transient(f"{type(e).__name__}: {_short(str(e))}") from None
        return _read_completion(resp, stats)


def _read_completion(body: Any, stats: RoleStats) -> AgentReply:
    """The reply of a chat-completion JSON body, or _Transient for a body without a message."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        choice, text = {}, None
    if not isinstance(text, str):
        stats.errors += 1
        raise _Transient(f"malformed reply (no message content): {_short(repr(body))}")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return AgentReply(
        text,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        truncated=choice.get("finish_reason") == "length",
    )


# ------------------------------------------------------------------------------------------------- team maps

TEAM_KEYS = {f.name for f in fields(RequestLimits)}
ENDPOINT_KEYS = {"model", "base_url", "temperature", "max_tokens", "top_p", "api_key_env", "extra_body"}


class MixedTeam:
    """A callable team: served roles from ``served``, the others from ``rest`` (a callable team, or None)."""

    def __init__(self, served: ServedTeam, rest: Any, roles: Sequence[str]) -> None:
        served.check_roles(roles, others=rest is not None)
        self.served = served
        self.rest = rest

    def __call__(self, agent: str, messages: list[Message]) -> str:
        return self.served(agent, messages) if self.served.serves(agent) else self.rest(agent, messages)


def parse_served(spec: str) -> tuple[str, Endpoint]:
    """``ROLE=URL@MODEL`` (``*`` for every role) -> (role, Endpoint); the model after the last ``@``."""
    role, sep, rest = spec.partition("=")
    url, at, model = rest.rpartition("@")
    if not sep or not role.strip() or not at or not url or not model:
        raise ValueError(
            f"--served {spec!r}: expected ROLE=URL@MODEL, e.g. coder=http://127.0.0.1:8080/v1@smollm2 "
            "('*' as ROLE serves every role), or a .yaml/.json team map"
        )
    return role.strip(), Endpoint(model=model, base_url=url)


def load_team_map(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML/JSON team map: ``{roles: {ROLE: {base_url, model, ...}}, concurrency: ..., timeout_s: ...}``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"served team map {p} does not exist")
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
        raise ValueError(f"{p}: a team map is a mapping with a 'roles' mapping (ROLE: {{base_url, model}})")
    return data


def team_from_specs(specs: Sequence[str], **team_kwargs: Any) -> ServedTeam:
    """Build a team from ``--served`` values: ``ROLE=URL@MODEL`` items and/or team-map files (later wins)."""
    endpoints: dict[str, Endpoint] = {}
    options: dict[str, Any] = {}
    for spec in specs:
        if spec.endswith((".yaml", ".yml", ".json")) and "=" not in spec:
            data = load_team_map(spec)
            unknown = set(data) - TEAM_KEYS - {"roles"}
            if unknown:
                raise ValueError(
                    f"{spec}: unknown keys {sorted(unknown)}; allowed: {sorted(TEAM_KEYS | {'roles'})}"
                )
            options.update({k: v for k, v in data.items() if k != "roles"})
            for role, entry in data["roles"].items():
                bad = set(entry or {}) - ENDPOINT_KEYS
                if not isinstance(entry, dict) or bad:
                    raise ValueError(
                        f"{spec}: role {role!r} must map to {{base_url, model, ...}}; unknown keys {sorted(bad)}"
                    )
                endpoints[str(role)] = Endpoint(**entry)
        else:
            role, endpoint = parse_served(spec)
            endpoints[role] = endpoint
    return ServedTeam(endpoints, **{**options, **team_kwargs})
