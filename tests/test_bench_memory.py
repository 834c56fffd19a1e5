"""bench/memory.py: its shapes are the models it claims to build, and its target count ignores untargeted ratios.

The bench itself runs for minutes and is not part of the test run; these are the parts whose mistakes would make
its table wrong without failing (a shape whose parameter formula drifts from the model it builds) or crash it after
the measurements (a ratio with no target compared against ``None``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def memory():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("memory")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("name", ["QUICK", "SMOLLM2", "ONE_B"])
def test_shape_parameter_count_is_the_built_models(memory, name: str) -> None:
    shape = getattr(memory, name)
    with torch.device("meta"):  # no memory: only the parameter shapes
        model = LlamaForCausalLM(memory.llama_config(shape))
    assert shape.params == sum(p.numel() for p in model.parameters())


def test_smollm2_shape_is_the_embedded_models(memory) -> None:
    """The ``smollm2`` size stands for the embedded model: its config, not a look-alike."""
    from transformers import AutoConfig

    from mappa_train.models import EMBEDDED_NAME, mappa_cache_dir

    folder = mappa_cache_dir() / "models" / EMBEDDED_NAME  # converted by the first run that loads it
    if not (folder / "config.json").is_file():
        pytest.skip(f"the embedded model has not been converted yet ({folder})")
    real = AutoConfig.from_pretrained(folder)
    ours = memory.llama_config(memory.SMOLLM2)
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "tie_word_embeddings",
    ):
        assert getattr(ours, key) == getattr(real, key), key


def test_missed_targets_counts_only_targeted_ratios(memory) -> None:
    shape = memory.QUICK
    over = {"a": {"net": 1.0}, "b": {"net": 2.0}, "c": {"net": 0.5}, "d": {"net": 5.0}}
    # (a)/(b) = 0.5 > 0.4: a miss; (a)/(c) = 2.0 > 1.2: a miss; (d)/(a) has no target: never a miss.
    assert memory.missed_targets([(shape, over)]) == 2
    within = {"a": {"net": 1.0}, "b": {"net": 4.0}, "c": {"net": 1.0}, "d": {"net": 0.5}}
    assert memory.missed_targets([(shape, within)]) == 0
    # An arm that was skipped has no "net": its ratios are not measured, so not missed.
    assert memory.missed_targets([(shape, {"a": {"net": 1.0}, "b": {"skipped": "over budget"}})]) == 0
