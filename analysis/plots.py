"""Diagnostic plots: static (matplotlib, imported lazily), interactive (hvplot) and one HTML dashboard.

Long series are downsampled for drawing only: rank-frequency and CCDF curves keep
points evenly spaced in log rank (the first and last always), so the plotted
shape is the data's; fits are always computed on every value.

The power-law figures are meant for a paper as they come out:

* a curve's title names its series ("model · layer · metric") and the fitted law
  (alpha ± sigma, xmin), taken from the ``fits`` table when there is one, so a figure
  never shows other numbers than the table it illustrates;
* log axes span whole decades (at least two labelled ticks) and the CCDF's y axis runs
  from the smallest plotted probability to 1: no empty decade under the data;
* overlays give each layer one colour (a colormap sampled once per layer) shared by its
  points and its fitted line;
* heatmaps grow with the table but stay on a page (every Nth tick labelled beyond
  ``MAX_TICK_LABELS``), channel rows are labelled by their real hidden-channel index,
  and NaN cells are grey with a note saying why (decoded from the fit's ``status``);
* verdicts and statuses are CF flags: labels are decoded from ``flag_values`` and
  ``flag_meanings``, and only the colour of each label is fixed here.

The HTML dashboard is bokeh's standalone page with every script inlined and no
file referenced by URL: hv.save goes through panel, whose page links its CSS and
favicon on a CDN, and every model class registered with bokeh (panel's too, used or
not) adds its external scripts to bokeh's INLINE resources.

Where each family lives (this module only re-exports them):

* ``analysis/_figure_kit.py``: what they share: lazy pyplot, ``log_spaced_indices``, ``flag_labels``,
  the heatmap and its ticks and notes, ``save``, ``FORMATS`` and the tick / colour constants;
* ``analysis/_fit_figures.py``: the power-law figures above;
* ``analysis/_series_plots.py``: ``all_static``, every figure of a store's fits in ZipfActivation's
  ``rank_frequency/``, ``ccdf/``, ``multi_layer/`` layout, drawn in a pool of processes;
* ``analysis/_vector_figures.py``: document vectors (``similarity_heatmap``, ``long_vector_diagnostics``);
* ``analysis/_superweight_figures.py``: the super weight tables and the comparison across models;
* ``analysis/_card_figures.py``: the vocabulary cards of ``analysis.vocab``;
* ``analysis/_dashboard.py``: the interactive (hvplot) figures and the HTML dashboard.
"""

from analysis._card_figures import neuron_effects, weight_cascade, weight_deltas
from analysis._dashboard import html_dashboard, interactive_ccdf, interactive_heatmap, interactive_verdict
from analysis._figure_kit import (
    FORMATS,
    MAX_POINTS,
    MAX_TICK_LABELS,
    MISSING_COLOUR,
    TICK_FONT_SIZE,
    Curve,
    flag_labels,
    log_spaced_indices,
    save,
)
from analysis._fit_figures import (
    VERDICT_COLOURS,
    alpha_dashboard,
    ccdf,
    channel_heatmap,
    channel_labels,
    law_summary,
    layer_overlay,
    overlay,
    rank_frequency,
    series_title,
    slope_dashboard,
    table_fit,
    verdict_dashboard,
)
from analysis._series_plots import FigureJob, all_static, fit_details, render
from analysis._superweight_figures import (
    ablation_impact,
    combined_effects,
    detection_iterations,
    model_comparison,
    router_analysis,
    spike_scatter,
    superweight_figures,
)
from analysis._vector_figures import long_vector_diagnostics, similarity_heatmap

__all__ = [
    "FORMATS",
    "MAX_POINTS",
    "MAX_TICK_LABELS",
    "MISSING_COLOUR",
    "TICK_FONT_SIZE",
    "VERDICT_COLOURS",
    "Curve",
    "FigureJob",
    "ablation_impact",
    "all_static",
    "alpha_dashboard",
    "ccdf",
    "channel_heatmap",
    "channel_labels",
    "combined_effects",
    "detection_iterations",
    "fit_details",
    "flag_labels",
    "html_dashboard",
    "interactive_ccdf",
    "interactive_heatmap",
    "interactive_verdict",
    "law_summary",
    "layer_overlay",
    "log_spaced_indices",
    "long_vector_diagnostics",
    "model_comparison",
    "neuron_effects",
    "overlay",
    "rank_frequency",
    "render",
    "router_analysis",
    "save",
    "series_title",
    "similarity_heatmap",
    "slope_dashboard",
    "spike_scatter",
    "superweight_figures",
    "table_fit",
    "verdict_dashboard",
    "weight_cascade",
    "weight_deltas",
]
