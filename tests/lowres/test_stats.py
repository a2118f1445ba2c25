"""Paired statistics: known inputs, known outputs (values computed by hand / from the t and Wilcoxon tables)."""

from __future__ import annotations

import math

import pytest

from fairseq_kt.lowres.stats import mean_sd, paired_comparison


def test_mean_sd_known_values():
    assert mean_sd([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx((5.0, math.sqrt(32 / 7)))
    assert mean_sd([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_sd([])


def test_paired_comparison_known_values():
    # differences method - baseline: -1, -0.5, -1, -0.2, -1 -> mean -0.74, sd sqrt(0.552 / 4) = 0.37148
    method = {1: 10.0, 2: 12.0, 3: 11.0, 4: 13.0, 5: 9.0}
    baseline = {1: 11.0, 2: 12.5, 3: 12.0, 4: 13.2, 5: 10.0, 6: 99.0}  # seed 6 has no pair: ignored
    cmp = paired_comparison(method, baseline)
    assert cmp.seeds == (1, 2, 3, 4, 5)
    assert cmp.mean_diff == pytest.approx(-0.74)
    assert cmp.sd_diff == pytest.approx(0.37148, abs=1e-4)
    half = 2.776445 * 0.37148 / math.sqrt(5)  # t(0.975, 4) = 2.7764
    assert (cmp.ci_low, cmp.ci_high) == pytest.approx((-0.74 - half, -0.74 + half), abs=1e-3)
    # all 5 differences negative: exact two-sided Wilcoxon p = 2 / 2^5
    assert cmp.wilcoxon_p == pytest.approx(0.0625)
    assert cmp.wins == 5
    assert cmp.format().startswith("-0.74 [")


def test_paired_comparison_no_difference_and_errors():
    same = {1: 5.0, 2: 6.0, 3: 7.0}
    cmp = paired_comparison(same, same)
    assert (cmp.mean_diff, cmp.ci_low, cmp.ci_high, cmp.wilcoxon_p, cmp.wins) == (0.0, 0.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_comparison({1: 1.0}, {1: 2.0, 2: 3.0})
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison(same, same, confidence=1.5)


def test_pairing_is_by_seed_not_by_order():
    # the same values in another seed order give another (worse) paired result
    a = {1: 1.0, 2: 2.0, 3: 3.0}
    b = {1: 1.5, 2: 2.5, 3: 3.5}
    shuffled = {1: 3.5, 2: 1.5, 3: 2.5}
    assert paired_comparison(a, b).sd_diff == pytest.approx(0.0)
    assert paired_comparison(a, shuffled).sd_diff > 1.0
