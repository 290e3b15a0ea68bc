"""Latency statistics: summaries, the median's order-statistic CI, the bootstrap ratio CI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from tvmflow.measure.stats import CV_HINT, Latency, cv_warning, median_ci, ratio_ci


def test_latency_summary_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.lognormal(np.log(1e-3), 0.1, size=501)
    lat = Latency(x)
    assert lat.n == 501
    assert lat.p50 == pytest.approx(np.median(x))
    for q in (90, 95, 99):
        assert getattr(lat, f"p{q}") == pytest.approx(np.percentile(x, q))
    assert lat.mean == pytest.approx(x.mean())
    assert lat.std == pytest.approx(x.std(ddof=1))
    assert lat.cv == pytest.approx(x.std(ddof=1) / x.mean())
    assert (lat.min, lat.max) == (x.min(), x.max())
    data = lat.to_json()
    assert data["samples"] == [float(v) for v in x]          # raw samples kept
    assert Latency.from_json(data).p50 == lat.p50
    assert "samples" not in lat.to_json(samples=False)


def test_extend_keeps_every_sample():
    lat = Latency(np.empty(0))
    lat.extend([3.0, 1.0])
    lat.extend(np.array([2.0]))
    assert lat.n == 3 and lat.p50 == 2.0


def _exact_ranks(n: int, conf: float = 0.95) -> tuple[int, int]:
    """Reference: largest j with P[Bin(n, 1/2) <= j-1] <= alpha, via scipy."""
    alpha = (1 - conf) / 2
    j = max(k for k in range(1, n // 2 + 2) if sps.binom.cdf(k - 1, n, 0.5) <= alpha)
    return j, n + 1 - j


@pytest.mark.parametrize("n", [6, 10, 25, 100, 257, 1000])
def test_median_ci_uses_exact_binomial_ranks(n):
    x = np.arange(1, n + 1, dtype=float)       # x_(i) = i
    lo, hi = median_ci(x)
    assert (lo, hi) == _exact_ranks(n)


def test_median_ci_known_table_value():
    # the textbook 95% interval for n = 100 is [x_(40), x_(61)]
    assert median_ci(np.arange(1, 101, dtype=float)) == (40.0, 61.0)


def test_median_ci_small_sample_is_whole_range():
    assert median_ci([5.0, 1.0, 3.0]) == (1.0, 5.0)


def test_median_ci_covers_true_median():
    rng = np.random.default_rng(7)
    hits = 0
    trials = 400
    for _ in range(trials):
        x = rng.exponential(1.0, size=60)      # true median ln 2
        lo, hi = median_ci(x)
        hits += lo <= np.log(2) <= hi
    assert hits / trials >= 0.93


def test_ratio_ci_detects_a_real_difference_and_is_seeded():
    rng = np.random.default_rng(3)
    a = rng.normal(0.90, 0.02, 300)
    b = rng.normal(1.00, 0.02, 300)
    ci = ratio_ci(a, b, seed=5)
    assert ci.lo < ci.ratio < ci.hi
    assert ci.hi < 1.0 and ci.significant
    assert ratio_ci(a, b, seed=5) == ci                   # same seed, same interval
    assert ci.ratio == pytest.approx(np.median(a) / np.median(b))


def test_ratio_ci_same_distribution_is_not_significant():
    rng = np.random.default_rng(4)
    a = rng.normal(1.0, 0.05, 400)
    b = rng.normal(1.0, 0.05, 400)
    ci = ratio_ci(a, b, seed=0)
    assert ci.lo < 1.0 < ci.hi and not ci.significant


def test_cv_warning_only_above_three_percent():
    steady = Latency(np.full(100, 1e-3) + np.linspace(0, 1e-5, 100))
    noisy = Latency(np.random.default_rng(0).normal(1e-3, 1e-4, 100))
    assert cv_warning("x", steady) is None
    msg = cv_warning("noisy", noisy)
    assert msg and "noisy" in msg and "CV" in msg and CV_HINT in msg and "governor" in msg
