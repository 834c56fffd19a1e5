"""Compare the arms of an experiment (coach vs outcome-only vs no training) from their ``metrics.jsonl``.

The arms of ``configs/<env>-*.yaml`` skip their own step-0 evaluation (``eval_at_start: false``): with greedy
decoding, the same seeds and adapters that start as the identity, it is the same evaluation for every arm, so the
``untrained`` run measures it once and it is prepended to every arm's curve here.

    python -m mappa_train.report --untrained runs/math-untrained --outcome runs/math-outcome \\
        runs/math-coach-hindsight runs/math-coach-online --out docs/results/math

prints a Markdown table (held-out success and mean outcome reward per evaluation, lift over the untrained team,
rollouts each arm needed to reach the outcome-only arm's final success) and writes ``<out>-success.png``,
``<out>-roles.png`` and ``<out>-by-tag.md``; when the runs have transcripts, ``<out>-actions.md`` says what each
role's actions did at the last held-out evaluation (code that ran clean, and of that how much was silent; code
that failed or never ran; files written), which shows a team changing even where every arm's success is 0, and
for maths runs ``<out>-answers.md`` says, at every held-out evaluation, how often each role stated an answer and
how often it was right (only the last agent's answer is graded).

One seed proves little (in docs/RESULTS.md one arm ended between 10% and 71% over three seeds), so runs named
``<arm>-seedN`` are also grouped with ``<arm>`` into one arm, each under the seed its config.json records: a second table gives each group's mean, spread and range per
evaluation, the episodes its mean curve needed to reach the outcome-only group's mean final, and how often it beat
outcome-only at the same seed; ``<out>-seeds.png`` plots the means with their range. A third table gives, per
arm and evaluation, the mean per-seed difference from outcome-only with its 95% interval and the seeds a paired
test would need to detect it (``mappa_train.seedstats``). Give each outcome-only seed its own ``--outcome``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mappa_train.plots import reward_roles, save_figure, series  # noqa: E402
from mappa_train.runlog import read_metrics  # noqa: E402
from mappa_train.seedstats import paired_difference, seeds_for_power  # noqa: E402

SUCCESS = "eval/success_rate"
OUTCOME = "eval/mean_outcome_reward"
COACH = "eval/mean_action_reward"  # mean per-action reward on the held-out episodes (coach score / 10)


@dataclass
class Arm:
    """One run's held-out curve (training episodes → metric) and its training rows."""

    name: str
    # the run's reward source: eval/mean_action_reward is a coach score only for "coach"
    reward: str = "coach"
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (episodes seen, eval metrics)
    rows: list[dict] = field(default_factory=list)
    seed: int | None = None  # the trained seed from the run's config.json (None: unknown, read from the name)

    def curve(self, key: str = SUCCESS) -> list[tuple[int, float]]:
        return [(n, m[key]) for n, m in self.evals if key in m]

    @property
    def final(self) -> float:
        curve = self.curve()
        return curve[-1][1] if curve else math.nan


def saved_config(run_dir: Path) -> dict:
    """The run's ``config.json`` (``{}`` for runs kept as metrics only)."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_arm(run_dir: Path, untrained: Arm | None = None, reward: str = "coach") -> Arm:
    """An arm's evaluations; the untrained team's step-0 evaluation is prepended when the run skipped its own.

    ``reward`` is the reward source assumed when the run has no config.json (only its metrics were kept).
    """
    rows = read_metrics(run_dir / "metrics.jsonl")
    saved = saved_config(run_dir)
    arm = Arm(
        run_dir.name,
        reward=saved.get("reward", reward),
        rows=[r for r in rows if r.get("step", 0) > 0],
        seed=saved.get("seed"),
    )
    for row in rows:
        metrics = {k: v for k, v in row.items() if k.startswith("eval")}
        if SUCCESS in metrics:
            arm.evals.append((int(row.get("episodes_seen", 0)), metrics))
    if untrained is not None and untrained.evals and (not arm.evals or arm.evals[0][0] > 0):
        arm.evals.insert(0, untrained.evals[0])
    return arm


def rollouts_to_reach(arm: Arm, target: float) -> int | None:
    """Training episodes at the first evaluation where the arm's success is at least ``target`` (None: never)."""
    return _first_reaching(arm.curve(), target)


def _first_reaching(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    return next((n for n, value in curve if value >= target - 1e-9), None)


def summary_table(arms: Sequence[Arm], untrained: Arm, outcome: Arm | None) -> str:
    """Markdown: per arm, success (and mean outcome reward) at each evaluation, final lift, rollouts to target."""
    base = untrained.final
    target = outcome.final if outcome is not None else math.nan
    points = sorted({n for arm in arms for n, _ in arm.curve()})
    head = [
        "arm",
        *[f"success @ {n} ep." for n in points],
        "final outcome reward",
        "final coach score / 10",
        "lift (points)",
    ]
    if outcome is not None:
        head.append(f"episodes to reach outcome-only's final ({target:.3f})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        by_n = dict(arm.curve())
        cells = [arm.name, *[f"{by_n[n]:.3f}" if n in by_n else "" for n in points]]
        rewards = arm.curve(OUTCOME)
        cells.append(f"{rewards[-1][1]:.3f}" if rewards else "")
        coach = arm.curve(COACH) if arm.reward == "coach" else []
        cells.append(f"{coach[-1][1]:.3f}" if coach else "n/a")
        cells.append(f"{100 * (arm.final - base):+.1f}")
        if outcome is not None:
            reached = rollouts_to_reach(arm, target)
            final_n = outcome.curve()[-1][0] if outcome.curve() else 0
            ratio = f" ({reached / final_n:.2f}×)" if reached is not None and final_n else ""
            if reached is None:
                cells.append("never")
            elif reached == 0:
                cells.append("at start (the target is not above the untrained team)")
            else:
                cells.append(f"{reached}{ratio}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_SEED_SUFFIX = re.compile(r"-seed(\d+)$")


def seed_of(name: str) -> tuple[str, int]:
    """``("math-coach", 2)`` for a run folder ``math-coach-seed2``; a name without the suffix is seed 0."""
    match = _SEED_SUFFIX.search(name)
    return (name[: match.start()], int(match.group(1))) if match else (name, 0)


@dataclass
class SeedGroup:
    """The runs of one arm that differ only in their seed."""

    name: str
    arms: dict[int, Arm]  # seed → run

    def at(self, n: int) -> list[float]:
        """Held-out success of every seed that was evaluated after ``n`` training episodes."""
        return [v for arm in self.arms.values() for m, v in arm.curve() if m == n]

    def mean_curve(self) -> list[tuple[int, float]]:
        points = sorted({n for arm in self.arms.values() for n, _ in arm.curve()})
        return [(n, statistics.fmean(self.at(n))) for n in points]

    @property
    def last_shared(self) -> int | None:
        """The last evaluation (training episodes) that every seed reached; None when they share none."""
        shared = set.intersection(*({n for n, _ in arm.curve()} for arm in self.arms.values()))
        return max(shared, default=None)

    @property
    def final(self) -> float:
        """Mean success at the last evaluation that every seed reached (NaN when they share none)."""
        n = self.last_shared
        return statistics.fmean(self.at(n)) if n is not None else math.nan


def group_seeds(arms: Sequence[Arm]) -> list[SeedGroup]:
    """Arms grouped by name without ``-seedN``, in first-seen order.

    The seed is the one the run's config.json records, so that a run is paired with outcome-only at the seed it was
    really trained with; a ``-seedN`` name that contradicts it is refused rather than mis-paired.
    """
    groups: dict[str, SeedGroup] = {}
    for arm in arms:
        name, seed = seed_of(arm.name)
        if arm.seed is not None and arm.seed != seed and _SEED_SUFFIX.search(arm.name):
            raise ValueError(
                f"run {arm.name} is named seed {seed} but its config.json says seed {arm.seed}: "
                f"rename the folder to {name}-seed{arm.seed} (or {name} for seed 0)"
            )
        seed = arm.seed if arm.seed is not None else seed
        group = groups.setdefault(name, SeedGroup(name, {}))
        if seed in group.arms:
            raise ValueError(f"two runs are {name} seed {seed}: {group.arms[seed].name} and {arm.name}")
        group.arms[seed] = arm
    return list(groups.values())


def _spread(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    sd = statistics.stdev(values)
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f}, {len(values)} seeds)"


def seeds_table(groups: Sequence[SeedGroup], untrained: Arm, outcome: SeedGroup | None) -> str:
    """Markdown: per arm, mean ± sd (range, seeds) of held-out success at each evaluation, and how it compares."""
    points = sorted({n for g in groups for n, _ in g.mean_curve()})
    target = outcome.final if outcome is not None else math.nan
    head = [
        "arm",
        "seeds",
        *[f"success @ {n} ep." for n in points],
        "mean lift at the last eval all seeds reached",
    ]
    if outcome is not None:
        head += [
            f"episodes for the mean to reach outcome-only's mean final ({target:.3f})",
            "vs outcome-only at the same seed, last shared eval (won / tied / lost)",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g.name, ",".join(str(s) for s in sorted(g.arms))]
        cells += [_spread(g.at(n)) for n in points]
        cells.append(f"{100 * (g.final - untrained.final):+.1f}")
        if outcome is not None:
            reached = _first_reaching(g.mean_curve(), target)
            final_n = max((n for n, _ in outcome.mean_curve()), default=0)
            cell = "never" if reached is None else str(reached)
            if reached is not None and final_n:
                cell += f" ({reached / final_n:.2f}×)"
            if len(g.arms) > 1:  # a mean can hide a seed that never got there
                each = [rollouts_to_reach(g.arms[seed], target) for seed in sorted(g.arms)]
                cell += "; per seed: " + ", ".join("never" if n is None else str(n) for n in each)
            cells.append(cell)
            cells.append(_paired(g, outcome) if g is not outcome else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired(group: SeedGroup, outcome: SeedGroup) -> str:
    """Wins, ties and losses against outcome-only with the same seed, at the last evaluation both reached."""
    won = tied = lost = 0
    for seed, arm in group.arms.items():
        other = outcome.arms.get(seed)
        if other is None:
            continue
        mine, theirs = dict(arm.curve()), dict(other.curve())
        shared = set(mine) & set(theirs) - {0}
        if not shared:
            continue
        n = max(shared)
        won += mine[n] > theirs[n] + 1e-9
        lost += mine[n] < theirs[n] - 1e-9
        tied += abs(mine[n] - theirs[n]) <= 1e-9
    return f"{won} / {tied} / {lost}" if won + tied + lost else "n/a"


def paired_table(groups: Sequence[SeedGroup], outcome: SeedGroup) -> str:
    """Markdown: per arm and evaluation, the mean per-seed difference from outcome-only after as many episodes and
    from outcome-only's final (the rollouts target asks whether an arm gets there sooner), each with its 95%
    t-interval and the seeds a paired t-test would need to detect a difference that size with 80% power (empty:
    fewer than two shared seeds anywhere). A lead whose interval spans 0 is not evidence either way; the seeds
    column says how far from it the experiment is."""
    final = outcome.last_shared
    head = [
        "arm",
        "after (episodes)",
        "seeds paired",
        "difference from outcome-only after as many episodes (points, mean ± sd)",
        "95% interval",
        "seeds for 80% power",
        f"difference from outcome-only's final ({final} episodes)",
        "95% interval",
        "seeds for 80% power",
    ]
    lines = []
    for g in groups:
        if g is outcome:
            continue
        pairs = [  # (this arm's curve, outcome-only's) per seed both ran
            (dict(arm.curve()), dict(outcome.arms[seed].curve()))
            for seed, arm in sorted(g.arms.items())
            if seed in outcome.arms
        ]
        for n in sorted({n for n, _ in g.mean_curve()} - {0}):
            same, to_final = [], []
            for mine, theirs in pairs:
                if n in mine and n in theirs:
                    same.append(100 * (mine[n] - theirs[n]))
                if n in mine and final in theirs:
                    to_final.append(100 * (mine[n] - theirs[final]))
            if len(same) < 2 and len(to_final) < 2:
                continue
            lines.append(
                f"| {g.name} | {n} | {max(len(same), len(to_final))} | "
                + " | ".join(_paired_cells(same) + _paired_cells(to_final))
                + " |"
            )
    if not lines:
        return ""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines])


def _paired_cells(differences: list[float]) -> list[str]:
    """Mean ± sd, 95% interval and seeds for 80% power of per-seed differences (blank under two seeds)."""
    if len(differences) < 2:
        return ["", "", ""]
    d = paired_difference(differences)
    needed = seeds_for_power(d.mean, d.sd)
    return [
        f"{d.mean:+.1f} ± {d.sd:.1f}",
        f"{d.low:+.1f} to {d.high:+.1f}",
        "never (no difference)" if needed is None else str(needed),
    ]


def plot_seeds(groups: Sequence[SeedGroup], out: Path) -> Path:
    """Each arm's mean held-out success over its seeds, with the range between its worst and best seed."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for g in groups:
        curve = g.mean_curve()
        if len(curve) < 2:  # the untrained team is one point, already where every curve starts
            continue
        xs = [n for n, _ in curve]
        seeds = f"{len(g.arms)} seed" + ("s" if len(g.arms) > 1 else "")
        (line,) = ax.plot(xs, [v for _, v in curve], marker="o", label=f"{g.name} ({seeds})")
        lows = [min(g.at(n)) for n in xs]
        highs = [max(g.at(n)) for n in xs]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
    ax.set(
        title="Held-out success: mean over seeds, shaded from worst to best seed", xlabel="training episodes"
    )
    ax.legend(fontsize="small", loc="upper left")
    return save_figure(fig, out)


def by_tag_table(arms: Sequence[Arm]) -> str:
    """Markdown: at each arm's last evaluation, mean coach reward vs outcome (success) per task tag."""
    lines = []
    for arm in arms:
        if not arm.evals:
            continue
        n, metrics = arm.evals[-1]
        tags = sorted({k.split("/")[1] for k in metrics if k.startswith("eval_by_tag/")})
        reward = "coach score / 10" if arm.reward == "coach" else f"action reward ({arm.reward})"
        lines += [
            f"### {arm.name} (after {n} training episodes)",
            "",
            f"| tag | mean {reward} | success |",
            "|---|---|---|",
        ]
        for tag in tags:
            coach = metrics.get(f"eval_by_tag/{tag}/coach", math.nan)
            out = metrics.get(f"eval_by_tag/{tag}/outcome", math.nan)
            lines.append(f"| {tag} | {coach:.3f} | {out:.3f} |")
        lines.append("")
    return "\n".join(lines)


def code_status(action: dict) -> str:
    """``"none"`` / ``"error"`` / ``"ok"`` for one transcript action; older transcripts are read from their text."""
    if "code" in action:
        return action["code"]
    text = action.get("tool_output") or ""
    if not text:
        return "none"
    return "error" if re.search(r"^\[error\] ", text, re.MULTILINE) else "ok"


def silent_run(action: dict) -> bool | None:
    """Whether the action's code ran clean but printed nothing and wrote no file (``None``: not logged).

    Code that does nothing visible runs cleanly by construction; a clean-run count that includes it overstates
    what a team learned (docs/RESULTS.md: every downstream clean cell on DSBench was a copied function definition).
    The trainer logs it (``ActionRecord.ran_silently``, what the coach's ``require_output`` reads); transcripts
    written before that are read from the tool output's text: each block's stdout is what precedes its
    ``[stderr]`` or ``[error]`` line.
    """
    if "silent" in action:
        return action["silent"]
    if "files_written" not in action:
        return None
    if code_status(action) != "ok" or action["files_written"]:
        return False
    blocks = re.split(r"^\[block \d+\]$", action.get("tool_output") or "", flags=re.MULTILINE)
    stdout = [
        re.split(r"^\[(?:stderr\]$|error\] )", block, maxsplit=1, flags=re.MULTILINE)[0] for block in blocks
    ]
    return all(text.strip() in ("", "[no output]") for text in stdout)


def transcripts_path(run_dir: Path) -> Path | None:
    """The run's ``transcripts.jsonl``, or a gzipped copy of it (kept runs' held-out transcripts compress ~20x)."""
    for name in ("transcripts.jsonl", "transcripts.jsonl.gz"):
        if (run_dir / name).exists():
            return run_dir / name
    return None


def eval_episodes(run_dir: Path) -> dict[int, list[dict]]:
    """Every held-out evaluation in the run's transcripts: step -> episodes (``{}``: none)."""
    path = transcripts_path(run_dir)
    by_step: dict[int, list[dict]] = {}
    if path is not None:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        for line in text.splitlines():
            row = json.loads(line) if line else {}
            if row and row.get("split") != "train":
                by_step.setdefault(row["step"], []).append(row)
    return dict(sorted(by_step.items()))


def last_eval_episodes(run_dir: Path) -> tuple[int, list[dict]]:
    """The step and the episodes of the run's last held-out evaluation in its transcripts (``[]``: none)."""
    evals = eval_episodes(run_dir)
    return max(evals.items()) if evals else (0, [])


def actions_table(runs: Sequence[Path]) -> str:
    """Markdown: per run and role, what the actions of the last held-out evaluation did.

    Success can be 0 for every arm while the team's behaviour moved (code that now runs, files now written); this
    table shows that, from the transcripts, whatever the reward was. ``silent`` counts the clean runs that printed
    nothing and wrote no file. ``silent`` and ``files written`` are blank for transcripts written before the
    trainer logged the files.
    """
    head = [
        "run",
        "eval step",
        "role",
        "actions",
        "code ran clean",
        "of which silent",
        "code failed",
        "no code ran",
        "files written",
        "mean action reward",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        step, episodes = last_eval_episodes(run)
        by_role: dict[str, list[dict]] = {}
        for episode in episodes:
            for action in episode["actions"]:
                by_role.setdefault(action["role"], []).append(action)
        for role, actions in by_role.items():
            n = len(actions)
            status = [code_status(a) for a in actions]
            logged = [a["files_written"] for a in actions if "files_written" in a]
            files = f"{sum(bool(f) for f in logged) / len(logged):.0%}" if len(logged) == n else ""
            clean = status.count("ok")
            silent = "" if len(logged) < n else f"{sum(bool(silent_run(a)) for a in actions)}/{clean}"
            reward = statistics.fmean(float(a.get("reward") or 0.0) for a in actions)
            cells = [
                run.name,
                str(step),
                role,
                str(n),
                f"{clean / n:.0%}",
                silent,
                *(f"{status.count(s) / n:.0%}" for s in ("error", "none")),
                files,
                f"{reward:.3f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _answer_format(run_dir: Path) -> str:
    """The answer format the run's env graded with (``boxed`` unless its config.json says otherwise)."""
    return (saved_config(run_dir).get("env_kwargs") or {}).get("answer_format", "boxed")


def answers_table(runs: Sequence[Path]) -> str:
    """Markdown: per run, held-out evaluation and role, how often the role stated an answer and how often it was right.

    Only the last agent's answer is graded, so a team can fail with every upstream agent right, or succeed with
    none: this table says which agent had learned its part at each evaluation (docs/RESULTS.md: halfway through
    training the coached solvers were right far more often than their verifiers passed it on). Each role's last
    reply of an episode is graded like the team's with the run's ``answer_format``; runs whose transcripts carry no
    expected answer (DSBench) are left out.
    """
    from mappa_envs.grading.math import grade_math

    head = [
        "run",
        "eval step",
        "role",
        "episodes",
        "stated an answer",
        "right",
        "right, and the team solved it",
    ]
    lines = ["| " + " | ".join([*head, "team solved"]) + " |", "|" + "---|" * (len(head) + 1)]
    for run in runs:
        answer_format = _answer_format(run)
        for step, episodes in eval_episodes(run).items():
            if not all("expected" in e.get("outcome", {}) for e in episodes):
                continue
            solved = sum(bool(e["outcome"].get("success")) for e in episodes)
            by_role: dict[str, list[tuple[dict, bool]]] = {}  # (grade of the role's last reply, team solved)
            for episode in episodes:
                outcome = episode["outcome"]
                for role, reply in {a["role"]: a["action"] for a in episode["actions"]}.items():
                    grade = grade_math(reply, outcome["expected"], answer_format)
                    by_role.setdefault(role, []).append((grade, bool(outcome.get("success"))))
            for role, grades in by_role.items():
                stated = sum(g["answer"] is not None for g, _ in grades)
                right = sum(bool(g["correct"]) for g, _ in grades)
                passed = sum(bool(g["correct"]) and ok for g, ok in grades)
                cells = [run.name, step, role, len(grades), stated, right, passed, solved]
                lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def plot_success(arms: Sequence[Arm], out: Path) -> Path:
    """Held-out success and outcome reward per run: one colour per arm; markers and lines differ between runs.

    The legend gets its own panel: with a dozen runs it covered the curves it names.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [1, 1, 0.55]})
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--")]
    bases = list(dict.fromkeys(seed_of(arm.name)[0] for arm in arms))
    seen: dict[str, int] = {}
    for arm in arms:
        base = seed_of(arm.name)[0]
        rank = seen.setdefault(base, 0)  # the run's place among its arm's seeds
        seen[base] += 1
        marker, line = styles[(bases.index(base) + rank) % len(styles)]
        colour = plt.get_cmap("tab10")(bases.index(base) % 10)
        for ax, key in zip(axes[:2], (SUCCESS, OUTCOME), strict=True):
            curve = arm.curve(key)
            if curve:  # distinct markers and lines: runs with equal numbers would otherwise hide each other
                ax.plot(
                    *zip(*curve, strict=True),
                    marker=marker,
                    linestyle=line,
                    color=colour,
                    alpha=0.8,
                    label=arm.name,
                )
    top = max([v for arm in arms for _, v in arm.curve()] + [0.05])
    axes[0].set(
        title="Held-out success", xlabel="training episodes (rollouts)", ylim=(-0.01, min(1.02, 1.5 * top))
    )
    axes[1].set(title="Held-out mean outcome reward", xlabel="training episodes (rollouts)")
    axes[2].axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[2].legend(handles, labels, loc="center left", fontsize="small", frameon=False)
    return save_figure(fig, out)


def plot_roles(arms: Sequence[Arm], out: Path) -> Path:
    """Per-role mean training reward per arm (one panel per arm; rewards differ in scale between arms)."""
    trained = [a for a in arms if a.rows]
    fig, axes = plt.subplots(1, max(len(trained), 1), figsize=(5 * max(len(trained), 1), 4), squeeze=False)
    for ax, arm in zip(axes[0], trained, strict=False):
        for role in reward_roles(arm.rows):
            ax.plot(*series(arm.rows, f"reward/{role}"), marker=".", label=role)
        # two lines: a long run name on one line ran into the next panel's title
        ax.set(title=f"{arm.name}\nmean action reward per role", xlabel="training episodes")
        if ax.get_lines():  # a run with no training rewards logged (steps: 0) has nothing to name
            ax.legend()
    return save_figure(fig, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="the trained arms' run folders")
    parser.add_argument("--untrained", type=Path, required=True, help="the steps: 0 run (step-0 evaluation)")
    parser.add_argument(
        "--outcome",
        type=Path,
        action="append",
        default=[],
        help="the outcome-only arm (the target to reach); repeat it for the arm's other seeds (<arm>-seedN)",
    )
    parser.add_argument("--out", type=Path, help="prefix for the plots and the by-tag table")
    args = parser.parse_args(argv)
    untrained = load_arm(args.untrained)
    if not untrained.evals:
        parser.error(f"{args.untrained}/metrics.jsonl has no evaluation: run its config with steps: 0 first")
    outcomes = [load_arm(r, untrained, reward="outcome") for r in args.outcome]
    outcome = outcomes[0] if outcomes else None
    arms = [untrained, *[load_arm(r, untrained) for r in args.runs], *outcomes]
    print(summary_table(arms, untrained, outcome))
    groups = group_seeds(arms)
    seeded = any(len(g.arms) > 1 for g in groups)
    if seeded:
        outcome_group = next((g for g in groups if outcome is not None and outcome in g.arms.values()), None)
        print()
        print(seeds_table(groups, untrained, outcome_group))
        paired = paired_table(groups, outcome_group) if outcome_group is not None else ""
        if paired:
            print()
            print(paired)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        print(plot_success(arms, args.out.with_name(args.out.name + "-success.png")))
        first_seeds = [g.arms[min(g.arms)] for g in groups]  # one panel per arm, not per seed
        print(plot_roles(first_seeds, args.out.with_name(args.out.name + "-roles.png")))
        if seeded:
            print(plot_seeds(groups, args.out.with_name(args.out.name + "-seeds.png")))
        path = args.out.with_name(args.out.name + "-by-tag.md")
        path.write_text(by_tag_table(arms))
        print(path)
        runs = [args.untrained, *args.runs, *args.outcome]
        if any(transcripts_path(run) for run in runs):
            path = args.out.with_name(args.out.name + "-actions.md")
            path.write_text(actions_table(runs) + "\n")
            print(path)
            answers = answers_table(runs)
            if answers.count("\n") > 1:  # a header only: no run was graded on an expected answer
                path = args.out.with_name(args.out.name + "-answers.md")
                path.write_text(answers + "\n")
                print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
