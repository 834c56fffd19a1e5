"""Checkpoints: data only (safetensors + JSON, no pickle is ever loaded), intact after a kill at any moment,
and a damaged one is skipped with a message, never loaded."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mappa_train.checkpoint import (
    CheckpointError,
    damage,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
)
from mappa_train.cli import main
from mappa_train.config import TrainConfig
from mappa_train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _trainer(out: Path, *overrides: str) -> Trainer:
    return Trainer(TrainConfig.from_yaml(TINY, [f"out_dir={out}", *overrides]))


def _take_optimizer_steps(trainer: Trainer) -> None:
    for role, opt in trainer.optimizers.items():  # gives every optimiser a state (exp_avg, step, ...)
        for p in trainer.policy.trainable_parameters(role):
            p.grad = torch.randn_like(p)
        opt.step()
        opt.zero_grad()


def test_trainer_state_round_trips_without_pickle(tmp_path):
    trainer = _trainer(tmp_path / "run")
    _take_optimizer_steps(trainer)
    trainer.step, trainer.episodes_seen = 3, 12
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    path = trainer.save()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    names = {p.name for p in path.rglob("*") if p.is_file()}
    assert "trainer.pt" not in names and all(n.endswith((".json", ".safetensors")) for n in names), names
    for file in path.rglob("*"):
        if file.is_file():
            assert not file.read_bytes().startswith(b"\x80"), f"{file} looks like a pickle"
    fresh = _trainer(tmp_path / "run")
    assert fresh.resume(path) and (fresh.step, fresh.episodes_seen) == (3, 12)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    for role in trainer.roles:
        a, b = trainer.optimizers[role].state_dict(), fresh.optimizers[role].state_dict()
        assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
        for key in a["state"]:
            for name, value in a["state"][key].items():
                torch.testing.assert_close(b["state"][key][name], value, rtol=0, atol=0)
    assert load_trainer_state(path)["config"] == trainer.config.to_dict()
    trainer.close(), fresh.close()


class Plant:
    """A pickle that creates a file when unpickled: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _forge_meta(path: Path) -> None:
    """Rewrite meta.json to match the planted files, as an attacker would."""
    import hashlib

    meta = json.loads((path / "meta.json").read_text())
    meta["files"] = {
        str(p.relative_to(path)): {
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "meta.json"
    }
    (path / "meta.json").write_text(json.dumps(meta))


def test_eval_of_a_planted_pickle_refuses_and_runs_none_of_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(TINY), f"out_dir={run}", "steps=1", "eval_at_start=false"]) == 0
    good = run / "checkpoints" / "step-000001"
    # the plant is live: unpickling it does create the file
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Plant(probe)))
    assert probe.exists()
    marker = tmp_path / "pwned"

    # an old-format checkpoint: trainer.pt (a pickle), no trainer.json
    old = tmp_path / "old" / "checkpoints" / "step-000001"
    shutil.copytree(good / "policy", old / "policy")
    torch.save({"step": 1, "plant": Plant(marker)}, old / "trainer.pt")
    (old / "meta.json").write_text(json.dumps({"step": 1}))
    # a new-format checkpoint whose trainer.safetensors is a pickle and whose meta.json was forged to match
    forged = tmp_path / "forged" / "checkpoints" / "step-000001"
    shutil.copytree(good, forged)
    (forged / "trainer.safetensors").write_bytes(pickle.dumps(Plant(marker)))
    _forge_meta(forged)
    # and a planted trainer.pt beside an intact checkpoint: never read
    beside = tmp_path / "beside" / "checkpoints" / "step-000001"
    shutil.copytree(good, beside)
    torch.save(Plant(marker), beside / "trainer.pt")
    capsys.readouterr()

    assert main(["eval", "--checkpoint", str(old)]) == 2
    err = capsys.readouterr().err
    assert "old format" in err and "pickle" in err and "Traceback" not in err
    assert main(["eval", "--checkpoint", str(forged)]) == 2
    assert "not a mappa trainer state" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(beside), "eval_episodes=1"]) == 0
    assert main(["play", "math-chat", "--team", "model", "--checkpoint", str(old)]) == 2
    capsys.readouterr()
    # resuming a run folder of old-format checkpoints: refused, and its checkpoints are not deleted as "damaged"
    assert main(["train", "--config", str(TINY), f"out_dir={old.parents[1]}", "--resume"]) == 2
    assert "holds checkpoints of an older mappa (step-000001" in capsys.readouterr().err
    assert (old / "trainer.pt").exists()
    assert not marker.exists()


def test_a_damaged_latest_checkpoint_is_skipped_with_a_message(tmp_path, capsys):
    trainer = _trainer(tmp_path / "run")
    for step in (1, 2):
        trainer.step = step
        trainer.save()
    root = tmp_path / "run" / "checkpoints"
    latest = root / "step-000002"
    with (latest / "trainer.safetensors").open("r+b") as f:  # a lost write: the file is cut short
        f.truncate(10)
    assert "trainer.safetensors has 10 bytes" in damage(latest)
    with pytest.raises(
        CheckpointError, match="step-000002 cannot be loaded: trainer.safetensors has 10 bytes"
    ):
        trainer.resume(latest)
    capsys.readouterr()
    fresh = _trainer(tmp_path / "run")
    assert fresh.resume() and fresh.step == 1
    err = capsys.readouterr().err
    assert (
        "step-000002 is damaged (trainer.safetensors has 10 bytes" in err
        and "resuming from step-000001" in err
    )
    assert [p.name for p in list_checkpoints(root)] == ["step-000001"]
    (root / "step-000001" / "policy" / "team.json").write_text("{")  # bit rot: same size is not enough
    (root / "step-000001" / "meta.json").write_text("not json")
    assert latest_checkpoint(root) is None
    assert not _trainer(tmp_path / "run").resume()
    trainer.close(), fresh.close()


SAVER = """
import sys
from mappa_train.checkpoint import latest_checkpoint
from mappa_train.config import TrainConfig
from mappa_train.trainer import Trainer
from pathlib import Path
out = Path(sys.argv[2])
trainer = Trainer(TrainConfig.from_yaml(sys.argv[1], [f"out_dir={out}"]))
last = latest_checkpoint(out / "checkpoints")
step = int(last.name.split("-")[1]) if last else 0
while True:
    step += 1
    trainer.step = step
    trainer.save()
    print(step, flush=True)
"""


def test_kills_at_random_moments_of_checkpoint_writes_leave_intact_checkpoints(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rng = random.Random(0)
    seen_steps = []
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(TINY), str(out)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip(), proc.communicate()[1]  # one checkpoint written in this process
        time.sleep(rng.uniform(0.0, 0.4))  # the loop does nothing but save: the kill lands inside a save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close(), proc.stderr.close()
        found = list_checkpoints(out / "checkpoints")
        assert found and all(damage(p) is None for p in found), [(p.name, damage(p)) for p in found]
        latest = latest_checkpoint(out / "checkpoints")
        state = load_trainer_state(latest)
        assert state["step"] == int(latest.name.split("-")[1])
        seen_steps.append(state["step"])
    assert seen_steps == sorted(seen_steps) and len(set(seen_steps)) == len(seen_steps)
    trainer = _trainer(out)
    assert trainer.resume() and trainer.step == seen_steps[-1]
    trainer.close()
