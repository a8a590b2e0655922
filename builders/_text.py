"""Documents from the bundled corpus, local files, or a Hugging Face dataset, in a fixed order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builders._config import BUNDLED_CORPUS, DataConfig
from builders.errors import DataError
from store.errors import first_line

_TEXT_SUFFIXES = (".txt", ".md")
_JSONL_SUFFIXES = (".jsonl", ".json")


def describe(config: DataConfig) -> dict[str, str]:
    """What the store records about its text source."""
    return {"name": config.name, "subset": config.subset, "split": config.split, "text_field": config.text_field}


def iter_documents(config: DataConfig) -> Iterator[str]:
    """Document texts in a deterministic order; empty documents are kept as ''."""
    if config.name == BUNDLED_CORPUS:
        return _bundled()
    path = Path(config.name).expanduser()
    if path.exists():
        return _local(path, config.text_field)
    if config.name.startswith((".", "/", "~")) or path.suffix in (*_TEXT_SUFFIXES, *_JSONL_SUFFIXES):
        raise DataError(
            f"data file {config.name!r} does not exist; pass an existing .txt/.jsonl file or folder, "
            f"a Hugging Face dataset id, or {BUNDLED_CORPUS}"
        )
    return _hugging_face(config)


def _bundled() -> Iterator[str]:
    """Python's own documentation topics (about 465K characters of English), by topic name."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _local(path: Path, text_field: str) -> Iterator[str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    usable = [p for p in files if p.suffix in (*_TEXT_SUFFIXES, *_JSONL_SUFFIXES)]
    if not usable:
        raise DataError(f"no .txt, .md or .jsonl files in {str(path)!r}; point --data.name at text files")
    for file in usable:
        try:
            if file.suffix in _TEXT_SUFFIXES:
                yield file.read_text(encoding="utf-8")
            else:
                yield from _jsonl(file, text_field)
        except UnicodeDecodeError as error:
            raise DataError(
                f"{str(file)!r} is not UTF-8 text (byte {error.start}); convert it or remove it"
            ) from error
        except OSError as error:
            raise DataError(f"cannot read {str(file)!r} ({first_line(error)}); check the file") from error


def _jsonl(file: Path, text_field: str) -> Iterator[str]:
    with open(file, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield text_of(_json_record(line, file, number), text_field, f"{file.name} line {number}")


def _json_record(line: str, file: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{str(file)!r} line {number} is not JSON ({error.msg}); fix or remove it") from error
    except RecursionError as error:  # brackets nested about a thousand deep
        raise DataError(f"{str(file)!r} line {number} nests too deeply to read; fix or remove it") from error


def text_of(record: Any, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        fields = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(
            f"record at {where} has no field {text_field!r} (fields: {fields}); "
            "pass the right one with --data.text_field"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"field {text_field!r} at {where} is {type(text).__name__}, not text; pick a text field")
    return text


def _hugging_face(config: DataConfig) -> Iterator[str]:
    try:
        import datasets
    except ImportError as error:
        raise DataError(
            f"{config.name!r} is not a local file; Hugging Face datasets need 'pip install datasets'"
        ) from error
    try:
        dataset = datasets.load_dataset(
            config.name, config.subset or None, split=config.split, streaming=True
        )
    except Exception as error:  # noqa: BLE001 - datasets raises many types for a bad name
        raise DataError(
            f"cannot open dataset {config.name!r} (subset {config.subset!r}, split {config.split!r}): "
            f"{first_line(error)}; "
            "check --data.name, --data.subset and --data.split"
        ) from error
    for number, record in enumerate(dataset):
        yield text_of(record, config.text_field, f"{config.name} record {number}")
