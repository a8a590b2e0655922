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
    import pandas as pd
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


# Super weights (tables of analysis.open_superweights) ---------------------------------


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


def _decades(values: np.ndarray) -> tuple[float, float] | None:
    """Whole decades around the positive values: a log axis spanning less than one gets unreadable tick labels."""
    positive = values[np.isfinite(values) & (values > 0)]
    if not positive.size:
        return None
    # a factor of 2 of margin, so no point sits on the frame
    low, high = np.floor(np.log10(positive.min() / 2)), np.ceil(np.log10(positive.max() * 2))
    return 10.0**low, 10.0**high


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


# Vocabulary cards (JSON cards of analysis.vocab) --------------------------------------


def _token_text(token: dict[str, Any]) -> str:
    """A token's text made visible: repr() shows spaces, newlines and control bytes."""
    return repr(token["str"])[1:-1] or repr(token["tok"])


def neuron_effects(card: dict[str, Any]) -> Figure:
    """A neuron's top tokens up and down: the effect of its output direction on each token's logit."""
    plt = _pyplot()
    figure, (up, down) = plt.subplots(1, 2, figsize=(10, 0.25 * len(card["top_tokens_up"]) + 1.6))
    for ax, key, colour in ((up, "top_tokens_up", "tab:blue"), (down, "top_tokens_down", "tab:red")):
        tokens = card[key][::-1]
        ax.barh(range(len(tokens)), [token["effect"] or 0.0 for token in tokens], color=colour)
        ax.set_yticks(range(len(tokens)), [_token_text(token) for token in tokens], fontsize=7)
        ax.set_xlabel("effect (unembedding . direction)")
        ax.set_title(key.replace("_", " "))
    moments = card["moments"]
    figure.suptitle(f"{card['model']} layer {card['layer']} neuron {card['neuron']} ({card['label']}): "
                    f"var {moments['var']:.3g}, skew {moments['skew'] or 0:.3g}, kurt {moments['kurt'] or 0:.3g}")
    figure.tight_layout()
    return figure


def _card_title(card: dict[str, Any]) -> str:
    expert = "" if card.get("expert") is None else f" expert {card['expert']}"
    return f"{card['model']} {card['tensor']} layer {card['layer']}{expert} W[{card['row']}, {card['col']}]"


def weight_deltas(card: dict[str, Any]) -> Figure:
    """Each metric's change with the weight zeroed (bootstrap interval if any), beside the two controls."""
    plt = _pyplot()
    metrics = list(card["deltas"])
    figure, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3.4))
    bootstrap = card.get("bootstrap", {})
    for ax, metric in zip(axes, metrics):
        values = [card["deltas"][metric], card["controls"]["random_coord_delta"][metric],
                  card["controls"]["neuron_zero_delta"][metric]]
        heights = np.array([np.nan if value is None else value for value in values])
        ax.bar(range(3), heights, color=["tab:red", "tab:grey", "tab:orange"])
        if metric in bootstrap:
            low, high = [value for key, value in bootstrap[metric].items() if key.startswith("ci_")]
            if low is not None and high is not None:  # a percentile interval need not contain the bar's top
                ax.plot([0, 0], [low, high], color="black", marker="_", markersize=14)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(range(3), ["weight", "random\ncoord", "whole\nneuron"], fontsize=8)
        ax.set_title(f"delta {metric}", fontsize=9)
    figure.suptitle(_card_title(card) + " zeroed", fontsize=10)
    figure.tight_layout()
    return figure


def weight_cascade(card: dict[str, Any]) -> Figure:
    """Entropy and top-k margin deltas layer by layer (logit lens), with the weight zeroed."""
    plt = _pyplot()
    cascade = card["cascade"]
    figure, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("delta_entropy", "delta entropy (nats)"), ("delta_margin", "delta top-k margin")):
        ax.plot(cascade["layers"], [np.nan if value is None else value for value in cascade[key]], marker="o",
                label=label)
    ax.axvline(card["layer"], color="grey", linestyle=":", label=f"weight's layer {card['layer']}")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("layer (logit lens)")
    ax.set_title(_card_title(card) + " zeroed: cascade", fontsize=10)
    ax.legend(fontsize=8)
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
