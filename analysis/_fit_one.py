"""``fit_power_law``: one 1-D array in, the full Clauset analysis out."""

from __future__ import annotations

import dataclasses

from numpy.typing import ArrayLike

from analysis._bootstrap import bootstrap_p, replicates_for
from analysis._compare import ALTERNATIVES, compare
from analysis._powerlaw import PowerLawFit, clauset_fit, clean


def fit_power_law(
    values: ArrayLike,
    discrete: bool | None = None,
    alpha_range: tuple[float, float] | None = None,
    compare_with: tuple[str, ...] | bool = False,
    n_boot: int = 0,
    seed: int = 0,
    gof_precision: float | None = None,
) -> PowerLawFit:
    """Fit a power-law tail (Clauset, Shalizi & Newman 2009) to ``values``.

    Non-finite and non-positive values are excluded and counted in ``n_excluded``.
    ``discrete=None`` decides from the dtype, then the values (docs/analysis.md).
    ``alpha_range=None`` is the plain estimator; ``(0, 3)`` reproduces
    ``powerlaw.Fit``'s default range.
    ``compare_with=True`` (or a tuple of names from ``ALTERNATIVES``) adds
    likelihood-ratio comparisons; ``n_boot > 0`` adds the bootstrap p-value
    (``gof_p``, over synthetic fits that succeeded; ``gof_failed`` counts the others).
    ``gof_precision`` (used when ``n_boot`` is 0) picks the replicates for that precision,
    1 / (4 eps^2), and stops once p is clearly above or below 0.1 (analysis/_bootstrap.py);
    ``gof_n`` says how many it used.
    A constant, tiny or empty series gives NaN with ``status`` saying why.
    """
    fit = clauset_fit(values, discrete, alpha_range)
    if fit.status != "ok":
        return fit
    ordered, _ = clean(values)
    updates: dict[str, object] = {}
    if compare_with:
        names = ALTERNATIVES if compare_with is True else tuple(compare_with)
        updates["comparisons"] = compare(ordered[ordered >= fit.xmin], fit.xmin, fit.alpha, fit.discrete, names)
    if n_boot or gof_precision:
        replicates = n_boot or replicates_for(gof_precision)
        updates["gof_p"], updates["gof_n"], updates["gof_failed"] = bootstrap_p(
            ordered, fit, replicates, seed, alpha_range, early_stop=not n_boot)
    return dataclasses.replace(fit, **updates)
