"""A coach behind any OpenAI-compatible chat endpoint (OpenAI, Gemini's OpenAI endpoint, vLLM, Ollama, llama.cpp).

What the reference coach got wrong and this does instead: one shared async client (not one per call) with a
concurrency semaphore; a per-call timeout; a small, bounded number of retries with exponential backoff (not 300
retries over a day); one re-ask *with the original prompt kept* when a reply cannot be read; a strict parser
(:mod:`mappa_envs.coach.parse`) instead of "first number in the text"; an on-disk cache; and failures that either
raise :class:`CoachUnavailable` or return a *counted, logged* fallback score, never a silent 5.0.

Structured output is negotiated per coach instance: ``json_schema`` (OpenAI, vLLM) → ``json_object`` with a
``schema`` (llama.cpp server, which answers ``json_schema`` with an HTTP 500) → plain text read by the parser.
The first mode the server accepts is remembered.

Worst-case time for one judgement is bounded: ``(1 + max_retries)`` calls of at most ``timeout_s`` each, plus at
most two format-negotiation calls and the backoff sleeps (each at most ``max_backoff_s``). A batch also has a
circuit breaker: when the server has not answered once in the batch and connections were refused or timed out
``max(1 + max_retries, min(concurrency, batch size))`` times, the rest of the batch falls back (or raises) at once instead of each
judgement waiting out the same dead server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from mappa_envs.coach.base import LoopThread, episodes, role_of
from mappa_envs.coach.cache import JudgementCache, cache_key, default_cache_dir
from mappa_envs.coach.parse import CoachParseError, parse_correction, parse_judgement
from mappa_envs.coach.prompts import (
    CORRECTION_FORMAT,
    DEFAULT_LIMITS,
    FORMAT_INSTRUCTION,
    PromptLimits,
    coach_messages,
    echoes_data,
    judgement_schema,
)
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement
from mappa_envs.request_limits import RequestLimits

log = logging.getLogger(__name__)

Mode = Literal["json_schema", "json_object", "text"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "text")

_FORMAT_REJECTED = re.compile(
    r"response_format|json_schema|json_object|input should be 'text'|structured output|grammar|schema",
    re.IGNORECASE,
)
_MAX_COMPLETION_TOKENS = re.compile(r"max_completion_tokens", re.IGNORECASE)


class CoachUnavailable(RuntimeError):
    """The coach could not produce a judgement (server down, misconfigured, or unreadable replies)."""


@dataclass
class CoachStats:
    """Counters since the coach was created (see :meth:`OpenAICoach.stats_dict`).

    ``calls`` are HTTP requests sent; ``errors`` failed requests (transport errors, timeouts, HTTP errors;
    ``timeouts`` is the subset that timed out); ``retries`` extra attempts after an error or unreadable reply
    (``reasks`` is the subset that re-asked with the bad reply in context); ``parse_failures`` unreadable replies;
    ``downgrades`` structured-output modes the server rejected; ``fallbacks`` judgements that got the fallback
    score; ``judgements`` judgements returned (cache hits included).
    """

    judgements: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    parse_failures: int = 0
    downgrades: int = 0
    fallbacks: int = 0
    errors: int = 0
    timeouts: int = 0


class _Transient(Exception):
    """A failed call worth retrying (timeout, connection error, 5xx, 429)."""

    def __init__(self, message: str, *, timeout: bool = False, transport: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.transport = transport or timeout


class _ServerDown(Exception):
    """The batch already gave up on the server; no request was sent."""


class _Fatal(Exception):
    """A failed call that retrying cannot fix (bad key, unknown model, malformed request)."""


class _Rejected(Exception):
    """The server rejected the request's ``response_format`` (or ``max_tokens``) parameter."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class _Batch:
    """State shared by the judgements of one ``ajudge`` call."""

    def __init__(self, trip_after: int) -> None:
        self.down_reason: str | None = None
        self.failed: list[str] = []
        self.answered = False
        self.transport_failures = 0
        self.trip_after = trip_after

    def transport_failed(self, error: str) -> None:
        """Declare the server down if it has failed ``trip_after`` times in this batch without ever answering."""
        self.transport_failures += 1
        if not self.answered and self.transport_failures >= self.trip_after:
            self.down_reason = error


class OpenAICoach:
    """Judge actions with a chat model behind an OpenAI-compatible API.

    ``base_url``/``api_key`` default to the ``openai`` client's own handling (``OPENAI_BASE_URL``,
    ``OPENAI_API_KEY``); with no key anywhere a placeholder is sent, which local servers ignore. ``fallback`` is
    ``"error"`` (raise :class:`CoachUnavailable` when a judgement cannot be had) or a score in [0, 10] returned
    with ``source="fallback"``, counted in ``stats`` and logged. ``structured`` is ``"auto"`` (negotiate) or a fixed
    mode. ``hindsight`` None means: show the outcome and the episode summary when the record has an outcome.
    ``corrections``: also ask, from the same prompt, for the reply the agent should have given (an optional
    ``correction`` in the reply's JSON), returned as ``Judgement.correction`` (a training target; the score is
    read as without it).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        fallback: Literal["error"] | float = "error",
        temperature: float = 0.0,
        max_tokens: int = 512,
        structured: Literal["auto"] | Mode = "auto",
        hindsight: bool | None = None,
        limits: PromptLimits = DEFAULT_LIMITS,
        extra_body: Mapping[str, Any] | None = None,
        corrections: bool = False,
    ) -> None:
        self.request_limits = RequestLimits(  # checks the limits, and backs off as a served agent does
            concurrency, float(timeout_s), max_retries, float(backoff_s), float(max_backoff_s)
        )
        if fallback != "error":
            if isinstance(fallback, bool) or not isinstance(fallback, int | float) or not 0 <= fallback <= 10:
                raise ValueError(f'fallback must be "error" or a score in [0, 10], got {fallback!r}')
        if structured != "auto" and structured not in MODES:
            raise ValueError(f"structured must be 'auto' or one of {MODES}, got {structured!r}")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.fallback = fallback
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.structured = structured
        self.hindsight = hindsight
        self.limits = limits
        self.extra_body = dict(extra_body or {})
        self.corrections = bool(corrections)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache = JudgementCache(self.cache_dir) if cache else None
        self.stats = CoachStats()
        self._mode_index = 0 if structured == "auto" else MODES.index(structured)
        self._mode_confirmed = False
        self._max_tokens_param = "max_tokens"
        self._runner = LoopThread(f"mappa-coach-{model}")
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    # ----------------------------------------------------------------------------------------------- public API

    @property
    def mode(self) -> Mode:
        """The structured-output mode in use (final once ``mode_confirmed``)."""
        return MODES[self._mode_index]

    @property
    def mode_confirmed(self) -> bool:
        """True once the server has answered a request made in :attr:`mode`."""
        return self._mode_confirmed

    def judge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        """Judge a batch synchronously; works inside a running event loop too (runs on a private loop thread)."""
        return self._runner.run(self._judge_batch(records, roles, context))

    async def ajudge(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str = ""
    ) -> list[Judgement]:
        """Judge a batch; the requests run on the coach's own loop, so the concurrency limit is global."""
        return await self._runner.arun(self._judge_batch(records, roles, context))

    def stats_dict(self) -> dict[str, Any]:
        """The counters plus the negotiated mode and the cache hit rate, for logging as metrics."""
        d: dict[str, Any] = asdict(self.stats)
        d["cache_hit_rate"] = self.stats.cache_hits / self.stats.judgements if self.stats.judgements else 0.0
        d["fallback_rate"] = self.stats.fallbacks / self.stats.judgements if self.stats.judgements else 0.0
        d["mode"] = self.mode
        d["mode_confirmed"] = self._mode_confirmed
        return d

    def messages_for(
        self,
        record: ActionRecord,
        roles: Mapping[str, Role],
        context: str = "",
        episode: Sequence[ActionRecord] = (),
    ) -> list[dict[str, str]]:
        """The exact chat messages this coach sends for ``record`` (for inspection and debugging)."""
        return coach_messages(
            record,
            role_of(record, roles),
            context=context,
            hindsight=self._hindsight_for(record),
            episode=episode,
            limits=self.limits,
            correction=self.corrections,
        )

    def close(self) -> None:
        """Close the HTTP client and stop the private loop (idempotent)."""
        if self._client is not None:
            client, self._client = self._client, None
            try:
                self._runner.run(client.close())
            except Exception as e:  # closing is best effort
                log.debug("coach: error while closing the client: %s", e)
        self._semaphore = None
        self._runner.close()

    def __enter__(self) -> OpenAICoach:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAICoach(model={self.model!r}, base_url={self._url()!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------------------------------------- batches

    def _hindsight_for(self, record: ActionRecord) -> bool:
        return record.outcome is not None if self.hindsight is None else self.hindsight

    async def _judge_batch(
        self, records: Sequence[ActionRecord], roles: Mapping[str, Role], context: str
    ) -> list[Judgement]:
        if not records:
            return []
        by_episode = episodes(records)
        keyed: list[tuple[str, list[dict[str, str]]]] = []
        for r in records:
            messages = self.messages_for(r, roles, context, by_episode[r.episode_id])
            keyed.append((cache_key(self.model, messages, self.temperature), messages))
        batch = _Batch(trip_after=max(1 + self.max_retries, min(self.concurrency, len(records))))
        unique: dict[str, asyncio.Task[Judgement]] = {}
        for key, messages in keyed:  # identical prompts in one batch are asked once
            if key not in unique:
                unique[key] = asyncio.ensure_future(self._judge_one(key, messages, batch))
        try:
            await asyncio.gather(*unique.values())
        except BaseException:
            for t in unique.values():
                t.cancel()
            await asyncio.gather(*unique.values(), return_exceptions=True)
            raise
        if batch.failed:
            log.warning(
                "coach %s at %s: %d of %d judgements got the fallback score %s; last error: %s",
                self.model,
                self._url(),
                len(batch.failed),
                len(unique),
                self.fallback,
                batch.failed[-1],
            )
        out = []
        for key, _ in keyed:
            self.stats.judgements += 1
            out.append(unique[key].result())
        return out

    # --------------------------------------------------------------------------------------- one judgement

    async def _judge_one(self, key: str, messages: list[dict[str, str]], batch: _Batch) -> Judgement:
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and _valid_cached(hit):
                self.stats.cache_hits += 1
                correction = hit.get("correction") if self.corrections else None
                return Judgement(
                    score=float(hit["score"]),
                    rationale=str(hit["rationale"]),
                    source="cache",
                    correction=correction if isinstance(correction, str) else None,
                )
        conversation = list(messages)
        attempts = 0  # counted attempts (format negotiation does not count)
        reasked = False
        last_error = "no attempt made"
        while True:
            mode = self.mode
            try:
                reply, usage = await self._call(conversation, mode, batch)
            except _ServerDown:
                last_error = f"skipped: the server already failed in this batch ({batch.down_reason})"
                break
            except _Rejected as e:
                self._negotiate(e, mode)
                continue
            except _Fatal as e:
                raise CoachUnavailable(self._unavailable_message(str(e), attempts + 1, fatal=True)) from None
            except _Transient as e:
                attempts += 1
                self.stats.errors += 1
                self.stats.timeouts += int(e.timeout)
                last_error = str(e)
                if e.transport:
                    batch.transport_failed(last_error)
                if attempts > self.max_retries:
                    break
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempts))
                continue
            attempts += 1
            batch.answered = True
            if mode == self.mode and not self._mode_confirmed:
                self._mode_confirmed = True
                log.info("coach %s at %s: structured output mode %r", self.model, self._url(), mode)
            self.stats.prompt_tokens += usage[0]
            self.stats.completion_tokens += usage[1]
            try:
                judgement = parse_judgement(reply, source="llm", strict=mode != "text")
                if self.corrections:
                    judgement = replace(judgement, correction=parse_correction(reply, strict=mode != "text"))
                if echoes_data(reply or "", messages[-1]["content"]):
                    raise CoachParseError(
                        "the reply repeats a verdict that the agents wrote in the data; judge the action yourself",
                        reply,
                    )
            except CoachParseError as e:
                self.stats.parse_failures += 1
                last_error = f"unreadable reply ({e.reason}): {_short(reply)}"
                if reasked or attempts > self.max_retries:
                    break
                # At temperature 0 asking the same question again gives the same bad answer; showing the model
                # its own reply and the reason it failed, with the original prompt kept, usually fixes it.
                reasked = True
                self.stats.retries += 1
                self.stats.reasks += 1
                conversation = [
                    *messages,
                    {"role": "assistant", "content": reply or ""},
                    {
                        "role": "user",
                        "content": f"Your reply could not be used: {e.reason}. "
                        + (CORRECTION_FORMAT if self.corrections else FORMAT_INSTRUCTION),
                    },
                ]
                continue
            if self.cache is not None:
                self.cache.put(
                    key,
                    {
                        "score": judgement.score,
                        "rationale": judgement.rationale,
                        "correction": judgement.correction,
                        "model": self.model,
                        "temperature": self.temperature,
                        "mode": mode,
                        "reply": reply,
                    },
                )
            return judgement
        return self._fail(last_error, attempts, batch)

    def _fail(self, last_error: str, attempts: int, batch: _Batch) -> Judgement:
        if self.fallback == "error":
            raise CoachUnavailable(self._unavailable_message(last_error, attempts, fatal=False))
        self.stats.fallbacks += 1
        batch.failed.append(last_error)
        log.debug(
            "coach %s: fallback score %s after %d attempts: %s",
            self.model,
            self.fallback,
            attempts,
            last_error,
        )
        return Judgement(
            score=float(self.fallback), rationale=f"coach fallback: {last_error}", source="fallback"
        )

    def _negotiate(self, e: _Rejected, mode: Mode) -> None:
        self.stats.downgrades += 1
        if e.param == "max_tokens":
            if self._max_tokens_param == "max_completion_tokens":
                raise CoachUnavailable(
                    f"coach {self.model} at {self._url()} rejects max_completion_tokens too: {e}"
                )
            self._max_tokens_param = "max_completion_tokens"
            log.info("coach %s: server wants max_completion_tokens instead of max_tokens", self.model)
            return
        if self.structured != "auto" or mode == "text":
            raise CoachUnavailable(
                f"coach {self.model} at {self._url()} rejected response_format mode {mode!r}: {e}. "
                "Use structured='auto' to negotiate a mode the server accepts."
            )
        if self._mode_index == MODES.index(mode):  # concurrent rejections of one mode downgrade once
            self._mode_index += 1
            self._mode_confirmed = False
            log.info(
                "coach %s at %s rejected response_format %r (%s); trying %r",
                self.model,
                self._url(),
                mode,
                _short(str(e)),
                self.mode,
            )

    def _backoff(self, attempt: int) -> float:
        return self.request_limits.backoff(attempt)

    # ------------------------------------------------------------------------------------------------ HTTP

    def _ensure_client(self) -> Any:
        if self._client is None:
            try:
                from openai import AsyncOpenAI
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "OpenAICoach needs the openai package: pip install 'mappa-rl[coach]'"
                ) from e
            key = self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers take any key
            kwargs: dict[str, Any] = {"api_key": key, "max_retries": 0, "timeout": self.timeout_s}
            if self.base_url is not None:
                kwargs["base_url"] = self.base_url
            self._client = AsyncOpenAI(**kwargs)
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._client

    def _url(self) -> str:
        if self._client is not None:
            return str(self._client.base_url)
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    async def _call(
        self, messages: list[dict[str, str]], mode: Mode, batch: _Batch
    ) -> tuple[str | None, tuple[int, int]]:
        """One request: (reply text, (prompt tokens, completion tokens)), or _Transient/_Fatal/_Rejected/_ServerDown.

        The down-check sits inside the semaphore so judgements queued behind a dead server send nothing.
        """
        import openai

        client = self._ensure_client()
        assert self._semaphore is not None
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            self._max_tokens_param: self.max_tokens,
            "timeout": self.timeout_s,
        }
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "coach_judgement",
                    "schema": judgement_schema(self.corrections),
                    "strict": True,
                },
            }
        elif mode == "json_object":
            kwargs["response_format"] = {
                "type": "json_object",
                "schema": judgement_schema(self.corrections, capped=True),
            }
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        async with self._semaphore:
            if batch.down_reason is not None:
                raise _ServerDown
            self.stats.calls += 1
            try:
                # The client has its own timeout; wait_for also bounds a server that trickles bytes forever.
                resp = await asyncio.wait_for(client.chat.completions.create(**kwargs), self.timeout_s + 1.0)
            except (TimeoutError, openai.APITimeoutError):
                raise _Transient(f"timed out after {self.timeout_s:g} s", timeout=True) from None
            except openai.APIConnectionError as e:
                raise _Transient(f"connection error: {e.__cause__ or e}", transport=True) from None
            except openai.APIStatusError as e:
                raise _classify_status(e, mode) from None
            except openai.OpenAIError as e:
                raise _Transient(f"{type(e).__name__}: {e}") from None
        try:
            choice = resp.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, TypeError):
            return None, (0, 0)  # a body without a message: the parser reports it as an empty reply
        usage = getattr(resp, "usage", None)
        tokens = (
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
        )
        return text, tokens

    def _unavailable_message(self, last_error: str, attempts: int, *, fatal: bool) -> str:
        how = (
            "check the API key (api_key= or OPENAI_API_KEY), the model name and base_url"
            if fatal
            else "check that the server is running and reachable (GET <base_url>/models), that base_url or "
            "OPENAI_BASE_URL points at it and that it serves this model; raise timeout_s/max_retries for a slow "
            "server, or pass fallback=<score> to continue with counted fallback scores"
        )
        return (
            f"coach model {self.model!r} at {self._url()} gave no usable judgement after {attempts} "
            f"attempt(s): {last_error}. To fix: {how}."
        )


def _classify_status(e: Any, mode: Mode) -> Exception:
    status = int(getattr(e, "status_code", 0) or 0)
    body = f"{getattr(e, 'message', '')} {getattr(e, 'body', '')}"
    text = f"HTTP {status}: {_short(body)}"
    if status in (400, 422) and _MAX_COMPLETION_TOKENS.search(body):
        return _Rejected(text, param="max_tokens")
    if mode != "text" and status in (400, 415, 422, 500, 501) and _FORMAT_REJECTED.search(body):
        return _Rejected(text, param="response_format")
    if status >= 500 or status in (408, 409, 425, 429):
        return _Transient(text)
    return _Fatal(text)


def _valid_cached(hit: dict[str, Any]) -> bool:
    try:
        return 0.0 <= float(hit["score"]) <= 10.0 and isinstance(hit["rationale"], str)
    except (KeyError, TypeError, ValueError):
        return False


def _short(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
