"""Task accuracy of a model as it is in memory: HellaSwag, ARC (easy, challenge), MMLU and GSM8K.

Scoring is EleutherAI's lm-evaluation-harness (``lm_eval``), fed the caller's in-memory (ablated)
model through its ``HFLM`` wrapper, so prompts, choices, tokenisation and metrics are the harness's own
and figures compare with published lm-eval ones. Only the questions come from here: a Hugging Face
dataset or a local .json/.jsonl file in the same schema, handed as a ``custom_dataset`` to the
harness's built-in task definition (its YAML: ``doc_to_text``, ``doc_to_choice``, ``process_docs``,
metrics), so local files and hub data take one path.

Hand-written around the harness, and why: reading and checking task files (the harness would fail
late, with a traceback, after the model has loaded); loading hub datasets once per process behind a
few-second probe of the Hub (datasets retries an unreachable Hub for half a minute or more, and each
ablation would load them again); the seeded sample (the harness's ``limit`` takes the first questions,
so the sample goes in as its ``samples`` indices).

- Multiple choice (hellaswag, arc_easy, arc_challenge, mmlu): the summed log-probability of each
  choice's tokens after the prompt; ``acc`` takes the argmax, ``acc_norm`` the argmax of that sum divided
  by the choice's length in characters (lm-eval 0.4's ``acc_norm``; its byte-normalised variant is
  ``acc_bytes``, the same for ASCII text). For MMLU the choices are the letters A-D, so acc_norm = acc.
- MMLU is one task over ``cais/mmlu`` (config ``all``), not the harness's group of 57 subject tasks,
  so that ``samples`` questions are drawn from all subjects; each question gets its subject's prompt
  ("The following are multiple choice questions (with answers) about <subject>.").
- GSM8K: greedy generation (stopping at "Question:"), ``exact_match`` of the harness's
  "flexible-extract" filter: the last number of the generation against the number after "####" in the
  answer, both with ",", "$" and a final "." removed. Five-shot, as the harness runs it: the shots are
  drawn (seeded) from the train split, or for a local file from its other questions. Other tasks are
  zero-shot, as in the harness.
- Samples: a seeded sample of ``samples`` questions per task when it has more, the same every call.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from builders.errors import DataError
from store.errors import ConfigError, first_line

TASK_SCHEMAS: dict[str, str] = {
    "hellaswag": "hellaswag",
    "arc_easy": "arc",
    "arc_challenge": "arc",
    "mmlu": "mmlu",
    "gsm8k": "gsm8k",
}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    """Task name as recorded: hellaswag, arc_easy, arc_challenge, mmlu or gsm8k."""
    schema: str
    """The record schema: hellaswag, arc, mmlu or gsm8k."""
    path: str = ""
    """Local .json/.jsonl file of the task's questions; '' = the Hugging Face dataset."""


@dataclass(frozen=True)
class TaskResult:
    task: str
    metric: str
    """acc, acc_norm or exact_match."""
    value: float
    n: int
    """Questions scored."""


@dataclass(frozen=True)
class HubDataset:
    path: str
    name: str | None
    split: str
    fewshot_split: str | None = None


HUB_DATASETS: dict[str, HubDataset] = {
    "hellaswag": HubDataset("Rowan/hellaswag", None, "validation"),  # the test split has no labels
    "arc_easy": HubDataset("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": HubDataset("allenai/ai2_arc", "ARC-Challenge", "test"),
    "mmlu": HubDataset("cais/mmlu", "all", "test"),
    "gsm8k": HubDataset("openai/gsm8k", "main", "test", fewshot_split="train"),
}

# Fields each schema's records need (hellaswag also needs ctx, or ctx_a and ctx_b).
SCHEMA_FIELDS: dict[str, tuple[str, ...]] = {
    "hellaswag": ("activity_label", "endings", "label"),
    "arc": ("question", "choices", "answerKey"),
    "mmlu": ("question", "subject", "choices", "answer"),
    "gsm8k": ("question", "answer"),
}
_HELLASWAG_CONTEXT = "ctx (or ctx_a and ctx_b)"

# The harness's own task definition for each schema (relative to lm_eval/tasks).
_LM_EVAL_TASK_FILES: dict[str, str] = {
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc": "arc/arc_easy.yaml",  # arc_challenge.yaml only changes the dataset
    "mmlu": "mmlu/default/_default_template_yaml",
    "gsm8k": "gsm8k/gsm8k.yaml",
}
# What the harness writes per subject in mmlu_<subject>.yaml, as a template over the record's subject.
_MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {{subject.replace('_', ' ')}}.\n\n"
_GSM8K_SHOTS = 5
# (metric, harness filter) read back per schema.
_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "hellaswag": (("acc", "none"), ("acc_norm", "none")),
    "arc": (("acc", "none"), ("acc_norm", "none")),
    "mmlu": (("acc", "none"), ("acc_norm", "none")),
    "gsm8k": (("exact_match", "flexible-extract"),),
}
_HUB_PROBE_SECONDS = 3.0
_loaded_hub_splits: dict[str, dict[str, Any]] = {}  # task -> splits: the baseline and each ablation load once


# ---------------------------------------------------------------- task names and files


def resolve_tasks(entries: list[str]) -> list[TaskSpec]:
    """'hellaswag' (the Hugging Face dataset) or 'hellaswag=path/to/file.jsonl' (a local file in that
    task's schema). Checks every name before reading any file; no model is needed."""
    specs = [_task_spec(entry) for entry in entries]
    _check_unique(specs)
    for spec in specs:
        if spec.path:
            read_task_file(spec)
    return specs


def _task_spec(entry: str) -> TaskSpec:
    name, equals, path = (part.strip() for part in entry.partition("="))
    if name not in TASK_SCHEMAS:
        raise ConfigError(f"unknown accuracy task {name!r}; use one of {', '.join(TASK_SCHEMAS)}, "
                          "or NAME=FILE for a local .json/.jsonl file in that task's schema")
    if equals and not path:
        raise ConfigError(f"accuracy task {entry!r} names no file after '='; pass {name}=FILE.jsonl, "
                          f"or {name} alone for the Hugging Face dataset")
    return TaskSpec(name, TASK_SCHEMAS[name], path)


def _check_unique(specs: list[TaskSpec]) -> None:
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"accuracy task {name!r} is given {names.count(name)} times; name each task once")


def read_task_file(spec: TaskSpec) -> list[dict[str, Any]]:
    """The file's records, each checked against the task's schema, in the form the harness reads."""
    records = _read_json_records(spec.path)
    for number, record in enumerate(records, start=1):
        _check_record(record, spec, number)
    return [_harness_record(record, spec.schema) for record in records]


def _read_json_records(path: str) -> list[Any]:
    file = Path(path).expanduser()
    if file.suffix not in (".json", ".jsonl"):
        raise ConfigError(f"task file {path!r} is not .json or .jsonl; pass a JSON list of records "
                          "or a .jsonl file of one record per line")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"task file {path!r} does not exist; pass an existing .json or .jsonl file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read task file {path!r} ({first_line(error)}); check the file") from error
    records = _parse_jsonl(text, path) if file.suffix == ".jsonl" else _parse_json_list(text, path)
    if not records:
        raise ConfigError(f"task file {path!r} has no records; give it at least one question")
    return records


def _parse_jsonl(text: str, path: str) -> list[Any]:
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as error:
            raise ConfigError(f"task file {path!r} line {number} is not JSON ({_json_problem(error)}); "
                              "fix or remove it") from error
    return records


def _parse_json_list(text: str, path: str) -> list[Any]:
    try:
        records = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ConfigError(f"task file {path!r} is not JSON ({_json_problem(error)}); fix it") from error
    if not isinstance(records, list):
        raise ConfigError(f"task file {path!r} holds a JSON {type(records).__name__}, not a list of records; "
                          "write the questions as a JSON list, or one per line in a .jsonl file")
    return records


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return "nested too deeply"


def _check_record(record: Any, spec: TaskSpec, number: int) -> None:
    where = f"task file {spec.path!r} ({spec.name}, {spec.schema} schema) record {number}"
    fields = ", ".join(([_HELLASWAG_CONTEXT] if spec.schema == "hellaswag" else []) + list(SCHEMA_FIELDS[spec.schema]))
    if not isinstance(record, dict):
        raise ConfigError(f"{where} is a JSON {type(record).__name__}, not an object; "
                          f"give each record the fields {fields}")
    missing = _missing_fields(record, spec.schema)
    if missing:
        raise ConfigError(f"{where} lacks field(s) {', '.join(missing)} (it has {', '.join(record) or 'none'}); "
                          f"give each record the fields {fields}")
    problem = _VALUE_PROBLEMS[spec.schema](record)
    if problem:
        raise ConfigError(f"{where}: {problem}")


def _missing_fields(record: dict[str, Any], schema: str) -> list[str]:
    missing = [name for name in SCHEMA_FIELDS[schema] if name not in record]
    if schema == "hellaswag" and "ctx" not in record and not {"ctx_a", "ctx_b"} <= record.keys():
        missing.insert(0, _HELLASWAG_CONTEXT)
    return missing


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def _hellaswag_problem(record: dict[str, Any]) -> str:
    endings, label = record["endings"], record["label"]
    if not _is_text_list(endings):
        return f"endings is {endings!r}, not a list of texts; give the candidate endings as a list"
    if isinstance(label, bool) or str(label).strip() not in {str(i) for i in range(len(endings))}:
        return f"label {label!r} is not the index of one of its {len(endings)} endings; give 0 to {len(endings) - 1}"
    return ""


def _arc_problem(record: dict[str, Any]) -> str:
    choices, key = record["choices"], record["answerKey"]
    texts, labels = (choices.get("text"), choices.get("label")) if isinstance(choices, dict) else (None, None)
    if not (_is_text_list(texts) and _is_text_list(labels) and len(texts) == len(labels)):
        return (f"choices is {choices!r}, not {{'text': [...], 'label': [...]}} with a label per text; "
                "write the choices in ai2_arc's form")
    if key not in labels:
        return f"answerKey {key!r} is not one of its choice labels {labels}; give the correct choice's label"
    return ""


def _mmlu_problem(record: dict[str, Any]) -> str:
    choices, answer = record["choices"], record["answer"]
    if not (_is_text_list(choices) and len(choices) == 4):
        return f"choices is {choices!r}, not a list of 4 texts; give the four options A-D as a list"
    if isinstance(answer, bool) or answer not in range(4):
        return f"answer {answer!r} is not 0, 1, 2 or 3; give the index of the correct choice"
    return ""


def _gsm8k_problem(record: dict[str, Any]) -> str:
    answer = record["answer"]
    if not isinstance(answer, str) or "#### " not in answer:
        return f"answer {answer!r} does not end in '#### <number>'; end it with the final number as gsm8k does"
    return ""


_VALUE_PROBLEMS: dict[str, Callable[[dict[str, Any]], str]] = {
    "hellaswag": _hellaswag_problem, "arc": _arc_problem, "mmlu": _mmlu_problem, "gsm8k": _gsm8k_problem,
}


def _harness_record(record: dict[str, Any], schema: str) -> dict[str, Any]:
    """Only the schema's fields, in one type per field (so the records make one table)."""
    if schema != "hellaswag":
        return {name: record[name] for name in SCHEMA_FIELDS[schema]}
    has_parts = {"ctx_a", "ctx_b"} <= record.keys()  # the harness joins ctx_a and ctx_b; ctx alone is the same text
    return {"activity_label": str(record["activity_label"]), "endings": record["endings"],
            "label": str(record["label"]).strip(), "ctx_a": record["ctx_a"] if has_parts else record["ctx"],
            "ctx_b": record["ctx_b"] if has_parts else ""}


# ---------------------------------------------------------------- Hugging Face datasets


def check_tasks_loadable(tasks: list[TaskSpec]) -> None:
    """Loads (or finds cached) every hub task's dataset, to run before any model loads. When the Hub does
    not answer within a few seconds only the local cache is tried; a dataset found in neither is a
    one-line DataError saying to pass a local file as NAME=FILE or --accuracy.skip true."""
    for spec in tasks:
        if not spec.path:
            hub_splits(spec.name)


def hub_splits(task: str) -> dict[str, Any]:
    """The task's Hugging Face splits ({'test': ..., 'train': ...} for gsm8k), loaded once per process."""
    if task not in _loaded_hub_splits:
        _loaded_hub_splits[task] = _load_hub_splits(task, HUB_DATASETS[task], offline=not hub_reachable())
    return _loaded_hub_splits[task]


def _load_hub_splits(task: str, source: HubDataset, offline: bool) -> dict[str, Any]:
    import datasets

    names = {"test": source.split, **({"train": source.fewshot_split} if source.fewshot_split else {})}
    try:
        with _offline_mode(offline):
            return {key: datasets.load_dataset(source.path, source.name, split=split) for key, split in names.items()}
    except Exception as error:  # datasets raises many types for a missing or unreachable dataset
        reason = "the Hub cannot be reached and it is not cached" if offline else "it cannot be loaded"
        raise DataError(f"accuracy task {task!r} needs Hugging Face dataset {source.path!r}, but {reason} "
                        f"({first_line(error)}); pass a local file as {task}=FILE.jsonl "
                        "or --accuracy.skip true") from error


def hub_reachable(timeout_s: float = _HUB_PROBE_SECONDS) -> bool:
    """Whether the Hub answers a HEAD request (over TLS, through any configured proxy) within ``timeout_s``;
    False in offline mode. Asked first because datasets retries an unreachable Hub for half a minute or more.
    """
    import datasets
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True  # it answered, if not with 200
    except (OSError, ValueError):  # no route, no name, a timeout, a certificate not the Hub's, a bad endpoint
        return False
    return True


@contextlib.contextmanager
def _offline_mode(offline: bool) -> Iterator[None]:
    """datasets and huggingface_hub read only their caches (they read the setting at import, so set it here)."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


# ---------------------------------------------------------------- evaluation


def evaluate_tasks(model: Any, tokenizer: Any, tasks: list[TaskSpec], samples: int, seed: int,
                   batch_size: int = 8, max_new_tokens: int = 256, progress: bool = True) -> list[TaskResult]:
    """Accuracy of ``model`` as it is in memory (never reloaded), per task: acc and acc_norm for multiple
    choice, exact_match for gsm8k, over a seeded sample of ``samples`` questions (the same every call)."""
    from lm_eval.evaluator import evaluate

    with _quiet_harness(progress):
        built = {spec.name: _harness_task(spec, max_new_tokens, seed) for spec in tasks}
        chosen = {name: sample_indices(len(task.eval_docs), samples, seed) for name, task in built.items()}
        outcome = evaluate(lm=_harness_model(model, tokenizer, batch_size, progress),
                           task_dict={"tasks": built, "groups": {}, "group_map": {}},
                           samples=chosen, bootstrap_iters=0, log_samples=False)
    return [TaskResult(spec.name, metric, float(outcome["results"][spec.name][f"{metric},{kept_by}"]),
                       len(chosen[spec.name]))
            for spec in tasks for metric, kept_by in _METRICS[spec.schema]]


def sample_indices(count: int, samples: int, seed: int) -> list[int]:
    """All ``count`` question indices, or a seeded sample of ``samples`` of them, in order."""
    if count <= samples:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), samples))


def _harness_task(spec: TaskSpec, max_new_tokens: int, seed: int) -> Any:
    from lm_eval.api.task import ConfigurableTask

    task = ConfigurableTask(config=_harness_config(spec, _task_splits(spec), max_new_tokens))
    task.set_fewshot_seed(seed=seed)
    return task


def _task_splits(spec: TaskSpec) -> dict[str, Any]:
    if not spec.path:
        return hub_splits(spec.name)
    import datasets

    return {"test": datasets.Dataset.from_list(read_task_file(spec))}


def _harness_config(spec: TaskSpec, splits: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """The harness's task definition for the schema, reading ``splits`` instead of its hub dataset."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    config = copy.deepcopy(load_yaml(Path(lm_eval.tasks.__file__).parent / _LM_EVAL_TASK_FILES[spec.schema],
                                     resolve_func=True))
    for key in ("tag", "group", "include", "dataset_name", "task_alias", "fewshot_config"):
        config.pop(key, None)
    config.update(task=spec.name, custom_dataset=functools.partial(_given_splits, splits), dataset_kwargs=None,
                  test_split="test", training_split=None, validation_split=None, fewshot_split=None,
                  num_fewshot=0)
    _SCHEMA_CONFIG[spec.schema](config, splits, max_new_tokens)
    return config


def _given_splits(splits: dict[str, Any], **_metadata: Any) -> dict[str, Any]:
    """The harness calls ``custom_dataset`` with the task's metadata, which the splits do not need."""
    return splits


def _mmlu_config(config: dict[str, Any], splits: dict[str, Any], max_new_tokens: int) -> None:
    config.update(description=_MMLU_DESCRIPTION, metric_list=[
        {"metric": metric, "aggregation": "mean", "higher_is_better": True} for metric in ("acc", "acc_norm")])


def _gsm8k_config(config: dict[str, Any], splits: dict[str, Any], max_new_tokens: int) -> None:
    # Shots from the train split; a local file has only its own questions, and the harness leaves out
    # the one being asked when the shots come from the evaluated split.
    shots_split = "train" if "train" in splits else "test"
    available = len(splits[shots_split]) - (shots_split == "test")
    config.update(fewshot_split=shots_split, num_fewshot=min(_GSM8K_SHOTS, available),
                  generation_kwargs={**config["generation_kwargs"], "max_gen_toks": max_new_tokens})


def _no_change(config: dict[str, Any], splits: dict[str, Any], max_new_tokens: int) -> None:
    return None


_SCHEMA_CONFIG: dict[str, Callable[[dict[str, Any], dict[str, Any], int], None]] = {
    "hellaswag": _no_change, "arc": _no_change, "mmlu": _mmlu_config, "gsm8k": _gsm8k_config,
}


def _harness_model(model: Any, tokenizer: Any, batch_size: int, progress: bool) -> Any:
    """The harness's wrapper around the model object itself (a copy of the tokenizer, which it may give a
    pad token)."""
    from lm_eval.models.huggingface import HFLM

    harness_model = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
    if not progress:
        for request_type in ("loglikelihood", "generate_until"):
            method = getattr(harness_model, request_type)
            setattr(harness_model, request_type, functools.partial(method, disable_tqdm=True))
    return harness_model


@contextlib.contextmanager
def _quiet_harness(progress: bool) -> Iterator[None]:
    """The harness logs each step at INFO and warns about an in-memory model: keep only its errors. Without
    ``progress``, also no bars from datasets or from the harness's prompt building (which has no switch)."""
    import datasets
    import lm_eval.api.task
    from tqdm import tqdm

    harness_logger = logging.getLogger("lm_eval")
    saved_level, bars_were_off = harness_logger.level, datasets.are_progress_bars_disabled()
    harness_logger.setLevel(logging.ERROR)
    if not progress:
        datasets.disable_progress_bars()
    quiet_bars = mock.patch.object(lm_eval.api.task, "tqdm", functools.partial(tqdm, disable=True))
    try:
        with contextlib.nullcontext() if progress else quiet_bars:
            yield
    finally:
        harness_logger.setLevel(saved_level)
        if not bars_were_off:
            datasets.enable_progress_bars()
