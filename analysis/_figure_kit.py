"""What every figure family shares: lazy pyplot, downsampling, CF flag labels, whole-decade log
limits, the heatmap (ticks, cell values, grey NaN cells and the note saying why) and saving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from analysis._verdict import flag_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure


MAX_POINTS = 10_000  # points drawn per curve, evenly spaced in log rank (ZipfActivation drew about as many)
FORMATS = {"png": ("png",), "pdf": ("pdf",), "both": ("png", "pdf")}
TICK_FONT_SIZE = 9
MAX_TICK_LABELS = 32  # per heatmap axis: more would overlap at TICK_FONT_SIZE on a page-sized figure
MISSING_COLOUR = "0.75"


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


@dataclass(frozen=True)
class Curve:
    """What a rank-frequency or CCDF curve draws of a series: its positive |values| in descending order,
    thinned to points evenly spaced in log rank, their ranks (1 = largest) and the count of them all.
    Small enough to hand to another process, which is how ``all_static`` spreads the drawing."""

    values: np.ndarray
    rank: np.ndarray
    n: int

    @classmethod
    def of(cls, values: np.ndarray, max_points: int = MAX_POINTS) -> Curve:
        descending = _positive_sorted(values)
        keep = log_spaced_indices(descending.size, max_points)
        return cls(descending[keep], keep + 1, int(descending.size))


def _readable(meaning: str) -> str:
    return meaning.replace("_", " ")


def _decades(values: np.ndarray) -> tuple[float, float] | None:
    """Whole decades around the positive values: a log axis spanning less than one gets unreadable tick labels."""
    positive = values[np.isfinite(values) & (values > 0)]
    if not positive.size:
        return None
    # a factor of 2 of margin, so no point sits on the frame
    low, high = np.floor(np.log10(positive.min() / 2)), np.ceil(np.log10(positive.max() * 2))
    return 10.0**low, 10.0**high


def _heatmap_size(rows: int, columns: int) -> tuple[float, float]:
    # cells shrink as the table grows, down to what a tick label still fits; the figure stays on a page
    return float(np.clip(0.45 * columns + 3, 6, 14)), float(np.clip(0.3 * rows + 2, 3.5, 11))


def _tick_labels(table: xr.DataArray, dim: str) -> list[str]:
    return [str(v) for v in table[dim].values] if dim in table.coords else [str(i) for i in range(table.sizes[dim])]


def _set_ticks(ax: Any, axis: str, labels: list[str]) -> None:
    """Every label, or every Nth when there are more than ``MAX_TICK_LABELS``."""
    step = int(np.ceil(len(labels) / MAX_TICK_LABELS))
    positions = list(range(0, len(labels), step))
    shown = [labels[i] for i in positions]
    if axis == "x":
        ax.set_xticks(positions, shown, rotation=60, ha="right", fontsize=TICK_FONT_SIZE)
    else:
        ax.set_yticks(positions, shown, fontsize=TICK_FONT_SIZE)


def _annotate_cells(ax: Any, image: Any, values: np.ndarray) -> None:
    """Each finite value in its cell, black on light colours and white on dark ones."""
    if values.size > 120:
        return
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            red, green, blue, _ = image.cmap(image.norm(value))
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(column, row, f"{value:.2g}", ha="center", va="center", fontsize=7, color=ink)


def _missing_note(values: np.ndarray, status: xr.DataArray | None) -> str:
    """What grey cells mean: the fit statuses found under them, counted, or plain NaN without a status."""
    missing = ~np.isfinite(values)
    if not missing.any():
        return ""
    if status is None:
        return "grey: NaN"
    meanings = flag_labels(status)
    codes, counts = np.unique(status.values[missing], return_counts=True)
    reasons = [f"{_reason(code, meanings)} ({count})" for code, count in zip(codes, counts) if np.isfinite(code)]
    return "grey: no fit; " + ", ".join(reasons or ["status unknown"])


def _reason(code: float, meanings: dict[int, str]) -> str:
    # status 0 under a NaN: the power-law fit succeeded, the plotted number (an OLS slope) did not
    if code == 0:
        return "fit ran, value undefined"
    return _readable(meanings.get(int(code), f"status {code:g}"))


def _heatmap(table: xr.DataArray, title: str, colour_label: str, limits: tuple[float, float] | None = None,
             cmap: str = "viridis", status: xr.DataArray | None = None) -> Figure:
    """``table`` (rows x columns) in colour; NaN cells grey, explained by ``status`` (same dims) when given."""
    plt = _pyplot()
    rows, columns = table.dims
    figure, ax = plt.subplots(figsize=_heatmap_size(table.sizes[rows], table.sizes[columns]))
    values = table.values.astype(float)
    finite = values[np.isfinite(values)]
    # robust colour limits: one degenerate cell (alpha in the thousands) must not flatten the rest
    low, high = limits or (np.percentile(finite, [5, 95]) if finite.size else (0.0, 1.0))
    colours = plt.get_cmap(cmap).with_extremes(bad=MISSING_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=colours, vmin=low, vmax=high)
    _annotate_cells(ax, image, values)
    _set_ticks(ax, "y", _tick_labels(table, rows))
    _set_ticks(ax, "x", _tick_labels(table, columns))
    ax.set(title=title, xlabel=columns, ylabel=rows)
    figure.colorbar(image, ax=ax, label=colour_label)
    _with_note(figure, _missing_note(values, None if status is None else status.transpose(*table.dims)))
    return figure


def _with_note(figure: Figure, note: str) -> None:
    """Lay the figure out, keeping a strip at the bottom for ``note`` when there is one."""
    strip = 0.3 / figure.get_figheight() if note else 0.0
    figure.tight_layout(rect=(0.0, strip, 1.0, 1.0))
    if note:
        figure.text(0.01, 0.01, note, fontsize=8, ha="left", va="bottom", wrap=True)


def save(figure: Figure, stem: Path, fmt: str = "png") -> list[Path]:
    """Write ``stem.png``, ``stem.pdf`` or both; returns the paths."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use png, pdf or both")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{suffix}") for suffix in FORMATS[fmt]]
    for path in paths:
        # a tight box: a legend or note outside the axes is saved, not cut at the figure's edge
        figure.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.05)
    _pyplot().close(figure)
    return paths
