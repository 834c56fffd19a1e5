"""Coach corrections (issue 26): where the rules coach knows the right reply, the supervised term that learns it,
and that a correction never reaches an agent."""

from __future__ import annotations

import re

import pytest
import torch

import mappa_envs
from mappa_envs import run_episode, team_from_replies
from mappa_envs.pipelines.math_common import MathAnswer
from mappa_train.config import TrainConfig
from mappa_train.logprobs import completion_logprobs
from mappa_train.models import tiny_model_and_tokenizer
from mappa_train.policy import TeamPolicy
from mappa_train.types import Sample
from mappa_train.update import compute_advantages, correction_targets, sft_loss, update_role
from mappa_train.validation import ConfigError

WRONG_MATHS = {"solver": ["It is \\boxed{12345}."], "coder": ["No idea."], "verifier": ["I think 7."]}


def _maths_episode(corrections: bool, team=None, answer_format: str = "boxed"):
    env = mappa_envs.make(
        "math-chat",
        reward="coach",
        coach="rules",
        hindsight=True,
        coach_kwargs={"corrections": corrections},
        answer_format=answer_format,
        tasks="embedded:train",
    )
    try:
        if team == "right":
            answer = env.unwrapped.tasks[0].answer
            team = team_from_replies(
                {r: [f"\\boxed{{{answer}}}"] * 2 for r in ("solver", "coder", "verifier")}
            )
        records, outcome = run_episode(
            env, team or team_from_replies(WRONG_MATHS), seed=0, options={"task_index": 0}
        )
        return records, outcome
    finally:
        env.close()


# ------------------------------------------------------------------------------------------------- the coach


@pytest.mark.parametrize("answer_format", ["boxed", "boxed_or_statement"])
def test_rules_coach_corrects_a_wrong_maths_answer_in_the_graded_format(answer_format):
    records, outcome = _maths_episode(True, answer_format=answer_format)
    assert not outcome["success"]
    fmt = MathAnswer(answer_format)
    for r in records:
        assert r.judgement is not None and r.judgement.correction is not None, r.role
        assert fmt.check(r.judgement.correction, outcome["expected"]) is True
    # the same episode without the flag: the same scores, no corrections
    plain, _ = _maths_episode(False, answer_format=answer_format)
    assert [r.judgement.correction for r in plain] == [None] * len(plain)
    assert [r.judgement.score for r in plain] == [r.judgement.score for r in records]


def test_a_right_answer_gets_no_correction():
    records, outcome = _maths_episode(True, team="right")
    assert outcome["success"]
    assert [r.judgement.correction for r in records] == [None] * len(records)


@pytest.fixture(scope="module")
def dsbench_env():
    env = mappa_envs.make(
        "dsbench-3agent",
        reward="coach",
        coach="rules",
        hindsight=False,  # online: a correction exists before the later agents act
        coach_kwargs={"corrections": True},
        tasks="embedded:train",
        cell_timeout_s=60,
    )
    yield env
    env.close()


def _iris(env) -> int:
    return [t.id for t in env.unwrapped.tasks].index("iris-species")


IDLE_TEAM = {"data_engineer": ["I will look at it later."], "modeler": ["ok"], "analyst": ["ok"]}


def test_no_observation_of_a_later_step_contains_a_correction(dsbench_env):
    records, outcome = run_episode(
        dsbench_env, team_from_replies(IDLE_TEAM), seed=0, options={"task_index": _iris(dsbench_env)}
    )
    assert not outcome["valid"]
    corrections = [(r.step, r.judgement.correction) for r in records if r.judgement.correction]
    assert [s for s, _ in corrections] == [r.step for r in records]  # every idle action fell short
    for step, correction in corrections:
        code = correction.split("```python\n", 1)[1]
        for later in records:
            if later.step > step:
                seen = "\n".join(m["content"] for m in later.observation)
                assert correction not in seen and code[:200] not in seen and "FORGET" not in seen
    # the infos an agent loop reads carry no judgement text either (only the record holds it)
    assert all("correction" not in str(m) for r in records for m in r.observation)


def test_dsbench_correction_is_the_scripted_code_adapted_to_the_workspace_and_holds_no_answer(dsbench_env):
    index = _iris(dsbench_env)
    task = dsbench_env.unwrapped.tasks[index]
    records, _ = run_episode(dsbench_env, team_from_replies(IDLE_TEAM), seed=0, options={"task_index": index})
    by_role = {r.role: r.judgement.correction for r in records}
    # the data engineer's own part; the modeler's and analyst's first rebuild what the workspace lacks
    assert "CLASSIFICATION" not in by_role["data_engineer"] and "to_pickle" in by_role["data_engineer"]
    assert "FORGET" in by_role["modeler"] and "CLASSIFICATION = True" in by_role["modeler"]
    assert "FORGET" in by_role["analyst"] and "MODE =" in by_role["analyst"]
    answers = (task.meta["task_dir"] / "answers" / "test_answer.csv").read_text()
    public = (task.meta["task_dir"] / "sample_submission.csv").read_text() + task.prompt
    answer_lines = [line for line in answers.strip().splitlines()[1:] if line not in public][:20]
    workspace_files = {f.name for f in records[0].files_before}
    for text in by_role.values():
        assert "test_answer" not in text and "answers" not in text
        assert not any(line in text for line in answer_lines)
        read = set(re.findall(r"read_(?:csv|pickle)\(\"([^\"]+)\"\)", text))
        made = set(re.findall(r"\"(\w+\.pkl)\"", text))
        assert (
            read <= workspace_files | made
        )  # it reads only what the workspace holds or what it saves itself
    # played as the analyst's reply in a fresh episode where nobody else worked, it submits
    replay = dict(IDLE_TEAM, analyst=[by_role["analyst"], "Done."])
    again, outcome = run_episode(
        dsbench_env, team_from_replies(replay), seed=0, options={"task_index": index}
    )
    assert outcome["valid"], outcome.get("reason")
    assert again[-1].judgement.correction is None or again[-2].judgement.correction is None


def test_a_role_corrector_must_be_callable():
    from mappa_envs.pipeline import Role

    with pytest.raises(TypeError, match="corrector must be a callable"):
        Role(name="x", title="X", system_prompt="", corrector="nope")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the trainer

CORRECTION = "The answer is \\boxed{4}."


@pytest.fixture
def tiny_policy():
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer()
    return TeamPolicy(model, tokenizer, ["solver"], max_new_tokens=32, temperature=1.0)


def _samples(policy: TeamPolicy, correction: str | None, score: float = 2.0) -> list[Sample]:
    prompt = policy.encode_prompt([{"role": "user", "content": "What is 2 + 2?"}])
    tok = policy.prompter.tokenizer
    out = []
    for text, reward in [("I do not know.", 0.2), ("Maybe five.", 0.3)]:
        completion = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        with torch.no_grad(), policy.forward_role("solver") as model:
            (lp,) = completion_logprobs(model, [prompt], [completion], policy.pad_id)
        out.append(
            Sample(
                "solver",
                prompt,
                completion,
                lp.tolist(),
                reward=reward,
                correction=correction,
                coach_score=score,
            )
        )
    return out


def test_encode_reply_is_the_reply_as_the_template_writes_it_up_to_end_of_turn(tiny_policy):
    prompter = tiny_policy.prompter
    ids = prompter.encode_reply(CORRECTION)
    assert ids[-1] in set(tiny_policy.stop_token_ids)
    assert prompter.tokenizer.decode(ids[:-1]) == CORRECTION
    assert prompter.encode_reply(CORRECTION, max_tokens=3) == ids[:3]


def test_sft_loss_is_the_hand_computed_token_nll(tiny_policy):
    prompt = tiny_policy.encode_prompt([{"role": "user", "content": "What is 2 + 2?"}])
    target = tiny_policy.prompter.encode_reply(CORRECTION)
    with torch.no_grad(), tiny_policy.forward_role("solver") as model:
        got = sft_loss(model, [prompt, prompt], [target, target[:4]], tiny_policy.pad_id, len(target) + 4)
        logits = model(torch.tensor([prompt + target])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    # token j of the target is predicted at position len(prompt) + j - 1
    nll = [-float(logp[len(prompt) + j - 1, t]) for j, t in enumerate(target)]
    expected = (sum(nll) + sum(nll[:4])) / (len(target) + 4)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_a_step_with_corrections_raises_the_log_prob_of_the_correction(tiny_policy):
    config = TrainConfig.from_dict(
        {}, ["temperature=1.0", "lr=0.01", "correction_weight=1.0", "max_new_tokens=32"]
    )
    samples = _samples(tiny_policy, CORRECTION)
    prompt, target = samples[0].prompt_ids, tiny_policy.prompter.encode_reply(CORRECTION)

    def logprob() -> float:
        with torch.no_grad(), tiny_policy.forward_role("solver") as model:
            return float(completion_logprobs(model, [prompt], [target], tiny_policy.pad_id)[0].sum())

    before = logprob()
    optimizer = torch.optim.AdamW(tiny_policy.trainable_parameters("solver"), lr=config.lr)
    for _ in range(3):
        prepared, _ = compute_advantages(tiny_policy, samples, config)
        stats = update_role(tiny_policy, optimizer, "solver", samples, prepared, [0, 1], config)
    assert stats["corrections"] == 2.0 and stats["sft_loss"] > 0
    assert logprob() > before + 1.0
    # an action scored at or above correction_below did not fall short: nothing to learn from it
    fine = _samples(tiny_policy, CORRECTION, score=config.correction_below)
    assert correction_targets(tiny_policy, fine, [0, 1], config) == []


def _update_once(correction: str | None, weight: float) -> tuple[dict, list[torch.Tensor]]:
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer()
    policy = TeamPolicy(model, tokenizer, ["solver"], max_new_tokens=32, temperature=1.0)
    config = TrainConfig.from_dict({}, ["temperature=1.0", "lr=0.01", f"correction_weight={weight}"])
    samples = _samples(policy, correction)
    prepared, _ = compute_advantages(policy, samples, config)
    optimizer = torch.optim.AdamW(policy.trainable_parameters("solver"), lr=config.lr)
    stats = update_role(policy, optimizer, "solver", samples, prepared, [0, 1], config)
    return stats, [p.detach().clone() for p in policy.trainable_parameters("solver")]


def test_corrections_off_is_exactly_the_rl_update():
    plain_stats, plain = _update_once(None, 0.0)
    off_stats, off = _update_once(CORRECTION, 0.0)
    assert off_stats == plain_stats and "sft_loss" not in off_stats
    assert all(torch.equal(a, b) for a, b in zip(plain, off, strict=True))
    on_stats, on = _update_once(CORRECTION, 1.0)
    assert on_stats["loss"] == plain_stats["loss"]  # the RL term is unchanged; the supervised one is added
    assert not all(torch.equal(a, b) for a, b in zip(plain, on, strict=True))


def test_correction_weight_needs_a_coach():
    with pytest.raises(ConfigError, match="correction_weight"):
        TrainConfig.from_dict({}, ["reward=outcome", "correction_weight=1.0"])


def test_a_tiny_run_with_corrections_logs_them_per_role_reproducibly(tmp_path):
    from mappa_train.runlog import read_metrics
    from mappa_train.trainer import Trainer
    from tests.test_trainer import tiny_config

    rows = []
    for run in ("a", "b"):  # the same config twice: the same corrections, the same supervised losses
        Trainer(tiny_config(tmp_path / run, "steps=1", "eval_at_start=false", "correction_weight=1.0")).fit()
        rows.append([r for r in read_metrics(tmp_path / run / "metrics.jsonl") if r["step"] == 1][-1])
    for role in ("solver", "coder", "verifier"):
        assert rows[0][f"corrections/{role}"] > 0, role  # a random tiny model never states the right answer
        assert rows[0][f"sft_loss/{role}"] > 0
        for key in (f"corrections/{role}", f"sft_loss/{role}", f"loss/{role}"):
            assert rows[0][key] == rows[1][key], key


# ------------------------------------------------------------------------------------------------ the LLM coach


def test_llm_coach_asks_for_a_correction_only_on_request_and_caches_it(tmp_path):
    import json

    from mappa_envs.coach import OpenAICoach
    from mappa_envs.coach.parse import parse_correction
    from tests.coach_fixtures import MATH_ROLES, record
    from tests.fake_openai_server import FakeOpenAIServer, Reply

    fixed = "The Code Executor printed 4, so \\boxed{4}."
    records = [record("solver", 0, "The answer is 5.", env_id="math-chat-v2")]
    with FakeOpenAIServer() as srv:
        srv.replies = [Reply(text=json.dumps({"rationale": "wrong", "score": 2, "correction": fixed}))] * 3
        kw = {"base_url": srv.base_url, "cache_dir": tmp_path / "cache", "backoff_s": 0.01}
        with OpenAICoach("fake", **kw) as plain:
            [j] = plain.judge(records, MATH_ROLES)
        assert j.correction is None  # not asked for: not taken, even when the model volunteers one
        req = srv.requests[-1]
        assert "correction" not in req.body["response_format"]["json_schema"]["schema"]["properties"]
        assert '"correction"' not in req.messages[-1]["content"]
        with OpenAICoach("fake", corrections=True, **kw) as coach:
            [j] = coach.judge(records, MATH_ROLES)
            assert (j.score, j.correction, j.source) == (2.0, fixed, "llm")
            req = srv.requests[-1]
            schema = req.body["response_format"]["json_schema"]["schema"]
            assert schema["properties"]["correction"] == {"type": ["string", "null"]}
            assert "correction" in schema["required"] and '"correction"' in req.messages[-1]["content"]
            [again] = coach.judge(records, MATH_ROLES)  # the same prompt: from the cache, correction and all
            assert (again.source, again.correction) == ("cache", fixed)
    # prose around a JSON verdict: the correction is read from the scored object only
    assert parse_correction('He wrote {"correction": "x"}. {"score": 3, "correction": null}') is None
    assert (
        parse_correction('{"score": 3, "rationale": "r", "correction": "do this"}', strict=True) == "do this"
    )
