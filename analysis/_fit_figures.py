"""The power-law figures (matplotlib): rank-frequency and CCDF curves titled with the table's law, layer
overlays, alpha / slope / channel heatmaps, the verdict dashboard, and ``all_static`` writing them all."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from analysis._figure_kit import (
    MISSING_COLOUR,
    TICK_FONT_SIZE,
    Curve,
    _decades,
    _heatmap,
    _heatmap_size,
    _pyplot,
    _readable,
    _set_ticks,
    _tick_labels,
    flag_labels,
)
from analysis._fit_one import fit_power_law
from analysis._ols import RankFit
from analysis._powerlaw import PowerLawFit

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# one colour per verdict label (Okabe-Ito, readable by colour-blind readers); labels come from flag_meanings
VERDICT_COLOURS = {"not_assessed": "#eeeeee", "good": "#009e73", "moderate": "#56b4e9", "with_cut-off": "#e69f00",
                   "none": "#d55e00", "too_few_tail_points": "#999999", "bounded_metric": "#cc79a7"}


def _fit_label(fit: PowerLawFit) -> str:
    return (f"alpha = {fit.alpha:.3f} ± {fit.sigma:.3f}\nxmin = {fit.xmin:.4g}, n_tail = {fit.n_tail}\n"
            f"KS D = {fit.ks_d:.4f}")


def law_summary(fit: PowerLawFit) -> str:
    """One line for a title: the fitted law's parameters, or why there are none."""
    if fit.status != "ok":
        return f"no power-law fit: {_readable(fit.status)}"
    return rf"$\alpha$ = {fit.alpha:.2f} ± {fit.sigma:.2f}, $x_{{\min}}$ = {fit.xmin:.3g}"


def series_title(model: str, layer: str, metric: str) -> str:
    return f"{model} · {layer} · {metric}"


def table_fit(fits: xr.Dataset, model: str, layer: str, metric: str | None, n: int, *,
              channel: int | None = None) -> PowerLawFit | None:
    """The fit ``fits`` holds for one series of ``n`` positive values (a metric's, or with ``channel`` the
    k-th sampled channel's), or None when the table fitted something else than |value| (``transform``
    positive or negative): then the figure refits what it draws."""
    variable, prefix = ("value", "") if channel is None else ("channel_value", "channel_")
    options = json.loads(fits.attrs.get("fit_options", "{}")).get(variable, {})
    if options.get("transform", "abs") != "abs":
        return None
    row = fits.sel(model=model, layer=layer)
    row = row.sel(metric=metric) if channel is None else row.isel(channel=channel)
    code = int(row[f"{prefix}status"])
    tail = int(row[f"{prefix}n_tail"]) if code == 0 else 0  # a failed fit leaves n_tail NaN
    return PowerLawFit(*(float(row[f"{prefix}{name}"]) for name in ("alpha", "xmin", "sigma", "ks_d")), n_tail=tail,
                       n=n, n_excluded=int(row[f"{prefix}n_excluded"]), discrete=bool(options.get("discrete", False)),
                       status="ok" if code == 0 else flag_labels(fits[f"{prefix}status"]).get(code, "failed"))


def _new_axes(ax: Any) -> Any:
    return ax if ax is not None else _pyplot().subplots(figsize=(6, 4.5))[1]


def _decade_ticks(ax: Any) -> None:
    """Major ticks on powers of ten only, labels large enough to read in print."""
    from matplotlib.ticker import LogLocator

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.tick_params(labelsize=TICK_FONT_SIZE)


def _finish(ax: Any, owned: bool) -> Figure:
    # a figure made here is laid out here; one drawn into a caller's axes is the caller's to lay out
    if owned:
        ax.figure.tight_layout()
    return ax.figure


def _curve_and_fit(values: np.ndarray | Curve, fit: PowerLawFit | None) -> tuple[Curve, PowerLawFit]:
    """The points to draw and the law: ``fit`` when given, else fitted on every value (not the drawn ones)."""
    if isinstance(values, Curve):
        if fit is None:
            raise ValueError("a Curve holds only the drawn points: pass the series' fit with it")
        return values, fit
    return Curve.of(values), fit or fit_power_law(np.asarray(values))


def rank_frequency(values: np.ndarray | Curve, fit: PowerLawFit | None = None, ax: Any = None, label: str = "", *,
                   title: str = "rank-frequency", ols: RankFit | None = None) -> Figure:
    """|value| against rank on log-log axes, with the fitted power law over its tail and, given ``ols``,
    the log-log least-squares line over every rank; titled ``title`` (e.g. ``series_title(...)``) over
    the law's parameters."""
    owned, ax = ax is None, _new_axes(ax)
    curve, fit = _curve_and_fit(values, fit)
    ax.loglog(curve.rank, curve.values, ".", markersize=3, label=label or "data")
    if fit.status == "ok":
        rank = np.geomspace(1, fit.n_tail, 100)
        ax.loglog(rank, fit.xmin * (rank / fit.n_tail) ** (-1 / (fit.alpha - 1)), "r-",
                  label=rf"power law, $\alpha$ = {fit.alpha:.2f}")
    if ols is not None and np.isfinite(ols.slope):
        rank = np.geomspace(1, max(curve.n, 1), 100)
        ax.loglog(rank, np.exp(ols.intercept) * rank**ols.slope, "--", color="0.35",
                  label=f"log-log OLS: slope {ols.slope:.3f}, $R^2$ = {ols.r2:.3f}")
    ax.set(xlabel="rank", ylabel="|value|", xlim=(0.7, 10.0 ** np.ceil(np.log10(max(curve.n, 10)))),
           ylim=_decades(curve.values))
    ax.set_title(f"{title}\n{law_summary(fit)}", fontsize=10)
    _decade_ticks(ax)
    ax.legend(fontsize=8, loc="lower left")
    return _finish(ax, owned)


def ccdf(values: np.ndarray | Curve, fit: PowerLawFit | None = None, ax: Any = None, label: str = "",
         annotate: bool = True, *, title: str = "CCDF", color: Any = None, details: str = "") -> Figure:
    """Empirical P(X >= x) (y from the smallest plotted probability to 1) with the fitted tail,
    titled ``title`` over the law's parameters; points and line in ``color`` when given. ``annotate``
    writes the fit's numbers in the corner, followed by ``details`` (e.g. ``fit_details(...)``)."""
    owned, ax = ax is None, _new_axes(ax)
    curve, fit = _curve_and_fit(values, fit)
    ax.loglog(curve.values, curve.rank / max(curve.n, 1), ".", markersize=3, label=label or "data", color=color)
    if fit.status == "ok":
        x = np.geomspace(fit.xmin, curve.values[0], 100)
        tail = fit.n_tail / curve.n * (x / fit.xmin) ** (1 - fit.alpha)
        ax.loglog(x, tail, "-", color="red" if color is None else color)
    if annotate and (fit.status == "ok" or details):
        text = "\n".join(part for part in (_fit_label(fit) if fit.status == "ok" else "", details) if part)
        ax.text(0.03, 0.03, text, transform=ax.transAxes, fontsize=7, va="bottom",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    _ccdf_limits(ax, curve.values, curve.n)
    ax.set(xlabel="|value|", ylabel="P(X >= x)")
    ax.set_title(f"{title}\n{law_summary(fit)}", fontsize=10)
    _decade_ticks(ax)
    return _finish(ax, owned)


def _ccdf_limits(ax: Any, values: np.ndarray, largest_n: int) -> None:
    # y stops at the smallest plotted probability: a fitted line running on below it would add empty decades
    if values.size:
        ax.set(xlim=_decades(values), ylim=(1 / largest_n, 1.0))


def layer_overlay(dataset: xr.Dataset, metric: str, model: str | None = None,
                  fits: xr.Dataset | None = None) -> Figure:
    """CCDFs of one metric at every layer of one model on shared axes, one colour per layer (its points
    and its fitted line), a legend of the layers; fitted laws from ``fits`` when given."""
    model = model or str(dataset.model.values[0])
    curves, laws = {}, {}
    for layer in (str(layer) for layer in dataset.layer.values):
        series = dataset["value"].sel(model=model, layer=layer, metric=metric).values
        curves[layer] = Curve.of(series)
        table = table_fit(fits, model, layer, metric, curves[layer].n) if fits is not None else None
        laws[layer] = table or fit_power_law(series)
    return overlay(curves, laws, f"{model} · {metric} by layer")


def overlay(curves: dict[str, Curve], laws: dict[str, PowerLawFit], title: str) -> Figure:
    """The CCDF of each labelled curve with its law on shared axes, one viridis colour per label."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(curves)))  # viridis' last tenth fades on white
    for (label, curve), colour in zip(curves.items(), colours):
        ccdf(curve, laws[label], ax=ax, label=label, annotate=False, color=colour)
    every = np.concatenate([curve.values for curve in curves.values()])
    _ccdf_limits(ax, every, max(max(curve.n for curve in curves.values()), 1))
    ax.set_title(title, fontsize=10)
    ax.legend(title="layer", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              ncols=int(np.ceil(len(curves) / 16)), markerscale=3)
    figure.tight_layout()
    return figure


def _first_model(fits: xr.Dataset, model: str | None) -> str:
    return model or str(fits.model.values[0])


def _status_of(fits: xr.Dataset, name: str, model: str) -> xr.DataArray | None:
    return fits[name].sel(model=model) if name in fits else None


def alpha_dashboard(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Fitted alpha, layer x metric."""
    model = _first_model(fits, model)
    return _heatmap(fits["alpha"].sel(model=model), f"power-law alpha ({model})", "alpha",
                    status=_status_of(fits, "status", model))


def slope_dashboard(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Log-log rank OLS slope, layer x metric."""
    model = _first_model(fits, model)
    return _heatmap(fits["slope"].sel(model=model), f"rank-frequency slope ({model})", "slope",
                    status=_status_of(fits, "status", model))


def channel_labels(fits: xr.Dataset, model: str) -> list[str]:
    """Each sampled channel's real hidden-channel index (``channel_index``); ``a/b`` where layers
    sampled different ones, the sample slot ``#k`` where the fits predate ``channel_index``."""
    if "channel_index" not in fits.coords:
        return [f"#{k}" for k in range(fits.sizes["channel"])]
    index = fits["channel_index"]
    index = index.sel(model=model) if "model" in index.dims else index
    by_channel = index.transpose("channel", ...).values.reshape(index.sizes["channel"], -1)
    return ["/".join(str(i) for i in dict.fromkeys(row.tolist())) for row in by_channel]


def _by_channel(fits: xr.Dataset, name: str, model: str) -> xr.DataArray:
    """``name`` (channel x layer), its channel coordinate the real hidden-channel index."""
    table = fits[name].sel(model=model).transpose("channel", "layer")
    table = table.drop_vars([c for c in table.coords if c not in table.dims])
    return table.assign_coords(channel=channel_labels(fits, model))


def channel_heatmap(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Per-channel rank-frequency slopes across layers, rows labelled by hidden-channel index."""
    model = _first_model(fits, model)
    status = _by_channel(fits, "channel_status", model) if "channel_status" in fits else None
    figure = _heatmap(_by_channel(fits, "channel_slope", model), f"per-channel rank-frequency slope ({model})",
                      "slope", status=status)
    figure.axes[0].set_ylabel("hidden channel")
    return figure


def _verdict_codes(fits: xr.Dataset) -> dict[int, str]:
    if "verdict" not in fits:
        raise ValueError("fits has no 'verdict' variable (fits cached before verdicts existed): "
                         "refit with analysis.fit(..., cache=False) to assess them")
    return flag_labels(fits["verdict"])


def _verdict_grid(ax: Any, table: xr.DataArray, codes: dict[int, str]) -> None:
    """One cell per series, coloured by its verdict's label."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    palette = [VERDICT_COLOURS.get(label, MISSING_COLOUR) for label in codes.values()]
    position = {code: i for i, code in enumerate(codes)}
    cells = np.vectorize(lambda code: position.get(int(code), np.nan), otypes=[float])(table.values)
    ax.imshow(np.ma.masked_invalid(cells), aspect="auto", interpolation="nearest",
              cmap=ListedColormap(palette).with_extremes(bad="white"),
              norm=BoundaryNorm(np.arange(len(palette) + 1) - 0.5, len(palette)))
    rows, columns = table.dims
    _set_ticks(ax, "y", _tick_labels(table, rows))
    _set_ticks(ax, "x", _tick_labels(table, columns))


def _verdict_legend(figure: Figure, codes: dict[int, str], panels: dict[str, xr.DataArray]) -> None:
    """Every label with its count in each panel: a label absent from this model still reads as 0."""
    from matplotlib.patches import Patch

    def counts(code: int) -> str:
        return " / ".join(str(int(np.sum(table.values == code))) for table in panels.values())

    handles = [Patch(facecolor=VERDICT_COLOURS.get(label, MISSING_COLOUR), edgecolor="0.4",
                     label=f"{_readable(label)} ({counts(code)})") for code, label in codes.items()]
    # one column at the right: as tall as seven labels, it fits beside any grid, where a row would not fit a narrow one
    figure.legend(handles=handles, loc="outside right upper", fontsize=8, title=f"verdict\n({' / '.join(panels)})",
                  title_fontsize=9)


def _verdict_panels(fits: xr.Dataset, model: str) -> dict[str, xr.DataArray]:
    """Title -> table: the series (layer x metric), and the sampled channels (hidden channel x layer, as in
    ``channel_heatmap``) when the fits have channel verdicts."""
    panels = {"series": fits["verdict"].sel(model=model).transpose("layer", "metric")}
    if "channel_verdict" in fits:
        panels["channels"] = _by_channel(fits, "channel_verdict", model)
    return panels


def verdict_dashboard(fits: xr.Dataset, model: str | None = None) -> Figure:
    """Each series' power-law verdict (``verdict``: layer x metric; ``channel_verdict``, when present:
    hidden channel x layer) coloured by category, with a legend of the categories and their counts.
    Raises ValueError when ``fits`` has no ``verdict`` (fits cached before verdicts existed)."""
    codes = _verdict_codes(fits)
    model = _first_model(fits, model)
    panels = _verdict_panels(fits, model)
    columns = [table.shape[1] for table in panels.values()]
    width, height = _heatmap_size(max(table.shape[0] for table in panels.values()), sum(columns))
    figure, axes = _pyplot().subplots(1, len(panels), figsize=(width + 2, height), layout="constrained",
                                      squeeze=False, width_ratios=[n + 2 for n in columns])
    for ax, (title, table) in zip(axes[0], panels.items()):
        _verdict_grid(ax, table, codes)
        ax.set(title=title, xlabel=table.dims[1], ylabel="hidden channel" if title == "channels" else table.dims[0])
    figure.suptitle(f"power-law verdict ({model})", fontsize=11)
    _verdict_legend(figure, codes, panels)
    return figure
