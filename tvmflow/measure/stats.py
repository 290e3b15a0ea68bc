"""Latency statistics: raw samples in, robust summaries out (numpy only).

* :class:`Latency` keeps every raw sample (seconds, one run each -- never means of means) and
  derives mean, p50/p90/p95/p99, min/max, std and the coefficient of variation (CV).
* :func:`median_ci` is the distribution-free order-statistic confidence interval of the median
  (exact binomial ranks), the interval shown next to every p50.
* :func:`ratio_ci` is a seeded percentile bootstrap of ``median(a) / median(b)`` on the raw
  samples -- used for "is pruned-a8 faster than pruned?" and "TVM / ONNX Runtime".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

CV_WARN = 0.03  # warn above 3 % coefficient of variation
CV_HINT = ("pin the CPU frequency governor (`cpupower frequency-set -g performance`), close "
           "other programs, or check for a busy board")
PERCENTILES = (50, 90, 95, 99)


@dataclass
class Latency:
    """Raw single-run latencies in seconds and their summary statistics."""

    samples: np.ndarray = field(repr=False)

    def __post_init__(self):
        self.samples = np.asarray(self.samples, dtype=np.float64).reshape(-1)

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> "Latency":
        return cls(np.fromiter(samples, dtype=np.float64))

    def extend(self, more: Iterable[float]) -> None:
        self.samples = np.concatenate([self.samples, np.asarray(list(more), dtype=np.float64)])

    @property
    def n(self) -> int:
        return int(self.samples.size)

    def _need(self) -> np.ndarray:
        if self.samples.size == 0:
            raise ValueError("no latency samples")
        return self.samples

    @property
    def mean(self) -> float:
        return float(self._need().mean())

    @property
    def std(self) -> float:
        s = self._need()
        return float(s.std(ddof=1)) if s.size > 1 else 0.0

    @property
    def min(self) -> float:
        return float(self._need().min())

    @property
    def max(self) -> float:
        return float(self._need().max())

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._need(), q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def total(self) -> float:
        return float(self.samples.sum())

    @property
    def cv(self) -> float:
        """Coefficient of variation: std / mean."""
        mean = self.mean
        return self.std / mean if mean > 0 else 0.0

    def median_ci(self, conf: float = 0.95) -> tuple[float, float]:
        return median_ci(self.samples, conf)

    def unstable(self, limit: float = CV_WARN) -> bool:
        return self.n > 1 and self.cv > limit

    def summary(self) -> dict[str, float]:
        """Statistics in seconds (``n`` and ``cv`` unitless)."""
        if self.n == 0:
            return {"n": 0}
        lo, hi = self.median_ci()
        return {"n": self.n, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                **{f"p{q}": self.percentile(q) for q in PERCENTILES},
                "p50_ci95": [lo, hi], "cv": self.cv}

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"unit": "s", **self.summary()}
        if samples:
            data["samples"] = [float(v) for v in self.samples]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Latency":
        return cls(np.asarray(data.get("samples", []), dtype=np.float64))


def _binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P[X <= k] for X ~ Binomial(n, p), via log-space terms (fine for n up to ~1e6)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    ks = np.arange(0, k + 1)
    logc = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) for i in ks])
            - np.array([math.lgamma(n - i + 1) for i in ks]))
    terms = logc + ks * lp + (n - ks) * lq
    m = terms.max()
    return float(min(1.0, math.exp(m) * np.exp(terms - m).sum()))


def median_ci(samples, conf: float = 0.95) -> tuple[float, float]:
    """Order-statistic (distribution-free) CI of the median.

    The interval is ``[x_(j), x_(k)]`` (sorted samples, 1-based ranks) with the largest ``j``
    such that ``P[Binomial(n, 1/2) < j] <= (1 - conf) / 2`` and ``k = n + 1 - j``; its coverage
    is at least ``conf``.  With fewer than 6 samples no such ranks exist at 95 % and the
    interval is the whole sample range.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64).reshape(-1))
    n = x.size
    if n == 0:
        raise ValueError("no samples")
    alpha = (1.0 - conf) / 2.0
    # largest j with P[X <= j-1] <= alpha
    lo_rank = 0  # 0 means "no rank qualifies"
    hi = n // 2 + 1
    # cdf is monotone: binary search on j in [1, n//2+1]
    a, b = 1, hi
    while a <= b:
        mid = (a + b) // 2
        if _binom_cdf(mid - 1, n) <= alpha:
            lo_rank, a = mid, mid + 1
        else:
            b = mid - 1
    if lo_rank == 0:
        return float(x[0]), float(x[-1])
    return float(x[lo_rank - 1]), float(x[n - lo_rank])


@dataclass(frozen=True)
class RatioCI:
    """``median(a) / median(b)`` with a bootstrap confidence interval."""

    ratio: float
    lo: float
    hi: float
    conf: float = 0.95
    n_boot: int = 0
    seed: int = 0

    @property
    def significant(self) -> bool:
        """The interval excludes 1 (no difference)."""
        return self.lo > 1.0 or self.hi < 1.0

    def to_json(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "ci95": [self.lo, self.hi], "conf": self.conf,
                "n_boot": self.n_boot, "seed": self.seed, "significant": self.significant}


def ratio_ci(a, b, *, conf: float = 0.95, n_boot: int = 2000, seed: int = 0) -> RatioCI:
    """Percentile-bootstrap CI of ``median(a) / median(b)`` (independent resampling, seeded)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError("ratio_ci needs samples on both sides")
    rng = np.random.default_rng(seed)
    # resample in chunks: n_boot x n indices at once would need gigabytes for long runs
    chunk = max(1, int(4_000_000 // max(a.size, b.size)))
    ratios = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        ma = np.median(a[rng.integers(0, a.size, size=(m, a.size))], axis=1)
        mb = np.median(b[rng.integers(0, b.size, size=(m, b.size))], axis=1)
        ratios[start:start + m] = ma / mb
    alpha = (1.0 - conf) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return RatioCI(float(np.median(a) / np.median(b)), float(lo), float(hi), conf, n_boot, seed)


def cv_warning(name: str, lat: Latency, limit: float = CV_WARN) -> str | None:
    """A one-line warning when ``lat`` varies more than ``limit`` (CV), else None."""
    if not lat.unstable(limit):
        return None
    return (f"{name}: latency varies a lot (CV {lat.cv * 100:.1f}% > {limit * 100:.0f}%); the "
            f"median is still usable, but {CV_HINT}")
