"""How much a result moves with the seed: mean, standard deviation and a 95% t-interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SeedSpread", "seed_spread"]


@dataclass(frozen=True)
class SeedSpread:
    """A score over ``n`` seeds; ``std`` and ``ci`` are None with fewer than two."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1 in the denominator)
    ci: tuple[float, float] | None  # 95% Student-t interval of the mean: few seeds make it wide, as it should be

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ci": list(self.ci) if self.ci else None}

    def text(self, digits: int = 4) -> str:
        """``0.9123 ± 0.0100 (95% t-interval 0.8875-0.9371, 3 seeds)``, or the one value with one seed."""
        if self.std is None or self.ci is None:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (95% t-interval {self.ci[0]:.{digits}f}-{self.ci[1]:.{digits}f}, {self.n} seeds)"


def seed_spread(values: Sequence[float], confidence: float = 0.95) -> SeedSpread:
    """Mean, sample standard deviation and the t-interval of the mean of per-seed scores.

    The t distribution (n - 1 degrees of freedom), not the normal: with 3 seeds the interval is
    about 2.2x wider than mean ± 1.96 standard errors would claim.
    """
    from scipy.stats import t

    if not values:
        raise ValueError("seed_spread needs at least one value")
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return SeedSpread(1, round(mean, 6), None, None)
    std = statistics.stdev(values)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return SeedSpread(n, round(mean, 6), round(std, 6), (round(mean - half, 6), round(mean + half, 6)))
