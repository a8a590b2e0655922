"""docs/migrating.md, run: every ``python -m`` command of its ``bash`` blocks, in order, on tiny models, local
text and small sizes; then each export's files, field names and nesting against the reference tools'
documented examples (tests/data/reference_examples/, copied from ../shared/reference-tools/).

The only changes to a documented command are the ones ``Offline`` makes (docs/migrating.md lists them):
hub model and dataset names become local tiny models and a local corpus, token, sample, window and
generation counts shrink, accuracy tasks are read from local files, and every model runs on the CPU.
Anything else in the doc that does not run fails here.
"""

from __future__ import annotations

import importlib
import json
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "migrating.md"
EXAMPLES = Path(__file__).parent / "data" / "reference_examples"
TASKS = Path(__file__).parent / "data" / "tasks"
# hub model -> (tiny family, planted with a super weight?)
MODELS = {"Qwen/Qwen3-0.6B-Base": ("qwen3", False), "sshleifer/tiny-gpt2": ("gpt2", False),
          "meta-llama/Llama-3.2-1B-Instruct": ("llama", False), "facebook/opt-125m": ("opt", False),
          "EleutherAI/pythia-12b": ("gpt_neox", False), "allenai/OLMo-1B-0724-hf": ("llama", True),
          "mistralai/Mistral-7B-v0.1": ("gpt_neox", True), "meta-llama/Llama-2-7b-hf": ("llama", False),
          "Qwen/Qwen1.5-MoE-A2.7B": ("qwen_moe", True)}
SMALLER = {"--data.max_tokens": "512", "--data.max_docs": "24", "--data.num_samples": "8", "--tokens": "256",
           "--window-len": "64", "--stride": "32", "--bootstrap": "10", "--perplexity-samples": "4",
           "--accuracy-samples": "4", "--generate.max_new_tokens": "4", "--router-analysis-samples": "4",
           "--accuracy.max_new_tokens": "16"}
TASK_FILES = {"hellaswag": "hellaswag.jsonl", "arc_easy": "arc_easy.json", "mmlu": "mmlu.jsonl", "gsm8k": "gsm8k.jsonl"}
WITH_A_MODEL = {"builders.pipeline", "builders.collect", "builders.capture", "builders.vectors", "builders.superweights",
                "builders.vocab"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(section, argv after ``python -m``) of every command in the doc's ``bash`` blocks, in order."""
    commands, section, in_bash = [], "", False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            in_bash = line.strip() == "```bash" and not in_bash
        elif in_bash and line.startswith("python -m "):
            commands.append((section, shlex.split(line)[2:]))
    return commands


def _flag_values(argv: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(flag, its values) in order; the module and positionals come as ('', values)."""
    flag, values = "", []
    for token in argv:
        if token.startswith("--"):
            yield flag, values
            flag, values = token, []
        else:
            values.append(token)
    yield flag, values


class Offline:
    """What makes a documented command run here: local models, a local corpus, small sizes."""

    def __init__(self, tiny_model: Callable[[str], Path], planted: dict[str, Path], corpus: Path) -> None:
        self.tiny_model, self.planted, self.corpus = tiny_model, planted, corpus

    def model(self, name: str) -> str:
        family, with_super_weight = MODELS[name]
        return str(self.planted[family] if with_super_weight else self.tiny_model(family))

    def value(self, flag: str, values: list[str]) -> list[str]:
        if flag in ("--model.name", "--models"):
            return [self.model(value) for value in values]
        if flag in ("--data.name", "--dataset"):
            return [str(self.corpus)]
        if flag == "--accuracy-tasks":
            return [f"{task}={TASKS / TASK_FILES[task]}" for task in values]
        if flag == "--config":
            return [str(REPO / values[0])]
        return [SMALLER[flag]] if flag in SMALLER else values

    def __call__(self, argv: list[str]) -> list[str]:
        module, result = argv[0], []
        for flag, values in _flag_values(argv[1:]):
            if flag == "--data.subset":
                continue  # a hub dataset's configuration; the local corpus has none
            result += ([flag] if flag else []) + self.value(flag, values)
        if module == "builders.pipeline":  # its config names a hub model, corpus and 10M tokens
            result += ["--data.name", str(self.corpus), "--data.max_tokens", "512", "--data.max_seq_len", "128",
                       "--data.batch_size", "2", "--model.dtype", "float32", "--model.device_map", "",
                       "--stats.channels", "2", "--stats.metrics", "rms", "kurtosis", "channel_wise"]
            if "--model.name" not in result:
                result += ["--model.name", str(self.tiny_model("qwen3"))]
        if module == "builders.superweights":
            if "--accuracy-tasks" not in result:  # the default tasks are hub datasets
                result += ["--accuracy-tasks", *(f"{task}={TASKS / name}" for task, name in TASK_FILES.items())]
            # a random tiny model never ends a GSM8K answer early: the default 256 tokens would all be generated
            result += ["--accuracy.max_new_tokens", SMALLER["--accuracy.max_new_tokens"]]
        if module == "builders.vocab" and "--window-len" not in result:  # its default window, 1024, outgrows 256 tokens
            result += ["--window-len", SMALLER["--window-len"], "--stride", SMALLER["--stride"]]
        if module in WITH_A_MODEL:
            result += ["--model.device", "cpu"]
        return [module, *result]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "documents.jsonl"
    texts = [text[:1500] for text in list(topics.values())[:40]]
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path], planted: dict[str, Path],
             corpus: Path) -> Path:
    """A folder where every documented command has run, in order (relative paths land in it)."""
    folder = tmp_path_factory.mktemp("migrating")
    (folder / "outputs").mkdir()
    (folder / "outputs" / "text.txt").write_text("A text to pool, read by --file.", encoding="utf-8")  # the doc's input
    offline = Offline(tiny_model, planted, corpus)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for section, argv in documented_commands():
            command = offline(argv)
            code = importlib.import_module(command[0]).main(command[1:])
            assert code == 0, f"{section}: python -m {shlex.join(argv)} exited {code}"
    return folder


def test_every_tool_has_its_commands_documented() -> None:
    sections = {section for section, _ in documented_commands()}
    assert {"ZipfActivation", "activationCaptureLib", "Activation Vector Project", "Super Weight scripts"} <= sections
    modules = {argv[0] for _, argv in documented_commands()}
    assert {"builders.pipeline", "builders.capture", "builders.integers", "builders.hypercube", "builders.vectors",
            "builders.superweights", "builders.vocab", "analysis.fit", "analysis.plot", "analysis.export",
            "analysis.superweights", "analysis.vocab"} <= modules


def includes(ours: Any, reference: Any, where: str = "") -> list[str]:
    """Where ``ours`` lacks a key of ``reference`` or nests it otherwise (dicts by key, lists by first item)."""
    if isinstance(reference, dict):
        if not isinstance(ours, dict):
            return [f"{where or '/'} is {type(ours).__name__}, not an object"]
        missing = [f"{where}/{key} missing" for key in reference if key not in ours]
        return missing + [problem for key in reference if key in ours
                          for problem in includes(ours[key], reference[key], f"{where}/{key}")]
    if isinstance(reference, list) and reference:
        if not isinstance(ours, list) or not ours:
            return [f"{where} is not a non-empty list"]
        return includes(ours[0], reference[0], f"{where}[0]")
    return []


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert found, f"nothing matches {pattern} under {folder}"
    return found[0]


COMPARISONS = {"lognormal", "exponential", "truncated_power_law"}  # the three its README names


@pytest.mark.parametrize("folder", ["smoke_test", "exported"])  # the one-shot run's, then analysis.export's
def test_zipf_activation_results_folder(migrated: Path, folder: str) -> None:
    results = migrated / "results" / folder
    arrays = np.load(only(results / "statistics", "layer_*.npz"))
    tokens = arrays["rms"].shape[0]
    assert {"rms", "kurtosis", "channel_wise"} <= set(arrays.files) and arrays["channel_wise"].shape == (tokens, 2)
    assert all(arrays[name].shape == (tokens,) for name in arrays.files if name != "channel_wise")
    fitted = json.loads((results / "fits" / "fit_results.json").read_text())
    assert set(fitted) == {path.stem for path in (results / "statistics").glob("*.npz")}
    reference = example("fit_results.json")["layer_14"]
    for layer, metrics in fitted.items():
        assert includes(metrics, reference) == [], layer
        assert all(COMPARISONS <= set(metrics[name]["comparisons"]) for name in ("rms", "kurtosis")), layer
        channels = metrics["channel_wise"]  # {hidden channel: the same record}
        assert len(channels) == 2 and all(includes(record, reference["rms"]) == [] for record in channels.values())


def test_zipf_activation_plots(migrated: Path) -> None:
    plots = migrated / "results" / "smoke_test" / "plots"
    for kind in ("rank_frequency", "ccdf", "multi_layer"):
        assert list((plots / kind).rglob("*.png")), kind
    for dashboard in ("alpha_dashboard", "slope_dashboard", "channel_heatmap"):
        assert list(plots.glob(f"*_{dashboard}.png")), dashboard
    for kind in ("rank_frequency", "ccdf"):  # --channels
        assert list((plots / "channels" / kind).rglob("*_channel_*.png")), kind


def test_capture_exports_have_the_reference_fields(migrated: Path) -> None:
    output = migrated / "output"
    stats = json.loads(only(output, "*_stats.json").read_text())
    assert includes(stats, example("capture_stats.json")) == []
    [report] = json.loads((output / "report.json").read_text())  # the stdout report, kept by --report
    assert includes(report, example("capture_stats.json")) == []
    with safe_open(str(only(output, "*_activations.safetensors")), framework="pt") as tensors:
        fields = set(tensors.metadata()) | {name.split(".")[0] for name in tensors.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
        assert tensors.get_tensor("token_sequence").ndim == 2
    assert set(example("activations_pt.json")) <= fields
    described = json.loads(only(output, "*_activations.json").read_text())
    assert {"model_name", "prompt", "generated_text"} <= set(described)
    integers = only(output, "*_int_activations_0000")
    conversion = json.loads((integers / "conversion_metadata.json").read_text())
    assert includes(conversion, example("conversion_metadata.json")) == []
    for entry in conversion["layers"]:  # one object array of Python ints per layer, with the batch axis
        layer = np.load(integers / entry["npy_file"], allow_pickle=True)
        assert layer.dtype == object and list(layer.shape) == entry["original_shape"]
        assert isinstance(layer.flat[0], int) and layer.flat[0] == entry["sample_converted"]
    assert {"embedding.npy", "layer_0.npy"} <= {path.name for path in integers.glob("*.npy")}
    converted = json.loads(only(migrated / "converted", "*_int_activations_*/conversion_metadata.json").read_text())
    assert converted["conversion"]["scale_factor"] == 16 and converted["conversion"]["quantize_pct"] == 50
    cube_folder = only(output, "*_int_activations_0000_hypercube")
    cube = json.loads((cube_folder / "hypercube_metadata.json").read_text())
    assert includes(cube, example("hypercube_metadata.json")) == []
    assert list(np.load(cube_folder / "hypercube.npy", allow_pickle=True).shape) == cube["hypercube"]["dimensions"]
    assert len(list((migrated / "output_two").glob("*_activations.safetensors"))) == 2  # two models, OPT one


def test_vector_exports_and_diagnostics(migrated: Path) -> None:
    outputs = migrated / "outputs"
    metadata = json.loads((outputs / "vectors" / "activation_vectors_short_metadata.json").read_text())
    assert {"extraction_parameters", "model_facts", "shape", "dtype"} <= set(metadata)
    assert metadata["extraction_parameters"]["vectors"]["center_residual"] is True
    with safe_open(str(outputs / "vectors" / "activation_vectors_short.safetensors"), framework="np") as tensors:
        vectors = tensors.get_tensor(next(name for name in tensors.keys() if name != "doc_index"))  # noqa: SIM118
    assert vectors.dtype == np.float16 and list(vectors.shape) == metadata["shape"]  # the reference's float16
    assert len(metadata["doc_ids"]) == 8  # the seeded sample of --data.num_samples
    assert len(list((outputs / "each").glob("activation_vector_short_*.safetensors"))) == 8
    assert {p.name for p in (outputs / "csv").glob("*.csv")} == {"vectors_short_raw.csv", "vectors_short_centered.csv"}
    for folder in ("diagnostics", "diagnostics_file"):
        assert (outputs / folder / "diagnostics.png").exists() and (outputs / folder / "diagnostics.csv").exists()


def test_super_weight_exports_have_the_reference_fields(migrated: Path) -> None:
    comprehensive = migrated / "results" / "comprehensive_super_weight_analysis"
    assert only(comprehensive, "complete_analysis_*.json") and only(comprehensive, "summary_plots/model_comparison.png")
    model = only(comprehensive, "*/data").parent
    for pattern in ("data/analysis_*.json", "data/combined_analysis_*.json",
                    "data/individual_analyses/sw_0_analysis_*.json", "logs/*.log",
                    *(f"plots/{name}.png" for name in ("detection_iterations", "super_weight_distribution",
                                                        "impact_comparison", "combined_analysis"))):
        only(model, pattern)
    compared = json.loads(only(migrated / "results" / "comparative_study", "complete_analysis_*.json").read_text())
    assert len(compared["model_results"]) == 3  # the comparative study's three models in one store
    only(migrated / "results" / "moe_analysis", "*/plots/moe_analysis.png")  # the MoE run's router figure
    vocab = migrated / "vocab_runs"
    for name in ("run_config.json", "cross_model_summary.json", "README.md"):
        assert (vocab / name).exists(), name
    label = only(vocab, "*/metrics").parent
    assert {path.name for path in (label / "summaries").glob("*.csv")} == {"neurons.csv", "super_weights.csv"}
    [card] = [json.loads(line) for line in (label / "metrics" / "super_weights" / "super_weights.jsonl").read_text().splitlines()]
    assert includes(card, example("super_weight_card.json")) == []
    neurons = [json.loads(line) for line in (label / "metrics" / "neurons" / "neurons.jsonl").read_text().splitlines()]
    assert neurons and includes(neurons[0], example("neuron_card.json")) == []
    assert (label / "run_config.json").exists() and (label / "analysis.log").exists()
    assert list((migrated / "detailed_vocab_analysis").glob("*/metrics/super_weights/super_weights.jsonl"))  # --output-dir
    assert len(json.loads((migrated / "vocab_compare" / "cross_model_summary.json").read_text())["models"]) == 2


def test_the_shape_check_can_fail() -> None:
    reference = example("capture_stats.json")
    broken = {**reference, "layer_stats": [{key: value for key, value in reference["layer_stats"][0].items()
                                             if key != "precision_bits"}]}
    assert includes(broken, reference) == ["/layer_stats[0]/precision_bits missing"]
