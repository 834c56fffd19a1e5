"""A fake vLLM OpenAI server for CPU tests: a real HTTP server speaking vLLM's documented multi-LoRA API.

Endpoints (as ``vllm serve BASE --enable-lora`` with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` answers them):

* ``GET /v1/models`` — the base model and every loaded adapter (``parent`` = the base).
* ``POST /v1/load_lora_adapter`` ``{lora_name, lora_path}`` — 200 with a plain-text sentence; 400 if the name is
  loaded already, the folder holds no adapter or its rank exceeds ``max_lora_rank``. 404 when runtime updating is
  off (vLLM does not register the route).
* ``POST /v1/unload_lora_adapter`` ``{lora_name}`` — 200; 404 if the name is not loaded.
* ``POST /v1/completions`` — ``prompt`` as a list of token ids or a list of such lists, ``model`` = the base or an
  adapter, ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``top_k`` (-1/0 = off), ``stop_token_ids``,
  ``ignore_eos``, ``logprobs``, ``return_tokens_as_token_ids`` and ``return_token_ids`` (the reply's ``token_ids``; left out when
  built with ``legacy=True``, as vLLM < 0.10.2). The reported log-probs are vLLM's default ``raw_logprobs``: the
  untempered model distribution. Sampling is its own full-forward loop (no KV cache), independent of mappa's.

Each adapter is a ``PeftModel`` over its own copy of the base, loaded from the folder it was told, so a test can
compare :meth:`FakeVLLM.adapter_state` with the trainer's weights.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch


class FakeVLLM:
    """Start with :meth:`start` (or as a context manager); ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(
        self,
        model: str = "tiny",
        allow_runtime_lora: bool = True,
        max_lora_rank: int = 64,
        legacy: bool = False,
    ) -> None:
        from mappa_train.models import load_base

        self.base, self.tokenizer = load_base(model)
        self.name = model
        self.allow_runtime_lora = allow_runtime_lora
        self.max_lora_rank = max_lora_rank
        self.legacy = legacy
        self.adapters: dict[str, Any] = {}  # name -> PeftModel
        self.paths: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []  # (path, body) of every POST
        self.fail_next: tuple[int, str] | None = None  # the next completions request answers this error
        self.eos = self.base.generation_config.eos_token_id
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._counter = 0

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeVLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, fake.models())
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError as e:
                    self._send(400, error(f"invalid JSON: {e}", 400))
                    return
                fake.calls.append((self.path, body))
                routes = {"/v1/completions": fake.completions}
                if fake.allow_runtime_lora:
                    routes.update(
                        {"/v1/load_lora_adapter": fake.load, "/v1/unload_lora_adapter": fake.unload}
                    )
                route = routes.get(self.path)
                if route is None:
                    self._send(404, {"detail": "Not Found"})
                    return
                self._send(*route(body))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------ LoRA

    def models(self) -> dict[str, Any]:
        data = [{"id": self.name, "object": "model", "root": self.name, "parent": None}]
        data += [
            {"id": n, "object": "model", "root": self.paths[n], "parent": self.name} for n in self.adapters
        ]
        return {"object": "list", "data": data}

    def load(self, body: dict[str, Any]) -> tuple[int, Any]:
        from peft import PeftModel

        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, error("lora_name and lora_path are both required", 400)
        if name in self.adapters:
            return 400, error(f"The lora adapter '{name}' has already been loaded.", 400)
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return 400, error(f"Loading lora {name} failed: No adapter found for {path}", 400)
        rank = json.loads(config.read_text()).get("r", 0)
        if rank > self.max_lora_rank:
            return 400, error(
                f"Loading lora {name} failed: LoRA rank {rank} is greater than max_lora_rank "
                f"{self.max_lora_rank}.",
                400,
            )
        with self._lock:
            model = PeftModel.from_pretrained(copy.deepcopy(self.base), path, adapter_name=name)
            model.eval()
            self.adapters[name] = model
            self.paths[name] = str(path)
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        if name not in self.adapters:
            return 404, error(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")
        with self._lock:
            del self.adapters[name]
            del self.paths[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """The LoRA weights the server holds for ``name`` (peft's state-dict keys, adapter name stripped)."""
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.adapters[name], adapter_name=name)

    # ------------------------------------------------------------------------------------------------ sampling

    def completions(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.fail_next is not None:
            code, message = self.fail_next
            self.fail_next = None
            return code, error(message, code)
        name = body.get("model")
        model = self.base if name == self.name else self.adapters.get(name)
        if model is None:
            return 404, error(f"The model `{name}` does not exist.", 404, "NotFoundError", "model")
        prompts = body.get("prompt")
        if prompts and all(isinstance(t, int) for t in prompts):
            prompts = [prompts]
        if not prompts or not all(
            isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts
        ):
            return 400, error(
                "this fake server takes prompts as token ids (a list of ints, or of such lists)", 400
            )
        settings = {
            "max_tokens": int(body.get("max_tokens") or 16),
            "temperature": float(body.get("temperature", 1.0)),
            "top_p": float(body.get("top_p", 1.0)),
            "top_k": int(body.get("top_k", -1)),
            "stops": set(body.get("stop_token_ids") or [])
            | (set() if body.get("ignore_eos") else {self.eos}),
        }
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        choices = []
        for index, prompt in enumerate(prompts):
            ids, logprobs, finish = self._sample(model, prompt, **settings)
            choice: dict[str, Any] = {
                "index": index,
                "text": self.tokenizer.decode(ids, skip_special_tokens=True),
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
            if body.get("logprobs") is not None:
                tokens = [f"token_id:{t}" if as_ids else self.tokenizer.decode([t]) for t in ids]
                choice["logprobs"] = {
                    "text_offset": list(range(len(ids))),
                    "token_logprobs": logprobs,
                    "tokens": tokens,
                    "top_logprobs": [{tok: lp} for tok, lp in zip(tokens, logprobs, strict=True)],
                }
            if body.get("return_token_ids") and not self.legacy:
                choice["prompt_token_ids"], choice["token_ids"] = list(prompt), ids
            choices.append(choice)
        n_out = sum(len(c["logprobs"]["tokens"]) if c["logprobs"] else 0 for c in choices)
        n_in = sum(len(p) for p in prompts)
        return 200, {
            "id": f"cmpl-{self._counter}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
        }

    @torch.no_grad()
    def _sample(self, model, prompt, max_tokens, temperature, top_p, top_k, stops):
        with self._lock:
            self._counter += 1
            gen = torch.Generator().manual_seed(self._counter)
            seq = list(prompt)
            ids: list[int] = []
            logprobs: list[float] = []
            for _ in range(max_tokens):
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
                raw = logits.log_softmax(-1)
                if temperature <= 0:
                    token = int(logits.argmax())
                else:
                    probs = (logits / temperature).softmax(-1)
                    if top_k > 0:
                        probs[probs < probs.topk(min(top_k, probs.numel())).values[-1]] = 0
                    if top_p < 1:
                        sorted_p, order = probs.sort(descending=True)
                        drop = sorted_p.cumsum(0) - sorted_p > top_p * sorted_p.sum()
                        probs[order[drop]] = 0
                    token = int(torch.multinomial(probs, 1, generator=gen))
                ids.append(token)
                logprobs.append(float(raw[token]))
                seq.append(token)
                if token in stops:
                    return ids, logprobs, "stop"
            return ids, logprobs, "length"


def error(message: str, code: int, kind: str = "BadRequestError", param: str | None = None) -> dict[str, Any]:
    """vLLM's error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
