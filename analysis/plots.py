"""Diagnostic plots: static (matplotlib, imported lazily), interactive (hvplot) and one HTML dashboard.

Long series are downsampled for drawing only: rank-frequency and CCDF curves keep
points evenly spaced in log rank (the first and last always), so the plotted
shape is the data's; fits are always computed on every value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from analysis._fit_one import fit_power_law
from analysis._powerlaw import PowerLawFit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_POINTS = 2000
FORMATS = {"png": ("png",), "pdf": ("pdf",), "both": ("png", "pdf")}


def _pyplot() -> Any:
    # no matplotlib.use(): notebooks keep their inline backend, headless machines fall back to Agg
    import matplotlib.pyplot as plt

    return plt


def log_spaced_indices(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """At most ``max_points`` indices into 0..n-1, even in log(index + 1), ends included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.geomspace(1, n, max_points)).astype(np.int64) - 1)


def _positive_sorted(values: np.ndarray) -> np.ndarray:
    flat = np.abs(np.asarray(values, dtype=np.float64).ravel())
    return np.sort(flat[np.isfinite(flat) & (flat > 0)])[::-1]


def _fit_label(fit: PowerLawFit) -> str:
    return (f"alpha = {fit.alpha:.3f} ± {fit.sigma:.3f}\nxmin = {fit.xmin:.4g}, n_tail = {fit.n_tail}\n"
            f"KS D = {fit.ks_d:.4f}")


def rank_frequency(values: np.ndarray, fit: PowerLawFit | None = None, ax: Any = None, label: str = "") -> Figure:
    """|value| against rank on log-log axes, with the fitted power law over its tail."""
    plt = _pyplot()
    ax = ax or plt.subplots(figsize=(6, 4.5))[1]
    descending = _positive_sorted(values)
    keep = log_spaced_indices(descending.size)
    ax.loglog(keep + 1, descending[keep], ".", markersize=3, label=label or "data")
    fit = fit or fit_power_law(descending)
    if fit.status == "ok":
        rank = np.geomspace(1, fit.n_tail, 100)
        ax.loglog(rank, fit.xmin * (rank / fit.n_tail) ** (-1 / (fit.alpha - 1)), "r-",
                  label=f"power law, alpha = {fit.alpha:.2f}")
    ax.set(xlabel="rank", ylabel="|value|", title="rank-frequency")
    ax.legend(fontsize=8)
    return ax.figure


def ccdf(values: np.ndarray, fit: PowerLawFit | None = None, ax: Any = None, label: str = "",
         annotate: bool = True) -> Figure:
    """Empirical P(X >= x) with the fitted tail, annotated with the fit statistics."""
    plt = _pyplot()
    ax = ax or plt.subplots(figsize=(6, 4.5))[1]
    descending = _positive_sorted(values)
    keep = log_spaced_indices(descending.size)
    probability = (keep + 1) / descending.size
    ax.loglog(descending[keep], probability, ".", markersize=3, label=label or "data")
    fit = fit or fit_power_law(descending)
    if fit.status == "ok":
        x = np.geomspace(fit.xmin, descending[0], 100)
        tail_share = fit.n_tail / descending.size
        ax.loglog(x, tail_share * (x / fit.xmin) ** (1 - fit.alpha), "r-")
        ax.set_ylim(bottom=0.5 / descending.size)  # the fitted line must not stretch past the data
        if annotate:
            ax.text(0.03, 0.03, _fit_label(fit), transform=ax.transAxes, fontsize=8, va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    ax.set(xlabel="|value|", ylabel="P(X >= x)", title="CCDF")
    return ax.figure


def layer_overlay(dataset: xr.Dataset, metric: str, model: str | None = None) -> Figure:
    """CCDFs of one metric at every layer of one model, on shared axes."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 4.5))
    model = model or str(dataset.model.values[0])
    for layer in dataset.layer.values:
        series = dataset["value"].sel(model=model, layer=layer, metric=metric).values
        ccdf(series, ax=ax, label=str(layer), annotate=False)
    ax.set_title(f"{metric} by layer ({model})")
    ax.legend(fontsize=8)
    return figure


def _heatmap(table: xr.DataArray, title: str, colour_label: str, limits: tuple[float, float] | None = None,
             cmap: str = "viridis") -> Figure:
    plt = _pyplot()
    rows, columns = table.dims
    figure, ax = plt.subplots(figsize=(max(6, 0.5 * table.sizes[columns] + 2), max(3, 0.5 * table.sizes[rows] + 1.5)))
    values = table.values.astype(float)
    finite = values[np.isfinite(values)]
    # robust colour limits: one degenerate cell (alpha in the thousands) must not flatten the rest
    low, high = limits or (np.percentile(finite, [5, 95]) if finite.size else (0.0, 1.0))
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=low, vmax=high)
    if values.size <= 120:
        for (row, column), value in np.ndenumerate(values):
            ax.text(column, row, f"{value:.2g}", ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(table.sizes[rows]), [str(v) for v in table[rows].values] if rows in table.coords else None)
    if columns in table.coords:
        ax.set_xticks(range(table.sizes[columns]), [str(v) for v in table[columns].values], rotation=60, ha="right")
    ax.set(title=title, xlabel=columns, ylabel=rows)
    figure.colorbar(image, ax=ax, label=colour_label)
    figure.tight_layout()
    return figure


def _first_model(fits: xr.Dataset, model: str | None) -> str:
    return model or str(fits.model.values[0])


def alpha_dashboard(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Fitted alpha, layer x metric."""
    model = _first_model(fits, model)
    return _heatmap(fits["alpha"].sel(model=model), f"power-law alpha ({model})", "alpha")


def slope_dashboard(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Log-log rank OLS slope, layer x metric."""
    model = _first_model(fits, model)
    return _heatmap(fits["slope"].sel(model=model), f"rank-frequency slope ({model})", "slope")


def channel_heatmap(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Per-channel rank-frequency slopes across layers (channel x layer)."""
    model = _first_model(fits, model)
    return _heatmap(fits["channel_slope"].sel(model=model).transpose("channel", "layer"),
                    f"per-channel slope ({model})", "slope")


def similarity_heatmap(similarity: xr.DataArray, title: str = "cosine similarity") -> Figure:
    """A (doc, other_doc) similarity table (``analysis.cosine_similarity``) on a fixed -1 .. 1 scale."""
    return _heatmap(similarity, title, "cosine similarity", limits=(-1.0, 1.0), cmap="RdBu_r")


_DIAGNOSTIC_NORMS = {"raw_norm": "raw", "centred_norm": "centred", "difference_norm": "raw - centred",
                     "predicted_norm": "predicted mean contribution"}


def long_vector_diagnostics(diagnostics: xr.Dataset, max_docs: int = 4) -> Figure:
    """Per part of ``long`` vectors (``analysis.long_diagnostics``): the norms of raw, centred and
    raw - centred vectors against the predicted mean contribution (bars), and the cosine alignment
    of raw - centred with that prediction (line, right axis); one panel per document."""
    plt = _pyplot()
    docs = diagnostics["doc"].values[:max_docs]
    figure, axes = plt.subplots(1, len(docs), figsize=(4.5 * len(docs), 4), squeeze=False)
    parts = [str(part) for part in diagnostics["part"].values]
    width = 0.8 / len(_DIAGNOSTIC_NORMS)
    for ax, doc in zip(axes[0], docs):
        row = diagnostics.sel(doc=doc)
        for offset, (name, label) in enumerate(_DIAGNOSTIC_NORMS.items()):
            ax.bar(np.arange(len(parts)) + (offset - 1.5) * width, row[name].values, width, label=label)
        ax.set_xticks(range(len(parts)), parts, rotation=30, ha="right")
        ax.set(title=str(doc), ylabel="norm")
        twin = ax.twinx()
        twin.plot(range(len(parts)), row["alignment"].values, "k.-", label="alignment")
        twin.set(ylim=(-1.05, 1.05), ylabel="cosine(raw - centred, predicted)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure


def save(figure: Figure, stem: Path, fmt: str = "png") -> list[Path]:
    """Write ``stem.png``, ``stem.pdf`` or both; returns the paths."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use png, pdf or both")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{suffix}") for suffix in FORMATS[fmt]]
    for path in paths:
        figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return paths


def all_static(dataset: xr.Dataset, fits: xr.Dataset, out: Path, fmt: str = "png") -> list[Path]:
    """Every plot type for every model (curves for the first layer x metric cell too)."""
    written: list[Path] = []
    for model in (str(m) for m in dataset.model.values):
        layer, metric = str(dataset.layer.values[-1]), str(dataset.metric.values[0])
        series = dataset["value"].sel(model=model, layer=layer, metric=metric).values
        written += save(rank_frequency(series, label=f"{layer}/{metric}"), out / f"{model}_rank_frequency", fmt)
        written += save(ccdf(series, label=f"{layer}/{metric}"), out / f"{model}_ccdf", fmt)
        for name in (str(m) for m in dataset.metric.values):
            written += save(layer_overlay(dataset, name, model), out / f"{model}_layers_{name}", fmt)
        written += save(alpha_dashboard(fits, model), out / f"{model}_alpha_dashboard", fmt)
        written += save(slope_dashboard(fits, model), out / f"{model}_slope_dashboard", fmt)
        if "channel_slope" in fits:
            written += save(channel_heatmap(fits, model), out / f"{model}_channel_heatmap", fmt)
    return written


# Interactive (hvplot) -------------------------------------------------------------


def _ccdf_frame(dataset: xr.Dataset, model: str, metric: str) -> Any:
    import pandas as pd

    frames = []
    for layer in dataset.layer.values:
        descending = _positive_sorted(dataset["value"].sel(model=model, layer=layer, metric=metric).values)
        keep = log_spaced_indices(descending.size)
        frames.append(pd.DataFrame({"value": descending[keep], "ccdf": (keep + 1) / descending.size,
                                    "layer": str(layer)}))
    return pd.concat(frames, ignore_index=True)


def interactive_ccdf(dataset: xr.Dataset, metric: str, model: str | None = None) -> Any:
    """hvplot CCDF overlay of every layer for one metric (zoom, hover, legend toggles)."""
    import hvplot.pandas  # noqa: F401 - registers .hvplot

    model = model or str(dataset.model.values[0])
    return _ccdf_frame(dataset, model, metric).hvplot.scatter(
        x="value", y="ccdf", by="layer", logx=True, logy=True, size=4, title=f"{metric} CCDF ({model})",
        xlabel="|value|", ylabel="P(X >= x)", width=520, height=380)


def interactive_heatmap(fits: xr.Dataset, variable: str = "alpha", model: str | None = None) -> Any:
    """hvplot heatmap of a fit variable (alpha, slope, ...), layer x metric."""
    import hvplot.pandas  # noqa: F401

    model = _first_model(fits, model)
    frame = fits[variable].sel(model=model).to_dataframe().reset_index()
    frame[["layer", "metric"]] = frame[["layer", "metric"]].astype(str)
    return frame.hvplot.heatmap(x="metric", y="layer", C=variable, cmap="viridis", rot=60,
                                title=f"{variable} ({model})", width=620, height=300)


def html_dashboard(dataset: xr.Dataset, fits: xr.Dataset, path: Path) -> Path:
    """One self-contained HTML file (JavaScript inlined: opens offline)."""
    import holoviews as hv
    from bokeh.resources import INLINE

    hv.extension("bokeh", logo=False)
    panels = [interactive_heatmap(fits, "alpha", str(m)) + interactive_heatmap(fits, "slope", str(m))
              for m in fits.model.values]
    curves = [interactive_ccdf(dataset, str(metric), str(m)) for m in dataset.model.values
              for metric in dataset.metric.values[:4]]
    layout = hv.Layout([p for pair in panels for p in pair] + curves).cols(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    hv.save(layout, path, resources=INLINE, title="activation power-law dashboard")
    return path
