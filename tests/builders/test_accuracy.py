"""Task accuracy (builders/_accuracy.py) against values computed by hand on small local task files.

The hand computation scores each choice with the model directly (summed log-probabilities of the choice's
tokens after the prompt, written out below as lm-eval's task definitions build it), so a change in the
harness's prompts or normalisation shows up here.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from builders import _accuracy
from builders._accuracy import TaskResult, TaskSpec, evaluate_tasks, resolve_tasks, sample_indices
from builders.errors import DataError
from store.errors import ConfigError

TASKS = Path(__file__).parent.parent / "data" / "tasks"
SEED = 42


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model: Callable[[str], Path]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model("llama")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _records(name: str) -> list[dict[str, Any]]:
    path = TASKS / name
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- hand computation


@torch.no_grad()
def _logprob(model: Any, tokenizer: Any, context: str, continuation: str) -> float:
    """Sum of log p(token | everything before it) over the continuation's tokens (byte tokenizer: the
    context's tokens are a prefix of the whole text's)."""
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context_ids), len(whole)))


def _hellaswag_question(record: dict[str, Any]) -> tuple[str, list[str], int]:
    context = f"{record['ctx_a']} {record['ctx_b'].capitalize()}" if "ctx_a" in record else record["ctx"]
    return f"{record['activity_label']}: {context.strip()}", record["endings"], int(record["label"])


def _arc_question(record: dict[str, Any]) -> tuple[str, list[str], int]:
    choices = record["choices"]
    return f"Question: {record['question']}\nAnswer:", choices["text"], choices["label"].index(record["answerKey"])


def _mmlu_question(record: dict[str, Any]) -> tuple[str, list[str], int]:
    subject = record["subject"].replace("_", " ")
    options = "".join(f"{letter}. {text}\n" for letter, text in zip("ABCD", record["choices"], strict=True))
    prompt = (f"The following are multiple choice questions (with answers) about {subject}.\n\n"
              f"{record['question'].strip()}\n{options}Answer:")
    return prompt, list("ABCD"), record["answer"]


QUESTIONS = {"hellaswag": _hellaswag_question, "arc": _arc_question, "mmlu": _mmlu_question}


def _hand_accuracy(model: Any, tokenizer: Any, schema: str, records: list[dict[str, Any]]) -> dict[str, float]:
    """acc: argmax of the summed log-probs; acc_norm: argmax of that sum over the choice's characters."""
    right, right_norm = 0, 0
    for record in records:
        prompt, choices, gold = QUESTIONS[schema](record)
        scores = [_logprob(model, tokenizer, prompt, " " + choice) for choice in choices]
        per_char = [score / len(choice) for score, choice in zip(scores, choices, strict=True)]
        right += max(range(len(scores)), key=scores.__getitem__) == gold
        right_norm += max(range(len(per_char)), key=per_char.__getitem__) == gold
    return {"acc": right / len(records), "acc_norm": right_norm / len(records)}


# ---------------------------------------------------------------- multiple choice


@pytest.mark.parametrize(("task", "file"), [
    ("hellaswag", "hellaswag.jsonl"), ("arc_easy", "arc_easy.json"), ("mmlu", "mmlu.jsonl"),
])
def test_multiple_choice_matches_hand_computation(model_and_tokenizer: tuple[Any, Any], task: str,
                                                  file: str) -> None:
    model, tokenizer = model_and_tokenizer
    [spec] = resolve_tasks([f"{task}={TASKS / file}"])
    results = evaluate_tasks(model, tokenizer, [spec], samples=100, seed=SEED, batch_size=3, progress=False)
    expected = _hand_accuracy(model, tokenizer, spec.schema, _records(file))
    assert results == [TaskResult(task, metric, pytest.approx(value), len(_records(file)))
                       for metric, value in expected.items()]


def test_length_normalisation_changes_the_choice(model_and_tokenizer: tuple[Any, Any]) -> None:
    """The hellaswag file pairs short and long endings, so acc and acc_norm differ: the test above
    checks the normalisation, not two copies of one number."""
    expected = _hand_accuracy(*model_and_tokenizer, "hellaswag", _records("hellaswag.jsonl"))
    assert expected["acc"] != expected["acc_norm"]


def test_seeded_sample_is_scored(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = model_and_tokenizer
    specs = resolve_tasks([f"arc_challenge={TASKS / 'arc_easy.json'}"])
    results = evaluate_tasks(model, tokenizer, specs, samples=2, seed=7, progress=False)
    chosen = [_records("arc_easy.json")[i] for i in sample_indices(4, 2, 7)]
    expected = _hand_accuracy(model, tokenizer, "arc", chosen)
    assert [(r.task, r.metric, r.n) for r in results] == [("arc_challenge", "acc", 2), ("arc_challenge", "acc_norm", 2)]
    assert [r.value for r in results] == pytest.approx(list(expected.values()))


def test_sample_indices_are_seeded() -> None:
    assert sample_indices(5, 10, SEED) == [0, 1, 2, 3, 4]
    first = sample_indices(1000, 100, SEED)
    assert first == sample_indices(1000, 100, SEED) and first == sorted(set(first)) and len(first) == 100
    assert first != sample_indices(1000, 100, SEED + 1)


def test_model_is_evaluated_as_it_is_in_memory(tiny_model: Callable[[str], Path]) -> None:
    """A weight zeroed in place changes the scores (the model is not reloaded from its folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model("llama")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every token equally likely: the first of equal scores wins
    specs = resolve_tasks([f"arc_easy={TASKS / 'arc_easy.json'}"])
    results = evaluate_tasks(model, tokenizer, specs, samples=10, seed=SEED, progress=False)
    assert [r.value for r in results] == pytest.approx(list(_hand_accuracy(model, tokenizer, "arc",
                                                                          _records("arc_easy.json")).values()))
    # Equal per-token scores: acc takes the fewest tokens (never right in this file), acc_norm the most
    # characters (right for questions 3 and 4).
    assert [r.value for r in results] == [0.0, 0.5]


# ---------------------------------------------------------------- GSM8K


# Planted greedy continuations for tests/data/tasks/gsm8k.jsonl, and whether lm-eval's gsm8k counts each
# as right: the final number of the reply (up to the stop sequence "Question:") against the number after
# "####", both without ",", "$" and a trailing ".".
PLANTED = {
    "Ann buys 2 bikes": (" She pays 1,234 dollars.", True),  # "#### 1,234" -> 1234
    "A pen costs": (" Both cost $5.", True),  # "$5." -> 5
    "A cup of tea": (" Both cost $5.00", False),  # "5.00" is not "5"
    "Tom has 3 apples": (" 3 and 4 make 7 fruits", True),  # the final number, not the first
    "A box holds 6 eggs": (" 13.\n\nQuestion: what is 12?", False),  # generation stops at "Question:"
    "It is 2 degrees": (" It is very cold.", False),  # no number
}


def _plant_generation(model: Any, tokenizer: Any, prompts: list[str]) -> None:
    """Greedy generation replaced by the planted reply to the last question of the prompt."""

    def generate(input_ids: torch.Tensor, **_: Any) -> torch.Tensor:
        rows = []
        for row in input_ids:
            prompt = tokenizer.decode(row, skip_special_tokens=True)
            prompts.append(prompt)
            asked = prompt.rsplit("Question: ", 1)[1]
            reply = next(text for start, (text, _) in PLANTED.items() if asked.startswith(start))
            rows.append(torch.cat([row, torch.tensor(tokenizer(reply)["input_ids"])]))
        return torch.stack(rows)

    model.generate = generate


def test_gsm8k_exact_match_of_final_number(tiny_model: Callable[[str], Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, prompts = tiny_model("llama"), []
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    _plant_generation(model, tokenizer, prompts)
    specs = resolve_tasks([f"gsm8k={TASKS / 'gsm8k.jsonl'}"])
    results = evaluate_tasks(model, tokenizer, specs, samples=100, seed=SEED, batch_size=1, max_new_tokens=32,
                             progress=False)
    right = [matches for _, matches in PLANTED.values()]
    assert results == [TaskResult("gsm8k", "exact_match", pytest.approx(sum(right) / len(right)), len(right))]
    # Five shots from the file's other questions, then the question asked.
    assert all(prompt.count("Question: ") == 6 and prompt.endswith("\nAnswer:") for prompt in prompts)
    asked = [prompt.rsplit("Question: ", 1)[1] for prompt in prompts]
    assert all(prompt.count(question) == 1 for prompt, question in zip(prompts, asked, strict=True))


def test_hub_tasks_load_once_and_score_like_local_files(model_and_tokenizer: tuple[Any, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub tasks take the same path as local files: the Hub's splits stand in for the file (here
    datasets.load_dataset is faked with the local records, as the Hub cannot be reached from tests)."""
    import datasets

    model, tokenizer = model_and_tokenizer
    files = {"cais/mmlu": "mmlu.jsonl", "openai/gsm8k": "gsm8k.jsonl"}
    loads: list[tuple[str, str | None, str]] = []

    def load_dataset(path: str, name: str | None, split: str) -> Any:
        loads.append((path, name, split))
        return datasets.Dataset.from_list(_records(files[path]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(_accuracy, "hub_reachable", lambda: True)
    monkeypatch.setattr(_accuracy, "_loaded_hub_splits", {})
    specs = resolve_tasks(["mmlu", "gsm8k"])
    _accuracy.check_tasks_loadable(specs)
    results = evaluate_tasks(model, tokenizer, specs[:1], samples=100, seed=SEED, progress=False)
    assert loads == [("cais/mmlu", "all", "test"), ("openai/gsm8k", "main", "test"),
                     ("openai/gsm8k", "main", "train")]  # loaded by the check, not again
    expected = _hand_accuracy(model, tokenizer, "mmlu", _records("mmlu.jsonl"))
    assert [r.value for r in results] == pytest.approx(list(expected.values()))


# ---------------------------------------------------------------- bad input


def _one_line(error: pytest.ExceptionInfo[Exception]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip()
    return message


def _write(path: Path, records: list[Any]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def test_task_names_and_files_resolve() -> None:
    local = f"mmlu={TASKS / 'mmlu.jsonl'}"
    assert resolve_tasks(["hellaswag", "arc_challenge", local]) == [
        TaskSpec("hellaswag", "hellaswag"), TaskSpec("arc_challenge", "arc"),
        TaskSpec("mmlu", "mmlu", str(TASKS / "mmlu.jsonl"))]


@pytest.mark.parametrize(("entries", "says"), [
    (["hellaswag", "hellaswagg"], ["'hellaswagg'", "hellaswag, arc_easy, arc_challenge, mmlu, gsm8k"]),
    (["arc_easy="], ["names no file", "arc_easy=FILE.jsonl"]),
    (["mmlu", "mmlu"], ["'mmlu' is given 2 times"]),
    (["gsm8k=no/such/file.jsonl"], ["'no/such/file.jsonl' does not exist"]),
    (["gsm8k=questions.csv"], ["'questions.csv' is not .json or .jsonl"]),
    # an ARC file given as hellaswag
    ([f"hellaswag={TASKS / 'arc_easy.json'}"],
     ["arc_easy.json", "record 1", "lacks field(s) ctx (or ctx_a and ctx_b), activity_label, endings, label"]),
])
def test_bad_task_entries(entries: list[str], says: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_tasks(entries)
    message = _one_line(error)
    assert all(part in message for part in says), message


def test_unknown_name_is_reported_before_files_are_read() -> None:
    with pytest.raises(ConfigError, match="'gsm9k'"):
        resolve_tasks(["gsm8k=no/such/file.jsonl", "gsm9k"])


GOOD_MMLU = {"question": "Q?", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 0}


@pytest.mark.parametrize(("task", "records", "says"), [
    ("mmlu", [GOOD_MMLU, {**GOOD_MMLU, "subject": None} | {"answer": 4}], "record 2: answer 4 is not 0, 1, 2 or 3"),
    ("mmlu", [GOOD_MMLU, {k: v for k, v in GOOD_MMLU.items() if k != "subject"}], "record 2 lacks field(s) subject"),
    ("mmlu", [{**GOOD_MMLU, "choices": ["a", "b"]}], "not a list of 4 texts"),
    ("mmlu", [["not", "an", "object"]], "record 1 is a JSON list, not an object"),
    ("arc_easy", [{"question": "Q?", "choices": {"text": ["x"], "label": ["A"]}, "answerKey": "B"}],
     "answerKey 'B' is not one of its choice labels"),
    ("hellaswag", [{"ctx": "c", "activity_label": "a", "endings": ["x", "y"], "label": "2"}],
     "label '2' is not the index of one of its 2 endings"),
    ("gsm8k", [{"question": "Q?", "answer": "42"}], "does not end in '#### <number>'"),
])
def test_records_in_the_wrong_schema(tmp_path: Path, task: str, records: list[Any], says: str) -> None:
    path = _write(tmp_path / "task.jsonl", records)
    with pytest.raises(ConfigError) as error:
        resolve_tasks([f"{task}={path}"])
    message = _one_line(error)
    assert says in message and repr(path) in message, message


@pytest.mark.parametrize(("name", "text", "says"), [
    ("broken.jsonl", '{"question": "Q?"}\n{oops\n', "line 2 is not JSON"),
    ("broken.json", '[{"question": "Q?"},', "is not JSON"),
    ("object.json", '{"question": "Q?"}', "holds a JSON dict, not a list of records"),
    ("empty.jsonl", "\n\n", "has no records"),
])
def test_unreadable_task_files(tmp_path: Path, name: str, text: str, says: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as error:
        resolve_tasks([f"gsm8k={tmp_path / name}"])
    assert says in _one_line(error)


def test_unreachable_hub_gives_one_line_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and nothing cached: one line naming the fix, without datasets' half minute of retries."""
    monkeypatch.setitem(_accuracy.HUB_DATASETS, "hellaswag",
                        _accuracy.HubDataset("activation-datasets-tests/no-such-dataset", None, "validation"))
    monkeypatch.setattr(_accuracy, "hub_reachable", lambda: False)
    monkeypatch.setattr(_accuracy, "_loaded_hub_splits", {})
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        _accuracy.check_tasks_loadable(resolve_tasks(["hellaswag", f"mmlu={TASKS / 'mmlu.jsonl'}"]))
    message = _one_line(error)
    assert "hellaswag=FILE.jsonl" in message and "--accuracy.skip true" in message, message
    assert time.monotonic() - started < 10


def test_hub_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts the connection and never answers: the probe gives up after its timeout."""
    from huggingface_hub import constants

    with socket.create_server(("127.0.0.1", 0)) as silent:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"https://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        assert not _accuracy.hub_reachable(timeout_s=0.5)
        assert time.monotonic() - started < 3


def test_offline_mode_skips_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not _accuracy.hub_reachable()
