"""``all_static``: every figure of a store's fits, in ZipfActivation's folder layout, drawn on every core.

Layout under ``out`` (one sub-folder per model, as a store may hold several)::

    rank_frequency/<model>/<layer>_<metric>.png   |value| by rank, the fitted power law, the log-log OLS line
    ccdf/<model>/<layer>_<metric>.png             P(X >= x), the fitted tail, every number of the fit
    multi_layer/<model>/<metric>.png              the CCDFs of every layer, one colour each
    <model>_alpha_dashboard.png, <model>_slope_dashboard.png, <model>_channel_heatmap.png,
    <model>_verdict_dashboard.png (when the fits have verdicts)
    channels/rank_frequency/<model>/<layer>_channel_<index>.png and channels/ccdf/... (``channels=True``)

Each figure is a job holding only what it draws (a ``Curve`` of at most ``MAX_POINTS`` points, the
table's numbers), so jobs go to a pool of processes and matplotlib's single-threaded drawing uses every
core; one progress bar counts them. The parent reads the store and sorts each series once.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from analysis import _fit_figures as figures
from analysis._figure_kit import Curve, flag_labels, save
from analysis._fit_one import fit_power_law
from analysis._ols import RankFit
from analysis._powerlaw import PowerLawFit

POOL_FROM = 40  # jobs: starting a spawned process (imports) costs about as much as drawing 10 figures
_ALTERNATIVE_NAMES = {"lognormal": "lognormal", "exponential": "exponential",
                      "truncated_power_law": "truncated power law", "stretched_exponential": "stretched exp."}


@dataclass(frozen=True)
class FigureJob:
    """One figure: a module-level drawing function, its arguments, where it goes (stem, no suffix)."""

    draw: Callable[..., Any]
    stem: Path
    arguments: tuple[Any, ...] = ()
    keywords: dict[str, Any] = field(default_factory=dict)


def _render(job: FigureJob, fmt: str) -> list[Path]:
    return save(job.draw(*job.arguments, **job.keywords), job.stem, fmt)


def all_static(dataset: xr.Dataset, fits: xr.Dataset, out: Path, fmt: str = "png", *, channels: bool = False,
               workers: int | None = None, progress: bool = False) -> list[Path]:
    """Write every figure (layout in the module docstring); ``workers`` processes (default: every core)."""
    jobs = list(_jobs(dataset, fits, out, channels))
    return render(jobs, fmt, workers, progress)


def render(jobs: list[FigureJob], fmt: str, workers: int | None = None, progress: bool = False) -> list[Path]:
    """Draw and save ``jobs``, in ``workers`` processes (1: here; None: one per core, or here when there are
    fewer than ``POOL_FROM`` jobs), with one progress bar; paths in job order."""
    if workers is None and len(jobs) < POOL_FROM:
        workers = 1
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    bar = tqdm(total=len(jobs), desc="figures", unit="figure", disable=not progress)
    if workers <= 1:
        return [path for job in jobs for path in _counted(_render(job, fmt), bar)]
    # spawn: the parent may hold threads (dask, numba) that a forked child would inherit mid-lock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(_render, job, fmt): index for index, job in enumerate(jobs)}
        results: dict[int, list[Path]] = {}
        for future in as_completed(pending):
            results[pending[future]] = _counted(future.result(), bar)
    bar.close()
    return [path for index in range(len(jobs)) for path in results[index]]


def _counted(paths: list[Path], bar: Any) -> list[Path]:
    bar.update()
    return paths


def _jobs(dataset: xr.Dataset, fits: xr.Dataset, out: Path, channels: bool) -> Iterator[FigureJob]:
    for model in (str(m) for m in dataset.model.values):
        curves = yield from _series_jobs(dataset, fits, model, out)
        for metric in (str(m) for m in dataset.metric.values):
            by_layer = {layer: curves[layer, metric] for layer in (str(x) for x in dataset.layer.values)}
            yield FigureJob(figures.overlay, out / "multi_layer" / model / metric,
                            ({layer: curve for layer, (curve, _) in by_layer.items()},
                             {layer: law for layer, (_, law) in by_layer.items()}, f"{model} · {metric} by layer"))
        yield from _dashboard_jobs(fits, model, out)
        if channels and "channel_value" in dataset and "channel_alpha" in fits:
            yield from _channel_jobs(dataset, fits, model, out / "channels")


def _series_jobs(dataset: xr.Dataset, fits: xr.Dataset, model: str,
                 out: Path) -> Iterator[FigureJob]:  # returns {(layer, metric): (curve, law)} for the overlays
    drawn: dict[tuple[str, str], tuple[Curve, PowerLawFit]] = {}
    values = dataset["value"].sel(model=model).transpose("layer", "metric", ...).values
    for (i, layer), (j, metric) in _pairs(dataset.layer.values, dataset.metric.values):
        curve, law = _curve_and_law(values[i, j], fits, model, layer, metric)
        drawn[layer, metric] = (curve, law)
        selection = {"model": model, "layer": layer, "metric": metric}
        yield from _curve_jobs(curve, law, fits.sel(selection), "", figures.series_title(model, layer, metric),
                               out, Path(model) / f"{layer}_{metric}")
    return drawn


def _pairs(first: np.ndarray, second: np.ndarray) -> list[tuple[tuple[int, str], tuple[int, str]]]:
    return [((i, str(a)), (j, str(b))) for i, a in enumerate(first) for j, b in enumerate(second)]


def _curve_and_law(series: np.ndarray, fits: xr.Dataset, model: str, layer: str, metric: str | None,
                   channel: int | None = None) -> tuple[Curve, PowerLawFit]:
    curve = Curve.of(series)
    law = figures.table_fit(fits, model, layer, metric, curve.n, channel=channel)
    return curve, law or fit_power_law(series)  # a table of another transform: fit what is drawn


def _curve_jobs(curve: Curve, law: PowerLawFit, row: xr.Dataset, prefix: str, title: str, out: Path,
                name: Path) -> Iterator[FigureJob]:
    ols = _ols(row, prefix)
    yield FigureJob(figures.rank_frequency, out / "rank_frequency" / name, (curve, law),
                    {"title": title, "ols": ols})
    yield FigureJob(figures.ccdf, out / "ccdf" / name, (curve, law),
                    {"title": title, "details": fit_details(row, prefix)})


def _ols(row: xr.Dataset, prefix: str) -> RankFit | None:
    names = [f"{prefix}{name}" for name in ("slope", "intercept", "r2")]
    return RankFit(*(float(row[name]) for name in names)) if all(name in row for name in names) else None


def fit_details(row: xr.Dataset, prefix: str = "") -> str:
    """The lines a CCDF carries under the law: GoF p, each likelihood-ratio test, the log-log slope and
    R^2, and the verdict, from one series' row of the fits table (what it lacks is left out)."""
    lines = []
    if f"{prefix}gof_p" in row and np.isfinite(float(row[f"{prefix}gof_p"])):
        lines.append(f"GoF p = {float(row[f'{prefix}gof_p']):.3f} ({int(row[f'{prefix}gof_n'])} replicates)")
    if f"{prefix}R" in row:
        for alternative in (str(a) for a in row["alternative"].values):
            ratio, p = (float(row[f"{prefix}{name}"].sel(alternative=alternative)) for name in ("R", "p"))
            if np.isfinite(ratio):
                lines.append(f"vs {_ALTERNATIVE_NAMES.get(alternative, alternative)}: R = {ratio:.2f} (p = {p:.2g})")
    ols = _ols(row, prefix)
    if ols is not None and np.isfinite(ols.slope):
        lines.append(f"log-log slope = {ols.slope:.3f}, R² = {ols.r2:.3f}")
    if f"{prefix}verdict" in row:
        lines.append(f"verdict: {_verdict_words(row[f'{prefix}verdict'])}")
    return "\n".join(lines)


def _verdict_words(verdict: xr.DataArray) -> str:
    return flag_labels(verdict).get(int(verdict), "unknown").replace("_", " ")


def _dashboard_jobs(fits: xr.Dataset, model: str, out: Path) -> Iterator[FigureJob]:
    yield FigureJob(figures.alpha_dashboard, out / f"{model}_alpha_dashboard", (fits, model))
    yield FigureJob(figures.slope_dashboard, out / f"{model}_slope_dashboard", (fits, model))
    if "channel_slope" in fits:
        yield FigureJob(figures.channel_heatmap, out / f"{model}_channel_heatmap", (fits, model))
    if "verdict" in fits:
        yield FigureJob(figures.verdict_dashboard, out / f"{model}_verdict_dashboard", (fits, model))


def _channel_jobs(dataset: xr.Dataset, fits: xr.Dataset, model: str, out: Path) -> Iterator[FigureJob]:
    """A rank-frequency and a CCDF per (layer, sampled channel), named by the real hidden-channel index."""
    values = dataset["channel_value"].sel(model=model).transpose("layer", "channel", ...).values
    for i, layer in enumerate(str(x) for x in dataset.layer.values):
        for k in range(values.shape[1]):
            index = _channel_index(fits, model, layer, k)
            curve, law = _curve_and_law(values[i, k], fits, model, layer, None, channel=k)
            row = fits.sel(model=model, layer=layer).isel(channel=k)
            title = figures.series_title(model, layer, f"channel {index}")
            yield from _curve_jobs(curve, law, row, "channel_", title, out, Path(model) / f"{layer}_channel_{index}")


def _channel_index(fits: xr.Dataset, model: str, layer: str, k: int) -> str:
    if "channel_index" not in fits.coords and "channel_index" not in fits:
        return f"slot{k}"
    return str(int(fits["channel_index"].sel(model=model, layer=layer).isel(channel=k)))
