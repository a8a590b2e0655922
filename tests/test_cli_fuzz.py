"""Every command line refuses bad input cleanly: a property test over all entry points.

The entry points are the modules under builders/ and analysis/ with an
``if __name__ == "__main__":`` line; their flags are read from their own argparse parser
(typed, for the builders, by the config dataclass behind it), so a new command or a new
flag is fuzzed without editing this file. Hypothesis draws one bad input per example:

* a value of the wrong type or out of range for a typed flag;
* an unknown flag (a random name, or a misspelling of a real one);
* a malformed ``--config`` YAML file (random bytes, broken syntax, a list or scalar
  instead of a mapping, unknown keys, wrong-typed values);
* a garbage file or folder, or a path that does not exist, where a file, a store or the
  catalog is expected.

Each is run in-process (``main(argv)``) against one store built for this module and must
end with exit code 2, exactly one ``error: ...`` line on stderr and no traceback, with the
store byte-identical afterwards and nothing new next to it. The builders write stores: a
value their existing store would accept is not bad input, but one that merely differs from
the store's settings is (the store refuses it), which is what makes most values usable.

Bugs the fuzzer found are pinned by example tests at the end. ``CLI_FUZZ_SCALE=10`` runs ten
times the examples.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import math
import os
import re
import string
import tempfile
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
import yaml
from conftest import TINY_ARGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from small_stores import tree_digest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("builders", "analysis")
MAIN_GUARD = 'if __name__ == "__main__":'
KNOWN_ENTRY_POINTS = {"builders.collect", "analysis.fit", "analysis.plot", "analysis.vocab"}
MIN_BAD_INPUTS = 300
SCALE = float(os.environ.get("CLI_FUZZ_SCALE", "1"))  # e.g. CLI_FUZZ_SCALE=10 for a longer hunt
TRIED: Counter[str] = Counter()  # bad inputs run so far, by entry point

# The valid command line every case starts from, for the flags an entry point has (plus the
# tiny model and the store, known once built): quiet, and no fits cache for the analysis.
# builders.superweights skips task accuracy: its default tasks are hub datasets, unreachable here.
BASE_VALUES = {**dict(zip(TINY_ARGS[::2], TINY_ARGS[1::2])), "--cache": "off", "--accuracy.skip": "true"}
# Builder flags whose value the existing store does not pin: the first two pick the model slot a
# build fills (a new value adds a model rather than conflicting), the others say how to run (where,
# how often to checkpoint), not what to store; so only values bad in themselves are tried. A new
# flag the store does not record belongs here.
UNPINNED_FLAGS = {"--model.name", "--model.label", "--commit_seconds", "--cluster", "--cluster.address",
                  "--cluster.threads_per_worker",
                  # builders.capture: a store of statistics pins none of a capture's settings
                  "--prompt", "--generate.max_new_tokens", "--generate.temperature", "--generate.seed", "--export",
                  # builders.vectors: --text and its query settings read the store, never write it; the
                  # sample's seed is recorded only with --data.num_samples (absent: the first documents)
                  "--text", "--query.k", "--query.pooling", "--query.centre", "--data.sample_seed",
                  # builders.superweights: batching, printing and labels change no record
                  "--perplexity.batch_size", "--accuracy.batch_size", "--verbose", "--quiet",
                  # analysis.vocab: batching changes no card
                  "--eval.batch_size"}
BASE_FLAGS = {*BASE_VALUES, "--model.name", "--store"}

Capture = pytest.CaptureFixture[str]
FUZZ = settings(deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------- discovery


# Entry points whose parser another one already is: builders.vocab parses VocabConfig exactly as
# analysis.vocab does (build_parser, with --store where analysis.vocab takes STORE first), so fuzzing
# both spent 25 s of the suite's budget on the same flags.
FUZZED_AS = {"builders.vocab": "analysis.vocab"}


def discover_entry_points() -> list[str]:
    """Dotted names of the modules under PACKAGES that run as ``python -m`` (less those FUZZED_AS another)."""
    names = []
    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            if MAIN_GUARD in file.read_text(encoding="utf-8"):
                names.append(".".join(file.relative_to(REPO).with_suffix("").parts))
    return [name for name in names if name not in FUZZED_AS]


@dataclasses.dataclass(frozen=True)
class Flag:
    """One option of an entry point, as far as the fuzzer needs to know it."""

    name: str  # its first long spelling, e.g. --data.max_tokens
    kind: str  # int, float, bool, switch, choice, list, mapping, range, path or text
    current: str | None  # the value the base command line runs with (None: unknown)
    choices: tuple[str, ...] = ()
    role: str = ""  # paths only: input (read), output (written) or store (a builder's store)


@dataclasses.dataclass(frozen=True)
class EntryPoint:
    """A ``python -m`` command: its ``main`` and what its parser and config dataclass say about it."""

    module: str
    main: Callable[[list[str] | None], int]
    flags: tuple[Flag, ...]
    spellings: tuple[str, ...]  # every option string, with aliases
    store_positional: bool  # the analysis commands name the store as their first argument
    fields: dict[str, Any]  # dotted config field -> annotation (builders; {} otherwise)

    @property
    def writes_store(self) -> bool:
        """Builders write the store and refuse settings that differ from it; the analysis only reads."""
        return self.module.startswith("builders.")

    def has(self, name: str) -> bool:
        return name in self.spellings

    def __str__(self) -> str:
        return self.module


class _Captured(BaseException):
    """Raised in place of parsing: the parser itself is what the fuzzer reads."""


def capture_parser(main: Callable[[list[str] | None], int]) -> argparse.ArgumentParser:
    seen: list[argparse.ArgumentParser] = []

    def grab(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        seen.append(parser)
        raise _Captured

    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab), contextlib.suppress(_Captured):
        main([])
    return seen[0]


def _config_fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (annotation, default) of a config dataclass (every field has a default)."""
    hints, defaults, flat = typing.get_type_hints(cls), cls(), {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            flat.update(_config_fields(annotation, f"{prefix}{field.name}."))  # type: ignore[arg-type]
        else:
            flat[prefix + field.name] = (annotation, getattr(defaults, field.name))
    return flat


def config_fields(module: ModuleType, dests: set[str]) -> dict[str, tuple[Any, Any]]:
    """The fields of the module's dataclass that types the most flags ({} when none does)."""
    candidates = [{}]
    for value in vars(module).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            with contextlib.suppress(Exception):  # not a config: fields without defaults, say
                candidates.append(_config_fields(value))
    best = max(candidates, key=lambda flat: len(dests & flat.keys()))
    return best if dests & best.keys() else {}


PATH_HELP = re.compile(r"\b(file|folder|path)\b")
OUTPUT_HELP = re.compile(r"\b(writ\w*|output)\b", re.IGNORECASE)


def _probe(convert: Any) -> Any:
    """What a flag's converter makes of "7" (an int, a float, a Path...); None if it refuses."""
    try:
        return convert("7") if convert is not None else None
    except Exception:  # noqa: BLE001 - any refusal means: not a plain number or path
        return None


def kind_of(action: argparse.Action, annotation: Any) -> str:
    origin, probed = typing.get_origin(annotation), _probe(action.type)
    if action.nargs == 0:
        return "switch"
    if action.choices:
        return "choice"
    if action.metavar in ("KEY=VALUE", "LOW,HIGH", "BOOL"):
        return {"KEY=VALUE": "mapping", "LOW,HIGH": "range", "BOOL": "bool"}[action.metavar]
    if origin in (list, dict):
        return "list" if origin is list else "mapping"
    if annotation in (int, float, bool):
        return annotation.__name__
    if type(probed) in (int, float):
        return type(probed).__name__
    return "path" if isinstance(probed, Path) or PATH_HELP.search(action.help or "") else "text"


def _role(name: str, help_text: str) -> str:
    if name == "--store":
        return "store"
    return "output" if OUTPUT_HELP.search(help_text) else "input"


def _current(action: argparse.Action, name: str, fields: dict[str, tuple[Any, Any]]) -> str | None:
    if name in BASE_VALUES:
        return BASE_VALUES[name]
    if action.dest in fields:
        default = fields[action.dest][1]
        return ",".join(map(str, default)) if isinstance(default, list) else str(default)
    return None if action.default in (None, argparse.SUPPRESS) else str(action.default)


def _flag(action: argparse.Action, fields: dict[str, tuple[Any, Any]]) -> Flag:
    name = next(s for s in action.option_strings if s.startswith("--"))
    kind = kind_of(action, fields.get(action.dest, (None, None))[0])
    role = _role(name, action.help or "") if kind == "path" else ""
    return Flag(name, kind, _current(action, name, fields), tuple(map(str, action.choices or ())), role)


def load_entry_point(name: str) -> EntryPoint:
    module = importlib.import_module(name)
    parser = capture_parser(module.main)
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    fields = config_fields(module, {action.dest for action in actions})
    return EntryPoint(
        module=name, main=module.main,
        flags=tuple(_flag(action, fields) for action in actions if action.option_strings),
        spellings=tuple(s for action in parser._actions for s in action.option_strings),
        store_positional=any(action.dest == "store" and not action.option_strings for action in actions),
        fields={dotted: annotation for dotted, (annotation, _) in fields.items()},
    )


ENTRY_POINTS = [load_entry_point(name) for name in discover_entry_points()]
WITH_CONFIG = [entry for entry in ENTRY_POINTS if entry.has("--config") and entry.fields]


# ---------------------------------------------------------------- the store and one run


@dataclasses.dataclass(frozen=True)
class Scene:
    """The existing store every case names, and where the cases' garbage goes (not next to it)."""

    model: Path
    store: Path
    inputs: Path
    digest: str
    neighbours: tuple[str, ...]

    def base_argv(self, entry: EntryPoint) -> list[str]:
        values = {**BASE_VALUES, "--model.name": str(self.model), "--store": str(self.store)}  # = BASE_FLAGS
        argv = [str(self.store)] if entry.store_positional else []
        for flag in entry.flags:
            if flag.name in values:
                argv += [flag.name, values[flag.name]]
        return argv

    def scratch(self) -> Path:
        """A new empty folder for one case's files."""
        return Path(tempfile.mkdtemp(prefix="case-", dir=self.inputs))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Iterator[Scene]:
    import huggingface_hub.constants

    from builders.collect import main
    from builders.superweights import main as superweights_main
    from builders.vectors import main as vectors_main
    from builders.vocab import main as vocab_main
    from store._catalog import CATALOG_ENV

    home, inputs = tmp_path_factory.mktemp("fuzz-home"), tmp_path_factory.mktemp("fuzz-inputs")
    store = home / "existing.zarr"
    model = tiny_model("llama")
    assert main(["--model.name", str(model), "--store", str(store), *TINY_ARGS]) == 0
    # the store holds vectors too, built as the cases' base command line would: it pins their settings
    vectors_flags = ["--data.max_seq_len", "--data.batch_size", "--model.device", "--progress"]
    assert vectors_main(["--model.name", str(model), "--store", str(store),
                         *(part for flag in vectors_flags for part in (flag, BASE_VALUES[flag]))]) == 0
    # and super-weight records of the same model, made with the cases' base command line
    superweights_flags = ["--model.device", "--progress", "--accuracy.skip"]
    assert superweights_main(["--model.name", str(model), "--store", str(store),
                              *(part for flag in superweights_flags for part in (flag, BASE_VALUES[flag]))]) == 0
    # and its vocabulary cards (none: the tiny model has no super weight), which pin builders.vocab's settings
    assert vocab_main(["--model.name", str(model), "--store", str(store),
                       *(part for flag in ("--model.device", "--progress") for part in (flag, BASE_VALUES[flag]))]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a bad name never reaches the network
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv(CATALOG_ENV, str(inputs / "no-catalog.yaml"))  # none: the repository's may change
        yield Scene(model, store, inputs, tree_digest(store), tuple(sorted(os.listdir(home))))


def _exit_code(entry: EntryPoint, argv: list[str]) -> Any:
    try:
        return entry.main(argv)
    except SystemExit as exit_:
        return exit_.code
    except Exception as error:  # a traceback: the one outcome bad input must never have
        raise AssertionError(f"{entry} {argv!r} raised {error!r} instead of refusing") from error


def assert_refused(entry: EntryPoint, scene: Scene, capfd: Capture, argv: list[str],
                   env: dict[str, str] | None = None) -> None:
    """Run one bad input; it must be refused in one line, and leave the store and its folder alone."""
    TRIED[entry.module] += 1
    capfd.readouterr()
    with contextlib.chdir(scene.store.parent), mock.patch.dict(os.environ, env or {}):
        code = _exit_code(entry, argv)  # run next to the store: a relative output would show up there
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{entry} {argv!r} exited {code!r}, not 2; stderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{entry} {argv!r} stderr:\n{err}"
    assert "Traceback" not in err
    assert tree_digest(scene.store) == scene.digest, f"{entry} {argv!r} changed the store"
    neighbours = tuple(sorted(os.listdir(scene.store.parent)))
    assert neighbours == scene.neighbours, f"{entry} {argv!r} wrote next to the store: {neighbours}"


# ---------------------------------------------------------------- text and oracles

CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")  # what an argv can hold
TEXT = st.text(CHARACTERS, max_size=24)
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's own rule: these are values, not flags
BOOL_WORDS = {"1", "true", "yes", "on", "0", "false", "no", "off"}
DEEP = st.integers(500, 700).map(lambda depth: "[" * depth)  # deep enough for PyYAML to hit RecursionError


def is_value(text: str) -> bool:
    """argparse takes it as a flag's value (a leading dash would make it a flag of its own)."""
    return not text.startswith("-") or bool(NEGATIVE_NUMBER.match(text))


VALUE = TEXT.filter(is_value)


def parses(convert: Callable[[str], Any], text: str) -> bool:
    try:
        convert(text)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def valid_range(text: str) -> bool:
    low, _, high = text.partition(",")
    if not (parses(float, low) and parses(float, high)):
        return False
    return math.isfinite(float(low)) and math.isfinite(float(high)) and float(low) < float(high)


def loads_yaml(text: str) -> tuple[bool, Any]:
    """(parsed, document) as PyYAML's safe loader reads it."""
    try:
        return True, yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - YAMLError, RecursionError: not YAML either way
        return False, None


def valid_storage_option(item: str) -> bool:
    key, separator, value = item.partition("=")
    return bool(separator and key.strip()) and loads_yaml(value)[0]


# ---------------------------------------------------------------- bad values for a flag


def _bad_number(flag: Flag, pinned: bool, convert: Callable[[str], Any]) -> st.SearchStrategy[str]:
    """Text that is not a number, a negative count, or (for a builder) any number the store did not use."""
    options = [VALUE.filter(lambda text: not parses(convert, text))]
    if convert is int:
        options.append(st.integers(max_value=-1).map(str))  # every count and seed of this project is >= 0
    if pinned:
        numbers = st.one_of(st.integers(-10, 10**6), st.integers(min_value=10**12), st.floats(-10, 10**6))
        options.append(numbers.map(lambda n: str(convert(n))).filter(lambda text: text != flag.current))
    return st.one_of(options)


def _bad_list(flag: Flag, pinned: bool) -> st.SearchStrategy[str] | None:
    if not pinned:
        return None  # with no store to disagree with, a list of unknown names may still be fine
    extra = TEXT.filter(lambda text: any(piece.strip() for piece in text.split(",")))
    return st.one_of(st.sampled_from(["", ",", " , "]), extra.map(lambda text: f"{flag.current},{text}"))


def _bad_mapping() -> st.SearchStrategy[str]:
    broken = DEEP | st.sampled_from(["[", "{a", "'open", '"open', "a: b: c", "*alias", "!!python/name:os.system"])
    key = st.text(st.sampled_from(string.ascii_letters + " _"), max_size=8)
    items = st.one_of(VALUE, st.tuples(key, st.one_of(broken, TEXT)).map("=".join))
    return items.filter(lambda item: is_value(item) and not valid_storage_option(item))


def bad_value(flag: Flag, pinned: bool) -> st.SearchStrategy[str] | None:
    """Values of ``flag`` that must be refused; None when the fuzzer cannot tell a bad one."""
    if flag.kind in ("int", "float"):
        return _bad_number(flag, pinned, int if flag.kind == "int" else float)
    if flag.kind == "bool":
        return VALUE.filter(lambda text: text.strip().lower() not in BOOL_WORDS)
    if flag.kind == "choice":
        return VALUE.filter(lambda text: text not in flag.choices)
    if flag.kind == "range":
        number = st.floats().map(repr)
        pair = st.tuples(number, number).map(",".join)
        return st.one_of(VALUE, number, pair).filter(lambda text: is_value(text) and not valid_range(text))
    if flag.kind == "list":
        return _bad_list(flag, pinned)
    if flag.kind == "mapping":
        return _bad_mapping()
    if flag.kind == "text" and pinned and flag.name not in UNPINNED_FLAGS:
        return VALUE.filter(lambda text: text != flag.current)
    return None  # paths have their own test; free text has no wrong value


def bad_values(entry: EntryPoint) -> st.SearchStrategy[list[str]]:
    """``[--flag, value]`` (or ``--switch=value``) with a bad value, over every flag that has one."""
    switches = [flag.name for flag in entry.flags if flag.kind == "switch"]
    cases = [TEXT.map(lambda text, name=name: [f"{name}={text}"]) for name in switches]
    for flag in entry.flags:
        values = bad_value(flag, entry.writes_store and flag.name not in UNPINNED_FLAGS)
        if values is not None:
            cases.append(values.map(lambda value, name=flag.name: [name, value]))
    return st.one_of(cases)


# ---------------------------------------------------------------- unknown flags

FLAG_LETTERS = string.ascii_lowercase + string.digits + "._-"


def _misspellings(flag: str) -> st.SearchStrategy[str]:
    body = flag[2:]
    index, letter = st.integers(0, len(body) - 1), st.sampled_from(FLAG_LETTERS)
    deleted = index.map(lambda i: body[:i] + body[i + 1:])
    inserted = st.tuples(st.integers(0, len(body)), letter).map(lambda p: body[:p[0]] + p[1] + body[p[0]:])
    replaced = st.tuples(index, letter).map(lambda p: body[:p[0]] + p[1] + body[p[0] + 1:])
    swapped = index.map(lambda i: body[:i] + body[i + 1:i + 2] + body[i:i + 1] + body[i + 2:])
    return st.one_of(deleted, inserted, replaced, swapped).map(lambda misspelt: f"--{misspelt}")


def unknown(token: str, spellings: tuple[str, ...]) -> bool:
    """Neither a flag nor an abbreviation argparse would expand to one (the part before any '=')."""
    head = token.partition("=")[0]
    return len(head) > 2 and not any(spelling.startswith(head) for spelling in spellings)


def unknown_flags(entry: EntryPoint) -> st.SearchStrategy[list[str]]:
    real = sorted(s for s in entry.spellings if s.startswith("--"))
    random_name = st.text(CHARACTERS, min_size=1, max_size=20).map(lambda text: f"--{text}")
    token = st.one_of(random_name, st.sampled_from(real).flatmap(_misspellings))
    value = st.one_of(st.just([]), VALUE.map(lambda text: [text]))
    return st.tuples(token.filter(lambda t: unknown(t, entry.spellings)), value).map(lambda tv: [tv[0], *tv[1]])


# ---------------------------------------------------------------- malformed --config files


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    *sections, key = dotted.split(".")
    document: dict[str, Any] = {key: value}
    for section in reversed(sections):
        document = {section: document}
    return document


def _wrong_value(annotation: Any) -> st.SearchStrategy[Any]:
    """YAML values no field of this type accepts."""
    containers = st.lists(st.integers(), min_size=1, max_size=3) | st.dictionaries(TEXT, st.integers())
    origin = typing.get_origin(annotation)
    if annotation is int:
        words = TEXT.filter(lambda text: not parses(int, text))
        fractions = st.floats().filter(lambda x: not x.is_integer())
        return st.one_of(words, fractions, st.booleans(), st.none(), containers)
    if annotation is bool:
        words = TEXT.filter(lambda text: text.strip().lower() not in BOOL_WORDS)
        return st.one_of(words, st.integers().filter(lambda n: n not in (0, 1)), st.none(), containers)
    if origin is dict:
        no_equals = TEXT.filter(lambda text: text and "=" not in text)  # iterated as items, none KEY=VALUE
        return st.one_of(st.integers(), st.lists(st.integers(), min_size=1), no_equals)
    if origin is list:
        nested = st.lists(st.lists(st.integers(), min_size=1), min_size=1)
        return st.dictionaries(TEXT, st.integers(), min_size=1) | nested
    return st.one_of(st.none(), st.booleans(), containers)  # text fields


def _sections(entry: EntryPoint) -> dict[str, set[str]]:
    """Names each level of the config file knows: '' for the top, then each section."""
    known: dict[str, set[str]] = {"": set()}
    for dotted in entry.fields:
        section, _, key = dotted.rpartition(".")
        known.setdefault(section, set()).add(key)
        known[""].add(dotted.split(".")[0])
    return known


def acceptable_config(data: bytes, entry: EntryPoint) -> bool:
    """Whether a file could be a valid config: empty, or a mapping of known top-level keys only."""
    try:
        parsed, document = loads_yaml(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False
    if not parsed or (document is not None and not isinstance(document, dict)):
        return False
    return document is None or set(document) <= _sections(entry)[""]


def _yaml_line(dotted: str, value: str) -> bytes:
    """``data.max_tokens`` and ``v`` as the block YAML ``data:\n  max_tokens: v``."""
    *sections, key = dotted.split(".")
    lines = [f"{'  ' * depth}{section}:" for depth, section in enumerate(sections)]
    return "\n".join([*lines, f"{'  ' * len(sections)}{key}: {value}", ""]).encode()


BREAKERS = ["[unclosed", "{unclosed", "'unclosed", '"unclosed', "a: b", "*alias", '"\\q"', "&a [*a", "@at",
            "`tick", "{a: 1", "!!python/name:os.system ''", "%TAG"]


def _raw_configs(entry: EntryPoint) -> st.SearchStrategy[bytes]:
    """Random bytes and broken syntax around real keys: kept only where no valid config can come of them."""
    field = st.sampled_from(sorted(entry.fields))
    broken = st.tuples(field, st.sampled_from(BREAKERS) | DEEP).map(lambda fb: _yaml_line(*fb))
    tabbed = field.map(lambda dotted: _yaml_line(dotted, "1").replace(b"  ", b"\t"))
    raw = st.one_of(st.binary(max_size=48), broken, tabbed)
    return raw.filter(lambda data: not acceptable_config(data, entry))


def _structured_configs(entry: EntryPoint) -> st.SearchStrategy[Any]:
    """YAML documents wrong by construction: not a mapping, an unknown key, a wrong-typed value or section."""
    known, field = _sections(entry), st.sampled_from(sorted(entry.fields))
    scalars = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), TEXT)
    not_mapping = (st.lists(st.integers() | TEXT, max_size=3) | scalars).filter(lambda value: value is not None)
    unknown_key = st.sampled_from(sorted(known)).flatmap(
        lambda section: TEXT.filter(lambda key: key not in known[section]).map(
            lambda key: _nested(f"{section}.{key}" if section else key, 1)))
    wrong_type = field.flatmap(
        lambda dotted: _wrong_value(entry.fields[dotted]).map(lambda value: _nested(dotted, value)))
    sections = sorted(known.keys() - {""})  # an entry point may have none (all its keys top-level)
    bad_section = st.tuples(st.sampled_from(sections), scalars | st.lists(st.integers())).map(
        lambda pair: {pair[0]: pair[1]}) if sections else st.nothing()
    return st.one_of(not_mapping, unknown_key, wrong_type, bad_section, _unusable_paths(entry))


def _unusable_paths(entry: EntryPoint) -> st.SearchStrategy[Any]:
    """Path fields holding what no file system takes: a NUL byte, ``~unknown-user``, an over-long name.

    Only fields the base command line leaves to the file: its flags would override the value.
    """
    paths = sorted(flag.name[2:] for flag in entry.flags if flag.kind == "path" and flag.role != "output"
                   and flag.name[2:] in entry.fields and flag.name not in BASE_FLAGS)
    with_nul = st.tuples(TEXT, TEXT).map(lambda parts: "\x00".join(parts))
    if not paths:  # every path of this entry point is on the base command line
        return st.nothing()
    return st.sampled_from(paths).flatmap(
        lambda dotted: st.one_of(with_nul, UNKNOWN_HOME, LONG_NAME).map(lambda text: _nested(dotted, text)))


def bad_configs(entry: EntryPoint) -> st.SearchStrategy[bytes]:
    structured = _structured_configs(entry).map(lambda document: yaml.safe_dump(document).encode())
    return st.one_of(_raw_configs(entry), structured)


# ---------------------------------------------------------------- garbage and missing paths

CATALOG, STORE = "<catalog>", "<store>"  # path targets that are not flags: $ACTIVATION_CATALOG, the argument
NAME = st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1, max_size=12).filter(
    lambda name: name not in (".", ".."))
SUFFIXES = ["", ".txt", ".md", ".jsonl", ".json", ".yaml", ".gguf", ".bin"]  # each a reader of its own
FILE_NAME = st.tuples(NAME, st.sampled_from(SUFFIXES)).map("".join).filter(lambda name: len(name.encode()) < 200)
LONG_NAME = st.integers(256, 400).map(lambda length: "n" * length)  # over every file system's name limit
# "~user/..." of a user this machine does not have: no file system call can take it
UNKNOWN_HOME = st.tuples(st.text(string.ascii_lowercase, min_size=1, max_size=8), NAME).map(
    lambda parts: f"~no-such-user-{parts[0]}/{parts[1]}")
# At most 24 bytes: no text file or folder of three can fill one 128-token row of the tiny model's
# byte-level tokenizer, so even with --overwrite a garbage text source is refused before any write.
# Truncated GGUF headers are drawn on purpose too: test_a_truncated_gguf_is_refused pins one.
CONTENT = st.one_of(st.binary(max_size=24), st.binary(max_size=20).map(lambda data: b"GGUF" + data))


@dataclasses.dataclass(frozen=True)
class Garbage:
    """What a case puts where a path is expected: nothing, a file, a folder of files, or a file above it."""

    shape: str  # missing, unusable (taken as it is), file, folder or below-file
    name: str
    files: tuple[tuple[str, bytes], ...] = ()  # a folder's files; a file's bytes (under the name "")

    def plant(self, root: Path) -> Path:
        path = root / self.name
        if self.shape in ("missing", "unusable"):
            return root / "missing" / self.name if self.shape == "missing" else Path(self.name)
        if self.shape == "folder":
            path.mkdir()
            for name, data in self.files:
                (path / name).write_bytes(data)
            return path
        path.write_bytes(self.files[0][1])
        return path / "sub.zarr" if self.shape == "below-file" else path


def _files(shape: str, content: st.SearchStrategy[bytes]) -> st.SearchStrategy[Garbage]:
    return st.builds(lambda name, data: Garbage(shape, name, (("", data),)), FILE_NAME, content)


def _folder(content: st.SearchStrategy[bytes], names: st.SearchStrategy[str] = FILE_NAME) -> st.SearchStrategy[Garbage]:
    files = st.dictionaries(names, content, min_size=1, max_size=3)
    return st.builds(lambda name, inside: Garbage("folder", name, tuple(inside.items())), NAME, files)


def prompt_text(data: bytes) -> bool:
    """Whether a file is one a prompt reader takes: UTF-8 text, no control characters, a non-blank line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and not any(ch < " " and ch != "\t" or ch == "\x7f" for line in lines for ch in line)


def valid_catalog(data: bytes) -> bool:
    """Whether a file is a catalog the analysis would accept (docs: a 'stores:' mapping of url entries)."""
    try:
        parsed, document = loads_yaml(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False
    if not parsed or (document and not isinstance(document, dict)):
        return False
    stores = (document or {}).get("stores", {})
    return isinstance(stores, dict) and all(
        isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"].strip()
        and isinstance(entry.get("storage_options") or {}, dict) for entry in stores.values())


def _bad_catalogs() -> st.SearchStrategy[bytes]:
    url = st.one_of(st.none(), st.integers(), st.lists(st.integers()), st.just(""))
    options = st.one_of(st.integers(), TEXT.filter(bool), st.lists(st.integers(), min_size=1))
    entry = st.one_of(st.none(), st.integers(), TEXT, st.lists(st.integers()), url.map(lambda u: {"url": u}),
                      options.map(lambda o: {"url": "x.zarr", "storage_options": o}))
    stores = st.one_of(st.integers(), TEXT, st.lists(st.integers(), min_size=1),
                       st.dictionaries(NAME, entry, min_size=1))
    documents = st.one_of(stores.map(lambda value: {"stores": value}), st.lists(st.integers(), min_size=1))
    structured = documents.map(lambda document: yaml.safe_dump(document).encode())
    return st.one_of(st.binary(max_size=48), structured).filter(lambda data: not valid_catalog(data))


def path_targets(entry: EntryPoint) -> list[str]:
    targets = [flag.name for flag in entry.flags if flag.kind == "path"]
    return [*targets, STORE, CATALOG] if entry.store_positional else targets


def garbage_for(entry: EntryPoint, target: str) -> st.SearchStrategy[Garbage]:
    """Shapes a path of this kind must refuse: inputs must exist and be readable, outputs be creatable."""
    if target == CATALOG:  # a missing catalog is no catalog, which is fine
        return st.one_of(_files("file", _bad_catalogs()), _folder(CONTENT))
    role = next((flag.role for flag in entry.flags if flag.name == target), "input")
    content = CONTENT
    if target == "--config":
        content = CONTENT.filter(lambda data: not acceptable_config(data, entry))
    if target in ("--prompt_file", "--file"):  # any text is a prompt (a text to pool): only what is not text must be refused
        content = CONTENT.filter(lambda data: not prompt_text(data))
    if role == "output":
        return st.one_of(_files("file", content), _files("below-file", content))
    missing = st.builds(lambda name: Garbage("missing", name), st.one_of(FILE_NAME, LONG_NAME))
    unusable = UNKNOWN_HOME.map(lambda text: Garbage("unusable", text))
    if role == "store":  # a builder's store: a new path is fine, a folder of other files is not
        our_names = _folder(content, names=st.sampled_from(["zarr.json", "stats", "fits", "_leases"]))
        return st.one_of(_files("file", content), _files("below-file", content), _folder(content), our_names,
                         unusable)
    return st.one_of(missing, unusable, _files("file", content), _folder(content))


def garbage_argv(entry: EntryPoint, scene: Scene, target: str, path: Path) -> tuple[list[str], dict[str, str]]:
    from store._catalog import CATALOG_ENV

    base = scene.base_argv(entry)
    if target == CATALOG:
        return base, {CATALOG_ENV: str(path)}
    if target == STORE:
        return [str(path), *base[1:]], {}
    return [*base, target, str(path)], {}


# ---------------------------------------------------------------- the tests

ENTRY = pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)


def test_every_entry_point_is_found() -> None:
    names = {entry.module for entry in ENTRY_POINTS}
    assert names and KNOWN_ENTRY_POINTS <= names, names
    assert all(entry.flags for entry in ENTRY_POINTS)


@ENTRY
@settings(FUZZ, max_examples=round(120 * SCALE))
@given(data=st.data())
def test_bad_flag_values_are_refused(
    entry: EntryPoint, scene: Scene, capfd: Capture, data: st.DataObject
) -> None:
    assert_refused(entry, scene, capfd, [*scene.base_argv(entry), *data.draw(bad_values(entry))])


@ENTRY
@settings(FUZZ, max_examples=round(60 * SCALE))
@given(data=st.data())
def test_unknown_and_misspelt_flags_are_refused(
    entry: EntryPoint, scene: Scene, capfd: Capture, data: st.DataObject
) -> None:
    assert_refused(entry, scene, capfd, [*scene.base_argv(entry), *data.draw(unknown_flags(entry))])


@pytest.mark.parametrize("entry", WITH_CONFIG, ids=str)
@settings(FUZZ, max_examples=round(150 * SCALE))
@given(data=st.data())
def test_malformed_config_files_are_refused(
    entry: EntryPoint, scene: Scene, capfd: Capture, data: st.DataObject
) -> None:
    config = scene.scratch() / "config.yaml"
    config.write_bytes(data.draw(bad_configs(entry)))
    assert_refused(entry, scene, capfd, [*scene.base_argv(entry), "--config", str(config)])


@ENTRY
@settings(FUZZ, max_examples=round(100 * SCALE))
@given(data=st.data())
def test_garbage_and_missing_paths_are_refused(
    entry: EntryPoint, scene: Scene, capfd: Capture, data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(path_targets(entry)))
    path = data.draw(garbage_for(entry, target)).plant(scene.scratch())
    argv, env = garbage_argv(entry, scene, target, path)
    # builders.vectors pools any text, however short: with --overwrite, garbage that decodes as text is
    # a corpus of one document, rightly pooled; without it, another text source is refused (pinned)
    pools_any_text = entry.module == "builders.vectors" and target == "--data.name"
    if entry.writes_store and entry.has("--overwrite") and not pools_any_text and data.draw(st.booleans()):
        argv.append("--overwrite")  # must not help: the bad input is refused before anything is removed
    assert_refused(entry, scene, capfd, argv, env)


# Bugs the fuzzer found where this change may not edit (the fuzz strategies above leave these
# inputs out). strict: once fixed they XPASS and fail, so the marker and the exclusion get removed.

COLLECT = "builders.collect"


def _entry(module: str) -> EntryPoint:
    return next(entry for entry in ENTRY_POINTS if entry.module == module)


@pytest.mark.parametrize("flag", ["--model.name", "--model.gguf_file"])
def test_a_truncated_gguf_is_refused(flag: str, scene: Scene, capfd: Capture) -> None:
    gguf = scene.scratch() / "truncated.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")  # the magic, then a header cut short
    collect = _entry(COLLECT)
    assert_refused(collect, scene, capfd, [*scene.base_argv(collect), flag, str(gguf)])


@pytest.mark.parametrize("content", [b"\xff{", b"{", b"[]", b"{}"], ids=["not-utf8", "not-json", "a-list", "empty"])
def test_a_store_folder_with_a_bad_zarr_json_is_refused(content: bytes, scene: Scene, capfd: Capture) -> None:
    folder = scene.scratch() / "foreign.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_bytes(content)
    collect = _entry(COLLECT)
    assert_refused(collect, scene, capfd, [*scene.base_argv(collect), "--store", str(folder)])


def test_enough_bad_inputs_were_tried(request: pytest.FixtureRequest) -> None:
    """Last in the file: the fuzz tests above ran, on every entry point, a few hundred cases in all."""
    here = [item for item in request.session.items if item.path == Path(__file__)]
    fuzz_items = [item for item in here if "_are_refused[" in item.name]
    if len(fuzz_items) < 3 * len(ENTRY_POINTS) + len(WITH_CONFIG):
        pytest.skip("only some of the fuzz tests were selected")
    total = sum(TRIED.values())
    print(f"\nfuzz: {total} bad inputs across {len(TRIED)} entry points ({dict(TRIED)})")
    assert set(TRIED) == {entry.module for entry in ENTRY_POINTS}
    assert total >= MIN_BAD_INPUTS
