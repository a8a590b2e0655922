"""``python -m builders.vectors``: one pooled vector per document per model, into the store's ``vectors`` group.

Each document runs through the model as its own sequence; the chosen blocks' raw outputs
(with --vectors.center_residual, each token's minus its mean over d, as TransformerLens hooks
them; refused for RMSNorm models once the model loads, before the store is touched) are
averaged, then pooled over tokens (short: one exponentially weighted average; long: last
token + three averages; docs/vectors.md has the formulas). The corpus mean of each
pooling is stored beside the vectors; analysis.vectors centres lazily and answers
similarity queries. With --text, pools that text with the store's own settings and prints
its nearest stored documents. Re-running the same command resumes, or does nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from builders import _models as models
from builders._cli import run_cli
from builders._documents import Corpus, bos_id, read_corpus
from builders._provenance import model_provenance, vector_group_attrs
from builders._runtime import ModelRuntime
from builders._text_vectors import TextVectors, stored_config
from builders._vector_configs import VectorsConfig
from builders._vector_run import check_center_residual, pooled_layers, unit_vectors
from store import (
    VECTORS_GROUP,
    Lease,
    StoreLocation,
    VectorsLayout,
    VectorSlot,
    check_ours_or_empty,
    check_output_path,
    check_vectors_documents,
    check_vectors_settings,
    claim_unit,
    committed_units,
    finish_vectors,
    open_vectors_session,
    reporting_write_faults,
    resolve_location,
    slot_key,
    vectors_complete,
    write_vector_unit,
)
from store.errors import ConfigError

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


@dataclass(frozen=True)
class _Checked:
    """Everything a build needs but the model, checked before the store is touched."""

    location: StoreLocation
    source: models.ModelSource
    model_config: Any
    n_layers: int
    layer_indices: list[int]
    corpus: Corpus
    layout: VectorsLayout
    pad_id: int

    @property
    def label(self) -> str:
        return self.source.label


def _check(config: VectorsConfig) -> _Checked:
    """Every check that can fail runs here, cheapest first; nothing is written, no weights load."""
    location = StoreLocation(config.store, config.storage_options)
    location.check_writable()
    check_ours_or_empty(location)  # never write into, or --overwrite, a folder of other files
    source = models.resolve_source(config.model)
    if not config.overwrite:  # before tokenising the corpus: a different setting is refused at once
        check_vectors_settings(location, config.build_config(), source.label, config.model_config())
    model_config = models.load_model_config(source, config.model)
    models.check_sequence_length(model_config, config.data.max_seq_len, "data.max_seq_len")
    n_layers = models.num_layers(model_config)
    layer_indices = pooled_layers(config, n_layers)
    tokenizer = models.load_tokenizer(source, config.model)
    corpus = read_corpus(config.data, tokenizer, config.vectors.prepend_bos)
    layout = VectorsLayout(corpus.doc_ids, models.hidden_size(model_config), tuple(config.vectors.poolings),
                           config.vectors.unit_docs, config.vectors.dtype, corpus.digests)
    if not config.overwrite:
        check_vectors_documents(location, layout)
    return _Checked(location, source, model_config, n_layers, layer_indices, corpus, layout, bos_id(tokenizer))


def load_runtime(config: VectorsConfig, checked: _Checked) -> ModelRuntime:
    """The model (checked beforehand) with its chosen blocks to hook, its norm checked against the settings."""
    model = models.load_model(checked.source, config.model)
    check_center_residual(model, config)  # its norm class is known only now; nothing is written yet
    return ModelRuntime(model, models.collection_modules(model, checked.layer_indices, checked.n_layers))


def run(config: VectorsConfig) -> int:
    if config.text:
        return _query_text(config)
    checked = _check(config)
    models.quiet_loading(config.progress)
    if not config.overwrite and vectors_complete(checked.location, checked.label):  # not a byte changes
        print(_nothing_to_do(checked))
        return 0
    return _build(config, checked, load_runtime(config, checked))


def _nothing_to_do(checked: _Checked) -> str:
    return (f"Nothing to do: model {checked.label!r} is complete in {checked.location.display()} "
            f"({len(checked.corpus):,} documents).")


def _slot(config: VectorsConfig, checked: _Checked, dtype: str) -> VectorSlot:
    provenance = model_provenance(checked.source, config, checked.model_config, checked.layout.hidden_size, dtype)
    provenance.update({"n_layers": checked.n_layers, "layers": checked.layer_indices})
    return VectorSlot(checked.label, provenance)


def _build(config: VectorsConfig, checked: _Checked, runtime: ModelRuntime) -> int:
    location, label, layout = checked.location, checked.label, checked.layout
    key = slot_key(VECTORS_GROUP, label)
    lease = Lease(location, key, f"pool vectors of model {label!r}")
    with reporting_write_faults(location), lease.acquire(interrupt=True):
        session = open_vectors_session(location, layout, _slot(config, checked, runtime.dtype),
                                       vector_group_attrs(config, layout.hidden_size, layout.unit_docs), replace=config.overwrite)
        committed = committed_units(session.group, session.slot)
        pending = [unit for unit in layout.units() if not committed[unit.index]]
        computed = sum(unit.size for unit in pending)
        done = layout.n_docs - computed
        if done and pending:
            print(f"Resuming model {label!r}: {len(layout.units()) - len(pending)} of {layout.n_units} units "
                  f"committed ({done:,} of {layout.n_docs:,} documents).")
        started = time.perf_counter()
        with tqdm(total=layout.n_docs, initial=done, unit="doc", desc=f"vectors {label}",
                  disable=not config.progress) as progress:
            for unit in pending:
                with claim_unit(location, key, unit, f"pool vectors of model {label!r}") as claim:
                    pooled = unit_vectors(runtime, config, checked.corpus, unit, checked.pad_id, progress)
                    write_vector_unit(session.group, session.slot, unit, pooled,
                                      checked.corpus.n_tokens[unit.start:unit.end], claim)
        finish_vectors(session, lease)
    print(_summary(checked, computed, time.perf_counter() - started))
    return 0


def _summary(checked: _Checked, computed: int, seconds: float) -> str:
    where = checked.location.display()
    rate = computed / seconds if seconds else 0.0
    return "\n".join([
        (f"Pooled model {checked.label!r}: {len(checked.corpus):,} documents x {', '.join(checked.layout.poolings)} "
         f"(blocks {checked.layer_indices}) in {seconds:.1f} s ({rate:,.1f} documents/s)."),
        f"Store: {where} (group 'vectors')",
        f"Open it: from analysis import vectors; vectors({where!r})",
    ])


def _query_text(config: VectorsConfig) -> int:
    """--text: the text's vector through the store's model and settings, then its nearest documents."""
    from analysis import nearest, vectors  # the query lives in analysis; the model here

    stored = stored_config(resolve_location(config.store, config.storage_options), config.model.label)
    if config.query.pooling not in stored.vectors.poolings:
        raise ConfigError(f"the store holds {stored.vectors.poolings!r} vectors, not {config.query.pooling!r}; "
                          "pass --query.pooling with one of those")
    if config.diagnostics:
        _check_diagnostics(config, stored)
    models.quiet_loading(config.progress)
    pool = TextVectors(config.store, config.model.label, config.storage_options)
    pooled = pool([config.text])
    dataset = vectors(config.store, storage_options=config.storage_options)
    found = nearest(dataset, pooled[config.query.pooling][0], k=config.query.k, pooling=config.query.pooling,
                    model=pool.label, centre=config.query.centre)
    print(f"Nearest documents to the text in {config.store} (model {pool.label!r}, {config.query.pooling}, "
          f"{'centred ' if config.query.centre else ''}cosine):")
    print(found.to_string(index=False))
    if config.diagnostics:
        _write_diagnostics(config, dataset, pooled["long"][0], pool.label)
    return 0


def _check_diagnostics(config: VectorsConfig, stored: VectorsConfig) -> None:
    """--diagnostics needs the store's long vectors and a folder it may write: refused before the model loads."""
    if "long" not in stored.vectors.poolings:
        raise ConfigError(f"--diagnostics draws long vectors; the store holds {stored.vectors.poolings!r} only "
                          "(build it with --vectors.poolings short long)")
    check_output_path(config.diagnostics, "diagnostics folder", folder=True)


def _write_diagnostics(config: VectorsConfig, dataset: Any, long_vector: Any, label: str) -> None:
    """The reference visualize_vectors.py's figure and numbers for the text: diagnostics.png and .csv."""
    from analysis import long_diagnostics_of, plots

    folder = Path(config.diagnostics).expanduser()
    table = long_diagnostics_of(dataset, long_vector[None], ["text"], model=label)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_dataframe().reset_index().to_csv(folder / "diagnostics.csv", index=False)
    written = plots.save(plots.long_vector_diagnostics(table), folder / "diagnostics", "png")
    print(f"Diagnostics of the text's long vector: {written[0]} and {folder / 'diagnostics.csv'}")


__all__ = ["TextVectors", "VectorsConfig", "main", "run", "stored_config"]


def main(argv: list[str] | None = None) -> int:
    return run_cli(VectorsConfig, argv, "python -m builders.vectors", DESCRIPTION, run)

if __name__ == "__main__":
    sys.exit(main())
