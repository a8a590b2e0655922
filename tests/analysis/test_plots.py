"""Every plot type is written and non-empty; the power-law figures carry what a paper needs (titles,
limits, decade ticks, one colour per layer, real channel indices, NaN explained, verdicts);
interactive objects and an offline HTML dashboard (rendered in Chromium: test_dashboard_offline.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from conftest import TINY_ARGS

import analysis
from analysis import open_store, plots

STATUS_MEANINGS = "ok constant_series fewer_than_3_distinct_positive_values no_candidate_xmin_gives_a_valid_alpha"
VERDICT_MEANINGS = "not_assessed good moderate with_cut-off none too_few_tail_points bounded_metric"


def flags(codes: np.ndarray, meanings: str, dims: tuple[str, ...]) -> xr.DataArray:
    """A CF flag variable as analysis.fit writes one: codes, flag_values and space-separated flag_meanings."""
    return xr.DataArray(codes, dims=dims, attrs={"flag_values": list(range(len(meanings.split()))),
                                                 "flag_meanings": meanings})


def fake_fits(layers: list[str], metrics: list[str], channel_index: np.ndarray, seed: int = 0,
              models: tuple[str, ...] = ("tiny",)) -> xr.Dataset:
    """A fits Dataset with the variables the figures read: random numbers, every status ok, verdicts
    cycling through every category (series and channels)."""
    rng = np.random.default_rng(seed)
    series, channels = ("model", "layer", "metric"), ("model", "layer", "channel")
    shape = (len(models), len(layers), len(metrics))
    channel_shape = (len(models), len(layers), len(channel_index))
    n_verdicts = len(VERDICT_MEANINGS.split())
    variables = {
        "alpha": (series, rng.uniform(1.5, 4.0, shape)), "sigma": (series, rng.uniform(0.01, 0.2, shape)),
        "slope": (series, rng.uniform(-2.0, -0.5, shape)), "channel_slope": (channels, rng.uniform(-2, -0.5, channel_shape)),
        "status": flags(np.zeros(shape), STATUS_MEANINGS, series),
        "channel_status": flags(np.zeros(channel_shape), STATUS_MEANINGS, channels),
        "verdict": flags((np.arange(np.prod(shape)) % n_verdicts).reshape(shape).astype(np.int8), VERDICT_MEANINGS, series),
        "channel_verdict": flags(rng.integers(0, n_verdicts, channel_shape).astype(np.int8), VERDICT_MEANINGS, channels),
    }
    index = np.broadcast_to(np.asarray(channel_index, np.int32), channel_shape)
    return xr.Dataset(variables, coords={"model": list(models), "layer": layers, "metric": metrics,
                                         "channel_index": (channels, index)})


def with_verdicts(fits: xr.Dataset) -> xr.Dataset:
    """Real fits plus verdicts cycling through every category: the figures' contract, whether or not this
    version of analysis.fit assesses them."""
    n_verdicts = len(VERDICT_MEANINGS.split())
    codes = (np.arange(fits["alpha"].size) % n_verdicts).reshape(fits["alpha"].shape).astype(np.int8)
    channel_codes = (np.arange(fits["channel_slope"].size) % n_verdicts).reshape(fits["channel_slope"].shape)
    return fits.assign(verdict=flags(codes, VERDICT_MEANINGS, fits["alpha"].dims),
                       channel_verdict=flags(channel_codes.astype(np.int8), VERDICT_MEANINGS, fits["channel_slope"].dims))


@pytest.fixture(scope="module")
def store_and_fits(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]):
    from builders.collect import main

    store = tmp_path_factory.mktemp("plots") / "s.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS,
                 "--stats.channels", "3", "--stats.metrics", "rms,kurtosis,linf_norm,channel_wise"]) == 0
    dataset = open_store(str(store))
    return store, dataset.load(), with_verdicts(analysis.fit(dataset, compare=False, cache=False).compute())


def test_log_spaced_indices_keep_ends() -> None:
    indices = plots.log_spaced_indices(10_000_000, 2000)
    assert indices[0] == 0 and indices[-1] == 9_999_999 and len(indices) <= 2000
    assert np.all(np.diff(indices) > 0)


def expected_layout(dataset: xr.Dataset, fits: xr.Dataset) -> set[str]:
    """ZipfActivation's plots/ layout, one sub-folder per model: a rank-frequency and a CCDF per (layer,
    metric), one overlay per metric, the dashboards at the top."""
    expected = set()
    for model in (str(m) for m in dataset.model.values):
        for layer in (str(x) for x in dataset.layer.values):
            for metric in (str(m) for m in dataset.metric.values):
                expected |= {f"rank_frequency/{model}/{layer}_{metric}", f"ccdf/{model}/{layer}_{metric}"}
        expected |= {f"multi_layer/{model}/{metric}" for metric in (str(m) for m in dataset.metric.values)}
        kinds = ["alpha_dashboard", "slope_dashboard", "channel_heatmap", "verdict_dashboard"]
        expected |= {f"{model}_{kind}" for kind in kinds if kind != "verdict_dashboard" or "verdict" in fits}
    return expected


def written_stems(written: list[Path], out: Path) -> set[str]:
    return {path.relative_to(out).with_suffix("").as_posix() for path in written}


@pytest.mark.parametrize("fmt", ["png", "pdf", "both"])
def test_every_static_plot_is_written(store_and_fits, tmp_path: Path, fmt: str) -> None:
    _, dataset, fits = store_and_fits
    written = plots.all_static(dataset, fits, tmp_path, fmt, workers=1)
    assert written_stems(written, tmp_path) == expected_layout(dataset, fits)
    suffixes = {"png": {".png"}, "pdf": {".pdf"}, "both": {".png", ".pdf"}}[fmt]
    assert {p.suffix for p in written} == suffixes
    assert len(written) == len(expected_layout(dataset, fits)) * len(suffixes)
    assert all(p.stat().st_size > 5_000 for p in written)


def test_figures_drawn_in_two_processes_are_the_same_files(store_and_fits, tmp_path: Path) -> None:
    """The pool changes where figures are drawn, not what: same paths, in the same order, same sizes
    to within rendering noise (png metadata only)."""
    _, dataset, fits = store_and_fits
    serial = plots.all_static(dataset, fits, tmp_path / "one", workers=1)
    parallel = plots.all_static(dataset, fits, tmp_path / "two", workers=2)
    assert [p.relative_to(tmp_path / "one") for p in serial] == [p.relative_to(tmp_path / "two") for p in parallel]
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]


def test_channel_curves_on_request_named_by_hidden_channel_index(store_and_fits, tmp_path: Path) -> None:
    _, dataset, fits = store_and_fits
    written = written_stems(plots.all_static(dataset, fits, tmp_path, channels=True, workers=1), tmp_path)
    model = str(dataset.model.values[0])
    for layer in (str(x) for x in dataset.layer.values):
        for index in fits["channel_index"].sel(model=model, layer=layer).values:
            assert {f"channels/rank_frequency/{model}/{layer}_channel_{index}",
                    f"channels/ccdf/{model}/{layer}_channel_{index}"} <= written
    assert len(written) == len(expected_layout(dataset, fits)) + 2 * fits["channel_alpha"].size


def test_ccdf_annotated_with_every_number_of_the_fit(store_and_fits) -> None:
    """The CCDF carries alpha, sigma, xmin, KS, GoF p, each likelihood-ratio test, the log-log slope and R²
    and the verdict, as the table holds them; the rank-frequency draws the law and the OLS line."""
    _, dataset, _ = store_and_fits
    fits = analysis.fit(dataset.isel(layer=[-1]), verdict=True, gof_precision=0.1, cache=False).compute()
    model, layer, metric = fitted_series(dataset, fits)
    row = fits.sel(model=model, layer=layer, metric=metric)
    curve = plots.Curve.of(dataset["value"].sel(model=model, layer=layer, metric=metric).values)
    law = plots.table_fit(fits, model, layer, metric, curve.n)
    text = "\n".join(t.get_text() for t in plots.ccdf(curve, law, details=plots.fit_details(row)).axes[0].texts)
    expected = [f"alpha = {float(row.alpha):.3f} ± {float(row.sigma):.3f}", f"xmin = {float(row.xmin):.4g}",
                f"KS D = {float(row.ks_d):.4f}", f"GoF p = {float(row.gof_p):.3f}",
                f"log-log slope = {float(row.slope):.3f}, R² = {float(row.r2):.3f}", "verdict: "]
    expected += [f"vs {name}: R = {float(row.R.sel(alternative=alternative)):.2f}" for alternative, name in
                 (("lognormal", "lognormal"), ("exponential", "exponential"))]
    assert [part for part in expected if part not in text] == []
    legend = [t.get_text() for t in plots.rank_frequency(curve, law, ols=_ols(row)).axes[0]
              .get_legend().get_texts()]
    assert any("power law" in label for label in legend) and any(f"slope {float(row.slope):.3f}" in label
                                                                 for label in legend)


def _ols(row: xr.Dataset) -> Any:
    from analysis._ols import RankFit

    return RankFit(float(row.slope), float(row.intercept), float(row.r2))


def test_a_curve_without_its_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="pass the series' fit"):
        plots.ccdf(plots.Curve.of(np.arange(1.0, 100.0)))


def test_static_plots_without_verdicts(store_and_fits, tmp_path: Path) -> None:
    """Fits cached before verdicts existed: every other figure, no verdict dashboard, and a clear error
    when it is asked for."""
    _, dataset, fits = store_and_fits
    old = fits.drop_vars(["verdict", "channel_verdict"])
    stems = {path.stem for path in plots.all_static(dataset, old, tmp_path, workers=1)}
    model = str(dataset.model.values[0])
    assert f"{model}_alpha_dashboard" in stems and f"{model}_verdict_dashboard" not in stems
    with pytest.raises(ValueError, match="no 'verdict' variable"):
        plots.verdict_dashboard(old)


def fitted_series(dataset: xr.Dataset, fits: xr.Dataset) -> tuple[str, str, str]:
    """The first (model, layer, metric) whose power-law fit succeeded."""
    model = str(dataset.model.values[0])
    layer, metric = np.argwhere(fits["status"].sel(model=model).values == 0)[0]
    return model, str(fits.layer.values[layer]), str(fits.metric.values[metric])


def assert_decade_ticks(ax: Any) -> None:
    """Each log axis shows at least two labelled major ticks, all powers of ten, in type of at least 8 pt."""
    for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        shown = np.array([tick for tick in axis.get_majorticklocs() if low * (1 - 1e-9) <= tick <= high * (1 + 1e-9)])
        assert shown.size >= 2 and np.allclose(np.log10(shown), np.round(np.log10(shown))), (axis, shown)
        assert min(label.get_fontsize() for label in axis.get_ticklabels()) >= 8


def assert_inside(figure: Any) -> None:
    """Everything drawn (labels, title, legends, notes) lies within the figure's canvas."""
    figure.canvas.draw()
    drawn, canvas = figure.get_tightbbox(figure.canvas.get_renderer()), figure.bbox_inches
    assert canvas.x0 <= drawn.x0 and drawn.x1 <= canvas.x1 and canvas.y0 <= drawn.y0 and drawn.y1 <= canvas.y1, drawn


def test_curves_titled_with_series_and_fitted_law(store_and_fits) -> None:
    """CCDF and rank-frequency: titled with the series and the table's alpha ± sigma and xmin, the fitted
    line where the table puts xmin, CCDF y from the smallest plotted probability to 1, decade ticks."""
    _, dataset, real = store_and_fits
    model, layer, metric = fitted_series(dataset, real)
    fits = real.assign(alpha=real["alpha"] + 0.5)  # a table a refit would contradict: the figure must show it
    series = dataset["value"].sel(model=model, layer=layer, metric=metric).values
    n = int(np.sum(np.isfinite(series) & (series != 0)))
    row = fits.sel(model=model, layer=layer, metric=metric)
    fit = plots.table_fit(fits, model, layer, metric, n)
    title = plots.series_title(model, layer, metric)
    parts = [f"{model} · {layer} · {metric}", f"{float(row.alpha):.2f} ± {float(row.sigma):.2f}", f"{float(row.xmin):.3g}"]
    ccdf, rank = plots.ccdf(series, fit, title=title), plots.rank_frequency(series, fit, title=title)
    for figure in (ccdf, rank):
        assert [part for part in parts if part not in figure.axes[0].get_title()] == []
        assert_decade_ticks(figure.axes[0])
        assert_inside(figure)
    assert ccdf.axes[0].get_ylim() == pytest.approx((1 / n, 1.0))
    assert ccdf.axes[0].lines[1].get_xdata()[0] == pytest.approx(float(row.xmin))
    legend = rank.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()][1].endswith(f"{float(row.alpha):.2f}")


def test_layer_overlay_one_colour_per_layer(store_and_fits) -> None:
    """Each layer: its own colour, shared by its points and its fitted line (starting at the table's xmin);
    a legend of the layer names."""
    from matplotlib.colors import to_hex

    _, dataset, fits = store_and_fits
    model, _, metric = fitted_series(dataset, fits)
    figure = plots.layer_overlay(dataset, metric, model, fits)
    ax, layers = figure.axes[0], [str(layer) for layer in dataset.layer.values]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == layers
    colour = {line.get_label(): to_hex(line.get_color()) for line in ax.lines if line.get_label() in layers}
    assert len(set(colour.values())) == len(layers)
    fitted = {to_hex(line.get_color()): line.get_xdata()[0] for line in ax.lines if line.get_label() not in layers}
    ok = [layer for layer in layers if fits["status"].sel(model=model, layer=layer, metric=metric) == 0]
    assert fitted == pytest.approx({colour[layer]: float(fits["xmin"].sel(model=model, layer=layer, metric=metric))
                                    for layer in ok})
    assert model in ax.get_title() and metric in ax.get_title()
    assert_inside(figure)


def test_channel_heatmap_of_real_fits_labels_hidden_channels(store_and_fits) -> None:
    _, dataset, fits = store_and_fits
    model = str(dataset.model.values[0])
    ax = plots.channel_heatmap(fits, model).axes[0]
    index = fits["channel_index"].sel(model=model).isel(layer=0).values
    assert [label.get_text() for label in ax.get_yticklabels()] == [str(i) for i in index]
    assert ax.get_ylabel() == "hidden channel"


def test_channel_heatmap_readable_at_scale_with_missing_cells_explained() -> None:
    """64 channels x 30 layers: every other row labelled with its real channel index, a page-sized figure,
    the failed fits grey and counted by status in a note."""
    from matplotlib.colors import to_rgba

    channels = np.sort(np.random.default_rng(1).choice(4096, 64, replace=False))
    fits = fake_fits([f"layer_{i}" for i in range(30)], ["rms"], channels)
    failed = {(3, 5): 1, (7, 9): 2}  # (layer, channel) -> status
    for (layer, channel), code in failed.items():
        fits["channel_slope"][0, layer, channel] = np.nan
        fits["channel_status"][0, layer, channel] = code
    figure = plots.channel_heatmap(fits)
    ax, image = figure.axes[0], figure.axes[0].images[0]
    step = int(np.ceil(channels.size / plots.MAX_TICK_LABELS))
    assert [label.get_text() for label in ax.get_yticklabels()] == [str(i) for i in channels[::step]]
    assert 6 <= figure.get_figwidth() <= 14 and figure.get_figheight() <= 11
    assert [bool(image.get_array().mask[channel, layer]) for layer, channel in failed] == [True, True]
    assert image.cmap.get_bad() == pytest.approx(to_rgba(plots.MISSING_COLOUR))
    meanings = STATUS_MEANINGS.split()
    note = " ".join(text.get_text() for text in figure.texts)
    assert [meanings[code].replace("_", " ") + " (1)" in note for code in failed.values()] == [True, True]
    assert_inside(figure)


def test_alpha_dashboard_explains_missing_cells_only_when_there_are_some() -> None:
    layers, metrics = ["embed", "middle"], ["rms", "kurtosis"]
    assert plots.alpha_dashboard(fake_fits(layers, metrics, np.arange(2))).texts == []
    fits = fake_fits(layers, metrics, np.arange(2))
    fits["alpha"][0, 1, 0], fits["status"][0, 1, 0] = np.nan, 3
    note = " ".join(text.get_text() for text in plots.alpha_dashboard(fits).texts)
    assert f"{STATUS_MEANINGS.split()[3].replace('_', ' ')} (1)" in note


def test_verdict_dashboard_decodes_categories_from_the_flags() -> None:
    """Each cell coloured by the category its code means in flag_meanings (reversed here, so a mapping
    fixed in the plot would fail), a legend of every category with its count per panel."""
    from matplotlib.colors import to_hex

    channels = np.array([5, 11, 40])
    fits = fake_fits(["embed", "middle", "pre_last"], ["rms", "kurtosis"], channels)
    meanings = VERDICT_MEANINGS.split()[::-1]
    for name in ("verdict", "channel_verdict"):
        fits[name].attrs["flag_meanings"] = " ".join(meanings)
    figure = plots.verdict_dashboard(fits)
    series, by_channel = figure.axes[:2]
    for ax, codes in ((series, fits["verdict"][0].values), (by_channel, fits["channel_verdict"][0].values.T)):
        image = ax.images[0]
        drawn = [to_hex(image.cmap(image.norm(cell))) for cell in image.get_array().ravel()]
        assert drawn == [to_hex(plots.VERDICT_COLOURS[meanings[code]]) for code in codes.ravel()]
    counts = [(np.sum(fits["verdict"].values == code), np.sum(fits["channel_verdict"].values == code))
              for code in range(len(meanings))]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        f"{label.replace('_', ' ')} ({n_series} / {n_channels})" for label, (n_series, n_channels) in zip(meanings, counts)]
    assert [label.get_text() for label in by_channel.get_yticklabels()] == [str(i) for i in channels]
    assert_inside(figure)


def test_interactive_and_html_dashboard(store_and_fits, tmp_path: Path) -> None:
    _, dataset, fits = store_and_fits
    import holoviews as hv

    assert isinstance(plots.interactive_ccdf(dataset, "rms"), hv.core.overlay.NdOverlay)
    assert isinstance(plots.interactive_heatmap(fits, "alpha"), hv.HeatMap)
    assert isinstance(plots.interactive_verdict(fits), hv.Scatter)
    html = plots.html_dashboard(dataset, fits, tmp_path / "dash.html").read_text()
    assert "Bokeh" in html and len(html) > 100_000 and f"verdict ({dataset.model.values[0]})" in html
    # self-contained: no file referenced at all (test_dashboard_offline.py renders it with the network blocked)
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=", html)
    assert "cdn.bokeh.org" not in html and "cdn.holoviz.org" not in html


def test_plot_cli(store_and_fits, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.plot import main

    store, dataset, fits = store_and_fits  # the command fits with verdicts too: the same layout
    assert main([str(store), "--format", "png", "--out", str(tmp_path), "--workers", "2"]) == 0
    assert (tmp_path / "dashboard.html").exists()
    written = {path.relative_to(tmp_path).with_suffix("").as_posix() for path in tmp_path.rglob("*.png")}
    assert written == expected_layout(dataset, fits)


def test_vector_diagnostics_and_similarity_heatmap(tmp_path: Path) -> None:
    """Both vector figures draw what they are given: the heatmap's cells, the diagnostics' bars and line."""
    similarity = xr.DataArray(np.array([[1.0, -0.5], [-0.5, 1.0]]), dims=("doc", "other_doc"),
                              coords={"doc": ["a", "b"], "other_doc": ["a", "b"]})
    heatmap = plots.similarity_heatmap(similarity)
    image = heatmap.axes[0].images[0]
    np.testing.assert_array_equal(image.get_array(), similarity.values)
    assert image.get_clim() == (-1.0, 1.0)
    parts = ["last_token", "depth_0.023", "depth_0.067", "depth_0.159"]
    values = {name: (("doc", "part"), np.arange(8, dtype=float).reshape(2, 4) + offset)
              for offset, name in enumerate(["raw_norm", "centred_norm", "difference_norm", "predicted_norm"])}
    values["alignment"] = (("doc", "part"), np.full((2, 4), 0.5))
    diagnostics = xr.Dataset(values, coords={"doc": ["a", "b"], "part": parts})
    figure = plots.long_vector_diagnostics(diagnostics)
    first = figure.axes[0]
    assert len(first.patches) == 16  # four norms x four parts
    assert [patch.get_height() for patch in first.patches[:4]] == [0.0, 1.0, 2.0, 3.0]
    assert plots.save(figure, tmp_path / "diagnostics")[0].stat().st_size > 0
