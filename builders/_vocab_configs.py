"""Typed configuration of the vocabulary analyses (``python -m analysis.vocab``, ``python -m builders.vocab``).

Each field's docstring is its ``--help`` text (see builders/_cli.py). The flags of the
Super Weight scripts' ``run_vocab_analyses.py`` (``--models``, ``--tokens``, ``--window-len``,
``--enable-cascade``...) are accepted as aliases of the dotted ones (``OLD_FLAGS``);
docs/superweights.md has the table. What needs the text or the model (is there enough text,
does a window fit the model's context) is checked in ``builders/vocab.py``, still before
any weights load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from builders._config import TextSourceConfig, _positive
from builders._item_configs import CaptureModelConfig
from builders._superweight_configs import DetectConfig, MoeConfig, RunOptions, _fraction
from store.errors import ConfigError

AUTO = "auto"
# --dataset wikitext-2 (the old script's default) names WikiText-2's raw test split on the hub
_HUB_ALIASES = {"wikitext-2": ("wikitext", "wikitext-2-raw-v1", "test"),
                "wikitext-103": ("wikitext", "wikitext-103-raw-v1", "test")}


def check_coordinates(flag: str, coordinates: list[list[int]], shapes: str, sizes: tuple[int, ...]) -> None:
    """Each coordinate has one of ``sizes`` non-negative numbers."""
    for numbers in coordinates:
        if len(numbers) not in sizes or any(number < 0 for number in numbers):
            example = ",".join(["3"] * sizes[0])
            raise ConfigError(f"{flag} {','.join(map(str, numbers))!r} is not {shapes}; pass e.g. --{flag} {example}")


@dataclass
class VocabModelConfig(CaptureModelConfig):
    name: list[str] = field(default_factory=list)
    """Models (hub ids, local folders, .gguf files, embedded:smollm2-135m-instruct); default: every model with super-weight records in --store, loaded from the model_id recorded there."""

    def __post_init__(self) -> None:
        if self.name:
            super().__post_init__()
        elif self.label:
            raise ConfigError(f"model.label {self.label!r} is given without --model.name; name the models too")


@dataclass
class EvalConfig:
    tokens: int = 30000
    """Tokens of --data evaluated (its first ones, documents joined with EOS), cut into sliding windows."""

    window_len: int = 1024
    """Tokens per window (at most the model's context)."""

    stride: int = 512
    """Tokens between window starts; each window scores only the tokens the previous one did not (the first window scores all but its first)."""

    drop_first_token: bool = False
    """Do not score the prediction made at a window's first position (the attention-sink token where super activations sit)."""

    batch_size: int = 4
    """Windows per forward pass."""

    def __post_init__(self) -> None:
        for name in ("tokens", "window_len", "stride", "batch_size"):
            _positive(f"eval.{name}", getattr(self, name))
        if self.window_len < 2 + self.drop_first_token:
            raise ConfigError(f"eval.window_len must be at least {2 + self.drop_first_token} (context and one scored "
                              f"token), got {self.window_len!r}; pass e.g. --eval.window_len 1024")
        if self.stride > self.window_len:
            raise ConfigError(f"eval.stride ({self.stride}) is longer than eval.window_len ({self.window_len}), so "
                              f"tokens would go unscored; pass --eval.stride {max(self.window_len // 2, 1)}")
        if self.tokens < self.window_len:
            raise ConfigError(f"eval.tokens ({self.tokens}) is fewer than one window of eval.window_len "
                              f"({self.window_len}); pass --eval.tokens {self.window_len} or more, or "
                              f"--eval.window_len {self.tokens}")


@dataclass
class CardsConfig:
    neurons: list[list[int]] = field(default_factory=list)
    """More neurons to card besides the super weights' own, each layer,neuron or layer,neuron,expert (the down projection's input channel; the flag takes several, space-separated, or repeated)."""

    top_k: int = 20
    """Tokens listed per card: a neuron's top tokens up and down, a weight's largest probability gains and losses."""

    enable_cosine: bool = False
    """Neuron cards also get the cosine between the neuron's direction and each token's unembedding row (moments_cos)."""

    enable_enrichment: bool = False
    """Neuron cards get token-class enrichment of their top tokens (digits_years, punctuation_brackets, function_words, capitalised, whitespace, code_symbols; docs/superweights.md defines the score)."""

    enrichment_top: int = 100
    """Top tokens (by effect, upward) whose classes are counted for the enrichment."""

    enable_cascade: bool = False
    """Weight cards get the entropy and top-k margin deltas at intermediate layers through the logit lens."""

    cascade_layers: list[str] = field(default_factory=lambda: [AUTO])
    """Layers of the cascade: auto (about 8 evenly spaced, and the last) or layer numbers."""

    margin_k: int = 2
    """top-k margin: the probability of the most likely next token minus that of the k-th most likely."""

    bootstrap: int = 0
    """Bootstrap resamples of the windows for confidence intervals of the deltas (0: none)."""

    confidence: float = 0.95
    """Level of the percentile bootstrap intervals."""

    def __post_init__(self) -> None:
        check_coordinates("cards.neurons", self.neurons, "layer,neuron or layer,neuron,expert", (2, 3))
        for name in ("top_k", "enrichment_top"):
            _positive(f"cards.{name}", getattr(self, name))
        if isinstance(self.margin_k, bool) or not isinstance(self.margin_k, int) or self.margin_k < 2:
            raise ConfigError(f"cards.margin_k must be a whole number of at least 2, got {self.margin_k!r}; "
                              "pass e.g. --cards.margin_k 2")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ConfigError(f"cards.bootstrap must be 0 or a positive whole number, got {self.bootstrap!r}; "
                              "pass e.g. --cards.bootstrap 500")
        if self.cascade_layers != [AUTO] and not (self.cascade_layers and all(
                str(layer).isdigit() for layer in self.cascade_layers)):
            raise ConfigError(f"cards.cascade_layers must be auto or layer numbers from 0, got {self.cascade_layers!r}; "
                              "pass e.g. --cards.cascade_layers 0,4,8")
        self.confidence = _fraction("cards.confidence", self.confidence)
        if not 0 < self.confidence < 1:
            raise ConfigError(f"cards.confidence must lie strictly between 0 and 1, got {self.confidence!r}; "
                              "pass e.g. --cards.confidence 0.95")


@dataclass
class VocabConfig(RunOptions):
    # run_vocab_analyses.py's flags, kept as aliases (docs/superweights.md maps each one).
    OLD_FLAGS: ClassVar[dict[str, str]] = {
        "model.name": "models", "data.name": "dataset", "eval.tokens": "tokens", "eval.window_len": "window-len",
        "eval.stride": "stride", "eval.drop_first_token": "drop-first-token",
        "cards.enable_cosine": "enable-cosine", "cards.enable_cascade": "enable-cascade",
        "cards.enable_enrichment": "enable-enrichment", "cards.bootstrap": "bootstrap",
        "detect.spike_threshold": "spike-threshold", "detect.max_iterations": "max-iterations",
        "moe.router_samples": "router-analysis-samples", "moe.p_active_floor": "p-active-floor",
        "moe.co_spike_threshold": "co-spike-threshold", "verbose": "-v", "quiet": "-q",
    }

    model: VocabModelConfig = field(default_factory=VocabModelConfig)
    data: TextSourceConfig = field(default_factory=TextSourceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cards: CardsConfig = field(default_factory=CardsConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    moe: MoeConfig = field(default_factory=lambda: MoeConfig(router_samples=5))

    weights: list[list[int]] = field(default_factory=list)
    """Super weights to analyse, each layer,row,col or layer,row,col,expert: W[row, col] of that layer's MLP down projection (several space-separated, or the flag repeated); default: the store's records, else detection runs first (--detect options)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_coordinates("weights", self.weights, "layer,row,col or layer,row,col,expert", (3, 4))
        if self.weights and len(self.model.name) > 1:
            raise ConfigError(f"--weights names weights of one model, but {len(self.model.name)} models are given; "
                              "run one model at a time with --weights")
        if self.data.name in _HUB_ALIASES:  # a subset or split given with it wins
            name, subset, split = _HUB_ALIASES[self.data.name]
            self.data.name, self.data.subset = name, self.data.subset or subset
            self.data.split = split if self.data.split == TextSourceConfig.split else self.data.split

    def settings(self) -> dict[str, Any]:
        """What a model's cards depend on (saved with them; a rerun with others needs --overwrite)."""
        settings = {name: asdict(getattr(self, name)) for name in ("data", "eval", "cards", "detect", "moe")}
        settings["eval"].pop("batch_size")  # batching changes no figure beyond float noise
        if not self.cards.enable_cascade:
            settings["cards"].pop("cascade_layers")
        return {**settings, "weights": list(self.weights), "seed": self.seed}
