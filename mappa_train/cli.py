"""``mappa`` command line: ``envs`` and ``play`` (from mappa_envs), ``train`` and ``eval`` (the trainer).

mappa train --config configs/demo.yaml steps=4 out_dir=runs/try   # key=value overrides any config field
mappa train --config configs/demo.yaml --resume                    # continue a killed run
mappa eval --config configs/demo.yaml --checkpoint runs/try/checkpoints/step-000004
accelerate launch --num_processes 2 -m mappa_train.cli train --config ...   # data-parallel update
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mappa_envs import cli as env_cli


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
        print(f"\nheld-out success: before {before} → after {after}")
        print(
            f"run folder: {config.out_dir} (metrics.jsonl, transcripts.jsonl, curves.png, checkpoints/, tensorboard/)"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mappa_train.trainer import Trainer

    config = _config(args)
    trainer = Trainer(config)
    if args.checkpoint and not trainer.resume(Path(args.checkpoint)):
        print(f"no checkpoint at {args.checkpoint}", file=sys.stderr)
        return 2
    try:
        metrics, _ = trainer.evaluate()
    finally:
        trainer.close()
    print(json.dumps(metrics, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = env_cli.build_parser()
    parser.description = __doc__
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("train", help="train a team (REINFORCE++ on per-action rewards by default)")
    p.add_argument("--config", help="YAML config (fields of mappa_train.config.TrainConfig)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a team on the held-out tasks")
    p.add_argument("--config")
    p.add_argument("--checkpoint", help="checkpoint folder to load (default: the untrained team)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
