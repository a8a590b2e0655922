"""Typed configuration of ``python -m builders.superweights``; validated before any model loads.

Each field's docstring is its ``--help`` text (see builders/_cli.py), as for ``builders.collect``.
The flags of the Super Weight scripts (``--spike-threshold``, ``--models``...) are accepted as
aliases of the dotted ones (``OLD_FLAGS``); docs/superweights.md has the table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from builders._config import TextSourceConfig, _positive, check_store
from builders._item_configs import CaptureModelConfig
from store.errors import ConfigError

DEFAULT_TASKS = ("hellaswag", "arc_easy", "mmlu", "gsm8k")
RESTORE_CHOICES = ("all", "each", "none")


def _above_zero(name: str, value: Any) -> float:
    """A finite number above 0 (a threshold), else one error line naming the flag."""
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not 0 < number < math.inf:
        raise ConfigError(f"{name} must be a number above 0, got {value!r}; pass e.g. --{name} 50")
    return number


def _fraction(name: str, value: Any) -> float:
    """A probability in [0, 1]."""
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not 0 <= number <= 1:
        raise ConfigError(f"{name} must be a fraction from 0 to 1, got {value!r}; pass e.g. --{name} 0.12")
    return number


@dataclass
class DetectConfig:
    spike_threshold: float = 50.0
    """A layer's MLP down projection is a candidate when both its largest |input| and its largest |output| on the calibration text exceed this."""

    max_iterations: int = 10
    """Zero the candidate and look again at most this many times (one forward pass of the calibration batch each)."""

    calibration_tokens: int = 512
    """Tokens of calibration text from --data: the first ones of the source, packed into rows of detect.seq_len (unless --detect.prompt)."""

    seq_len: int = 256
    """Tokens per calibration row (documents packed back to back, joined with EOS) and at most per router-analysis text."""

    prompt: str = ""
    """A calibration prompt instead of --data, one row (e.g. the paper's 'Apple Inc. is a worldwide tech company.'); empty: --data."""

    def __post_init__(self) -> None:
        self.spike_threshold = _above_zero("detect.spike_threshold", self.spike_threshold)
        for name in ("max_iterations", "calibration_tokens", "seq_len"):
            _positive(f"detect.{name}", getattr(self, name))
        if self.prompt and not self.prompt.strip():
            raise ConfigError(f"detect.prompt {self.prompt!r} is only whitespace; give some text, or none to use --data")


@dataclass
class PerplexityConfig:
    skip: bool = False
    """Skip the perplexity ablations."""

    samples: int = 500
    """Text records (documents, lines of WikiText) read from --data for perplexity, joined with EOS."""

    max_tokens: int = 8192
    """Tokens of that text scored at most (the first ones)."""

    window_len: int = 1024
    """Tokens per sliding window."""

    stride: int = 512
    """Tokens between window starts; each window scores only the tokens the previous one did not (the first window scores all)."""

    restore: str = "all"
    """Also measure with the super weight(s) zeroed but their super activation (the tokens whose unablated output in the weight's row exceeds detect.spike_threshold) put back (Yu et al.): all (the all-zeroed case), each (every case) or none."""

    batch_size: int = 4
    """Windows per forward pass."""

    def __post_init__(self) -> None:
        for name in ("samples", "max_tokens", "window_len", "stride", "batch_size"):
            _positive(f"perplexity.{name}", getattr(self, name))
        if self.window_len < 2:
            raise ConfigError(f"perplexity.window_len must be at least 2 (one token of context, one scored), "
                              f"got {self.window_len!r}; pass e.g. --perplexity.window_len 1024")
        if self.stride > self.window_len:
            raise ConfigError(f"perplexity.stride ({self.stride}) is longer than perplexity.window_len "
                              f"({self.window_len}), so tokens would go unscored; lower --perplexity.stride")
        if self.restore not in RESTORE_CHOICES:
            raise ConfigError(f"unknown perplexity.restore {self.restore!r}; use all, each or none")


@dataclass
class AccuracyConfig:
    skip: bool = False
    """Skip the accuracy ablations."""

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    """Tasks: hellaswag, arc_easy, arc_challenge, mmlu, gsm8k (Hugging Face datasets), or NAME=FILE for a local .json/.jsonl file in that task's schema."""

    samples: int = 100
    """Questions per task (a seeded sample, the same for the baseline and every ablation)."""

    batch_size: int = 8
    """Requests per forward pass."""

    max_new_tokens: int = 256
    """Tokens generated per GSM8K question (greedy)."""

    def __post_init__(self) -> None:
        for name in ("samples", "batch_size", "max_new_tokens"):
            _positive(f"accuracy.{name}", getattr(self, name))
        if not self.skip and not self.tasks:
            raise ConfigError("accuracy.tasks is empty; name some tasks or pass --accuracy.skip true")


@dataclass
class MoeConfig:
    router_samples: int = 10
    """Texts from --data (of detect.seq_len tokens each) over which each expert's activation probability is measured."""

    p_active_floor: float = 0.01
    """Experts routed for fewer than this fraction of tokens are not scored (not candidates)."""

    co_spike_threshold: float = 0.12
    """An expert co-spikes when it is routed for at least this fraction of a layer's spike tokens (docs/superweights.md)."""

    causal_scoring: bool = False
    """Score each co-spiking expert's candidate by the perplexity change of zeroing it."""

    def __post_init__(self) -> None:
        _positive("moe.router_samples", self.router_samples)
        self.p_active_floor = _fraction("moe.p_active_floor", self.p_active_floor)
        self.co_spike_threshold = _fraction("moe.co_spike_threshold", self.co_spike_threshold)


@dataclass
class RunOptions:
    """The options of every builder that writes the ``superweights`` group (super weights, their cards)."""

    store: str = "stores/superweights.zarr"
    """Where to write: a local path or an fsspec URL such as s3://bucket/key.zarr."""

    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store, e.g. endpoint_url=http://127.0.0.1:9000 (never saved in the store)."""

    seed: int = 42
    """Seed of every random generator (accuracy samples, random controls, bootstrap resamples)."""

    overwrite: bool = False
    """Replace a model's records made with other settings (other models' records stay)."""

    progress: bool = True
    """Show progress bars."""

    verbose: bool = False
    """Print each step's figures as they come (detection maxima, evaluations, cards)."""

    quiet: bool = False
    """Print only errors and one line per model; no progress bars."""

    def __post_init__(self) -> None:
        check_store(self.store)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be a whole number from 0 to 2**32 - 1, got {self.seed!r}")
        if self.verbose and self.quiet:
            raise ConfigError("verbose and quiet are both set; pass one of them")
        if self.quiet:
            self.progress = False


@dataclass
class SuperweightsConfig(RunOptions):
    # The Super Weight scripts' flags, kept as aliases (docs/superweights.md maps each one).
    OLD_FLAGS: ClassVar[dict[str, str]] = {
        "model.name": "models", "detect.spike_threshold": "spike-threshold",
        "detect.max_iterations": "max-iterations", "perplexity.samples": "perplexity-samples",
        "accuracy.samples": "accuracy-samples", "accuracy.tasks": "accuracy-tasks",
        "perplexity.skip": "skip-perplexity", "accuracy.skip": "skip-accuracy",
        "moe.router_samples": "router-analysis-samples", "moe.p_active_floor": "p-active-floor",
        "moe.co_spike_threshold": "co-spike-threshold", "moe.causal_scoring": "enable-causal-scoring",
        "verbose": "-v", "quiet": "-q",
    }

    model: CaptureModelConfig = field(default_factory=CaptureModelConfig)
    data: TextSourceConfig = field(default_factory=TextSourceConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    moe: MoeConfig = field(default_factory=MoeConfig)

    def settings(self) -> dict[str, Any]:
        """What a model's records depend on (saved with them; a rerun with others needs --overwrite)."""
        settings = {name: asdict(getattr(self, name)) for name in ("data", "detect", "perplexity", "accuracy", "moe")}
        for section in ("perplexity", "accuracy"):
            settings[section].pop("batch_size")  # batching changes no figure beyond float noise
        return {**settings, "seed": self.seed}
