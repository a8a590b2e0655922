"""fit_power_law against powerlaw 2.0.0, the paper, plfit, brute force and known parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import fit_power_law, rank_ols
from analysis._powerlaw import SortedSample, _compiled_bounds, _continuous_alpha, _continuous_cdf, clean
from analysis._xmin_scan import ks_distances, scan

DATA = Path(__file__).resolve().parents[1] / "data" / "powerlaw"

# powerlaw 2.0.0: Fit(data * factor, discrete=..., estimate_discrete=False), see tests/data/powerlaw/SOURCE.md
REFERENCE = {
    "words": (1, True, 7, 1.9527177262, 0.0082566644, 2958),
    "terrorism": (1, True, 12, 2.3699645079, 0.0176885666, 547),
    "blackouts": (1e-3, False, 230.0, 2.2726372198, 0.0606737963, 59),
    "cities": (1e-3, False, 52.457, 2.3699521227, 0.0188480227, 580),
    "flares": (1, False, 323.0, 1.7884070781, 0.0082927134, 1711),
    "quakes": (1e-3, False, 10.0, 1.9524033216, 0.0380976791, 2659),
    "surnames": (1e-3, False, 14.9226, 2.2004164176, 0.0311408480, 2280),
    "fires": (1, False, 6324, 2.1636286786, 0.0356980705, 521),
}
# LN, EXP, SE: normalised R; TPL: raw R (nested), from the same source
COMPARISONS = {
    "blackouts": {"lognormal": -0.4157, "exponential": 1.431, "stretched_exponential": -0.3582, "truncated_power_law": -0.3818},
    "cities": {"lognormal": -0.09146, "exponential": 3.595, "stretched_exponential": 0.9368, "truncated_power_law": -0.1231},
    "flares": {"lognormal": -0.8038, "exponential": 13.72, "stretched_exponential": 1.171, "truncated_power_law": -4.519},
    "fires": {"lognormal": -1.783, "exponential": 3.974, "stretched_exponential": -1.822, "truncated_power_law": -5.02},
    "terrorism": {"lognormal": -0.2784, "exponential": 2.458, "stretched_exponential": 0.5448, "truncated_power_law": -0.07701},
}


def _load(name: str) -> np.ndarray:
    factor = REFERENCE[name][0]
    return np.loadtxt(DATA / f"{name}.txt") * factor


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matches_powerlaw_reference(name: str) -> None:
    _, discrete, xmin, alpha, ks_d, n_tail = REFERENCE[name]
    fit = fit_power_law(_load(name), discrete=discrete, alpha_range=(0, 3))
    assert fit.discrete is discrete
    assert fit.xmin == pytest.approx(xmin, rel=1e-12) and fit.n_tail == n_tail
    # continuous: both closed form, so equal to 1e-6; discrete: powerlaw stops Nelder-Mead at tol 1e-4
    assert fit.alpha == pytest.approx(alpha, rel=1e-6 if not discrete else 2e-5)
    assert fit.ks_d == pytest.approx(ks_d, rel=1e-6 if not discrete else 1e-3)
    assert fit.sigma == pytest.approx((fit.alpha - 1) / np.sqrt(n_tail), rel=1e-12)


def test_uncapped_default_matches_powerlaw_with_wide_range() -> None:
    degree = np.loadtxt(DATA / "plfit" / "condmat2005-degree.dat")
    capped = fit_power_law(degree, discrete=False, alpha_range=(0, 3))
    assert (capped.xmin, round(capped.alpha, 4)) == (20, 2.9697)  # powerlaw's default: "saturates at 3"
    plain = fit_power_law(degree, discrete=False)
    assert plain.xmin == 48 and plain.alpha == pytest.approx(3.72242, abs=1e-5)
    discrete = fit_power_law(degree)
    # powerlaw (alpha in [1, 10]) gives 49, 3.68634; plfit 49, 3.686
    assert discrete.discrete and discrete.xmin == 49 and discrete.alpha == pytest.approx(3.68634, abs=5e-5)


def test_plfit_continuous_example() -> None:
    fit = fit_power_law(np.loadtxt(DATA / "plfit" / "continuous_data.txt"))
    assert fit.xmin == pytest.approx(1.43628, rel=1e-5) and fit.n_tail == 5844
    assert fit.alpha == pytest.approx(2.532820134653, rel=1e-9)
    assert fit.ks_d == pytest.approx(0.007116960455, rel=1e-8)


def _mixture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.lognormal(0, 1, 1500), rng.pareto(1.8, 500) + 3])


def _pure_pareto(seed: int) -> np.ndarray:
    # the hardest case: every candidate's KS distance is close to the best one
    return np.random.default_rng(seed).pareto(1.5, 3000) + 1


@pytest.mark.parametrize("make", [_mixture, _pure_pareto])
@pytest.mark.parametrize("seed", range(3))
def test_pruned_scan_equals_brute_force(make, seed: int) -> None:  # noqa: ANN001
    ordered, _ = clean(make(seed))
    sample = SortedSample.from_sorted(ordered)
    alpha = _continuous_alpha(sample, ordered)
    cdf = _continuous_cdf(sample, alpha)
    every = np.arange(sample.n_candidates)
    distances = ks_distances(sample, cdf, every)  # every candidate, every point
    expected = (int(np.argmin(distances)), distances.min())
    assert scan(sample, cdf, np.ones(every.size, bool)) == expected  # numpy bounds
    index, distance = scan(sample, cdf, np.ones(every.size, bool), _compiled_bounds(sample, alpha))
    assert index == expected[0] and distance == pytest.approx(expected[1], rel=1e-12)  # compiled bounds


def test_live_powerlaw_agrees_on_fresh_samples() -> None:
    powerlaw = pytest.importorskip("powerlaw")
    rng = np.random.default_rng(3)
    for values in (rng.pareto(1.2, 1500) + 1, rng.lognormal(1, 1.2, 1500)):
        reference = powerlaw.Fit(values, parameter_ranges={"alpha": [1, 10]}, verbose=0)
        ours = fit_power_law(values)
        assert ours.xmin == reference.xmin
        assert ours.alpha == pytest.approx(reference.alpha, rel=1e-4)  # Nelder-Mead outside (1.5, 3]
        assert ours.ks_d == pytest.approx(reference.power_law.D, rel=1e-3)


@pytest.mark.parametrize("alpha", [1.8, 2.5, 3.5])
def test_recovers_pareto_exponent(alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 10))
    values = 2.0 * (1 - rng.random(20_000)) ** (-1 / (alpha - 1))
    fit = fit_power_law(values)
    assert abs(fit.alpha - alpha) < 4 * fit.sigma + 0.02
    assert fit.n_tail > 5000


def test_comparisons_identify_the_generating_law() -> None:
    rng = np.random.default_rng(11)
    pareto = fit_power_law(rng.pareto(1.5, 5000) + 1, compare_with=True)
    assert pareto.comparisons["exponential"].R > 3 and pareto.comparisons["exponential"].p < 0.01
    exponential = fit_power_law(rng.exponential(2.0, 5000) + 1, compare_with=("exponential",))
    assert exponential.comparisons["exponential"].R < 0


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparisons_match_powerlaw(name: str) -> None:
    fit = fit_power_law(_load(name), discrete=REFERENCE[name][1], alpha_range=(0, 3), compare_with=True)
    for alternative, reference in COMPARISONS[name].items():
        ours = fit.comparisons[alternative].R
        if alternative == "stretched_exponential":
            # powerlaw's Nelder-Mead (tol 1e-4, crude start) often stops short; ours must fit at least as well
            assert ours <= reference + 2e-3, (alternative, ours, reference)
        else:
            assert ours == pytest.approx(reference, abs=2e-3 + 1e-3 * abs(reference)), (alternative, ours)


def test_bootstrap_p_value() -> None:
    # under a true power law p is roughly uniform: most samples must look plausible (p > 0.1)
    p_values = [fit_power_law(np.random.default_rng(seed).pareto(1.5, 1000) + 1, n_boot=30, seed=1).gof_p
                for seed in range(5)]
    assert sum(p > 0.1 for p in p_values) >= 4, p_values
    # no tail of a uniform sample is a power law: every synthetic KS distance is smaller
    uniform = fit_power_law(np.random.default_rng(0).uniform(1, 2, 20_000), n_boot=20, seed=1)
    assert uniform.gof_p < 0.1


@pytest.mark.parametrize("values, status", [
    (np.array([]), "fewer than 3 distinct positive values"),
    (np.full(100, 3.0), "constant series"),
    (np.array([np.nan, np.inf, -1.0, 0.0, 2.0, 3.0]), "fewer than 3 distinct positive values"),
])
def test_degenerate_series_give_nan_with_reason(values: np.ndarray, status: str) -> None:
    fit = fit_power_law(values)
    assert fit.status == status and np.isnan(fit.alpha)


def test_non_finite_values_are_excluded_and_counted() -> None:
    values = np.concatenate([np.random.default_rng(0).pareto(2, 1000) + 1, [np.nan, np.inf, 0.0, -5.0]])
    fit = fit_power_law(values)
    assert fit.n_excluded == 4 and fit.n == 1000 and fit.status == "ok"


def test_rank_ols_on_an_exact_power_law() -> None:
    ranks = np.arange(1, 1001)
    fit = rank_ols(np.random.default_rng(0).permutation(7.0 * ranks**-0.5))
    assert fit.slope == pytest.approx(-0.5) and fit.intercept == pytest.approx(np.log(7.0)) and fit.r2 == pytest.approx(1.0)
