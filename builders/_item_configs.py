"""Typed configurations of ``builders.capture``, ``builders.integers`` and ``builders.hypercube``.

Each field's docstring is its ``--help`` text (see builders/_cli.py), as for ``builders.collect``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from builders._config import EMBEDDED_SMOLLM2, ModelConfig, _positive
from store._options import check_path_text
from store._schema import MODEL_LABEL
from store.errors import ConfigError


@dataclass
class CaptureModelConfig:
    name: list[str] = field(default_factory=lambda: [EMBEDDED_SMOLLM2])
    """Models to run, one after another (comma-separated or the flag repeated): hub ids, local folders, .gguf files or embedded:smollm2-135m-instruct."""

    label: list[str] = field(default_factory=list)
    """Labels in the store, one per name in the same order (default: derived from each name)."""

    dtype: str = "auto"
    """Weights dtype: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16."""

    device: str = "auto"
    """Device: auto (cuda when available), cpu, cuda, cuda:N or mps."""

    trust_remote_code: bool = False
    """Run model code from the hub repository; off unless you trust it."""

    def __post_init__(self) -> None:
        if not self.name or not all(str(name).strip() for name in self.name):
            raise ConfigError("model.name is empty; pass --model.name with one or more models")
        if self.label and len(self.label) != len(self.name):
            raise ConfigError(f"model.label has {len(self.label)} labels for {len(self.name)} models; "
                              "give one label per --model.name, or none")
        if len(set(self.label)) != len(self.label):
            raise ConfigError(f"model.label has duplicates: {self.label!r}; give each model its own label")
        for label in self.label:
            if not MODEL_LABEL.match(label):
                raise ConfigError(f"model.label {label!r} must be letters, digits, '.', '_' or '-'")
        self.model_configs()  # each model's own checks (dtype, device, name text)

    def model_configs(self) -> list[ModelConfig]:
        """One collect-style model configuration per name."""
        labels = self.label or [""] * len(self.name)
        return [ModelConfig(name=name, label=label, dtype=self.dtype, device=self.device,
                            trust_remote_code=self.trust_remote_code) for name, label in zip(self.name, labels)]


@dataclass
class GenerateConfig:
    max_new_tokens: int = 64
    """Tokens to generate after each prompt."""

    do_sample: bool = False
    """Sample the continuation (otherwise greedy)."""

    temperature: float = 0.8
    """Sampling temperature (only with --generate.do_sample)."""

    seed: int = 42
    """Seed of every random generator, set before each generation."""

    def __post_init__(self) -> None:
        _positive("generate.max_new_tokens", self.max_new_tokens)
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < float("inf")):
            raise ConfigError(f"generate.temperature must be above 0, got {self.temperature!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"generate.seed must be a whole number from 0 to 2**32 - 1 (NumPy's range), "
                              f"got {self.seed!r}")


@dataclass
class CaptureConfig:
    model: CaptureModelConfig = field(default_factory=CaptureModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    prompt: str = "Explain verifiable inference in one paragraph."
    """The prompt to continue (one capture); ignored when --prompt_file is given."""

    prompt_file: str = ""
    """A text file of prompts, one per line (blank lines skipped): one capture each."""

    deterministic: bool = False
    """Bit-identical captures across runs on the same hardware and versions: greedy decoding, deterministic torch algorithms, cuDNN deterministic and no benchmark, CUBLAS_WORKSPACE_CONFIG=:4096:8, every RNG seeded."""

    report: str = ""
    """Also write the JSON report of layer statistics (printed to stdout either way) to this file."""

    export: list[str] = field(default_factory=list)
    """npy DIR: also write the reference tool's files into DIR (<model>_stats.json per model)."""

    store: str = "stores/activations.zarr"
    """Where to write: a local path or an fsspec URL such as s3://bucket/key.zarr."""

    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store, e.g. endpoint_url=http://127.0.0.1:9000 (never saved in the store)."""

    overwrite: bool = False
    """Capture again the prompts already captured with other settings (replacing those captures)."""

    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        check_path_text(self.store, "store")
        check_export(self.export)
        if self.prompt_file:
            check_path_text(self.prompt_file, "prompt_file")
        elif not self.prompt.strip():
            raise ConfigError("prompt is empty; pass --prompt with some text, or --prompt_file")
        if self.deterministic:
            self.generate.do_sample = False

    def capture_settings(self) -> dict[str, Any]:
        """What makes two captures of one prompt the same capture (saved per model, compared on resume)."""
        return {"generate": asdict(self.generate), "deterministic": self.deterministic,
                "dtype": self.model.dtype, "device": self.model.device}


def check_export(export: list[str]) -> None:
    if export and (len(export) != 2 or export[0] != "npy" or not export[1].strip()):
        raise ConfigError(f"export takes a format and a folder, got {export!r}; pass --export npy DIR")
    if export:
        check_path_text(export[1], "export folder")


@dataclass
class ItemPassConfig:
    """What every pass over stored items takes (builders.integers, builders.hypercube)."""

    store: str = "stores/activations.zarr"
    """The store holding the items to read; the results are written into it."""

    model: list[str] = field(default_factory=list)
    """Model labels to process (default: every model with items in the source group)."""

    export: list[str] = field(default_factory=list)
    """npy DIR: also write the reference tool's files into DIR (see docs/verifiable-inference.md)."""

    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store (never saved in the store)."""

    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        check_path_text(self.store, "store")
        check_export(self.export)


@dataclass
class IntegersConfig(ItemPassConfig):
    scale_factor: int = 0
    """Total decimal digits: the integer is round_half_even(x * 10**e); 0: 32 for float32 captures, 16 for float16 and bfloat16."""

    quantize: float = 0.0
    """Percentage (0-100) of those digits to drop: e = scale_factor - floor(scale_factor * quantize / 100)."""

    overwrite: bool = False
    """Replace encodings made with other settings."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.scale_factor, bool) or not 0 <= self.scale_factor <= 400:
            raise ConfigError(f"scale_factor must be 0 (by dtype) or up to 400, got {self.scale_factor!r}")
        if not (isinstance(self.quantize, (int, float)) and 0 <= self.quantize <= 100):
            raise ConfigError(f"quantize must be a percentage from 0 to 100, got {self.quantize!r}; "
                              "pass e.g. --quantize 25")


@dataclass
class HypercubeConfig(ItemPassConfig):
    source: str = "encodings"
    """What the cube lays out: encodings (exact integers, from python -m builders.integers) or captures (floats)."""

    min_dim: int = 4
    """Smallest size of a cube dimension."""

    max_dim: int = 10
    """Largest size of a cube dimension."""

    num_dims: int = 0
    """Force this many dimensions (0: the least padding decides)."""

    pad_seed: int = 42
    """Seed of the choice of real values copied into the padding."""

    materialize: bool = False
    """Also write the cube as a stored array (a copy); without it the cube is a view."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source not in ("encodings", "captures"):
            raise ConfigError(f"source must be encodings or captures, got {self.source!r}")
        for name in ("min_dim", "max_dim"):
            _positive(name, getattr(self, name))
        if self.min_dim < 2:
            raise ConfigError(f"min_dim must be at least 2, got {self.min_dim}; pass e.g. --min_dim 4")
        if self.min_dim > self.max_dim:
            raise ConfigError(f"min_dim ({self.min_dim}) is larger than max_dim ({self.max_dim}); "
                              "pass --min_dim at most --max_dim")
        if isinstance(self.num_dims, bool) or self.num_dims < 0 or self.pad_seed < 0:
            raise ConfigError(f"num_dims and pad_seed must be whole numbers >= 0, got {self.num_dims!r}, "
                              f"{self.pad_seed!r}")
