"""The verdict (analysis/_verdict.py) against Clauset, Shalizi & Newman (2009), Table 6.2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis import fit_power_law
from analysis._bootstrap import _decided, replicates_for
from analysis._verdict import CODES, VERDICTS, rule, verdict_of, verdicts

DATA = Path(__file__).resolve().parents[1] / "data" / "powerlaw"

# Table 6.2 as printed (tests/data/powerlaw SOURCE; the paper's p from Table 6.1, n_tail from Table 6.1):
# name: (gof p, n_tail, (lognormal R, p), (exponential), (stretched exponential), (cut-off raw R, p), support)
TABLE_6_2 = {
    "birds": (0.55, 66, (-0.850, 0.40), (1.87, 0.06), (-0.882, 0.38), (-1.24, 0.12), "moderate"),
    "blackouts": (0.62, 59, (-0.412, 0.68), (1.21, 0.23), (-0.417, 0.68), (-0.382, 0.38), "moderate"),
    "book sales": (0.66, 139, (-0.267, 0.79), (2.70, 0.01), (3.885, 0.00), (-0.140, 0.60), "moderate"),
    "cities": (0.76, 580, (-0.090, 0.93), (3.65, 0.00), (0.204, 0.84), (-0.123, 0.62), "moderate"),
    "fires": (0.05, 521, (-1.78, 0.08), (4.00, 0.00), (-1.82, 0.07), (-5.02, 0.00), "with cut-off"),
    "flares": (1.00, 1711, (-0.803, 0.42), (13.7, 0.00), (-0.546, 0.59), (-4.52, 0.00), "with cut-off"),
    "HTTP": (0.00, 6794, (1.77, 0.08), (11.8, 0.00), (2.65, 0.01), (0.000, 1.00), "none"),
    "quakes": (0.00, 11697, (-7.14, 0.00), (11.6, 0.00), (-7.09, 0.00), (-24.4, 0.00), "with cut-off"),
    "religions": (0.42, 39, (-0.073, 0.94), (1.59, 0.11), (1.75, 0.08), (-0.167, 0.56), "moderate"),
    "surnames": (0.20, 239, (-0.836, 0.40), (2.89, 0.00), (-0.844, 0.40), (-1.36, 0.10), "with cut-off"),
    "wars": (0.20, 70, (-0.737, 0.46), (3.68, 0.00), (-0.767, 0.44), (-0.847, 0.19), "moderate"),
    "wealth": (0.00, 302, (0.249, 0.80), (6.20, 0.00), (8.05, 0.00), (-0.142, 0.59), "none"),
    "web hits": (0.00, 50981, (-10.21, 0.00), (8.55, 0.00), (10.94, 0.00), (-74.66, 0.00), "with cut-off"),
    "web links": (0.00, 28986, (-2.24, 0.03), (25.3, 0.00), (-1.08, 0.28), (-21.2, 0.00), "with cut-off"),
    "Internet": (0.29, 770, (-0.807, 0.42), (6.49, 0.00), (0.493, 0.62), (-1.97, 0.05), "with cut-off"),
    "calls": (0.63, 102592, (-2.03, 0.04), (35.0, 0.00), (14.3, 0.00), (-30.2, 0.00), "with cut-off"),
    "citations": (0.20, 3455, (-0.141, 0.89), (5.91, 0.00), (1.72, 0.09), (-0.007, 0.91), "moderate"),
    "email": (0.16, 196, (-1.10, 0.27), (0.639, 0.52), (-1.13, 0.26), (-1.89, 0.05), "with cut-off"),
    "metabolic": (0.00, 748, (-1.05, 0.29), (5.59, 0.00), (3.66, 0.00), (0.000, 1.00), "none"),
    "papers": (0.90, 988, (-0.091, 0.93), (3.08, 0.00), (0.709, 0.48), (-0.016, 0.86), "moderate"),
    "proteins": (0.31, 204, (-0.456, 0.65), (2.21, 0.03), (0.055, 0.96), (-0.414, 0.36), "moderate"),
    "species": (0.10, 233, (-1.63, 0.10), (2.39, 0.02), (-1.59, 0.11), (-3.80, 0.01), "with cut-off"),
    "terrorism": (0.68, 547, (-0.278, 0.78), (2.457, 0.01), (0.772, 0.44), (-0.077, 0.70), "moderate"),
    "words": (0.49, 2958, (0.395, 0.69), (9.09, 0.00), (4.13, 0.00), (-0.899, 0.18), "good"),
}
ALTERNATIVES = ("lognormal", "exponential", "stretched_exponential", "truncated_power_law")


def _table_as_fits() -> xr.Dataset:
    names = list(TABLE_6_2)
    rows = [TABLE_6_2[name] for name in names]
    tests = np.array([row[2:6] for row in rows])  # (series, alternative, R/p)
    return xr.Dataset(
        {"gof_p": ("series", [row[0] for row in rows]), "n_tail": ("series", [row[1] for row in rows]),
         "status": ("series", np.zeros(len(rows), dtype=int)),
         "R": (("series", "alternative"), tests[..., 0]), "p": (("series", "alternative"), tests[..., 1])},
        coords={"series": names, "alternative": list(ALTERNATIVES)})


def test_the_rule_gives_table_6_2_from_the_papers_numbers() -> None:
    """All 24 rows: the paper's p-values and likelihood ratios in, its 'support for power law' column out."""
    codes = verdicts(_table_as_fits())
    given = {name: VERDICTS[int(code)] for name, code in zip(codes.series.values, codes.values, strict=True)}
    assert given == {name: row[-1] for name, row in TABLE_6_2.items()}


def test_every_verdict_is_reachable_and_ordered() -> None:
    # (failed, bounded, n_tail, cut-off R, cut-off p, gof p, likelier) -> verdict: one case per rule
    cases = {
        (True, True, 10, -5.0, 0.0, 0.5, True): "not assessed",
        (False, True, 10, -5.0, 0.0, 0.5, True): "bounded metric",
        (False, False, 10, -5.0, 0.0, 0.5, True): "too few tail points",
        (False, False, 500, -5.0, 0.0, 0.0, True): "with cut-off",
        (False, False, 500, -5.0, 0.2, 0.0, True): "none",
        (False, False, 500, -0.1, 0.5, 0.5, True): "good",
        (False, False, 500, -0.1, 0.5, 0.5, False): "moderate",
    }
    assert {case: VERDICTS[int(rule(*case))] for case in cases} == cases


def test_the_codes_decode_from_the_attributes_alone() -> None:
    codes = verdicts(_table_as_fits())
    meanings = dict(zip(codes.attrs["flag_values"], codes.attrs["flag_meanings"].split(), strict=True))
    assert meanings[CODES["with cut-off"]] == "with_cut-off" and codes.dtype == np.int8
    assert "n_tail < 30" in codes.attrs["rule"]


# (file, factor, discrete, Table 6.2's support)
REFERENCE_SETS = {
    "terrorism": (1, True, "moderate"), "blackouts": (1e-3, False, "moderate"),
    "cities": (1e-3, False, "moderate"), "fires": (1, False, "with cut-off"), "flares": (1, False, "with cut-off"),
    "surnames": (1e-3, False, "with cut-off"),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_SETS))
def test_the_verdict_reproduces_table_6_2_on_the_reference_data(name: str) -> None:
    """Our whole protocol (fit, comparisons, bootstrap at precision 0.03 with early stopping) on the shipped
    files. quakes is left out: the shipped file is not the paper's data set (tests/data/powerlaw/SOURCE.md:
    xmin 10 against the paper's 0.794 in the same units), and on it the cut-off is not favoured (raw R
    -0.008, p 0.90 with powerlaw 2.0.0 too), so 'none' (p = 0) is the right verdict for that file."""
    factor, discrete, expected = REFERENCE_SETS[name]
    values = np.loadtxt(DATA / f"{name}.txt") * factor
    fit = fit_power_law(values, discrete=discrete, compare_with=True, gof_precision=0.03)
    assert verdict_of(fit) == expected, (fit.gof_p, fit.gof_n, fit.comparisons)


def test_words_differs_where_our_stretched_exponential_goes_further() -> None:
    """Table 6.2 says 'good' for words: every alternative's R > 0, stretched exponential R = 4.13
    (powerlaw 2.0.0: 3.27). Ours reaches a higher likelihood along the ridge beta -> 0, lambda -> inf
    (beta 0.007, lambda 1e304: a power law with a small log-quadratic bend), 9.4 above the power law,
    so its R is negative and the verdict 'moderate'. The rule itself gives 'good' from the paper's numbers
    (test_the_rule_gives_table_6_2_from_the_papers_numbers)."""
    values = np.loadtxt(DATA / "words.txt")
    fit = fit_power_law(values, discrete=True, compare_with=True, gof_precision=0.03)
    assert fit.gof_p > 0.1 and fit.comparisons["stretched_exponential"].R < 0
    assert all(c.R > 0 for name, c in fit.comparisons.items() if name in ("lognormal", "exponential"))
    assert verdict_of(fit) == "moderate"


def test_quakes_shipped_file_is_none() -> None:
    values = np.loadtxt(DATA / "quakes.txt") * 1e-3
    fit = fit_power_law(values, discrete=False, compare_with=True, gof_precision=0.05)
    assert fit.gof_p < 0.1 and verdict_of(fit) == "none"


def test_the_bootstrap_stops_early_only_when_p_is_clearly_on_one_side() -> None:
    assert replicates_for(0.01) == 2500
    assert not _decided(0, 50) and _decided(0, 60)  # p = 0: the 99% upper bound drops below 0.1 at 60
    assert _decided(25, 50) and not _decided(5, 50)  # p = 0.5 is decided, p = 0.1 never is
    rng = np.random.default_rng(3)
    lognormal = fit_power_law(rng.lognormal(0, 1, 20000), gof_precision=0.01)
    assert lognormal.gof_p < 0.1 and lognormal.gof_n < 2500
    assert _decided(round(lognormal.gof_p * lognormal.gof_n), lognormal.gof_n)
    pareto = fit_power_law(rng.pareto(1.5, 3000) + 1, gof_precision=0.01)
    assert pareto.gof_p > 0.1 and pareto.gof_n < 2500


def test_n_boot_runs_exactly_that_many() -> None:
    fit = fit_power_law(np.random.default_rng(0).pareto(1.5, 2000) + 1, n_boot=37)
    assert fit.gof_n == 37 and 0 <= fit.gof_p <= 1
