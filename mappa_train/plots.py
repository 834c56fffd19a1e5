"""PNG plots of a run from its ``metrics.jsonl``: held-out success, per-role reward, coach vs outcome.

Plots read only the JSONL, so they can be redrawn for any run (or several runs side by side) after the fact:
``python -m mappa_train.plots runs/a runs/b --out docs/compare.png``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mappa_train.runlog import read_metrics  # noqa: E402


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """``key`` against training episodes (the step where a row has no episode count), rows lacking it skipped."""
    xs, ys = [], []
    for row in rows:
        if row.get(key) is not None:
            xs.append(row.get("episodes_seen", row["step"]))
            ys.append(row[key])
    return xs, ys


def reward_roles(rows: list[dict]) -> list[str]:
    """The roles that have a ``reward/<role>`` series in a run's metrics."""
    return sorted({k.split("/")[1] for r in rows for k in r if k.startswith("reward/") and k.count("/") == 1})


def save_figure(fig: plt.Figure, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw the three panels for one run into ``out`` (default ``<run>/curves.png``)."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    out = out or run_dir / "curves.png"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x, y = series(rows, "eval/success_rate")
    axes[0].plot(x, y, marker="o", label="held-out success")
    x, y = series(rows, "eval/mean_outcome_reward")
    if y:
        axes[0].plot(x, y, marker=".", linestyle="--", label="held-out mean outcome reward")
    axes[0].set(title="Held-out evaluation", xlabel="training episodes", ylim=(-0.05, 1.05))
    axes[0].legend()
    roles = reward_roles(rows)
    for role in roles:
        axes[1].plot(*series(rows, f"reward/{role}"), label=role)
    axes[1].set(title="Mean action reward per role (training)", xlabel="training episodes")
    if roles:
        axes[1].legend()
    axes[2].plot(*series(rows, "train/mean_action_reward"), label="mean action reward (coach)")
    axes[2].plot(*series(rows, "train/success_rate"), label="team success (outcome)")
    axes[2].set(title="Coach vs outcome (training)", xlabel="training episodes", ylim=(-0.05, 1.05))
    axes[2].legend()
    return save_figure(fig, out)


def plot_compare(run_dirs: Sequence[Path], out: Path, key: str = "eval/success_rate") -> Path:
    """One curve per run of ``key`` against training episodes (e.g. coach vs outcome-only arms)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in run_dirs:
        ax.plot(*series(read_metrics(run / "metrics.jsonl"), key), marker="o", label=run.name)
    ax.set(title=key, xlabel="training episodes")
    ax.legend()
    return save_figure(fig, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--key", default="eval/success_rate")
    args = parser.parse_args(argv)
    if len(args.runs) == 1:
        print(plot_run(args.runs[0], args.out))
    else:
        print(plot_compare(args.runs, args.out or Path("compare.png"), args.key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
