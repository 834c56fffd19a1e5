"""Paired seed statistics: the interval matches scipy's t-test, the power matches simulation, seeds are minimal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mappa_train.seedstats import paired_difference, paired_power, seeds_for_power


def test_paired_difference_is_the_one_sample_t_interval_of_the_differences():
    diffs = [25.0, -12.5, 4.2, 18.8, 2.1]
    d = paired_difference(diffs)
    low, high = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert d.seeds == 5 and d.mean == pytest.approx(np.mean(diffs))
    assert (d.low, d.high) == (pytest.approx(low), pytest.approx(high))
    assert d.sd == pytest.approx(np.std(diffs, ddof=1))
    assert not d.excludes_zero
    assert paired_difference([10.0, 12.0, 11.0]).excludes_zero
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_difference([3.0])


def test_paired_power_agrees_with_simulated_t_tests():
    rng = np.random.default_rng(0)
    effect, sd, seeds = 6.0, 20.0, 40
    samples = rng.normal(effect, sd, size=(20_000, seeds))
    rejected = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert paired_power(effect, sd, seeds) == pytest.approx(rejected.mean(), abs=0.015)
    # no effect: the test's own false-positive rate
    assert paired_power(0.0, sd, seeds) == pytest.approx(0.05)


def test_seeds_for_power_is_the_fewest_that_reach_it():
    assert seeds_for_power(0.5, 1.0) == 34  # the textbook paired design: d = 0.5, 80% power, alpha 0.05
    n = seeds_for_power(7.9, 20.7)
    assert n is not None and paired_power(7.9, 20.7, n) >= 0.8 > paired_power(7.9, 20.7, n - 1)
    assert seeds_for_power(-7.9, 20.7) == n  # two-sided: a loss is as hard to show as a win
    assert seeds_for_power(0.0, 5.0) is None  # no difference is never detected
    assert seeds_for_power(3.0, 0.0) == 2  # identical differences at every seed
    assert seeds_for_power(0.1, 100.0, limit=1000) is None
