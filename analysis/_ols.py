"""Log-log ordinary least squares of value against rank (the Zipf plot's straight line)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankFit:
    slope: float
    intercept: float
    r2: float


def rank_ols(values: np.ndarray) -> RankFit:
    """Fit log(value) = intercept + slope * log(rank), rank 1 = largest; positive values only."""
    descending = np.sort(values[np.isfinite(values) & (values > 0)])[::-1]
    if descending.size < 3 or descending[0] == descending[-1]:
        return RankFit(float("nan"), float("nan"), float("nan"))
    log_rank = np.log(np.arange(1, descending.size + 1))
    log_value = np.log(descending)
    slope, intercept = np.polyfit(log_rank, log_value, 1)
    residual = log_value - (intercept + slope * log_rank)
    r2 = 1.0 - residual.var() / log_value.var()
    return RankFit(float(slope), float(intercept), float(r2))
