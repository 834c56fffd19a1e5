"""bench/generation.py end to end on the tiny model: both HF arms and the vLLM arm against the fake vLLM server."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.fake_vllm_server import FakeVLLM

BENCH = Path(__file__).resolve().parents[1] / "bench" / "generation.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_generation", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_bench_runs_every_arm_and_says_what_it_skips(tmp_path, capsys):
    bench = load_bench()
    with FakeVLLM("tiny") as fake:
        out = bench.main(
            [
                "--quick",
                "--model",
                "tiny",
                "--max-new-tokens",
                "4",
                "--vllm-url",
                fake.url,
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        loads = [b for p, b in fake.calls if p == "/v1/load_lora_adapter"]
    assert [(r["arm"], r["batch"]) for r in out["rows"]] == [
        (arm, b) for arm in ("hf-eager", "hf-static", "vllm") for b in (1, 8)
    ]
    assert all(r["new_tokens"] == r["batch"] * 4 and r["tok_s"] > 0 for r in out["rows"])
    assert len(loads) == 2 and out["skipped"] == {}
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == out["rows"]

    out = bench.main(["--quick", "--model", "tiny", "--max-new-tokens", "2", "--arms", "vllm"])
    assert out["rows"] == [] and "--vllm-url" in out["skipped"]["vllm"]
    assert "skipped vllm: no server" in capsys.readouterr().out
