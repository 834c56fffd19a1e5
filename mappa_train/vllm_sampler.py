"""``VLLMSampler``: each role's turns generate on a vLLM OpenAI-compatible server, one LoRA adapter per role.

The server runs the base model with multi-LoRA (``vllm serve BASE --enable-lora --max-lora-rank R`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); each role is served as the adapter ``mappa-<role>``. One
``POST /v1/completions`` per role per call carries all of that role's prompts as TOKEN IDS (``prompt`` is a list
of lists of ints), and the reply's sampled token ids (``token_ids``, vLLM >= 0.10.2, else the
``token_id:N`` strings of ``return_tokens_as_token_ids``) and their log-probs (``logprobs.token_logprobs``) become
the :class:`~mappa_train.types.Generation`. Text is never re-tokenised. Roles are sent concurrently, and vLLM
batches them together with continuous batching.

After every optimiser update :meth:`VLLMSampler.on_update` saves the team's adapters under ``adapter_dir`` (one
versioned folder per update, so the server never reads a folder being written) and swaps each role's adapter:
``/v1/unload_lora_adapter`` then ``/v1/load_lora_adapter`` under the same name. The first :meth:`generate`
syncs first if no update has yet, so the server always samples the trainer's current weights.

Log-probs: vLLM reports, by default, those of the raw model distribution (``--logprobs-mode raw_logprobs``: before
temperature, top-k/top-p), unlike :class:`~mappa_train.sampler.HFSampler`'s temperature-scaled ones; so the
trainer's scorer stays the source of the log-probs it trains on (``old_logprobs: recompute``, enforced by the
config) and the sampler's are kept for logs and checks.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mappa_train.sampler import Request, SamplingSettings, rows_by_role
from mappa_train.types import Generation
from mappa_train.weights import TeamWeights

ADAPTER_PREFIX = "mappa-"
START_HINT = (
    "start it with: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora --max-lora-rank R "
    "(see docs/SERVING.md, 'Training with vLLM generation'), or point vllm_url at the server"
)


class VLLMError(RuntimeError):
    """A vLLM server refused or failed a request; the message names the endpoint, the server's words and a fix."""


def adapter_name(role: str, suffix: str = "") -> str:
    """The name a role's adapter is served under (``model=`` of its requests)."""
    return f"{ADAPTER_PREFIX}{role}{suffix}"


class VLLMSampler:
    """Generates on a vLLM server with one runtime-loaded LoRA adapter per role."""

    def __init__(
        self,
        url: str,
        adapter_dir: str | Path,
        weights: TeamWeights,
        stop_token_ids: Sequence[int],
        decode: Callable[[list[int]], str] | None = None,
        timeout: float = 600.0,
        keep_versions: int = 2,
        name_suffix: str = "",
    ) -> None:
        if weights.mode != "lora":
            raise ValueError("the vLLM sampler serves one LoRA adapter per role: it needs mode='lora'")
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"vllm_url {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000)"
            )
        # the server resolves lora_path on its own file system: always send absolute paths
        self.adapter_dir = Path(adapter_dir).expanduser().resolve()
        self.weights = weights
        self.stop_token_ids = list(stop_token_ids)
        self.decode = decode
        self.timeout = timeout
        self.keep_versions = max(1, keep_versions)
        # data-parallel processes share one server: each pushes its own adapters ("-rank1", its own folder)
        self.name_suffix = name_suffix
        self.version = 0  # updates pushed to the server; 0 = none yet
        self.loaded: dict[str, Path] = {}  # role -> adapter folder the server holds for it
        self.requests_sent = 0

    # ------------------------------------------------------------------------------------------------ HTTP

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise self._http_error(path, e.code, e.read()) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise VLLMError(
                f"cannot reach the vLLM server at {self.url} ({path}: {reason}); {START_HINT}"
            ) from None
        self.requests_sent += 1
        try:
            return json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            if path.endswith("_lora_adapter"):
                return raw.decode(errors="replace")  # vLLM answers these with a plain-text sentence
            raise VLLMError(f"{self.url}{path} answered with non-JSON: {raw[:200]!r}") from None

    def _http_error(self, path: str, code: int, raw: bytes) -> VLLMError:
        message = server_message(raw)
        where = f"vLLM server {self.url}{path} answered HTTP {code}: {message}"
        if path.endswith("_lora_adapter") and code in (404, 405) and "adapter" not in message.lower():
            return VLLMError(
                f"{where}. The server does not allow loading LoRA adapters at runtime: restart it with the "
                "environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"
            )
        if "rank" in message.lower():
            return VLLMError(f"{where}. Start the server with --max-lora-rank >= the config's lora_r")
        if path == "/v1/load_lora_adapter":
            return VLLMError(
                f"{where}. The server must read adapters from {self.adapter_dir}: run it on this machine or "
                "set vllm_adapter_dir to a folder both can reach (the same absolute path on both)"
            )
        if "does not exist" in message or (code == 404 and path == "/v1/completions"):
            return VLLMError(f"{where}. The adapter is not loaded: was the server restarted mid-run?")
        return VLLMError(where)

    # ------------------------------------------------------------------------------------------------ adapters

    def served_models(self) -> list[str]:
        """The model ids the server lists (the base model and every loaded adapter)."""
        listing = self._call("GET", "/v1/models") or {}
        return [m.get("id", "") for m in listing.get("data", [])]

    def on_update(self, weights: TeamWeights) -> None:
        """Save every role's adapter to a new versioned folder and swap it into the server under the same name."""
        if weights is not self.weights:
            self.weights = weights
        version = self.version + 1
        folder = self.weights.save(self.adapter_dir / f"v{version:06d}")
        # names this sampler has not loaded may still be on the server: started with --lora-modules, left by an
        # earlier run or by an update that failed half-way
        unknown = set(self.weights.roles) - set(self.loaded)
        present = set(self.served_models()) if unknown else set()
        for role in self.weights.roles:
            name = adapter_name(role, self.name_suffix)
            if role in self.loaded or name in present:
                self._post("/v1/unload_lora_adapter", {"lora_name": name})
                self.loaded.pop(role, None)
            self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder / role)})
            self.loaded[role] = folder / role
        self.version = version
        self._prune()

    def _prune(self) -> None:
        """Keep the newest ``keep_versions`` folders (the server re-reads evicted adapters from disk)."""
        old = sorted(p for p in self.adapter_dir.glob("v[0-9]*") if p.is_dir())[: -self.keep_versions]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ sampling

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        by_role = rows_by_role(requests, self.weights.check_role)
        if not requests:
            return []
        if self.version == 0:
            self.on_update(self.weights)
        out: list[Generation | None] = [None] * len(requests)
        jobs = {role: [list(requests[i].prompt_ids) for i in rows] for role, rows in by_role.items()}
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {role: pool.submit(self._generate_role, role, p, settings) for role, p in jobs.items()}
            for role, future in futures.items():
                for i, gen in zip(by_role[role], future.result(), strict=True):
                    out[i] = gen
        return out  # type: ignore[return-value]

    def request_body(self, role: str, prompts: list[list[int]], settings: SamplingSettings) -> dict[str, Any]:
        """The ``/v1/completions`` body for one role's prompts: every sampling knob explicit, so the server's
        model-specific defaults (``--generation-config auto``) cannot change what is sampled."""
        return {
            "model": adapter_name(role, self.name_suffix),
            "prompt": prompts,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k if settings.top_k > 0 else -1,
            "n": 1,
            "logprobs": 0,  # the sampled token's log-prob only
            "return_tokens_as_token_ids": True,
            "return_token_ids": True,
            "stop_token_ids": self.stop_token_ids,
            "skip_special_tokens": True,
            "ignore_eos": False,
            "stream": False,
        }

    def _generate_role(
        self, role: str, prompts: list[list[int]], settings: SamplingSettings
    ) -> list[Generation]:
        reply = self._post("/v1/completions", self.request_body(role, prompts, settings))
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or len(choices) != len(prompts):
            got = len(choices) if isinstance(choices, list) else "no"
            raise VLLMError(f"{self.url}/v1/completions answered {got} choices for {len(prompts)} prompts")
        ordered = sorted(choices, key=lambda c: c.get("index", 0))
        return [self._generation(prompt, choice) for prompt, choice in zip(prompts, ordered, strict=True)]

    def _generation(self, prompt: list[int], choice: dict[str, Any]) -> Generation:
        ids, logprobs = choice_tokens(choice)
        finish = choice.get("finish_reason")
        stops = set(self.stop_token_ids)
        end = next((j + 1 for j, t in enumerate(ids) if t in stops), None)
        if end is not None:  # the stop token is the last completion id, as with HFSampler
            ids, logprobs = ids[:end], logprobs[:end]
        text = self.decode(ids) if self.decode is not None else choice.get("text", "")
        return Generation(
            text=text,
            prompt_ids=list(prompt),
            completion_ids=ids,
            logprobs=logprobs,
            truncated=finish == "length" and end is None,
        )


def choice_tokens(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The sampled token ids and their log-probs in one ``/v1/completions`` choice (vLLM's documented fields)."""
    lp = choice.get("logprobs") or {}
    token_logprobs = lp.get("token_logprobs")
    if token_logprobs is None:
        raise VLLMError(
            "the server returned no per-token logprobs: is it a vLLM OpenAI server? (sent logprobs=0)"
        )
    ids = choice.get("token_ids")
    if ids is None:  # vLLM < 0.10.2: tokens are 'token_id:N' strings with return_tokens_as_token_ids
        try:
            ids = [int(str(t).rsplit("token_id:", 1)[1]) for t in lp.get("tokens", [])]
        except (IndexError, ValueError):
            raise VLLMError(
                "the server returned tokens as text, not 'token_id:N': it needs vLLM >= 0.5 "
                "(return_tokens_as_token_ids) or >= 0.10.2 (return_token_ids)"
            ) from None
    if len(ids) != len(token_logprobs):
        raise VLLMError(f"the server returned {len(ids)} token ids but {len(token_logprobs)} logprobs")
    return [int(t) for t in ids], [float(x) if x is not None else float("-inf") for x in token_logprobs]


def server_message(raw: bytes) -> str:
    """The error sentence in a vLLM/FastAPI error body (``{"error": {"message"}}``, ``{"message"}``,
    ``{"detail"}``), else the body itself."""
    text = raw.decode(errors="replace").strip()
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return text[:500]
