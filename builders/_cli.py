"""Command line from typed config dataclasses: ``--section.field`` flags, YAML, then overrides.

Defaults come from the dataclasses, a ``--config`` YAML file overrides them, and
flags override the file. Each field's docstring becomes its help text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from builders._zipf_config import is_zipf_activation, translate
from store import InputError, OneLineParser, parse_storage_options
from store._options import check_path_text
from store.errors import ConfigError, first_line

Config = TypeVar("Config")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (its base dataclasses' fields too)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, following in zip(body, body[1:]):
        if isinstance(statement, ast.AnnAssign) and isinstance(following, ast.Expr):
            if isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[statement.target.id] = following.value.value  # type: ignore[union-attr]
    return docs


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"expected true or false, got {text!r}")


def parse_int(value: Any) -> int:
    """Whole numbers only: ``int(True)`` and ``int(2.5)`` would quietly give 1 and 2."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"expected a whole number, got {value!r}")
    return int(value)


def parse_float(value: Any) -> float:
    """A number; a bare yes/no in YAML is a mistake, not 1.0 or 0.0."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a number, got {value!r}")
    return float(value)


def parse_text(value: Any) -> str:
    """A YAML scalar as text; an empty key (None), a list, a mapping or a bare yes/no is a mistake."""
    if value is None or isinstance(value, (bool, list, dict)):
        raise ConfigError(f"expected text, got {value!r}; quote the value in the config file")
    return str(value)


def parse_list(text: str | list[Any]) -> list[str]:
    """Comma-separated text, or a list (a YAML list, or a flag given several values or times)."""
    if text is None or isinstance(text, (dict, bool)) or (
            isinstance(text, list) and any(item is None or isinstance(item, (dict, list, bool)) for item in text)):
        raise ConfigError(f"expected a list or comma-separated text, got {text!r}")
    if isinstance(text, list):
        return [piece for item in text for piece in parse_list(str(item))] if all(
            isinstance(item, str) for item in text) else [str(item) for item in text]
    return [item.strip() for item in str(text).split(",") if item.strip()]


def parse_coordinates(value: Any) -> list[list[int]]:
    """Coordinates such as ``11,507,1229``: one per flag value (the flag given several values or times),
    or a YAML list of lists. Unlike other lists, the commas stay inside one coordinate."""
    items = value if isinstance(value, list) else [value]
    return [_coordinate(item) for item in items]


def _coordinate(item: Any) -> list[int]:
    if isinstance(item, list) and all(isinstance(number, int) and not isinstance(number, bool) for number in item):
        return list(item)
    parts = [part.strip() for part in item.split(",")] if isinstance(item, str) else []
    if parts and all(part.isdigit() for part in parts):
        return [int(part) for part in parts]
    raise ConfigError(f"expected whole numbers separated by commas, such as 11,507,1229, got {item!r}")


def parse_mapping(items: list[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(items, dict):
        return dict(items)
    return parse_storage_options(items)  # the one KEY=VALUE parser every entry point shares


def _converter(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return parse_bool
    if annotation is int:
        return parse_int
    if annotation is float:
        return parse_float
    if annotation is str:
        return parse_text
    if annotation == list[list[int]]:
        return parse_coordinates
    if origin is list:
        return parse_list
    if origin is dict:
        return parse_mapping
    return annotation


def build_parser(cls: type, prog: str, description: str, store_positional: bool = False) -> argparse.ArgumentParser:
    """Every field as a flag; with ``store_positional`` the ``store`` field is the first argument instead
    (for an analysis command that also computes, ``python -m analysis.vocab STORE``)."""
    parser = OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    hints = typing.get_type_hints(cls)
    sections = [f"{field.name}:" for field in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[field.name])]
    layout = f" (sections {', '.join(sections)})" if sections else ""
    parser.add_argument("--config", type=Path, help=f"YAML file with the same keys as the flags{layout}")
    if store_positional:
        parser.add_argument("store", help=field_docs(cls).get("store", "the store"))
    _add_fields(parser, cls, prefix="", aliases=getattr(cls, "OLD_FLAGS", {}), skip={"store"} if store_positional else set())
    return parser


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str, aliases: dict[str, str],
                skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Every field (but ``skip``) as a flag; ``aliases`` maps a dotted name to a replaced tool's spelling of it
    (a long name without its ``--``, or a short flag such as ``-v`` written out)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    for field in [field for field in dataclasses.fields(cls) if field.name not in skip]:
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            group = parser.add_argument_group(f"{field.name} options")
            _add_section_flag(group, annotation, f"{prefix}{field.name}")
            _add_fields(group, annotation, f"{prefix}{field.name}.", aliases)  # type: ignore[arg-type]
            continue
        dest = f"{prefix}{field.name}"
        _add_field(parser, dest, annotation, docs.get(field.name, ""), getattr(defaults, field.name), aliases.get(dest))


def _add_section_flag(parser: Any, cls: type, dotted: str) -> None:
    """``--cluster ADDRESS`` for a section whose class names a FLAG_FIELD (its main setting)."""
    name = getattr(cls, "FLAG_FIELD", None)
    if name is None:
        return
    doc = field_docs(cls).get(name, "")
    parser.add_argument(*_spellings(dotted), dest=f"{dotted}.{name}", metavar=name.upper(),
                        help=f"{doc} (same as --{dotted}.{name})".replace("%", "%%"))


def _spellings(dest: str) -> list[str]:
    """The flag as written (underscores) and its hyphenated alias."""
    hyphenated = dest.replace("_", "-")
    return [f"--{dest}"] + ([f"--{hyphenated}"] if hyphenated != dest else [])


def _add_field(parser: Any, dest: str, annotation: Any, doc: str, default: Any, alias: str | None = None) -> None:
    shown = " ".join(map(str, default)) if annotation == list[list[int]] else (
        ",".join(map(str, default)) if isinstance(default, list) else default)
    help_text = f"{doc} (default: {shown!r})".replace("%", "%%")
    flags = _spellings(dest) + ([alias if alias.startswith("-") else f"--{alias}"] if alias else [])
    if annotation is bool:
        parser.add_argument(*flags, dest=dest, nargs="?", const="true", metavar="BOOL", help=help_text)
    elif typing.get_origin(annotation) is dict:
        parser.add_argument(*flags, dest=dest, action="append", metavar="KEY=VALUE", help=help_text)
    elif typing.get_origin(annotation) is list:  # a,b or a b, and the flag repeated: all of them
        parser.add_argument(*flags, dest=dest, nargs="+", action="extend", metavar=dest.split(".")[-1].upper(),
                            help=help_text)
    else:
        parser.add_argument(*flags, dest=dest, metavar=dest.split(".")[-1].upper(), help=help_text)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, key = dotted.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return nested


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "storage_options":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: Path) -> dict[str, Any]:
    check_path_text(str(path), "config file")
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist; check the --config path")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is not a file; pass a YAML file to --config")
    document = _read_yaml(path)
    if document is None:  # an empty file: nothing to override (but [], 0 or '' are not mappings)
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(document).__name__}")
    return document


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            return yaml.safe_load(file)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line} "
                          f"({getattr(error, 'problem', None) or first_line(error)}); fix the file") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {error.start}); "
                          "pass a YAML file to --config") from error
    except RecursionError as error:
        raise ConfigError(f"config file {str(path)!r} nests too deeply to read; fix the file") from error
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {str(path)!r} ({first_line(error)}); check the --config path"
        ) from error


def expand_sections(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``cluster: local:2`` in a file means ``cluster: {address: local:2}`` (a section's FLAG_FIELD)."""
    hints = typing.get_type_hints(cls)
    expanded = dict(values)
    for name, value in values.items():
        section = hints.get(name) if isinstance(name, str) else None
        flag_field = getattr(section, "FLAG_FIELD", None) if dataclasses.is_dataclass(section) else None
        if flag_field is not None and value not in (None, "") and not isinstance(value, (dict, list, bool)):
            expanded[name] = {flag_field: value}
    return expanded


def from_dict(cls: type[Config], values: dict[str, Any], prefix: str = "") -> Config:
    """Build (and so validate) a config dataclass; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    _check_known_keys(cls, values, prefix)
    kwargs = {name: _convert(hints[name], value, prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def check_file(cls: type, values: dict[str, Any], prefix: str = "") -> None:
    """The config file on its own: known keys, sections as mappings, each value of its field's type.

    Flags replace the file's values key by key (and a whole section given as a scalar), so
    without this a wrong value in the file goes unnoticed whenever a flag overrides it.
    Checks across fields (max_tokens >= max_seq_len) wait for the merged config.
    """
    hints = typing.get_type_hints(cls)
    _check_known_keys(cls, values, prefix)
    for name, value in values.items():
        annotation, dotted = hints[name], prefix + name
        if not dataclasses.is_dataclass(annotation):
            _convert(annotation, value, dotted)
        elif not isinstance(value, dict):
            raise ConfigError(f"config key {dotted!r} must be a section (mapping), got {value!r}")
        else:
            check_file(annotation, value, f"{dotted}.")  # type: ignore[arg-type]


def _check_known_keys(cls: type, values: dict[Any, Any], prefix: str) -> None:
    names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted((key for key in values if key not in names), key=str)  # YAML keys may be numbers
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + str(unknown[0])!r}; "
            f"known keys: {', '.join(prefix + n for n in sorted(names))}"
        )


def _convert(annotation: Any, value: Any, dotted: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {dotted!r} must be a section (mapping), got {value!r}")
        return from_dict(annotation, value, f"{dotted}.")  # type: ignore[arg-type]
    try:
        return _converter(annotation)(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{dotted} expects {getattr(annotation, '__name__', annotation)}, got {value!r}") from error
    except ConfigError as error:
        raise ConfigError(f"{dotted}: {error}") from error


def run_cli(cls: type[Config], argv: list[str] | None, prog: str, description: str,
            run: Callable[[Config], int]) -> int:
    """Parse the command line and run; bad input is one ``error:`` line and exit 2, Ctrl-C exit 130."""
    return one_line_errors(lambda: run(parse_config(cls, argv, prog, description)))


def one_line_errors(command: Callable[[], int]) -> int:
    """``command()``'s exit code; bad input is one ``error:`` line and exit 2, Ctrl-C exit 130."""
    try:
        return command()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything committed is kept; rerun the same command to resume", file=sys.stderr)
        return 130


def parse_config(cls: type[Config], argv: list[str] | None, prog: str, description: str) -> Config:
    """Defaults, then the ``--config`` YAML, then the flags; validated by the dataclasses."""
    return config_from(cls, vars(build_parser(cls, prog, description).parse_args(argv)))


def config_from(cls: type[Config], given: dict[str, Any]) -> Config:
    """The config of a parsed command line (the flags given, dotted): defaults, the ``--config`` YAML, the flags."""
    namespace = dict(given)
    config_path = namespace.pop("config", None)
    from_file = expand_sections(cls, _ours(cls, load_yaml(config_path) if config_path else {}))
    check_file(cls, from_file)
    return from_dict(cls, _merge(from_file, _nest(namespace)))


def _ours(cls: type, document: dict[str, Any]) -> dict[str, Any]:
    """A ZipfActivation config translated (builders/_zipf_config.py), its changed meanings noted; else as is."""
    if not is_zipf_activation(document):
        return document
    sections, output, notes = translate(document)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    names = {field.name for field in dataclasses.fields(cls)}
    for key, value in output.items():
        if key in names:
            sections[key] = value
        elif key == "results_dir" and "store" in names:  # a builder without a results folder: the store in it
            sections["store"] = f"{str(value).rstrip('/')}/activations.zarr"
            print(f"note: output.results_dir ({value}): only the store is written, to {sections['store']}; "
                  "python -m builders.pipeline writes the statistics, fits and plots too", file=sys.stderr)
        else:
            print(f"note: output.{key} ({value}): ignored here; python -m builders.pipeline uses it", file=sys.stderr)
    return sections
