"""Re-running the super-weight builders on a store that has records already (docs/superweights.md, "Several
models, failures, reruns"): what tests/builders/test_superweights.py and tests/analysis/test_vocab_cli.py leave
untested. A store holds one analysis per model: naming another model adds it, ``--overwrite`` redoes one model
only (its cards with it), and the vocabulary builder's ``--overwrite`` replaces the cards only; the
comprehensive export's file names follow the model's ``created`` time through all of it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from small_stores import tree_digest
from small_superweights import neuron_cards_table, weight_cards_table

from analysis import superweights as exports
from builders import _superweight_tables, superweights
from builders import vocab as vocab_builder
from store import (
    StoreLocation,
    complete_tables,
    model_attrs,
    read_table,
    superweight_labels,
    validate_store,
    write_table,
)

Runner = Callable[..., tuple[int, str, str]]
RECORDS = ("detection", "weights", "evaluations")
STAMPED = re.compile(r"_\d{8}_\d{6}\.(json|log)$")




def _args(text_file: Path, store: Path, *models: Path) -> list[str]:
    """A small CPU run: detection on 128 calibration tokens, perplexity on 256 tokens, no accuracy tasks."""
    return ["--model.name", *map(str, models), "--model.device", "cpu", "--data.name", str(text_file),
            "--detect.calibration_tokens", "128", "--detect.seq_len", "64", "--perplexity.window_len", "64",
            "--perplexity.stride", "32", "--perplexity.max_tokens", "256", "--accuracy.skip", "true",
            "--progress", "false", "--store", str(store)]


@dataclass(frozen=True)
class TwoModels:
    """A store built with GPT-2 alone, then rerun naming GPT-2 and GPT-NeoX: what each step left."""

    store: Path
    first: str  # GPT-2's label
    added: str  # GPT-NeoX's label
    digest_after_first: str  # GPT-2's node after the first run
    second_out: str
    second_code: int


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Path], text_file: Path) -> TwoModels:
    """Read only: copy ``store`` before writing to it."""
    store = tmp_path_factory.mktemp("rerun") / "sw.zarr"
    gpt2, neox = planted["gpt2"], planted["gpt_neox"]
    with pytest.MonkeyPatch.context() as patch:  # capsys is per test: catch the output by hand
        printed: list[str] = []
        patch.setattr("builtins.print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
        assert superweights.main(_args(text_file, store, gpt2)) == 0
        digest = tree_digest(store / "superweights" / gpt2.name)
        printed.clear()
        code = superweights.main(_args(text_file, store, gpt2, neox))
    return TwoModels(store, gpt2.name, neox.name, digest, "\n".join(printed), code)


def _copy(two_models: TwoModels, tmp_path: Path) -> tuple[Path, StoreLocation]:
    store = Path(shutil.copytree(two_models.store, tmp_path / "sw.zarr"))
    return store, StoreLocation(str(store))


def _stamped(folder: Path) -> list[str]:
    """The export's timestamped files (the comprehensive script's layout), relative to ``folder``."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if STAMPED.search(path.name))


def test_naming_another_model_adds_it_and_leaves_the_complete_one_alone(two_models: TwoModels) -> None:
    assert two_models.second_code == 0
    assert f"Nothing to do: model {two_models.first!r} is complete" in two_models.second_out
    location = StoreLocation(str(two_models.store))
    assert tree_digest(two_models.store / "superweights" / two_models.first) == two_models.digest_after_first
    assert superweight_labels(location) == sorted([two_models.first, two_models.added])
    assert complete_tables(location, two_models.added) == set(RECORDS)
    summary = read_table(location, "", "_summary")
    assert sorted(summary["model"].values.tolist()) == sorted([two_models.first, two_models.added])
    validate_store(location)


def test_overwrite_redoes_only_that_model_and_drops_its_cards(
        two_models: TwoModels, planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, location = _copy(two_models, tmp_path)
    label = two_models.first
    write_table(location, label, "neuron_cards", neuron_cards_table(1))  # as the vocabulary builder would
    write_table(location, label, "weight_cards", weight_cards_table(1))
    weights_before = read_table(location, label, "weights")
    exported = tmp_path / "export"
    exports.export(str(store), exported)
    first_names = _stamped(exported)
    other_before = tree_digest(store / "superweights" / two_models.added)

    code, out, _ = sw_cli(*_args(text_file, store, planted["gpt2"]))  # without --overwrite: the cards stay
    assert code == 0 and "Nothing to do" in out
    assert {"neuron_cards", "weight_cards"} <= complete_tables(location, label)

    monkeypatch.setattr(_superweight_tables, "now", lambda: "2031-02-03T04:05:06+00:00")
    code, _, err = sw_cli(*_args(text_file, store, planted["gpt2"]), "--overwrite")  # the same settings: redone
    assert code == 0, err
    assert complete_tables(location, label) == set(RECORDS)  # the cards went with the old records
    assert model_attrs(location, label)["created"] == "2031-02-03T04:05:06+00:00"
    assert read_table(location, label, "weights").equals(weights_before)  # the same model finds the same weight
    assert tree_digest(store / "superweights" / two_models.added) == other_before
    validate_store(location)

    exports.export(str(store), exported)  # the rebuilt model's files get new names, beside the earlier ones
    names = _stamped(exported)
    assert set(first_names) < set(names)
    assert sorted(set(names) - set(first_names)) == sorted(
        [f"{label}/data/analysis_20310203_040506.json", f"{label}/data/combined_analysis_20310203_040506.json",
         f"{label}/data/individual_analyses/sw_0_analysis_20310203_040506.json",
         f"{label}/logs/analysis_20310203_040506.log", "complete_analysis_20310203_040506.json"])


def _vocab(store: Path, model: Path, text_file: Path, *extra: str) -> int:
    return vocab_builder.main(["--store", str(store), "--model.name", str(model), "--model.device", "cpu",
                               "--data.name", str(text_file), "--eval.tokens", "256", "--eval.window_len", "64",
                               "--eval.stride", "32", "--progress", "false", *extra])


def test_a_vocab_overwrite_replaces_the_cards_only(two_models: TwoModels, planted: dict[str, Path],
                                                   text_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store, location = _copy(two_models, tmp_path)
    label, node = two_models.first, store / "superweights" / two_models.first
    records = {table: tree_digest(node / table) for table in RECORDS}
    created = model_attrs(location, label)["created"]
    exported = tmp_path / "export"
    exports.export(str(store), exported)
    names = _stamped(exported)

    assert _vocab(store, planted["gpt2"], text_file) == 0
    assert _vocab(store, planted["gpt2"], text_file) == 0
    assert f"Nothing to do: the cards of model {label!r} are complete" in capsys.readouterr().out
    assert _vocab(store, planted["gpt2"], text_file, "--eval.tokens", "128", "--overwrite") == 0
    assert read_table(location, label, "weight_cards").attrs["n_tokens"] == 127  # the new cards
    assert {table: tree_digest(node / table) for table in RECORDS} == records
    assert model_attrs(location, label)["created"] == created
    validate_store(location)

    exports.export(str(store), exported)
    assert _stamped(exported) == names  # the same model build: the same names, replaced in place
