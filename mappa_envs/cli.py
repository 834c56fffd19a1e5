"""``mappa`` command line: ``envs`` lists the registry, ``play`` runs episodes and prints the transcript.

``train`` and ``eval`` are provided by ``mappa_train`` (the trainer) and appear here once it is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import mappa_envs
from mappa_envs.engine import run_episode
from mappa_envs.escape import escape_line, escape_text
from mappa_envs.records import ActionRecord, trim
from mappa_envs.scripted import scripted_team


def _format_record(r: ActionRecord, title: str) -> str:
    head = f"── {title} · step {r.step} · turn {r.turn + 1}"
    if r.judgement is not None:
        head += f" · coach {r.judgement.score:g}/10 ({r.judgement.source})"
    lines = [head, trim(r.action, 3000)]
    if r.tool_results:
        lines.append("   ┄ tool output ┄")
        lines.append(r.tool_output_text(limit=1500))
    if r.agent_error:
        lines.append(f"   ⚠ agent error (empty reply): {r.agent_error}")
    written = r.files_written()
    if written:
        lines.append("   files written: " + ", ".join(f"{escape_line(f.name)} ({f.size} B)" for f in written))
    return "\n".join(lines)


def transcript(records: Sequence[ActionRecord], titles: dict[str, str], outcome: dict | None) -> str:
    """A person-readable transcript of one episode with per-action judgements and the outcome.

    Safe to print to a terminal: agent text, tool output and file names are escaped (:mod:`mappa_envs.escape`),
    so no agent can send escape sequences (OSC, cursor moves, raw CR) to the user's terminal.
    """
    parts = [_format_record(r, titles.get(r.role, r.role)) for r in records]
    if outcome is not None:
        parts.append("══ outcome: " + json.dumps(outcome, default=str))
    return escape_text("\n\n".join(parts))


def cmd_envs(args: argparse.Namespace) -> int:
    print(mappa_envs.registry)
    return 0


# Who can play: name -> factory(args, env) returning a team for ``run_episode``. ``mappa_train`` adds "model".
TEAMS: dict[str, Callable[[argparse.Namespace, Any], Any]] = {
    "scripted": lambda args, env: scripted_team(env.unwrapped.spec.name),
}
# Teams that bring their env (a trained team plays with the settings it was trained with): name -> factory(args).
TEAM_ENVS: dict[str, Callable[[argparse.Namespace], Any]] = {}


def served_team(args: argparse.Namespace, env: Any) -> Any:
    """``--team served``: the roles in ``--served`` answer from their servers, the others play as ``--others``."""
    from mappa_envs.agents import MixedTeam, team_from_specs

    if not args.served:
        raise SystemExit(
            "--team served needs --served ROLE=URL@MODEL ('*' for every role) or a .yaml/.json team map"
        )
    if args.others not in TEAMS or args.others == "served":
        raise SystemExit(
            f"--others {args.others!r}: choose one of {', '.join(sorted(set(TEAMS) - {'served'}))}"
        )
    try:
        served = team_from_specs(args.served)
        roles = list(env.unwrapped.possible_agents)
        rest = None if all(served.serves(r) for r in roles) else TEAMS[args.others](args, env)
        return MixedTeam(served, rest, roles)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SystemExit(str(e)) from None


TEAMS["served"] = served_team


def cmd_play(args: argparse.Namespace) -> int:
    if args.team not in TEAMS:
        print(f"unknown team {args.team!r}; available: {', '.join(sorted(TEAMS))}", file=sys.stderr)
        return 2
    if args.team in TEAM_ENVS:
        env = TEAM_ENVS[args.team](args)
    else:
        env = mappa_envs.make(args.env, **({"tasks": args.tasks} if args.tasks else {}))
    spec = env.unwrapped.spec
    team = TEAMS[args.team](args, env)
    titles = {r.name: r.title for r in spec.roles}
    successes = 0
    try:
        for episode in range(args.episodes):
            records, outcome = run_episode(env, team, seed=args.seed + episode)
            task = env.unwrapped.task
            print(
                f"\n████ episode {episode + 1}/{args.episodes} · {env.unwrapped.env_id} · task {escape_line(task.id)}"
            )
            print(transcript(records, titles, outcome))
            successes += bool(outcome and outcome.get("success"))
    finally:
        env.close()
    print(f"\n{successes}/{args.episodes} episodes succeeded")
    served = getattr(team, "served", None)
    if served is not None:
        print("\nserved agents:\n" + served.usage_table())
        served.close()
    return 0


def add_served_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--served",
        action="append",
        default=[],
        metavar="ROLE=URL@MODEL",
        help="with --team served: a role played by a model behind an OpenAI-compatible server, e.g. "
        "coder=http://127.0.0.1:8080/v1@smollm2 ('*' for every role; repeatable), or a .yaml/.json team map "
        "(docs/SERVING.md)",
    )
    p.add_argument(
        "--others",
        default="scripted",
        help="with --team served: who plays the roles --served leaves out: 'scripted' or 'model' (trained)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mappa",
        description="mappa: PettingZoo envs for teams of LLM agents. Commands: envs, play.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("envs", help="list the registered environments")
    p.set_defaults(func=cmd_envs)
    p = sub.add_parser("play", help="play episodes and print the transcripts")
    p.add_argument("env", help="env id, e.g. math-chat or math-chat-v0")
    p.add_argument(
        "--team",
        default="scripted",
        help="who plays: 'scripted' (a hand-written team), 'served' (models behind OpenAI-compatible servers, see "
        "--served) or, with mappa_train installed, 'model' (see --config)",
    )
    p.add_argument("--episodes", type=int, default=1, help="how many episodes to play (default: 1)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i (default: 0)"
    )
    p.add_argument("--tasks", default=None, help="task source: embedded:train, embedded:eval, or a path")
    add_served_arguments(p)
    p.set_defaults(func=cmd_play)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
