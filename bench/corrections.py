"""The cost of coach corrections: wall time per training step with and without the supervised term.

Trains the team of ``configs/tiny.yaml`` (the demo config is too slow on 2 cores) for ``--steps`` steps per arm,
``--repeats`` times, the arms interleaved so machine load falls on both alike: ``off`` (``correction_weight: 0``,
the RL update as before) and ``on`` (``correction_weight: 1``: the rules coach writes corrections and every
action scored below ``correction_below`` adds the token NLL of its correction to its role's loss). Prints, side by
side, the median step time (rollout + update, the held-out eval excluded), the median update time, how many
corrections a step learned, and the on/off ratios.

    PYTHONPATH=. python bench/corrections.py --steps 3 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mappa_train.config import TrainConfig
from mappa_train.runlog import read_metrics
from mappa_train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
ARMS = {"off": ["correction_weight=0.0"], "on": ["correction_weight=1.0"]}


def run_arm(config: Path, out: Path, steps: int, overrides: list[str]) -> list[dict]:
    """Train one arm in ``out`` and return its per-step metric rows."""
    cfg = TrainConfig.from_yaml(
        config,
        [
            f"out_dir={out}",
            f"steps={steps}",
            "eval_at_start=false",
            "eval_episodes=1",
            "progress=false",
            *overrides,
        ],
    )
    Trainer(cfg).fit()
    return [r for r in read_metrics(out / "metrics.jsonl") if "time/step_s" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mappa-bench-corrections-") as tmp:
        for rep in range(args.repeats):
            for arm, overrides in ARMS.items():
                rows[arm] += run_arm(args.config, Path(tmp) / f"{arm}-{rep}", args.steps, overrides)
    stat: dict[str, dict[str, float]] = {}
    for arm, rs in rows.items():
        step = [r["time/step_s"] for r in rs]
        update = [r["time/step_s"] - r["time/rollout_s"] for r in rs]
        learned = [sum(v for k, v in r.items() if k.startswith("corrections/")) for r in rs]
        stat[arm] = {
            "step": statistics.median(step),
            "update": statistics.median(update),
            "corrections": statistics.mean(learned),
        }
    print(
        f"\n{args.config.name}: {args.steps} steps x {args.repeats} repeats per arm ({time.time() - started:.0f} s)"
    )
    print(f"{'':28}{'off':>10}{'on':>10}{'on/off':>10}")
    for key, label in (("step", "step time, median (s)"), ("update", "update time, median (s)")):
        off, on = stat["off"][key], stat["on"][key]
        print(f"{label:28}{off:>10.3f}{on:>10.3f}{on / off:>9.2f}x")
    print(
        f"{'corrections learned / step':28}{stat['off']['corrections']:>10.1f}{stat['on']['corrections']:>10.1f}"
    )


if __name__ == "__main__":
    main()
