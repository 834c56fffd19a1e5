"""Bias-corrected coaching: a coach biased by task tag stops paying that bias once the calibration has seen it."""

from __future__ import annotations

import random

import pytest

import mappa_envs
from mappa_envs.coach import CalibratedCoach, SimpleCoach, coach_from, make_coach
from mappa_envs.pipeline import Role
from mappa_envs.records import ActionRecord, Judgement
from mappa_envs.scripted import scripted_team

ROLES = {"solver": Role(name="solver", title="Solver", system_prompt="", rubric="")}


def _record(episode: str, step: int, tags: tuple[str, ...], success: bool | None) -> ActionRecord:
    outcome = None if success is None else {"success": success, "reward": float(success)}
    return ActionRecord(
        env_id="toy-v0",
        task_id=episode,
        task_tags=tags,
        episode_id=episode,
        step=step,
        role="solver",
        turn=0,
        round=0,
        observation=[],
        action="x",
        visible_action="x",
        outcome=outcome,
    )


def _biased(record: ActionRecord, role: Role, context: str) -> tuple[float, str]:
    """Honest about the outcome, 3 points generous on regression."""
    good = bool(record.outcome and record.outcome["success"])
    return 2.0 + 5.0 * good + (3.0 if "kind:regression" in record.task_tags else 0.0), "toy"


def _play(coach: CalibratedCoach, episodes: int, seed: int = 0) -> list[tuple[str, bool, float]]:
    rng = random.Random(seed)
    seen = []
    for i in range(episodes):
        tag = ("kind:regression",) if i % 2 else ("kind:classification",)
        success = rng.random() < 0.5
        records = [_record(f"ep{i}", s, tag, success) for s in range(2)]
        judgements = coach.judge(records, ROLES)
        for r, j in zip(records, judgements, strict=True):
            r.judgement = j
        coach.observe(records)
        seen += [(tag[0], success, j.score) for j in judgements]
    return seen


def _gap(seen: list[tuple[str, bool, float]]) -> float:
    """Mean score on regression minus classification, at equal outcome (both successes and failures)."""
    out = []
    for success in (True, False):
        reg = [s for t, ok, s in seen if ok is success and t == "kind:regression"]
        cls = [s for t, ok, s in seen if ok is success and t == "kind:classification"]
        out.append(sum(reg) / len(reg) - sum(cls) / len(cls))
    return sum(out) / 2


def test_the_tag_bias_is_gone_from_the_scores_after_calibration():
    coach = CalibratedCoach(coach_from(_biased, name="biased"), min_count=10, window=None)
    seen = _play(coach, 120)
    warmup, later = seen[:40], seen[80:]
    assert _gap(warmup) > 2.0  # uncalibrated while slices are young: the bias is paid
    assert abs(_gap(later)) < 0.5  # then removed
    offsets = coach.metrics()
    assert offsets["coach_calibration/solver/kind:regression"] > 1.0
    assert offsets["coach_calibration/solver/kind:classification"] < -1.0
    assert "calibrated" in coach.judge([_record("new", 0, ("kind:regression",), True)], ROLES)[0].rationale


def test_an_unbiased_coach_is_left_alone():
    honest = coach_from(lambda r, role, ctx: 2.0 + 5.0 * bool(r.outcome and r.outcome["success"]))
    coach = CalibratedCoach(honest, min_count=10, window=None)
    seen = _play(coach, 120, seed=1)
    assert all(abs(s - (7.0 if ok else 2.0)) < 1.0 for _, ok, s in seen[80:])


def test_fallback_judgements_are_neither_corrected_nor_learned_from():
    class Failing(SimpleCoach):
        def score(self, record, role, context):
            return Judgement(score=5.0, rationale="no answer", source="fallback")

    coach = CalibratedCoach(Failing(), min_count=1)
    _play(coach, 10)
    assert coach.metrics() == {}


def test_simple_coach_from_one_method_and_clear_errors():
    class Length(SimpleCoach):
        name = "length"

        def score(self, record, role, context):
            return min(10, len(record.action)), "longer is better"

    [j] = Length().judge([_record("e", 0, (), None)], ROLES)
    assert (j.score, j.source) == (1.0, "custom")
    with pytest.raises(ValueError, match="outside"):
        coach_from(lambda r, role, ctx: 11).judge([_record("e", 0, (), None)], ROLES)
    with pytest.raises(TypeError, match="must return a number"):
        coach_from(lambda r, role, ctx: "ten").judge([_record("e", 0, (), None)], ROLES)
    with pytest.raises(ValueError, match="short identifier"):
        Judgement(score=1.0, rationale="", source="two words")


@pytest.mark.slow
def test_calibrated_coach_through_make_pays_the_corrected_reward():
    """The wrapper feeds finished episodes back to the calibrated coach: a family bias stops reaching rewards."""
    bias = 3.0

    def biased(record, role, context):
        good = bool(record.outcome and record.outcome.get("success"))
        return min(10.0, 2.0 + 5.0 * good + (bias if "family:addition" in record.task_tags else 0.0))

    coach = CalibratedCoach(coach_from(biased), min_count=3, window=None)
    env = mappa_envs.make("math-chat", coach=coach, tasks="embedded:one-step-train")
    team = scripted_team("math-chat")
    tasks = env.unwrapped.tasks
    addition = [i for i, t in enumerate(tasks) if "family:addition" in t.tags][:6]
    other = [i for i, t in enumerate(tasks) if "family:multiplication" in t.tags][:6]
    paid = {}
    try:
        for n, index in enumerate([x for pair in zip(addition, other, strict=True) for x in pair]):
            env.reset(seed=n, options={"task_index": index})
            for agent in env.agent_iter():
                obs, _, term, trunc, _ = env.last()
                env.step(None if term or trunc else team(agent, obs["messages"]))
            records = env.unwrapped.records
            paid[n] = (tasks[index].tags, records[0].outcome["success"], [r.judgement.score for r in records])
    finally:
        env.close()
    assert all(ok for _, ok, _ in paid.values())  # the scripted team solves these: equal outcomes
    first, last = paid[0][2], paid[10][2]  # addition episodes, before and after calibration
    assert max(first) - max(paid[1][2]) == pytest.approx(bias)
    assert abs(max(last) - max(paid[11][2])) < 0.5 * bias
    assert coach.metrics()["coach_calibration/solver/family:addition"] > 0.5


def test_calibrated_backend_by_name():
    coach, owned = make_coach("calibrated:rules", min_count=5)
    assert owned and isinstance(coach, CalibratedCoach) and coach.min_count == 5
    assert coach.name == "calibrated(rules-hindsight)"
    with pytest.raises(ValueError, match="unknown coach"):
        make_coach("calibrated:nonsense")
