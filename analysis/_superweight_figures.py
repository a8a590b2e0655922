"""Figures of the super weight tables (``analysis.open_superweights``) of one model, and the comparison
across models (``analysis.superweight_summary``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from analysis._figure_kit import _decades, _heatmap, _pyplot

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _star_super_weights(ax: Any, weights: xr.Dataset | None, side: str) -> None:
    """A star per super weight at its layer and the spike it was found by."""
    if weights is not None and weights.sizes["record"]:
        ax.scatter(weights["layer"].values, weights[f"{side}_spike"].values, marker="*", s=220, color="crimson",
                   edgecolors="black", zorder=3, label="super weight")


def detection_iterations(detection: xr.Dataset, weights: xr.Dataset | None = None) -> Figure:
    """Each layer's largest |input| and |output| of the MLP down projection, one line per detection
    iteration (log y), the spike threshold dashed, and the super weights starred at their layers."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    layers = detection["layer"].values
    for ax, side in zip(axes, ("input", "output")):
        for iteration in detection["iteration"].values:
            ax.plot(layers, detection[f"{side}_max"].sel(iteration=iteration).values, ".-",
                    label=f"iteration {iteration}")
        ax.axhline(float(detection.attrs.get("spike_threshold", np.nan)), color="grey", ls="--", lw=1,
                   label="threshold")
        _star_super_weights(ax, weights, side)
        ax.set(yscale="log", xlabel="layer", ylabel=f"largest |{side}|", title=f"down projection {side}")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _spike_points(table: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(input, output, layer, labelled) per point: each super weight, or each detection (iteration, layer)
    with the passing ones labelled."""
    if "input_spike" in table:
        return (table["input_spike"].values, table["output_spike"].values, table["layer"].values,
                np.ones(table.sizes["record"], bool))
    layers = np.broadcast_to(table["layer"].values, table["input_max"].shape)
    return (table["input_max"].values.ravel(), table["output_max"].values.ravel(), layers.ravel(),
            table["passed"].values.ravel())


def spike_scatter(table: xr.Dataset) -> Figure:
    """Largest |input| against largest |output| of the down projection (log-log), coloured by layer:
    the super weights (a ``weights`` table) or every layer and iteration (``detection``)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 5))
    inputs, outputs, layers, labelled = _spike_points(table)
    first, last = (int(layers.min()), int(layers.max())) if layers.size else (0, 1)
    points = ax.scatter(inputs, outputs, c=layers, cmap="viridis", s=40, edgecolors="black", linewidths=0.5,
                        vmin=first, vmax=max(last, first + 1))
    for x, y, layer in zip(inputs[labelled], outputs[labelled], layers[labelled]):
        ax.annotate(f"L{layer}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if "spike_threshold" in table.attrs:
        ax.axvline(table.attrs["spike_threshold"], color="grey", ls="--", lw=1)
        ax.axhline(table.attrs["spike_threshold"], color="grey", ls="--", lw=1)
    if inputs.size:
        figure.colorbar(points, ax=ax, label="layer").locator = _pyplot().MaxNLocator(integer=True)
    ax.set(xscale="log", yscale="log", xlabel="largest |input|", ylabel="largest |output|", title="spikes by layer",
           xlim=_decades(inputs), ylim=_decades(outputs))
    figure.tight_layout()
    return figure


def _labelled_bars(ax: Any, names: list[str], heights: np.ndarray, offset: float = 0.0, width: float = 0.8,
                   label: str | None = None) -> None:
    bars = ax.bar(np.arange(len(names)) + offset, heights, width, label=label)
    ax.bar_label(bars, fmt="%.3g", fontsize=7)


def _ablation_bars(evaluations: xr.Dataset, ablations: list[str], title: str) -> Figure:
    """Perplexity (log y) and each task's accuracy of ``ablations``, value labels on the bars."""
    from analysis.superweights import accuracies, perplexities

    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    perplexity = perplexities(evaluations).reindex(ablations).dropna()
    _labelled_bars(left, list(perplexity.index), perplexity.values)
    left.set_xticks(range(len(perplexity)), list(perplexity.index), rotation=30, ha="right")
    left.set(yscale="log" if len(perplexity) else "linear", ylabel="perplexity", title=f"{title}: perplexity")
    accuracy = accuracies(evaluations).reindex(index=ablations).dropna(how="all")
    width = 0.8 / max(len(accuracy.index), 1)
    for i, ablation in enumerate(accuracy.index):
        _labelled_bars(right, list(accuracy.columns), accuracy.loc[ablation].values,
                       (i - (len(accuracy.index) - 1) / 2) * width, width, str(ablation))
    right.set_xticks(range(len(accuracy.columns)), list(accuracy.columns), rotation=30, ha="right")
    right.set(ylim=(0, 1.05), ylabel="accuracy", title=f"{title}: accuracy")
    if len(accuracy.index):
        right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def ablation_impact(evaluations: xr.Dataset) -> Figure:
    """The baseline against zeroing each super weight alone (and with its activation restored)."""
    names = [str(name) for name in _distinct(evaluations["ablation"].values)]
    singles = [name for name in names if name.startswith("sw")]
    return _ablation_bars(evaluations, ["baseline", *singles], "each super weight zeroed")


def combined_effects(evaluations: xr.Dataset) -> Figure:
    """The baseline against every super weight zeroed, and zeroed with the super activations restored."""
    names = _distinct(evaluations["ablation"].values)
    # one super weight: zeroing it alone is zeroing all (a build need not measure it twice)
    everything = "all" if "all" in names or "sw1" in names else "sw0"
    return _ablation_bars(evaluations, ["baseline", everything, f"{everything}_restored"], "all super weights zeroed")


def _distinct(values: np.ndarray) -> list[Any]:
    """The distinct values in their first order (np.unique would sort them)."""
    return list(dict.fromkeys(values.tolist()))


def router_analysis(router: xr.Dataset) -> Figure:
    """Each expert's activation probability, layer x expert, with co-spiking experts boxed in red."""
    p_active = router["p_active"].transpose("layer", "expert")
    figure = _heatmap(p_active, "expert activation probability (boxed: co-spiking)", "p_active",
                      limits=(0.0, max(float(np.nanmax(p_active.values, initial=0.0)), 1e-6)))
    layers, experts = np.nonzero(router["co_spiking"].transpose("layer", "expert").values)
    figure.axes[0].scatter(experts, layers, marker="s", s=260, facecolors="none", edgecolors="red", linewidths=2,
                           label="co-spiking")
    return figure


def _depth_points(summary: pd.DataFrame) -> tuple[list[float], list[str]]:
    """The relative depth of every super weight, and its model's architecture."""
    depths: list[float] = []
    owners: list[str] = []
    for architecture, text in zip(summary["architecture"], summary["relative_depth"]):
        values = [float(value) for value in str(text).split(",") if value]
        depths += values
        owners += [str(architecture)] * len(values)
    return depths, owners


def model_comparison(summary: pd.DataFrame) -> Figure:
    """Across models (``analysis.superweight_summary``): super weights found, severity (perplexity with all
    zeroed / baseline, log y), and the relative depth of each super weight by architecture."""
    plt = _pyplot()
    figure, (count, severity, depth) = plt.subplots(1, 3, figsize=(15, 4.5))
    models = [str(model) for model in summary["model"]]
    _labelled_bars(count, models, summary["n_superweights"].to_numpy(float))
    count.set(ylabel="super weights", title="super weights found")
    _labelled_bars(severity, models, summary["severity"].to_numpy(float))
    measured = summary["severity"].to_numpy(float)
    severity.set(yscale="log" if (measured > 0).any() else "linear", ylabel="perplexity ratio",
                 title="all zeroed / baseline perplexity")
    for ax in (count, severity):
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    architectures = _distinct(summary["architecture"].to_numpy(object))
    depths, owners = _depth_points(summary)
    depth.scatter(depths, [architectures.index(owner) for owner in owners], marker="*", s=160, color="crimson",
                  edgecolors="black")
    depth.set_yticks(range(len(architectures)), architectures)
    depth.set(xlim=(-0.05, 1.05), xlabel="layer / (n_layers - 1)", title="relative depth of super weights")
    figure.tight_layout()
    return figure


def superweight_figures(tables: dict[str, xr.Dataset]) -> dict[str, Figure]:
    """Every figure the tables of one model allow, by file stem."""
    weights = tables.get("weights")
    figures = {}
    if "detection" in tables:
        figures["detection_iterations"] = detection_iterations(tables["detection"], weights)
    spikes = weights if weights is not None and weights.sizes["record"] else tables.get("detection")
    if spikes is not None:
        figures["spike_scatter"] = spike_scatter(spikes)
    if "evaluations" in tables:
        figures["ablation_impact"] = ablation_impact(tables["evaluations"])
        figures["combined_effects"] = combined_effects(tables["evaluations"])
    if "router" in tables:
        figures["router_analysis"] = router_analysis(tables["router"])
    return figures
