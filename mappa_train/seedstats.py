"""How much a comparison over a few seeds shows: the paired difference, its interval, and the seeds it would need.

On CPU an arm costs ~30 min per seed, so the experiments in docs/RESULTS.md have five seeds per arm, and an arm's
seeds spread over 20-30 points of held-out success. A mean lead of a few points is then neither a win nor a loss;
these numbers say how far from either it is. Seeds are paired (both arms share a seed's tasks and sampling), so
the unit is the per-seed difference, and the planning figure is the seeds a two-sided paired t-test would need to
detect a difference of the size measured, with the spread measured (rough when the spread comes from five seeds).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences (arm minus baseline), its t-interval and its sample standard deviation."""

    mean: float
    low: float
    high: float
    sd: float
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(differences: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The mean difference with a Student-t interval over seeds (needs two seeds at least)."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds with both arms, got {n}")
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, sd, n)


def paired_power(effect: float, sd: float, seeds: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test at level ``alpha`` with ``seeds`` pairs, true mean ``effect``, spread ``sd``."""
    if seeds < 2:
        return 0.0
    if sd == 0:
        return 1.0 if effect != 0 else alpha
    df = seeds - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect / sd * math.sqrt(seeds)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_for_power(
    effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, limit: int = 100_000
) -> int | None:
    """The fewest paired seeds that detect ``effect`` with probability ``power``; None if none up to ``limit``."""
    if effect == 0 or paired_power(effect, sd, limit, alpha) < power:
        return None
    low, high = 1, 2  # power grows with seeds: double until enough, then bisect
    while paired_power(effect, sd, high, alpha) < power:
        low, high = high, high * 2
    high = min(high, limit)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if paired_power(effect, sd, mid, alpha) >= power else (mid, high)
    return high
