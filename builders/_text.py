"""Documents from the bundled corpus, local files, or a Hugging Face dataset, in a fixed order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builders._config import BUNDLED_CORPUS, TextSourceConfig
from builders.errors import DataError
from store.errors import first_line

_TEXT_SUFFIXES = (".txt", ".md")
_JSONL_SUFFIXES = (".jsonl", ".json")


def describe(config: TextSourceConfig) -> dict[str, str]:
    """What the store records about its text source."""
    return {"name": config.name, "subset": config.subset, "split": config.split, "text_field": config.text_field}


def iter_documents(config: TextSourceConfig) -> Iterator[str]:
    """Document texts in a deterministic order; empty documents are kept as ''."""
    return (text for _, text in iter_records(config))


def iter_records(config: TextSourceConfig, id_field: str = "") -> Iterator[tuple[str, str]]:
    """(document id, text) in a deterministic order. Ids: the topic name (bundled corpus), the file's
    path under the folder given (.txt/.md), ``<file>:<line>`` (.jsonl) or the record number (datasets),
    unless ``id_field`` names a record field (.jsonl, datasets) holding them."""
    if config.name == BUNDLED_CORPUS:
        if id_field:
            raise DataError(f"the bundled corpus has no records, so no field {id_field!r}; its documents are "
                            "named by topic: leave --data.id_field empty")
        return _bundled()
    path = Path(config.name).expanduser()
    if path.exists():
        return _local(path, config.text_field, id_field)
    if config.name.startswith((".", "/", "~")) or path.suffix in (*_TEXT_SUFFIXES, *_JSONL_SUFFIXES):
        raise DataError(
            f"data file {config.name!r} does not exist; pass an existing .txt/.jsonl file or folder, "
            f"a Hugging Face dataset id, or {BUNDLED_CORPUS}"
        )
    return _hugging_face(config, id_field)


def _bundled() -> Iterator[tuple[str, str]]:
    """Python's own documentation topics (about 465K characters of English), by topic name."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield name, topics[name]


def _local(path: Path, text_field: str, id_field: str) -> Iterator[tuple[str, str]]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    usable = [p for p in files if p.suffix in (*_TEXT_SUFFIXES, *_JSONL_SUFFIXES)]
    if not usable:
        raise DataError(f"no .txt, .md or .jsonl files in {str(path)!r}; point --data.name at text files")
    for file in usable:
        try:
            name = file.relative_to(path).as_posix() if path.is_dir() else file.name
            if file.suffix in _TEXT_SUFFIXES:
                _check_no_id_field(file, id_field)
                yield name, file.read_text(encoding="utf-8")
            else:
                yield from _jsonl(file, name, text_field, id_field)
        except UnicodeDecodeError as error:
            raise DataError(
                f"{str(file)!r} is not UTF-8 text (byte {error.start}); convert it or remove it"
            ) from error
        except OSError as error:
            raise DataError(f"cannot read {str(file)!r} ({first_line(error)}); check the file") from error


def _check_no_id_field(file: Path, id_field: str) -> None:
    if id_field:
        raise DataError(f"{str(file)!r} is plain text, with no field {id_field!r}: a text document is named by "
                        "its path; leave --data.id_field empty, or give .jsonl records")


def _jsonl(file: Path, name: str, text_field: str, id_field: str) -> Iterator[tuple[str, str]]:
    with open(file, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                record, where = _json_record(line, file, number), f"{file.name} line {number}"
                yield id_of(record, id_field, where, f"{name}:{number}"), text_of(record, text_field, where)


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


def id_of(record: Any, id_field: str, where: str, default: str) -> str:
    """The record's ``id_field`` as text, or ``default`` when no id field is configured."""
    if not id_field:
        return default
    if not isinstance(record, dict) or id_field not in record:
        fields = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"record at {where} has no field {id_field!r} (fields: {fields}); "
                        "pass the right one with --data.id_field, or leave it empty to number documents")
    return str(record[id_field])


def _hugging_face(config: TextSourceConfig, id_field: str) -> Iterator[tuple[str, str]]:
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
        where = f"{config.name} record {number}"
        yield id_of(record, id_field, where, str(number)), text_of(record, config.text_field, where)
