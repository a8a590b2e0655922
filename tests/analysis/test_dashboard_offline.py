"""The HTML dashboard renders in headless Chromium with every network request blocked.

Chromium opens a copy of the dashboard with a probe script appended. Once BokehJS reports its
document idle, the probe reads each plot's title and legend from the rendered views, counts the
coloured pixels of each plot's exported canvas (glyphs are coloured; axes, ticks and text are
black or grey, so a plot that drew no data counts none) and lists every file the page references
(script, link and img, shadow roots included: a self-contained page references none).

Network use is read from Chromium's net log, not from the page: a request the page makes but
never sees answered is there too. Chromium's own background requests are told apart by their
isolation key (the page's is its file:// site). The probe fetches a canary URL first, so a net
log whose format no longer shows the page's requests fails the test instead of passing it.

Skipped only where the chromium binary is absent and CI is not set; CI (.ci/run installs it) fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from test_plots import VERDICT_MEANINGS, fake_fits

from analysis import plots

CANARY = "https://network-canary.invalid/"
MIN_COLOURED = 0.002  # share of a plot's pixels: the sparsest CCDF scatter colours about 1%
CONSOLE_ERRORS = re.compile(r"Uncaught|Failed to load resource|net::ERR_")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",  # WebGL in software
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",  # no name resolves, no proxy answers
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0",
]
PROBE = """
(function probe(waited) {
  if (waited === 0) fetch("__CANARY__").catch(() => null);
  const doc = window.Bokeh?.documents?.[0];
  if ((doc == null || !doc.is_idle) && waited < 10000) return void setTimeout(probe, 100, waited + 100);
  const views = doc == null ? [] : [...Bokeh.index.all_views()];
  const plots = views.filter((view) => Array.isArray(view.model.center) && view.model.title != null);
  const report = {idle: doc?.is_idle ?? false, plots: plots.map(describe), references: references(document)};
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);

  function describe(view) {
    const legends = ["center", "left", "right", "above", "below"].flatMap((side) => view.model[side])
      .filter((model) => model.items != null);
    const labels = legends.flatMap((legend) => legend.items.flatMap((item) => item.get_labels_list_from_label_prop()));
    const canvas = view.export("png").canvas;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      if (Math.max(pixels[i], pixels[i + 1], pixels[i + 2]) - Math.min(pixels[i], pixels[i + 1], pixels[i + 2]) > 40) {
        coloured += 1;
      }
    }
    return {title: view.model.title.text, legend: labels, coloured: coloured / (pixels.length / 4)};
  }
  function references(root) {
    const found = [...root.querySelectorAll("script[src], link[href], img[src]")].map((el) => el.src || el.href);
    for (const el of root.querySelectorAll("*")) if (el.shadowRoot) found.push(...references(el.shadowRoot));
    return found;
  }
})(0);
""".replace("__CANARY__", CANARY)


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = shutil.which("chromium")
    if binary:
        return binary
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail("chromium is not installed: .ci/run installs it before the tests")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def pareto_dataset(layers: list[str], metrics: list[str], tokens: int = 2000, model: str = "tiny") -> xr.Dataset:
    """A stats Dataset of heavy-tailed values, the one variable the dashboard's curves read."""
    values = np.random.default_rng(0).pareto(2.0, (1, len(layers), len(metrics), tokens)) + 1.0
    return xr.Dataset({"value": (("model", "layer", "metric", "token"), values.astype(np.float32))},
                      coords={"model": [model], "layer": layers, "metric": metrics})


def with_probe(page: Path) -> Path:
    """A copy of ``page`` that runs the probe last (before the last ``</body>``: scripts may quote the tag)."""
    head, body_end, tail = page.read_text(encoding="utf-8").rpartition("</body>")
    assert body_end, f"{page} has no </body>"
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(f"{head}<script>{PROBE}</script>{body_end}{tail}", encoding="utf-8")
    return probed


def render(chromium: str, page: Path, scratch: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """(probe report, URLs the page requested over the network, console errors) of one headless load."""
    net_log = scratch / "net-log.json"
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'profile'}",
                           f"--log-net-log={net_log}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    report = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert report, f"the probe never wrote its report (chromium exit {done.returncode}):\n{done.stderr[-3000:]}"
    errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and CONSOLE_ERRORS.search(line)]
    # --dump-dom serialises the report's text node as HTML
    return json.loads(html.unescape(report.group(1))), page_requests(net_log), errors


def page_requests(net_log: Path) -> list[str]:
    """Network URLs requested on behalf of a file:// page (Chromium's own requests have other keys)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return sorted({event["params"]["url"] for event in log["events"]
                   if event["type"] == start and str(event["params"].get("network_isolation_key", "")).startswith("file://")
                   and not event["params"]["url"].startswith(("file:", "data:", "blob:"))})


def expected_titles(dataset: xr.Dataset, fits: xr.Dataset) -> set[str]:
    """What html_dashboard draws: per model alpha, slope and verdict panels, and up to four metrics' CCDFs."""
    titles = {f"{name} ({model})" for model in fits.model.values for name in ("alpha", "slope", "verdict")}
    return titles | {f"{metric} CCDF ({model})" for model in dataset.model.values
                     for metric in dataset.metric.values[:4]}


def test_dashboard_renders_offline(chromium: str, tmp_path: Path) -> None:
    layers, metrics = ["embed", "middle", "pre_last"], ["rms", "kurtosis", "linf_norm"]
    dataset = pareto_dataset(layers, metrics)
    fits = fake_fits(layers, metrics, np.array([3, 17, 42]))
    report, requests, errors = render(chromium, with_probe(plots.html_dashboard(dataset, fits, tmp_path / "d.html")),
                                      tmp_path)
    assert requests == [CANARY]  # the net log shows the page's requests, and the dashboard made none
    assert [line for line in errors if "network-canary" not in line] == []
    assert report["idle"] and report["references"] == []
    drawn = {plot["title"]: plot for plot in report["plots"]}
    assert set(drawn) == expected_titles(dataset, fits)
    assert {title: plot["coloured"] > MIN_COLOURED for title, plot in drawn.items()} == dict.fromkeys(drawn, True)
    assert all(drawn[f"{metric} CCDF (tiny)"]["legend"] == layers for metric in metrics)
    meanings = VERDICT_MEANINGS.split()
    present = {meanings[code].replace("_", " ") for code in np.unique(fits["verdict"].values)}
    assert set(drawn["verdict (tiny)"]["legend"]) == present
