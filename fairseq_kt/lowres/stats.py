"""Paired statistics for seed-paired experiments: each method is run once per seed, and seed ``s`` of a method is
compared with seed ``s`` of the baseline (same data order, same masks), so the seed-to-seed variation that both
share cancels in the difference.

Uses scipy's Student t distribution and Wilcoxon signed-rank test; nothing is re-implemented.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairedComparison", "mean_sd", "paired_comparison"]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value).

    Raises:
        ValueError: for an empty sequence.
    """
    if not values:
        raise ValueError("mean_sd needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class PairedComparison:
    """``method − baseline`` over the seeds both have.

    Attributes:
        seeds: the paired seeds, sorted.
        mean_diff: mean of the per-seed differences (negative: the method has a lower error).
        sd_diff: their sample standard deviation.
        ci_low, ci_high: two-sided ``confidence`` interval of the mean difference (Student t, n − 1 dof).
        wilcoxon_p: two-sided Wilcoxon signed-rank p-value (exact for small n; 1.0 when every difference is 0).
        wins: seeds where the method's error is lower than the baseline's.
    """

    seeds: tuple[int, ...]
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float
    wins: int

    def format(self, digits: int = 2) -> str:
        """``-1.23 [-2.10, -0.36], p=0.06, 4/5 better``."""
        return (
            f"{self.mean_diff:+.{digits}f} [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}], "
            f"p={self.wilcoxon_p:.2g}, {self.wins}/{len(self.seeds)} better"
        )


def paired_comparison(
    method: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95
) -> PairedComparison:
    """Compare per-seed results ``{seed: value}`` of a method with the baseline's on the seeds both have.

    Raises:
        ValueError: when fewer than two seeds are paired, or ``confidence`` is not in (0, 1).
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = tuple(sorted(set(method) & set(baseline)))
    if len(seeds) < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds run by both, got {list(seeds)}")
    diffs = [method[s] - baseline[s] for s in seeds]
    mean, sd = mean_sd(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    if all(d == 0 for d in diffs):
        p = 1.0
    else:
        p = float(stats.wilcoxon(diffs, alternative="two-sided").pvalue)
    return PairedComparison(
        seeds=seeds,
        mean_diff=mean,
        sd_diff=sd,
        ci_low=mean - half,
        ci_high=mean + half,
        wilcoxon_p=p,
        wins=sum(d < 0 for d in diffs),
    )
