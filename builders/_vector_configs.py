"""Typed configuration of ``python -m builders.vectors``; validated before any model loads.

Each field's docstring is its ``--help`` text (see builders/_cli.py), as for ``builders.collect``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from builders._config import (
    ModelConfig,
    TextSourceConfig,
    _positive,
    check_store,
    normalise_layer,
    read_text_file,
)
from builders._pooling import LONG_DEPTHS, SHORT_DEPTHS
from store import POOLINGS, VECTOR_DTYPES
from store.errors import ConfigError

LONG_DOC_POLICIES = ("truncate", "windows")
AUTO_LAYERS = "auto"


def _depth(name: str, value: Any) -> float:
    """An e-folding depth: a fraction of the document's length above 0 (1 = the whole length)."""
    try:
        depth = float(value)
    except (TypeError, ValueError):
        depth = math.nan
    if isinstance(value, bool) or not (0 < depth < math.inf):
        raise ConfigError(f"{name} must be a number above 0 (a fraction of the document's length), "
                          f"got {value!r}; pass e.g. --{name} 0.067")
    return depth


@dataclass
class DocumentsConfig(TextSourceConfig):
    id_field: str = ""
    """Field of each record (.jsonl lines, dataset records) holding the document's id; empty: ids by position (topic name, text name, name:line or record number)."""

    max_docs: int = 1000
    """Documents to pool, in the source's order (fewer if the text runs out)."""

    max_seq_len: int = 512
    """Tokens run through the model at once; longer documents follow --data.long_docs."""

    long_docs: str = "truncate"
    """Documents longer than max_seq_len: truncate (pool their first max_seq_len tokens) or windows (run consecutive windows of max_seq_len tokens and pool every token with the whole document's weights; see docs/vectors.md)."""

    batch_size: int = 8
    """Documents (or windows) per forward pass; documents of similar length are batched together."""

    num_samples: int = 0
    """A seeded random sample of this many documents from the first max_docs (kept in the source's order), as the reference data fetcher's --num_samples; 0: the first max_docs, in order."""

    sample_seed: int = 0
    """Seed of that sample: the same seed and source give the same documents."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_docs", "max_seq_len", "batch_size"):
            _positive(f"data.{name}", getattr(self, name))
        if self.sample_seed < 0:
            raise ConfigError(f"data.sample_seed must be 0 or more, got {self.sample_seed!r}; pass e.g. --data.sample_seed 0")
        if self.num_samples < 0 or self.num_samples > self.max_docs:
            raise ConfigError(f"data.num_samples {self.num_samples!r} must be 0 or at most data.max_docs "
                              f"({self.max_docs}), the documents it samples from; raise --data.max_docs")
        if self.long_docs not in LONG_DOC_POLICIES:
            raise ConfigError(f"unknown data.long_docs {self.long_docs!r}; use truncate or windows")


@dataclass
class PoolingConfig:
    layers: list[str] = field(default_factory=lambda: [AUTO_LAYERS])
    """Decoder blocks whose raw outputs are averaged, then pooled: numbers (or layer_N), or auto: three consecutive blocks at Pythia-12B's relative depth (its blocks 25-27 of 36) mapped onto the model's depth."""

    poolings: list[str] = field(default_factory=lambda: list(POOLINGS))
    """Poolings to store: short (one exponentially weighted average, d values) and/or long (last token + three averages, 4d values)."""

    short_depth: float = SHORT_DEPTHS[0]
    """e-folding depth of the short pooling, as a fraction of the document's length."""

    long_depths: list[float] = field(default_factory=lambda: list(LONG_DEPTHS))
    """The three e-folding depths of the long pooling, as fractions of the document's length."""

    dtype: str = "float16"
    """Stored dtype of the vectors: float16 or float32 (pooling and the corpus mean are always float32/float64)."""

    unit_docs: int = 512
    """Documents per work unit (one chunk): each unit is committed whole, so a kill loses at most one."""

    prepend_bos: bool = True
    """Start each document with the tokenizer's BOS token (its EOS when it has none), as TransformerLens does."""

    center_residual: bool = False
    """Subtract each token's mean over the hidden size from the hooked blocks' outputs (in float32), before layers are averaged and pooled: the residual stream TransformerLens hooks after its default weight processing (center_writing_weights), for extending vector sets made with TransformerLens. Refused for RMSNorm models (Llama, Qwen, OLMo-2...), which TransformerLens does not centre."""

    def __post_init__(self) -> None:
        if not self.layers or (AUTO_LAYERS in self.layers and len(self.layers) > 1):
            raise ConfigError(f"vectors.layers must be auto or layer numbers, got {self.layers!r}; "
                              "pass e.g. --vectors.layers 25 26 27, or auto")
        if self.layers != [AUTO_LAYERS]:
            self.layers = [normalise_layer(layer) for layer in self.layers]
        if len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"vectors.layers has duplicates: {self.layers!r}; list each layer once")
        unknown = [name for name in self.poolings if name not in POOLINGS]
        if unknown or not self.poolings:
            raise ConfigError(f"unknown pooling {(unknown or [''])[0]!r}; use short, long or both "
                              "(--vectors.poolings short long)")
        self.poolings = [name for name in POOLINGS if name in self.poolings]  # stored order, no duplicates
        self.short_depth = _depth("vectors.short_depth", self.short_depth)
        self.long_depths = [_depth("vectors.long_depths", depth) for depth in self.long_depths]
        if len(self.long_depths) != len(LONG_DEPTHS):
            raise ConfigError(f"vectors.long_depths needs {len(LONG_DEPTHS)} depths, got {self.long_depths!r}; "
                              "pass e.g. --vectors.long_depths 0.023 0.067 0.159")
        if self.dtype not in VECTOR_DTYPES:
            raise ConfigError(f"unknown vectors.dtype {self.dtype!r}; use float16 or float32")
        _positive("vectors.unit_docs", self.unit_docs)


@dataclass
class QueryConfig:
    k: int = 10
    """Nearest stored documents to print for --text."""

    pooling: str = "short"
    """Pooling compared for --text: short or long."""

    centre: bool = True
    """Compare centred vectors (each minus the corpus mean), as the reference workflow does."""

    def __post_init__(self) -> None:
        _positive("query.k", self.k)
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown query.pooling {self.pooling!r}; use short or long")


@dataclass
class VectorsConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DocumentsConfig = field(default_factory=DocumentsConfig)
    vectors: PoolingConfig = field(default_factory=PoolingConfig)
    query: QueryConfig = field(default_factory=QueryConfig)

    store: str = "stores/vectors.zarr"
    """Where to write (or, with --text, read): a local path or an fsspec URL such as s3://bucket/key.zarr."""

    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store, e.g. endpoint_url=http://127.0.0.1:9000 (never saved in the store)."""

    text: str = ""
    """Instead of building: pool this text with the model and settings of the store's build and print its nearest stored documents (--model.label picks the model in a store of several)."""

    file: str = ""
    """Like --text, with the text of this UTF-8 file (the reference tool's --file)."""

    diagnostics: str = ""
    """With --text or --file: also write the long vector's diagnostics into this folder (part norms raw, centred and raw - centred; alignment with the pooled corpus mean), as the reference visualize_vectors.py --mode long did."""

    overwrite: bool = False
    """Replace the store's vectors group (its other groups stay) when it was built with other settings or documents."""

    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        check_store(self.store)
        if self.text and self.file:
            raise ConfigError("give the text once: --text or --file, not both")
        if self.file:
            self.text = read_text_file(self.file, "--file", "a readable UTF-8 text file")
        if self.diagnostics and not self.text:
            raise ConfigError(f"--diagnostics {self.diagnostics!r} draws a text's vector; pass --text or --file too")
        if not self.text and self.query.pooling not in self.vectors.poolings:  # --text: the store's poolings
            raise ConfigError(f"query.pooling {self.query.pooling!r} is not among vectors.poolings "
                              f"{self.vectors.poolings!r}; add it or query another pooling")

    def build_config(self) -> dict[str, Any]:
        """The settings every model in one store's vectors group must share (saved in the store)."""
        data = asdict(self.data)
        data.pop("batch_size")
        vectors = asdict(self.vectors)
        vectors.pop("layers")  # per model: the default maps onto each model's depth
        if not vectors["center_residual"]:  # absent = raw: stores built before the option stay resumable
            vectors.pop("center_residual")
        if not data["num_samples"]:  # likewise: absent = the first max_docs in order
            data.pop("num_samples")
            data.pop("sample_seed")
        return {"data": data, "vectors": vectors}

    def model_config(self) -> dict[str, Any]:
        """The settings of one model's slot; a resume must use the same (batches fix the bytes)."""
        return {**asdict(self.model), "batch_size": self.data.batch_size, "layers": self.vectors.layers}
