"""``mappa bench``: an arm × seed grid on a named suite, resumable, ending in a leaderboard.

A suite is a YAML file: a base trainer config (env, task split, budget, evaluation protocol), shared overrides,
the seeds, the baseline arm and the arms, each a set of config overrides (any estimator of the registry is an
arm: ``{algorithm: ...}``; a user's own is one ``import:`` of the module that registers it)::

    name: math-cpu
    config: ../../configs/math-one-step-outcome.yaml   # relative to this file
    overrides: {steps: 6, eval_every: 3}
    seeds: 20                                           # or a list: [0, 1, 2]
    baseline: outcome
    untrained: true                                     # one steps: 0 run, prepended to every curve
    arms:
      coach-hindsight: {reward: coach, hindsight: true}
      outcome: {reward: outcome}
      mine: {import: my_estimators, algorithm: my_rule}

Runs go to ``<out>/<arm>-seed<N>`` one after the other (one heavy job at a time). A run that finished is kept; a
run that was killed is resumed from its last checkpoint; so the same command finishes a half-done grid. The
leaderboard (``<out>/leaderboard.md`` and ``.png``) gives per arm the final held-out success as mean ± 95%
interval over seeds, the paired difference from the baseline with its interval, the rollouts each arm's mean curve
needed to reach the baseline's final success, and the wall time per seed, plus the per-evaluation tables of
:mod:`mappa_train.report`.
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from mappa_train.report import (
    SUCCESS,
    Arm,
    SeedGroup,
    _first_reaching,
    group_seeds,
    load_arm,
    paired_table,
    plot_roles,
    plot_seeds,
    seeds_table,
)
from mappa_train.runlog import read_metrics
from mappa_train.seedstats import paired_difference

WALL = "bench.json"  # per run: wall seconds of the training call(s) that produced it


class SuiteError(ValueError):
    """A suite file that cannot be run, with what to change."""


@dataclass
class Suite:
    name: str
    config: Path
    arms: dict[str, dict[str, Any]]
    seeds: list[int]
    baseline: str | None = None
    untrained: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Suite:
        path = Path(path)
        if not path.is_file():
            raise SuiteError(f"no suite file {path}; the shipped suites are in bench/suites/")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise SuiteError(f"{path} is not valid YAML: {e}") from None
        allowed = {"name", "config", "overrides", "seeds", "baseline", "untrained", "arms"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SuiteError(f"{path}: unknown keys {unknown}; a suite has {sorted(allowed)}")
        for key in ("config", "arms"):
            if key not in data:
                raise SuiteError(f"{path}: '{key}' is missing")
        arms = data["arms"]
        if not isinstance(arms, dict) or not arms or not all(isinstance(v, dict) for v in arms.values()):
            raise SuiteError(f"{path}: 'arms' must map each arm's name to its config overrides")
        bad = [a for a in arms if "-seed" in a or "/" in a or a == "untrained"]
        if bad:
            raise SuiteError(f"{path}: arm names may not contain '-seed' or '/' nor be 'untrained': {bad}")
        seeds = data.get("seeds", 3)
        seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        baseline = data.get("baseline")
        if baseline is not None and baseline not in arms:
            raise SuiteError(f"{path}: baseline {baseline!r} is not one of the arms {sorted(arms)}")
        config = (path.parent / data["config"]).resolve()
        if not config.is_file():
            raise SuiteError(f"{path}: its config {config} does not exist (paths are relative to the suite)")
        return cls(
            name=str(data.get("name", path.stem)),
            config=config,
            arms={str(k): dict(v) for k, v in arms.items()},
            seeds=seeds,
            baseline=baseline,
            untrained=bool(data.get("untrained", True)),
            overrides=dict(data.get("overrides") or {}),
        )

    def runs(self, arms: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Run]:
        """The grid in the order it is run: the untrained run, then seed by seed, every arm (so a grid stopped
        early holds complete seeds, which is what paired differences need)."""
        chosen = list(arms) if arms else list(self.arms)
        missing = sorted(set(chosen) - set(self.arms))
        if missing:
            raise SuiteError(f"unknown arms {missing}; the suite has {sorted(self.arms)}")
        out = []
        if self.untrained:
            out.append(Run("untrained", self.seeds[0], {**self.overrides, "steps": 0, "eval_at_start": True}))
        for seed in seeds if seeds is not None else self.seeds:
            for arm in chosen:
                out.append(Run(arm, seed, {**self.overrides, **self.arms[arm], "seed": seed}))
        return out


@dataclass
class Run:
    arm: str
    seed: int
    overrides: dict[str, Any]

    @property
    def folder(self) -> str:
        return self.arm if self.arm == "untrained" else f"{self.arm}-seed{self.seed}"


def finished(run_dir: Path, steps: int) -> bool:
    """The run reached its last step and evaluated there."""
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    return any(int(r.get("step", -1)) == steps and SUCCESS in r for r in rows)


def _train(config: Any, resume: bool) -> None:
    from mappa_train.trainer import Trainer

    Trainer(config).fit(resume=resume)


def run_grid(
    suite: Suite,
    out: Path,
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    train: Callable[[Any, bool], None] = _train,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Train every run of the grid that has not finished; returns the run folders in grid order."""
    grid = suite.runs(arms, seeds)
    folders = []
    for i, run in enumerate(grid, 1):
        run_dir = out / run.folder
        config = run_config(suite, run, run_dir)
        folders.append(run_dir)
        if finished(run_dir, config.steps):
            log(f"[{i}/{len(grid)}] {run.folder}: finished, kept")
            continue
        resume = (run_dir / "metrics.jsonl").exists()
        log(f"[{i}/{len(grid)}] {run.folder}: {'resuming' if resume else 'training'}")
        start = time.perf_counter()
        train(config, resume)
        wall = time.perf_counter() - start
        record = run_dir / WALL
        before = json.loads(record.read_text()).get("wall_s", 0.0) if record.exists() else 0.0
        record.write_text(json.dumps({"wall_s": before + wall}))
    return folders


def run_config(suite: Suite, run: Run, run_dir: Path) -> Any:
    """The run's validated :class:`TrainConfig` (an arm's ``import:`` is imported first, so that the estimator it
    registers is known when the config names it)."""
    from mappa_train.config import TrainConfig

    overrides = dict(run.overrides)
    plugin = overrides.pop("import", None)
    if plugin:
        importlib.import_module(plugin)
    overrides["out_dir"] = str(run_dir)
    return TrainConfig.from_yaml(suite.config, overrides=[f"{k}={_yaml(v)}" for k, v in overrides.items()])


def _yaml(value: Any) -> str:
    """A value as the ``key=value`` override syntax reads it back (YAML flow style)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


# ---------------------------------------------------------------------------------------------- leaderboard


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds (the interval is the mean itself for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = (
        stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    )
    return mean, mean - half, mean + half


def _wall(group: SeedGroup, out: Path) -> str:
    walls = []
    for arm in group.arms.values():
        path = out / arm.name / WALL
        if path.exists():
            walls.append(json.loads(path.read_text())["wall_s"])
    return f"{statistics.fmean(walls) / 60:.1f}" if walls else ""


def leaderboard(groups: Sequence[SeedGroup], baseline: SeedGroup | None, out: Path) -> str:
    """Markdown: one row per arm at the last evaluation every seed of every arm reached."""
    shared = [g.last_shared for g in groups if g.last_shared is not None]
    n = min(shared) if shared else None
    target = baseline.final if baseline is not None else math.nan
    final_n = max((m for m, _ in baseline.mean_curve()), default=0) if baseline is not None else 0
    head = ["arm", "seeds", f"held-out success @ {n} ep. (mean, 95% interval)"]
    if baseline is not None:
        head += [
            f"minus {baseline.name}, paired (points, 95% interval)",
            f"episodes to reach {baseline.name}'s final {target:.3f}",
        ]
    head.append("min per seed")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        values = g.at(n) if n is not None else []
        cells = [g.name, str(len(g.arms))]
        if values:
            mean, low, high = mean_interval(values)
            cells.append(f"{100 * mean:.1f}% ({100 * low:.1f} to {100 * high:.1f})")
        else:
            cells.append("")
        if baseline is not None:
            cells.append(_paired_final(g, baseline, n) if g is not baseline else "")
            reached = _first_reaching(g.mean_curve(), target)
            cells.append(
                "never"
                if reached is None
                else f"{reached} ({reached / final_n:.2f}×)"
                if final_n
                else str(reached)
            )
        cells.append(_wall(g, out))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired_final(group: SeedGroup, baseline: SeedGroup, n: int | None) -> str:
    diffs = []
    for seed, arm in group.arms.items():
        other = baseline.arms.get(seed)
        if other is None or n is None:
            continue
        mine, theirs = dict(arm.curve()), dict(other.curve())
        if n in mine and n in theirs:
            diffs.append(100 * (mine[n] - theirs[n]))
    if len(diffs) < 2:
        return f"{diffs[0]:+.1f} (1 seed)" if diffs else "n/a"
    d = paired_difference(diffs)
    verdict = " *" if d.excludes_zero else ""
    return f"{d.mean:+.1f} ({d.low:+.1f} to {d.high:+.1f}){verdict}"


def report(suite: Suite, out: Path, folders: Sequence[Path]) -> Path:
    """Write ``leaderboard.md`` and the plots for the runs that exist; returns the markdown's path."""
    existing = [f for f in folders if (f / "metrics.jsonl").exists()]
    untrained = next((load_arm(f) for f in existing if f.name == "untrained"), None)
    if untrained is not None and not untrained.evals:
        untrained = None
    arms: list[Arm] = [load_arm(f, untrained) for f in existing if f.name != "untrained"]
    arms = [a for a in arms if a.evals]
    if not arms:
        raise SuiteError(f"no run in {out} has an evaluation yet: nothing to report")
    groups = group_seeds(arms)
    baseline = next((g for g in groups if g.name == suite.baseline), None)
    parts = [
        f"# Leaderboard: {suite.name}",
        "",
        f"Suite config `{suite.config.name}` with {json.dumps(suite.overrides)}; seeds {suite.seeds}; "
        f"baseline `{suite.baseline}`. Written {time.strftime('%Y-%m-%d %H:%M')} from {len(arms)} runs in `{out}`. "
        "`*`: the paired 95% interval excludes 0.",
        "",
        leaderboard(groups, baseline, out),
        "",
        "## Per evaluation",
        "",
        seeds_table(groups, untrained or arms[0], baseline),
    ]
    if baseline is not None:
        paired = paired_table(groups, baseline)
        if paired:
            parts += ["", "## Paired differences from the baseline", "", paired]
    seeds_png = plot_seeds(groups, out / "leaderboard.png")
    roles_png = plot_roles([g.arms[min(g.arms)] for g in groups], out / "leaderboard-roles.png")
    parts += ["", f"![held-out success]({seeds_png.name})", "", f"![per-role rewards]({roles_png.name})", ""]
    path = out / "leaderboard.md"
    path.write_text("\n".join(parts))
    return path
