"""``mappa`` command line: ``envs`` and ``play`` (from mappa_envs), ``train`` and ``eval`` (the trainer).

mappa train --config configs/demo.yaml steps=4 out_dir=runs/try   # key=value overrides any config field
mappa train --config configs/demo.yaml --resume                    # continue a killed run
mappa eval --config configs/demo.yaml --checkpoint runs/try/checkpoints/step-000004
mappa eval --config configs/demo.yaml --checkpoint runs/try/checkpoints/step-000002 --log  # into runs/try's logs
accelerate launch --num_processes 2 -m mappa_train.cli train --config ...   # data-parallel update
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mappa_envs import cli as env_cli
from mappa_envs.escape import escape_line


def _config(args: argparse.Namespace):
    from mappa_train.config import TrainConfig

    if args.config:
        return TrainConfig.from_yaml(args.config, args.overrides)
    return TrainConfig.from_dict({}, args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from mappa_train.trainer import Trainer

    config = _config(args)
    trainer = Trainer(config)
    history = trainer.fit(resume=args.resume)
    if trainer.rank == 0:
        before = history.get("before", {}).get("eval/success_rate")
        after = (history.get("after") or {}).get("eval/success_rate")
        if config.steps == 0:
            print(f"\nheld-out success of the untrained team: {before}")
        else:
            shown = "not evaluated (eval_at_start: false)" if before is None else before
            print(f"\nheld-out success: before {shown} → after {after}")
        print(
            f"run folder: {config.out_dir} (metrics.jsonl, transcripts.jsonl, curves.png, checkpoints/, tensorboard/)"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mappa_train.runlog import RunLogger, read_metrics
    from mappa_train.trainer import Trainer

    config = _config(args)
    trainer = Trainer(config)
    if args.checkpoint and not trainer.resume(Path(args.checkpoint)):
        print(f"no checkpoint at {escape_line(args.checkpoint)}", file=sys.stderr)
        trainer.close()
        return 2
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
    finally:
        trainer.close()
    if args.log:  # as the trainer logs its own evaluations: the report reads them like any other
        logger = RunLogger(run, tensorboard=False, keep=True)
        logger.log(trainer.step, {**metrics, "episodes_seen": trainer.episodes_seen})
        logger.transcripts(trainer.step, "eval", episodes)
        logger.close()
        print(f"logged to {run}/metrics.jsonl and transcripts.jsonl at step {trainer.step}")
    print(json.dumps(metrics, indent=2))
    return 0


def model_team(args: argparse.Namespace, env: Any):
    """``mappa play --team model``: the config's model (the embedded one by default) with a checkpoint's adapters.

    Decoding is the config's ``eval_temperature`` (greedy by default), as in held-out evaluation.
    """
    from mappa_train.checkpoint import latest_checkpoint
    from mappa_train.trainer import build_policy

    config = _config(args)
    roles = list(env.unwrapped.possible_agents)
    policy = build_policy(config, roles)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None:
        checkpoint = (
            latest_checkpoint(checkpoint / "checkpoints") or latest_checkpoint(checkpoint) or checkpoint
        )
        if not (checkpoint / "policy").is_dir():
            raise SystemExit(
                f"no checkpoint at {escape_line(args.checkpoint)}: pass a run folder or a checkpoints/step-N folder"
            )
        policy.load(checkpoint / "policy")
        print(f"adapters from {escape_line(checkpoint)}")
    policy.eval()

    def act(agent: str, messages: list[dict]) -> str:
        with policy.sampling(temperature=config.eval_temperature):
            return policy.generate(agent, [messages])[0].text

    return act


env_cli.TEAMS["model"] = model_team


def build_parser() -> argparse.ArgumentParser:
    parser = env_cli.build_parser()
    parser.description = __doc__
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    play = sub.choices["play"]
    play.add_argument(
        "--config", help="with --team model: YAML config for the model (default: the embedded one)"
    )
    play.add_argument("--checkpoint", help="with --team model: a run folder or checkpoints/step-N folder")
    play.add_argument("overrides", nargs="*", help="with --team model: key=value config overrides")
    p = sub.add_parser("train", help="train a team (REINFORCE++ on per-action rewards by default)")
    p.add_argument("--config", help="YAML config (fields of mappa_train.config.TrainConfig)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a team on the held-out tasks")
    p.add_argument("--config")
    p.add_argument("--checkpoint", help="checkpoint folder to load (default: the untrained team)")
    p.add_argument(
        "--log",
        action="store_true",
        help="append the evaluation to the config's out_dir (metrics.jsonl, transcripts.jsonl) at the "
        "checkpoint's step, e.g. for a run killed before its final evaluation",
    )
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
