"""``python -m builders.pipeline --config zipf.yaml``: ZipfActivation's one-shot run, from its own config.

Collect (``builders.collect``, resumable), fit every series (``analysis.fit``: Clauset's protocol on
every value, the comparisons, the verdicts), then write into one results folder what its
``scripts/run.py`` wrote: ``statistics/<layer>.npz``, ``fits/fit_results.json`` and ``plots/``
(``rank_frequency/``, ``ccdf/``, ``multi_layer/``, the dashboards), beside the store itself
(``activations.zarr``). Its YAML keys are read as they are (builders/_zipf_config.py), with a note for
each whose meaning changes; this project's own keys and flags work too. Re-running the same command
resumes the collection and rewrites the files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from builders import collect
from builders._cli import run_cli
from builders._config import CollectConfig
from store import check_output_path
from store.errors import ConfigError

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""
RESULTS_DIR = "<results_dir>"  # in --store: the results folder


@dataclass
class PipelineConfig(CollectConfig):
    # ZipfActivation's own flags for these two (its smoke-test command passes them)
    OLD_FLAGS: ClassVar[dict[str, str]] = {"results_dir": "output.results_dir", "plot_format": "output.plot_format"}

    results_dir: str = "results"
    """The output folder the results are written to: statistics/, fits/, plots/ and the store (activations.zarr) unless --store names another."""

    plot_format: str = "png"
    """Format of the figures: png, pdf or both."""

    store: str = "<results_dir>/activations.zarr"
    """Where the statistics are stored: a local path or an fsspec URL (default: inside the results folder)."""

    channel_plots: bool = False
    """Also draw a rank-frequency and a CCDF per sampled channel (plots/channels/)."""

    def __post_init__(self) -> None:
        # the formats analysis saves figures in, checked before any work (analysis loads only here and after)
        from analysis._figure_kit import FORMATS

        if self.plot_format not in FORMATS:
            raise ConfigError(f"unknown plot_format {self.plot_format!r}; use png, pdf or both")
        if self.store.startswith(RESULTS_DIR):
            self.store = self.results_dir.rstrip("/") + self.store.removeprefix(RESULTS_DIR)
        super().__post_init__()


def _check_results(config: PipelineConfig) -> Path:
    """The results folder, refused before any model loads unless new, empty, or an earlier results folder."""
    from analysis.export import check_results_folder

    folder = check_output_path(config.results_dir, "results_dir", folder=True)
    store = Path(config.store).expanduser().resolve() if "://" not in config.store else None
    others = [entry for entry in folder.iterdir() if entry.resolve() != store] if folder.is_dir() else []
    # a run killed while collecting left only its store here: that folder is still this command's to finish
    return check_results_folder(folder) if others else folder


def run(config: PipelineConfig) -> int:
    results = _check_results(config)
    code = collect.run(config)  # checks everything else before it writes
    if code:
        return code
    _analyse(config, results)
    return 0


def _analyse(config: PipelineConfig, results: Path) -> None:
    # analysis sits above builders; only this one-shot command uses it, and only once the store is built
    from analysis import fit, open_store, plots
    from analysis.export import export_fits_json, export_npz, mark_results_folder

    mark_results_folder(results)
    dataset = open_store(config.store, storage_options=config.storage_options)
    fits = fit(dataset, verdict=True, channel_verdict=False, progress=config.progress).compute()
    written = export_npz(dataset, results, progress=config.progress)
    written += export_fits_json(dataset, results, fits=fits)
    written += plots.all_static(dataset.load(), fits, results / "plots", config.plot_format,
                                channels=config.channel_plots, progress=config.progress)
    written.append(plots.html_dashboard(dataset, fits, results / "plots" / "dashboard.html"))
    print(f"wrote {len(written)} files under {results} (store: {config.store})")


def main(argv: list[str] | None = None) -> int:
    return run_cli(PipelineConfig, argv, "python -m builders.pipeline", DESCRIPTION, run)


if __name__ == "__main__":
    sys.exit(main())
