"""Configs are checked at load, before any env or model is built, with messages that name the key and the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mappa_train.config import TrainConfig
from mappa_train.validation import ConfigError

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.mark.parametrize(
    ("yaml_line", "message"),
    [
        ("lr: 1e-4", "lr: must be a number, got '1e-4' (a string); write 1.0e-4 without quotes"),
        ("hindsight: 'false'", "hindsight: is the string 'false', not a boolean; write false"),
        ("mask_truncated: 1", "mask_truncated: must be true or false, got 1"),
        ("steps: 2.0", "steps: must be a whole number, got 2.0; write 2"),
        ("steps: '4'", "steps: must be a whole number, got '4' (a string); write 4"),
        ("task_filter: level:1", "task_filter: must be a list"),
        ("env_kwargs: [cell_timeout_s]", "env_kwargs: must be a mapping"),
        ("checkpoint_every: -1", "checkpoint_every must be >= 0 (0 = only the final checkpoint)"),
        ("top_p: 1.5", "top_p must be between 0 and 1"),
        ("stpes: 3", "unknown config key 'stpes'; did you mean 'steps'?"),
        ("algorithm: reinforce", "algorithm 'reinforce' is not a registered estimator; choose one of"),
        ("env: math-chatt", "unknown env 'math-chatt'"),
        (
            "env_kwargs: {cell_timeout: 5}",
            "env_kwargs.cell_timeout is not an argument of math-chat; did you mean ",
        ),
        ("env_kwargs: {cell_timeout_s: '5'}", "env_kwargs.cell_timeout_s must be a number, got '5'"),
        ("env_kwargs: {tasks: embedded:eval}", "env_kwargs.tasks is set by the trainer from the config key"),
        ("env_kwargs: {debaters: 3}", "env_kwargs.debaters is not an argument of math-chat"),
    ],
)
def test_a_bad_value_is_refused_with_the_key_and_the_fix(tmp_path, yaml_line, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"out_dir: runs/x\n{yaml_line}\n")
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_yaml(path)
    assert message in str(raised.value) and str(path) in str(raised.value)


def test_overrides_are_checked_like_the_file():
    with pytest.raises(ConfigError, match="lr: must be a number, got '1e-4'"):
        TrainConfig.from_yaml(TINY, ["lr=1e-4"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        TrainConfig.from_yaml(TINY, ["steps"])
    config = TrainConfig.from_yaml(TINY, ["lr=1.0e-4", "hindsight=false", "checkpoint_every=0"])
    assert config.lr == 1e-4 and config.hindsight is False and config.checkpoint_every == 0


def test_every_problem_is_reported_at_once_and_good_env_kwargs_pass():
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_dict({"lr": "1e-4", "hindsight": "no", "stpes": 1})
    text = str(raised.value)
    assert "lr:" in text and "hindsight:" in text and "'stpes'" in text and "known keys:" in text
    config = TrainConfig.from_dict(
        {"env": "math-debate", "env_kwargs": {"debaters": 2, "cell_timeout_s": 5, "coach_fallback": 5.0}}
    )
    assert config.env_kwargs["debaters"] == 2


def test_a_field_added_to_the_dataclass_is_checked_by_its_annotation():
    @dataclasses.dataclass
    class Extended(TrainConfig):
        new_knob: int = 3
        new_switch: bool = False

    assert Extended.from_dict({"new_knob": 5}).new_knob == 5
    with pytest.raises(ConfigError, match="new_knob: must be a whole number, got '5'"):
        Extended.from_dict({"new_knob": "5"})
    with pytest.raises(ConfigError, match="new_switch: is the string 'true', not a boolean"):
        Extended.from_dict({"new_switch": "true"})
    with pytest.raises(ConfigError, match="did you mean 'new_knob'"):
        Extended.from_dict({"new_knb": 1})


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        TrainConfig.from_yaml(broken)


def test_a_config_built_in_python_is_checked_too():
    with pytest.raises(ConfigError, match="lr: must be a number, got '1e-4'"):
        TrainConfig(lr="1e-4")
    with pytest.raises(ConfigError, match="checkpoint_every must be >= 0"):
        dataclasses.replace(TrainConfig(), checkpoint_every=-2)
