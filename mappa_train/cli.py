"""``mappa`` command line: ``envs`` and ``play`` (from mappa_envs), ``train``, ``eval`` and ``bench`` (the trainer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mappa_envs import cli as env_cli
from mappa_envs.escape import escape_line

DESCRIPTION = """\
mappa: PettingZoo envs for teams of LLM agents, a coach that scores every action, and a trainer.
Run "mappa COMMAND --help" for the options of each command.
"""

EPILOG = """\
examples:
  mappa train --config configs/demo.yaml steps=4 out_dir=runs/try
  mappa train --config configs/demo.yaml steps=4 out_dir=runs/try --resume      continue a killed run
  mappa train --config configs/demo.yaml steps=4 out_dir=runs/try --overwrite   delete it and start again
  mappa eval --checkpoint runs/try          the latest checkpoint, with the settings it was trained with
  mappa eval --checkpoint runs/try/checkpoints/step-000004 --log        add it to runs/try's metrics
  mappa play math-chat --team model --checkpoint runs/try
  mappa bench bench/suites/tiny.yaml        an arm x seed grid and its leaderboard (resumable)
  accelerate launch --num_processes 2 -m mappa_train.cli train --config ...    data-parallel update

A run keeps its last two checkpoints (runs/try/checkpoints/step-N); "mappa eval" lists them when asked for
another one.
"""

# keys that define the team and what it plays: a checkpoint's own values win over those of another --config file
TEAM_KEYS = (
    "env",
    "env_kwargs",
    "train_tasks",
    "eval_tasks",
    "task_filter",
    "reward",
    "coach",
    "hindsight",
    "model",
    "mode",
    "lora_r",
    "lora_alpha",
    "max_new_tokens",
    "max_prompt_tokens",
)


def find_checkpoint(arg: str) -> Path:
    """A run folder (its latest intact checkpoint) or a ``checkpoints/step-N`` folder, checked intact."""
    from mappa_train.checkpoint import (
        CheckpointError,
        check_checkpoint,
        describe_available,
        latest_checkpoint,
        list_checkpoints,
    )

    path = Path(arg)
    for root in (path / "checkpoints", path):
        if list_checkpoints(root):
            found = latest_checkpoint(root)
            if found is None:
                raise CheckpointError(f"no intact checkpoint in {root}: {describe_available(root)}")
            return found
    if path.is_dir() and not (path / "meta.json").exists() and not (path / "trainer.pt").exists():
        if (path / "metrics.jsonl").exists() or (path / "config.json").exists():
            raise CheckpointError(
                f"the run in {path} has no checkpoints (it was killed before its first one)"
            )
    return check_checkpoint(path)


def _config(args: argparse.Namespace, checkpoint: Path | None = None):
    """The config of a command: ``--config`` and overrides, or, with a checkpoint, the config it was trained
    with, under ``--config``'s other keys and the overrides (which may change anything, deliberately)."""
    import dataclasses

    from mappa_train.checkpoint import saved_config
    from mappa_train.config import TrainConfig, read_yaml

    if checkpoint is None:
        if args.config:
            return TrainConfig.from_yaml(args.config, args.overrides)
        return TrainConfig.from_dict({}, args.overrides)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    trained = {k: v for k, v in saved_config(checkpoint).items() if k in known}
    data = dict(trained)
    if args.config:
        given = read_yaml(args.config)
        for key in TEAM_KEYS:
            if key in given and key in trained and given[key] != trained[key]:
                print(
                    f"note: {checkpoint} was trained with {key}={trained[key]!r}; using it, not {args.config}'s "
                    f"{given[key]!r} (pass {key}=... to play it on something else)",
                    file=sys.stderr,
                )
        data.update({k: v for k, v in given.items() if k not in TEAM_KEYS or k not in trained})
    return TrainConfig.from_dict(data, args.overrides, where=f"{checkpoint}/trainer.json")


def cmd_train(args: argparse.Namespace) -> int:
    from mappa_train.rundir import claim
    from mappa_train.trainer import Trainer

    config = _config(args)
    # refuse a used out_dir before a model is built; read-only, so every process may check (fit does too)
    if not args.overwrite:
        claim(Path(config.out_dir), config.to_dict(), resume=args.resume, overwrite=False)
    trainer = Trainer(config)
    history = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if trainer.rank == 0:
        before = history.get("before", {}).get("eval/success_rate")
        after = (history.get("after") or {}).get("eval/success_rate")
        if history.get("finished"):
            print(f"\nthe run in {config.out_dir} is finished: step {history['step']} of {config.steps}")
            print(f"held-out success: before {_shown(before)} → after {_shown(after)}")
            print("(raise steps=... to train it further; --overwrite starts it again)")
        elif config.steps == 0:
            print(f"\nheld-out success of the untrained team: {before}")
        else:
            print(f"\nheld-out success: before {_shown(before)} → after {after}")
            print(_what_happened(Path(config.out_dir), before, after))
        print(
            f"run folder: {config.out_dir} (metrics.jsonl, transcripts.jsonl, curves.png, checkpoints/, tensorboard/)"
        )
    return 0


def _what_happened(run: Path, before: float | None, after: float | None) -> str:
    """A newcomer's reading of a finished run: what changed, how much that can mean, where to look next."""
    from mappa_train.runlog import read_metrics

    rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
    train = [r["train/success_rate"] for r in rows if "train/success_rate" in r]
    episodes = max((int(r.get("episodes_seen", 0)) for r in rows), default=0)
    lines = []
    if train:
        lines.append(
            f"training success per step: {', '.join(f'{s:.2f}' for s in train)} ({episodes} episodes)"
        )
    if before is not None and after is not None:
        if after > before:
            lines.append(
                "the trained team solved more held-out tasks than the untrained one (one run: within noise)"
            )
        elif after < before:
            lines.append(
                "the trained team solved fewer held-out tasks than the untrained one (one run: within noise)"
            )
        else:
            lines.append("no change on the held-out tasks")
        lines.append(
            "a few dozen episodes rarely move a 135M model; docs/RESULTS.md has 80-episode runs over several seeds "
            "and `mappa bench bench/suites/math-one-step.yaml` reruns that comparison"
        )
    lines.append(
        f"look at: {run / 'curves.png'} (curves), {run / 'transcripts.jsonl'} (every action, scored)"
    )
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return "not evaluated" if value is None else str(value)


def cmd_eval(args: argparse.Namespace) -> int:
    from mappa_train.runlog import RunLogger, read_metrics
    from mappa_train.trainer import Trainer

    if args.team == "served" and args.checkpoint and args.others != "model":
        print(
            "a checkpoint holds trained adapters, but no role of this team is trained: drop --checkpoint or "
            "let the trained team play the unserved roles (--others model)",
            file=sys.stderr,
        )
        return 2
    checkpoint = find_checkpoint(args.checkpoint) if args.checkpoint else None
    config = _config(args, checkpoint)
    policy = None
    if args.team == "served":
        from mappa_train.served import served_policy

        try:
            policy = served_policy(args, config)
        except (ValueError, KeyError, FileNotFoundError) as e:
            print(str(e), file=sys.stderr)
            return 2
    elif args.team != "model":
        print(f"unknown team {args.team!r} for eval; choose 'model' or 'served'", file=sys.stderr)
        return 2
    trainer = Trainer(config, policy=policy)
    if checkpoint is not None and policy is not None and policy._rest_policy is None:
        print(
            "a checkpoint holds trained adapters, but no role of this team is trained: drop --checkpoint or "
            "let the trained team play the unserved roles (--others model)",
            file=sys.stderr,
        )
        trainer.close()
        return 2
    if checkpoint is not None:
        trainer.resume(checkpoint)
        print(f"team from {escape_line(str(checkpoint))}", file=sys.stderr)
    run = Path(config.out_dir)
    if args.log and any(
        r.get("step") == trainer.step and "eval/success_rate" in r
        for r in read_metrics(run / "metrics.jsonl")
    ):
        print(
            f"{run}/metrics.jsonl already has a held-out evaluation at step {trainer.step}; nothing was run",
            file=sys.stderr,
        )
        trainer.close()
        return 2
    try:
        metrics, episodes = trainer.evaluate()
        if policy is not None:
            metrics.update(policy.metrics("eval"))
    finally:
        trainer.close()
        if policy is not None:
            policy.served.close()
    if args.log:  # as the trainer logs its own evaluations: the report reads them like any other
        logger = RunLogger(run, tensorboard=False, keep=True)
        logger.log(trainer.step, {**metrics, "episodes_seen": trainer.episodes_seen})
        logger.transcripts(trainer.step, "eval", episodes)
        logger.close()
        print(f"logged to {run}/metrics.jsonl and transcripts.jsonl at step {trainer.step}")
    print(json.dumps(metrics, indent=2))
    if policy is not None:
        print("\nserved agents:\n" + policy.served.usage_table())
    return 0


def _team_config(args: argparse.Namespace):
    """``(config, checkpoint)`` of ``play --team model``, resolved once per command."""
    if not hasattr(args, "_team_config"):
        checkpoint = find_checkpoint(args.checkpoint) if args.checkpoint else None
        if checkpoint is None and not args.config:  # the untrained default team plays the env it is asked to
            args.overrides = [f"env={args.env}", *args.overrides]
        args._team_config = (_config(args, checkpoint), checkpoint)
    return args._team_config


def model_env(args: argparse.Namespace) -> Any:
    """The env ``play --team model`` plays: the config's env settings and held-out tasks, as in ``mappa eval``."""
    from mappa_envs.registry import registry
    from mappa_train.checkpoint import CheckpointError
    from mappa_train.trainer import load_tasks, make_env

    config, checkpoint = _team_config(args)
    asked, trained = registry[args.env], registry[config.env]
    if asked.name != trained.name:
        raise CheckpointError(
            f"this team plays {trained.id} ({'its checkpoint' if checkpoint else 'its config'}), not {args.env}; "
            f"run: mappa play {trained.name} --team model ..."
        )
    env_id = args.env if asked.id == args.env else config.env  # an explicit version wins, else the team's own
    tasks = args.tasks or config.eval_tasks
    return make_env(config, load_tasks(config, tasks), env_id=env_id)


def model_team(args: argparse.Namespace, env: Any):
    """``mappa play --team model``: the config's model (the embedded one by default) with a checkpoint's adapters.

    Decoding is the config's ``eval_temperature`` (greedy by default), as in held-out evaluation.
    """
    from mappa_train.trainer import build_policy

    config, checkpoint = _team_config(args)
    roles = list(env.unwrapped.possible_agents)
    policy = build_policy(config, roles)
    if checkpoint is not None:
        policy.load(checkpoint / "policy")
        print(f"adapters from {escape_line(checkpoint)}")
    policy.eval()

    def act(agent: str, messages: list[dict]) -> str:
        with policy.sampling(temperature=config.eval_temperature):
            return policy.generate(agent, [messages])[0].text

    return act


env_cli.TEAMS["model"] = model_team
env_cli.TEAM_ENVS["model"] = model_env


def cmd_bench(args: argparse.Namespace) -> int:
    from mappa_train.benchmark import Suite, report, run_config, run_grid

    suite = Suite.load(args.suite)
    out = Path(args.out or Path("runs") / "bench" / suite.name)
    arms = [a for a in args.arms.split(",") if a] if args.arms else None
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    grid = suite.runs(arms, seeds)
    if args.dry_run:
        for run in grid:
            run_config(suite, run, out / run.folder)  # a config error shows now, not hours into the grid
            print(f"{out / run.folder}: {json.dumps(run.overrides)}")
        return 0
    folders = [out / run.folder for run in grid] if args.report_only else run_grid(suite, out, arms, seeds)
    path = report(suite, out, folders)
    print(path.read_text().split("## Per evaluation")[0].rstrip())
    print(f"\nleaderboard: {path} (plots beside it)")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story (what is wrong and what to do): printed without a traceback."""
    from mappa_train.benchmark import SuiteError
    from mappa_train.checkpoint import CheckpointError
    from mappa_train.rundir import RunFolderError
    from mappa_train.runlog import RunLogError
    from mappa_train.validation import ConfigError

    return (ConfigError, CheckpointError, RunFolderError, RunLogError, SuiteError)


def build_parser() -> argparse.ArgumentParser:
    parser = env_cli.build_parser()
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    play = sub.choices["play"]
    play.add_argument(
        "--config",
        help="with --team model: YAML config of the team (model, env settings, tasks); default: the embedded "
        "model untrained, or the config a --checkpoint was trained with",
    )
    play.add_argument(
        "--checkpoint",
        help="with --team model: a run folder (its latest checkpoint) or a run's checkpoints/step-N folder; the "
        "team plays with the env settings and held-out tasks it was trained with",
    )
    play.add_argument("overrides", nargs="*", help="with --team model: key=value config overrides")
    common = {
        "formatter_class": argparse.RawDescriptionHelpFormatter,
        "epilog": EPILOG,
    }
    p = sub.add_parser(
        "train",
        help="train a team (REINFORCE++ on per-action rewards by default)",
        description=textwrap.fill(
            "Train every role of a team on its env's training tasks, evaluating on the held-out ones. "
            "Writes metrics.jsonl, transcripts.jsonl, curves.png, config.json, checkpoints/ and tensorboard/ "
            "into the config's out_dir, which must be unused unless --resume or --overwrite is given.",
            width=100,
        ),
        **common,
    )
    p.add_argument(
        "--config", help="YAML config file; its keys are the fields of mappa_train.config.TrainConfig"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in out_dir from its last intact checkpoint (a finished run prints its numbers)",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run outputs in out_dir (metrics, transcripts, checkpoints, plots) and start clean",
    )
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides of config fields, e.g. steps=4 lr=1.0e-4"
    )
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "eval",
        help="evaluate a team on the held-out tasks",
        description=textwrap.fill(
            "Play every held-out task once (greedy by default) and print the graded metrics as JSON. "
            "With --checkpoint, the team plays with the config it was trained with.",
            width=100,
        ),
        **common,
    )
    p.add_argument(
        "--config",
        help="YAML config file; with --checkpoint only its keys that do not define the team are used "
        "(e.g. out_dir for --log, eval_episodes)",
    )
    p.add_argument(
        "--team",
        default="model",
        help="'model' (the config's model and --checkpoint) or 'served' (roles played by model servers: --served)",
    )
    env_cli.add_served_arguments(p)
    p.add_argument(
        "--checkpoint",
        help="a run folder (its latest checkpoint) or a checkpoints/step-N folder; default: the untrained team",
    )
    p.add_argument(
        "--log",
        action="store_true",
        help="append the evaluation to the config's out_dir (metrics.jsonl, transcripts.jsonl) at the "
        "checkpoint's step, e.g. for a run killed before its final evaluation",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields, e.g. eval_episodes=4")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser(
        "bench",
        help="run an algorithm x seed grid on a suite and write a leaderboard",
        description=textwrap.fill(
            "Train every arm of a suite (a YAML file: base config, budget, seeds, baseline, arms as config "
            "overrides; see bench/suites/) at every seed, one run at a time, into OUT/<arm>-seed<N>. Finished "
            "runs are kept and killed ones resumed, so the same command completes a half-done grid. Ends with "
            "OUT/leaderboard.md: final held-out success per arm (mean, 95% interval), the paired difference from "
            "the baseline, rollouts to reach the baseline's final success, minutes per seed, and plots.",
            width=100,
        ),
        **common,
    )
    p.add_argument("suite", help="the suite file, e.g. bench/suites/math-one-step.yaml")
    p.add_argument("--out", help="grid folder (default: runs/bench/<suite name>)")
    p.add_argument("--arms", help="comma-separated arms to run (default: all of the suite's)")
    p.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of the suite's seeds")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their overrides; train nothing")
    p.add_argument(
        "--report-only", action="store_true", help="write the leaderboard from the runs there; train nothing"
    )
    p.set_defaults(func=cmd_bench)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides sit anywhere (argparse alone takes them only before the options
    that follow a positional: ``play math-chat --team model model=tiny`` would be refused)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.command in ("train", "eval", "play", "bench"):
        from mappa_train.threads import configure

        n = configure()
        print(f"torch threads: {n} of {os.cpu_count()} cores (set MAPPA_THREADS to choose)", file=sys.stderr)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"mappa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
