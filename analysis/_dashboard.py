"""The interactive figures (hvplot, imported on use) and the offline HTML dashboard.

The page is bokeh's standalone one with every script inlined and no file referenced by URL:
hv.save goes through panel, whose page links its CSS and favicon on a CDN, and every model class
registered with bokeh (panel's too, used or not) adds its external scripts to bokeh's INLINE resources.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from analysis._figure_kit import _positive_sorted, _readable, flag_labels, log_spaced_indices
from analysis._fit_figures import VERDICT_COLOURS, _first_model, _verdict_codes

if TYPE_CHECKING:
    import pandas as pd


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


def _series_frame(fits: xr.Dataset, variable: str, model: str) -> pd.DataFrame:
    """``variable`` by (layer, metric) as a table, with each fit's status decoded for the hover."""
    import pandas as pd

    frame = fits[variable].sel(model=model).to_dataframe().reset_index()
    frame[["layer", "metric"]] = frame[["layer", "metric"]].astype(str)
    if "status" in fits:
        meanings = flag_labels(fits["status"])
        codes = fits["status"].sel(model=model).transpose(*fits[variable].sel(model=model).dims).values.ravel()
        labels = [_readable(meanings.get(int(code), "unknown")) if np.isfinite(code) else "unknown" for code in codes]
        frame["status"] = pd.Series(labels, index=frame.index, dtype=object)  # holoviews can't reshape arrow strings
    return frame


def interactive_heatmap(fits: xr.Dataset, variable: str = "alpha", model: str | None = None) -> Any:
    """hvplot heatmap of a fit variable (alpha, slope, ...), layer x metric; the fit's status in the hover
    (a NaN cell is left blank)."""
    import hvplot.pandas  # noqa: F401

    model = _first_model(fits, model)
    frame = _series_frame(fits, variable, model)
    hover = [name for name in ("status",) if name in frame]
    return frame.hvplot.heatmap(x="metric", y="layer", C=variable, cmap="viridis", rot=60, hover_cols=hover,
                                title=f"{variable} ({model})", width=620, height=300)


def interactive_verdict(fits: xr.Dataset, model: str | None = None) -> Any:
    """hvplot grid of each series' verdict (layer x metric), coloured by category, legend of categories."""
    import hvplot.pandas  # noqa: F401

    model = _first_model(fits, model)
    codes = _verdict_codes(fits)
    frame = _series_frame(fits, "verdict", model)
    frame["verdict"] = [_readable(codes.get(int(code), "unknown")) for code in frame["verdict"]]
    colours = {_readable(label): VERDICT_COLOURS.get(label, "#bfbfbf") for label in [*codes.values(), "unknown"]}
    return frame.hvplot.scatter(x="metric", y="layer", c="verdict", cmap=colours, marker="square", size=350,
                                colorbar=False, legend="right", rot=60, title=f"verdict ({model})",
                                width=620, height=300)


def _model_panels(fits: xr.Dataset, model: str) -> list[Any]:
    panels = [interactive_heatmap(fits, "alpha", model), interactive_heatmap(fits, "slope", model)]
    return panels + ([interactive_verdict(fits, model)] if "verdict" in fits else [])


def html_dashboard(dataset: xr.Dataset, fits: xr.Dataset, path: Path) -> Path:
    """One self-contained HTML file: every script inlined, nothing fetched (opens with no network)."""
    import holoviews as hv
    from bokeh.embed import file_html

    panels = [panel for model in fits.model.values for panel in _model_panels(fits, str(model))]
    curves = [interactive_ccdf(dataset, str(metric), str(m)) for m in dataset.model.values
              for metric in dataset.metric.values[:4]]
    layout = hv.render(hv.Layout(panels + curves).cols(2), backend="bokeh")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(file_html(layout, _offline_resources(), "activation power-law dashboard"), encoding="utf-8")
    return path


def _offline_resources() -> Any:
    """bokeh's INLINE resources less the external files of registered model classes: panel's, registered
    once hvplot is imported, add a ``<script src="static/extensions/...">`` no saved file can load."""
    from bokeh.resources import Resources

    class Offline(Resources):
        @property
        def js_files(self) -> list[str]:
            return []

        @property
        def css_files(self) -> list[str]:
            return []

        def clone(self, *, components: list[Any] | None = None) -> Resources:
            # bokeh trims unused components through clone(), which would build a plain Resources
            copy = super().clone(components=components)
            copy.__class__ = Offline
            return copy

    return Offline(mode="inline")
