"""Every plot type is written and non-empty; interactive objects and an offline HTML dashboard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import TINY_ARGS

import analysis
from analysis import open_store, plots


@pytest.fixture(scope="module")
def store_and_fits(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]):  # noqa: ANN201
    from builders.collect import main

    store = tmp_path_factory.mktemp("plots") / "s.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS,
                 "--stats.channels", "3", "--stats.metrics", "rms,kurtosis,linf_norm,channel_wise"]) == 0
    dataset = open_store(str(store))
    return store, dataset.load(), analysis.fit(dataset, compare=False, cache=False).compute()


def test_log_spaced_indices_keep_ends() -> None:
    indices = plots.log_spaced_indices(10_000_000, 2000)
    assert indices[0] == 0 and indices[-1] == 9_999_999 and len(indices) <= 2000
    assert np.all(np.diff(indices) > 0)


@pytest.mark.parametrize("fmt", ["png", "pdf", "both"])
def test_every_static_plot_is_written(store_and_fits, tmp_path: Path, fmt: str) -> None:  # noqa: ANN001
    _, dataset, fits = store_and_fits
    written = plots.all_static(dataset, fits, tmp_path, fmt)
    kinds = {"rank_frequency", "ccdf", "layers_rms", "alpha_dashboard", "slope_dashboard", "channel_heatmap"}
    assert kinds <= {p.stem.split("_", 1)[1] for p in written}
    suffixes = {"png": {".png"}, "pdf": {".pdf"}, "both": {".png", ".pdf"}}[fmt]
    assert {p.suffix for p in written} == suffixes
    assert all(p.stat().st_size > 5_000 for p in written)


def test_interactive_and_html_dashboard(store_and_fits, tmp_path: Path) -> None:  # noqa: ANN001
    _, dataset, fits = store_and_fits
    import holoviews as hv

    assert isinstance(plots.interactive_ccdf(dataset, "rms"), hv.core.overlay.NdOverlay)
    assert isinstance(plots.interactive_heatmap(fits, "alpha"), hv.HeatMap)
    html = plots.html_dashboard(dataset, fits, tmp_path / "dash.html").read_text()
    assert "Bokeh" in html and len(html) > 100_000
    assert "<script src=\"http" not in html and "cdn.bokeh.org" not in html  # self-contained: opens offline


def test_plot_cli(store_and_fits, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    from analysis.plot import main

    store, _, _ = store_and_fits
    assert main([str(store), "--format", "png", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "dashboard.html").exists() and len(list(tmp_path.glob("*.png"))) >= 7


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
