"""The trainer end to end on a tiny model: a run, an overfit batch, KL at init, kill-and-resume, accelerate."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from mappa_envs.math_tasks import load_math_tasks
from mappa_train.algorithms import policy_loss
from mappa_train.config import TrainConfig
from mappa_train.logprobs import batch_logprobs, completion_logprobs, pack_samples
from mappa_train.models import tiny_model_and_tokenizer
from mappa_train.policy import TeamPolicy
from mappa_train.runlog import read_metrics
from mappa_train.trainer import Trainer, filter_tasks
from mappa_train.types import Sample
from mappa_train.update import compute_advantages, update_role

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def score(policy: TeamPolicy, role: str | None, prompts, completions) -> list[torch.Tensor]:
    """Log-probs of completions under ``role`` (``None``: the reference) via the trainer's scorer."""
    context = policy.reference() if role is None else policy.forward_role(role)
    temperature = policy.temperature if policy.temperature > 0 else 1.0
    with context as model:
        return completion_logprobs(model, prompts, completions, policy.pad_id, temperature=temperature)


def tiny_config(tmp_path: Path, *overrides: str) -> TrainConfig:
    # random tiny models rarely stop on their own: keep truncated actions in the loss so gradients flow
    return TrainConfig.from_yaml(TINY, [f"out_dir={tmp_path}", "mask_truncated=false", *overrides])


def adapter_state(policy: TeamPolicy) -> dict[str, torch.Tensor]:
    return {
        f"{r}.{i}": p.detach().clone()
        for r in policy.roles
        for i, p in enumerate(policy.trainable_parameters(r))
    }


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'stpes'; did you mean 'steps'"):
        TrainConfig.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="algorithm"):
        TrainConfig.from_dict({}, ["algorithm=ppo2"])
    assert TrainConfig.from_dict({}, ["steps=7", "task_filter=[level:1]"]).steps == 7


def test_task_filter_ors_within_a_key_and_ands_across_keys():
    tasks = load_math_tasks(
        [
            {"id": "a", "problem": "1+1", "answer": 2, "tags": ["level:1", "family:addition"]},
            {"id": "b", "problem": "2*3", "answer": 6, "tags": ["level:1", "family:multiplication"]},
            {"id": "c", "problem": "9+9", "answer": 18, "tags": ["level:2", "family:addition"]},
            {"id": "d", "problem": "9*9", "answer": 81, "tags": ["level:3", "family:multiplication"]},
        ]
    )
    ids = lambda tags: [t.id for t in filter_tasks(tasks, tags)]  # noqa: E731
    assert ids([]) == ["a", "b", "c", "d"]
    assert ids(["level:1"]) == ["a", "b"]
    assert ids(["level:1", "level:2"]) == ["a", "b", "c"]
    assert ids(["level:1", "family:addition"]) == ["a"]
    assert ids(["level:1", "level:3", "family:multiplication"]) == ["b", "d"]
    with pytest.raises(ValueError, match="level:2.*family:multiplication|different keys: all"):
        filter_tasks(tasks, ["level:2", "family:multiplication"])


def test_tiny_team_trains_two_steps_end_to_end(tmp_path):
    trainer = Trainer(tiny_config(tmp_path))
    before = adapter_state(trainer.policy)
    history = trainer.fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/success_rate" in rows[0] and "eval/success_rate" in rows[-1]
    for role in ("solver", "coder", "verifier"):
        assert f"reward/{role}" in rows[-1] and f"kl/{role}" in rows[-1]
    assert abs(rows[1]["kl/solver"]) < 1e-5  # the first update starts from the reference
    assert (tmp_path / "checkpoints" / "step-000002").is_dir() and (
        tmp_path / "curves.png"
    ).stat().st_size > 0
    assert (tmp_path / "transcripts.jsonl").read_text().count('"split": "train"') == 8
    # a random tiny model never answers, runs code or stops: every role's rules-coach scores are equal, so its
    # advantages are exactly 0 and nothing moves (rounding residue once moved every adapter here)
    after = adapter_state(trainer.policy)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    had_gradient = {role for role in trainer.roles if any(r.get(f"grad_norm/{role}", 0) > 0 for r in rows)}
    assert changed == had_gradient
    assert "before" in history and history["plot"].endswith("curves.png")


def test_tiny_team_learns_from_a_coach_over_http(tmp_path):
    """An LLM coach behind a real OpenAI-compatible HTTP server scores each action; its varied scores train
    every role, and exactly the roles that had a gradient move (one adapter each)."""
    pytest.importorskip("openai")
    import json

    try:
        from tests.fake_openai_server import FakeOpenAIServer, judgement
    except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
        from fake_openai_server import FakeOpenAIServer, judgement  # type: ignore[no-redef]

    def score_by_request(body: dict, index: int):  # deterministic, and different for different actions
        return judgement(score=len(json.dumps(body)) % 11)

    with FakeOpenAIServer(behaviour=score_by_request) as server:
        config = tiny_config(
            tmp_path,
            "steps=1",
            "coach=openai:fake-coach",
            "hindsight=false",
            f"env_kwargs={{cell_timeout_s: 10, coach_base_url: '{server.base_url}', coach_api_key: test, "
            f"coach_kwargs: {{cache_dir: '{tmp_path / 'coach-cache'}'}}}}",
        )
        trainer = Trainer(config)
        before = adapter_state(trainer.policy)
        trainer.fit()
        requests = len(server.chat_requests())
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train = next(r for r in rows if r["step"] == 1 and "reward/solver" in r)
    assert requests >= 12  # 4 training episodes x 3 roles, each action judged over HTTP
    after = adapter_state(trainer.policy)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(trainer.roles)
    assert all(train[f"grad_norm/{role}"] > 1e-3 for role in trainer.roles)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = TrainConfig.from_yaml(path)  # unknown keys and bad values raise
    assert config.out_dir.startswith("runs/")  # runs/ is git-ignored


def test_steps_zero_only_evaluates_and_eval_at_start_can_be_skipped(tmp_path):
    history = Trainer(tiny_config(tmp_path / "untrained", "steps=0")).fit()
    rows = read_metrics(tmp_path / "untrained" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0] and "eval/success_rate" in rows[0]
    assert "before" in history and not (tmp_path / "untrained" / "checkpoints").exists()
    Trainer(tiny_config(tmp_path / "trained", "steps=1", "eval_at_start=false")).fit()
    rows = read_metrics(tmp_path / "trained" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1] and "eval/success_rate" in rows[0]
    with pytest.raises(ValueError, match="steps must be >= 0"):
        TrainConfig.from_dict({}, ["steps=-1"])


def test_checkpoint_every_zero_keeps_only_the_final_checkpoint(tmp_path):
    Trainer(tiny_config(tmp_path, "steps=2", "checkpoint_every=0", "eval_at_start=false")).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002"]


def _fixed_batch(policy: TeamPolicy, tokenizer) -> list[Sample]:
    prompt = policy.encode_prompt([{"role": "user", "content": "What is 2 + 2?"}])
    good = tokenizer.encode("The answer is 4.", add_special_tokens=False) + [tokenizer.eos_token_id]
    bad = tokenizer.encode("I do not know.", add_special_tokens=False) + [tokenizer.eos_token_id]
    samples = []
    for completion, reward in [(good, 1.0), (bad, 0.0)] * 2:
        samples.append(
            Sample("solver", prompt, completion, [0.0] * len(completion), reward=reward, group="q")
        )
    return samples


def _solver_logprobs(policy: TeamPolicy, samples: list[Sample]) -> tuple[dict, torch.Tensor]:
    """The batch and its ``[B, T]`` completion log-probs under the solver's current weights."""
    batch = pack_samples(samples, policy.pad_id)
    with torch.no_grad(), policy.forward_role("solver") as model:
        logp = batch_logprobs(model, batch)
    return batch, logp


def _refresh(policy: TeamPolicy, samples: list[Sample]) -> None:
    """Behaviour log-probs under the current weights, as a fresh on-policy rollout would record them."""
    _, logp = _solver_logprobs(policy, samples)
    for i, s in enumerate(samples):
        s.behaviour_logprobs = logp[i, : len(s.completion_ids)].tolist()


def _mean_logprob(policy: TeamPolicy, samples: list[Sample]) -> torch.Tensor:
    batch, logp = _solver_logprobs(policy, samples)
    return (logp * batch["completion_mask"]).sum(1) / batch["completion_mask"].sum(1)


def test_fixed_batch_is_overfit_and_kl_is_zero_at_init():
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer()
    policy = TeamPolicy(model, tokenizer, ["solver"], max_new_tokens=8, temperature=1.0)
    config = TrainConfig.from_dict(
        {}, ["temperature=1.0", "lr=0.01", "update_epochs=4", "micro_batch=4", "kl_beta=0.01"]
    )
    samples = _fixed_batch(policy, tokenizer)
    optimizer = torch.optim.AdamW(policy.trainable_parameters("solver"), lr=config.lr)
    _refresh(policy, samples)
    prepared, stats = compute_advantages(policy, samples, config)
    assert abs(stats["kl/solver"]) < 1e-6
    start = _mean_logprob(policy, samples)

    def loss_now() -> float:
        batch, logp = _solver_logprobs(policy, samples)
        old = torch.nn.utils.rnn.pad_sequence(prepared.old_logp, batch_first=True)
        adv = torch.nn.utils.rnn.pad_sequence(prepared.advantages, batch_first=True)
        return float(policy_loss(logp, old, adv, batch["completion_mask"], kind="ppo")[0])

    loss_before = loss_now()
    update_role(policy, optimizer, "solver", samples, prepared, list(range(len(samples))), config)
    assert loss_now() < loss_before
    for _ in range(5):
        _refresh(policy, samples)
        prepared, _ = compute_advantages(policy, samples, config)
        update_role(policy, optimizer, "solver", samples, prepared, list(range(len(samples))), config)
    end = _mean_logprob(policy, samples)
    rewarded, unrewarded = torch.tensor([0, 2]), torch.tensor([1, 3])
    assert (end[rewarded] > start[rewarded]).all()
    assert (end[rewarded] - start[rewarded]).mean() > (end[unrewarded] - start[unrewarded]).mean()
    _refresh(policy, samples)
    _, stats = compute_advantages(policy, samples, config)
    assert (
        abs(stats["kl/solver"]) > 1e-3
    )  # the adapter moved away from the reference (k1 on fixed tokens may be < 0)


def test_each_role_update_trains_its_own_adapter_and_only_it():
    """Regression: reading ``policy.device`` used to re-select the first role's adapter, so every role's update ran
    (and trained) the solver's adapter while the coder's and verifier's never got a gradient."""
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer()
    roles = ["solver", "coder", "verifier"]
    policy = TeamPolicy(model, tokenizer, roles, max_new_tokens=8, temperature=1.0)
    config = TrainConfig.from_dict(
        {}, ["temperature=1.0", "lr=0.01", "micro_batch=4", "mask_truncated=false"]
    )
    samples = []
    for role in roles:
        for s in _fixed_batch(policy, tokenizer):
            s.role = role
            samples.append(s)
    with torch.no_grad():
        for role in roles:  # behaviour log-probs under each role's own (still identical) adapter
            rows = [s for s in samples if s.role == role]
            logps = score(policy, role, [s.prompt_ids for s in rows], [s.completion_ids for s in rows])
            for s, lp in zip(rows, logps, strict=True):
                s.behaviour_logprobs = lp.tolist()
    prepared, _ = compute_advantages(policy, samples, config)
    optimizers = {r: torch.optim.AdamW(policy.trainable_parameters(r), lr=config.lr) for r in roles}
    for role in roles:
        before = adapter_state(policy)
        idx = [i for i, s in enumerate(samples) if s.role == role]
        stats = update_role(policy, optimizers[role], role, samples, prepared, idx, config)
        assert stats["grad_norm"] > 0, role
        after = adapter_state(policy)
        moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
        assert moved == {role}
    with torch.no_grad():  # each role's rewarded completion gained log-prob under its own adapter
        for role in roles:
            good = samples[roles.index(role) * 4]
            (lp_good,) = score(policy, role, [good.prompt_ids], [good.completion_ids])
            assert lp_good.mean() > torch.tensor(good.behaviour_logprobs).mean(), role


def _train_cli(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "mappa_train.cli",
        "train",
        "--config",
        str(TINY),
        f"out_dir={out}",
        "mask_truncated=false",
        "steps=4",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _final_adapters(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    ckpt = sorted((out / "checkpoints").glob("step-*"))[-1]
    tensors = {}
    for f in sorted((ckpt / "policy").rglob("*.safetensors")):
        for k, v in load_file(f).items():
            tensors[f"{f.parent.name}/{k}"] = v
    return tensors


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight = _train_cli(tmp_path / "straight")
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out
    killed_dir = tmp_path / "killed"
    proc = _train_cli(killed_dir)
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "step-000002").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))  # anywhere in step 3: rollout, update, log or checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "checkpoints" / "step-000004").exists()  # it really died mid-run
    # the worst a kill (or a lost write) leaves: a cut last log line and a damaged newest checkpoint
    with (killed_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "train/succ')
    newest = sorted((killed_dir / "checkpoints").glob("step-*"))[-1]
    with (newest / "trainer.safetensors").open("r+b") as f:
        f.truncate(100)
    resumed = _train_cli(killed_dir, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"checkpoint {newest} is damaged" in out and "resuming from step-" in out, out
    assert "dropped a half-written last line" in out, out
    a, b = _final_adapters(tmp_path / "straight"), _final_adapters(killed_dir)
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    steps = [r["step"] for r in read_metrics(killed_dir / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # one row per step, none duplicated by the resume


def test_accelerate_launch_with_two_cpu_processes_completes_a_step(tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    cmd = [
        str(accelerate),
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "mappa_train.cli",
        "train",
        "--config",
        str(TINY),
        f"out_dir={tmp_path}",
        "steps=1",
        "mask_truncated=false",
    ]
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["step"] == 1 and rows[-1]["train/episodes"] == 4  # 2 processes × 2 episodes each
    assert (tmp_path / "checkpoints" / "step-000001").is_dir()


@pytest.mark.parametrize("old_logprobs", ["recompute", "sampler"])
def test_constant_rewards_move_nothing_only_when_old_logprobs_are_recomputed(old_logprobs):
    """Regression (DSBench step 1): outcome-only rewards were all 0, yet every adapter moved one full AdamW step,
    because the sampler's log-probs differ from the scorer's by float noise and that noise fed the KL reward."""
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer()
    policy = TeamPolicy(model, tokenizer, ["solver"], max_new_tokens=8, temperature=1.0)
    config = TrainConfig.from_dict(
        {},
        [
            "temperature=1.0",
            "lr=0.01",
            "micro_batch=4",
            "adv_std_floor=0.05",
            "mask_truncated=false",
            f"old_logprobs={old_logprobs}",
        ],
    )
    samples = _fixed_batch(policy, tokenizer)
    _refresh(policy, samples)
    noise = torch.Generator().manual_seed(1)
    for s in samples:  # what a KV-cached sampler records: the scorer's values plus float noise
        jitter = 1e-4 * torch.randn(len(s.completion_ids), generator=noise)
        s.behaviour_logprobs = (torch.tensor(s.behaviour_logprobs) + jitter).tolist()
        s.reward = 0.0
    optimizer = torch.optim.AdamW(  # as the trainer builds it (torch's default weight decay would move A)
        policy.trainable_parameters("solver"), lr=config.lr, weight_decay=config.weight_decay
    )
    before = adapter_state(policy)
    prepared, stats = compute_advantages(policy, samples, config)
    update_role(policy, optimizer, "solver", samples, prepared, list(range(len(samples))), config)
    moved = max(float((adapter_state(policy)[k] - v).abs().max()) for k, v in before.items())
    if old_logprobs == "recompute":
        assert stats["kl/solver"] == 0.0 and all(bool((a == 0).all()) for a in prepared.advantages)
        assert moved == 0.0
        assert 2e-5 < stats["sampler_gap/solver"] < 2e-4  # the injected noise, measured
    else:
        assert stats["kl/solver"] != 0.0 and "sampler_gap/solver" not in stats
        assert moved > 1e-3  # ~lr: AdamW normalised the noise gradient into a full step


def test_trainer_warns_when_old_logprobs_come_from_the_sampler(tmp_path):
    """The published maths configs pin ``sampler``; whoever reruns them should learn why their run may differ.
    Only training is affected: evaluating such a config (``mappa eval``, ``steps: 0``) says nothing."""
    one_step = ("steps=1", "eval_at_start=false", "episodes_per_step=2", "parallel_envs=2")
    with pytest.warns(UserWarning, match="old_logprobs=recompute"):
        Trainer(tiny_config(tmp_path / "sampler", "old_logprobs=sampler", *one_step)).fit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(tiny_config(tmp_path / "recompute", *one_step)).fit()
        Trainer(tiny_config(tmp_path / "eval-only", "old_logprobs=sampler", "steps=0")).fit()
    assert not [w for w in caught if "old_logprobs" in str(w.message)]


def test_gradient_checkpointing_config_reaches_the_model():
    from mappa_train.logprobs import unwrap_model
    from mappa_train.trainer import build_policy

    for enabled in (False, True):
        config = TrainConfig.from_dict({}, ["model=tiny", f"gradient_checkpointing={str(enabled).lower()}"])
        policy = build_policy(config, ["solver", "coder"])
        layers = unwrap_model(policy.model).get_decoder().layers
        assert all(layer.gradient_checkpointing is enabled for layer in layers)


def test_grpo_with_groups_and_kl_in_the_loss_trains_a_step_and_syncs_the_sampler(tmp_path):
    config = tiny_config(
        tmp_path,
        "algorithm=grpo",
        "group_size=2",
        "kl_in=loss",
        "steps=1",
        "eval_at_start=false",
        "eval_episodes=1",
    )
    trainer = Trainer(config)
    synced = []
    trainer.policy.sampler.on_update = synced.append  # the hook a served / engine sampler reloads weights in
    trainer.fit()
    assert synced == [trainer.policy.weights]  # once per optimiser update
    row = read_metrics(tmp_path / "metrics.jsonl")[-1]
    assert "kl_loss/solver" in row and abs(row["kl_loss/solver"]) < 1e-6  # first step: policy == reference
    assert all(f"advantage_mean/{r}" in row for r in ("solver", "coder", "verifier"))


def test_old_grpo_configs_fail_before_building_anything_and_name_the_rename(tmp_path):
    with pytest.raises(ValueError, match="reinforce_pp_baseline"):
        Trainer(tiny_config(tmp_path, "algorithm=grpo"))
