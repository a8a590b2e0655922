"""The ``vocab`` group: what every token id of a model is, so that queries need neither the model nor the hub.

```
vocab/                     attrs: format "activation-vocab", format_version 1,
│                                 models {model label: vocabulary key}
└── <key>/                 one vocabulary, shared by every model whose table is the same (an item)
    token   (token_id,)    str    the tokenizer's own token string ("Ġthe", "▁the", "<0x0A>")
    text    (token_id,)    str    that id decoded alone ("\u0020the")
    special (token_id,)    bool   a special token (EOS, BOS, chat markers)
    file_bytes (byte,)     uint8  the tokenizer files as its save_pretrained writes them, concatenated;
                                  attrs["files"] = [[name, start, size], ...] says where each lies
```

The key is the first 16 hex digits of the SHA-256 of the table (tokens, texts, special flags) and
the EOS and BOS ids, so two models share an entry exactly when every id means the same token and
documents end the same way: what comparing them token by token needs. An entry is an item of ``store/_items.py``: written whole, then ``complete``.
The ``models`` mapping is rewritten under the store's structure lease, like every metadata change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
import zarr

from store._consolidated import consolidate
from store._items import COMPLETE_ATTR, complete_children, open_item, string_columns, write_item
from store._location import StoreLocation
from store.errors import StoreLocationError

VOCAB_GROUP = "vocab"
VOCAB_FORMAT = "activation-vocab"
VOCAB_VERSION = 1
MODELS_ATTR = "models"
ENTRY_ATTRS = ("key", "size", "eos_token_id", "bos_token_id", "tokenizer_class", "files")


@dataclass(frozen=True)
class Vocabulary:
    """One tokenizer's table: id -> token string, decoded text, special flag; and its files."""

    tokens: list[str]
    texts: list[str]
    special: np.ndarray  # (size,) bool
    eos_token_id: int
    bos_token_id: int = -1  # -1: none
    tokenizer_class: str = ""
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Deterministic: the same table gives the same key in every process and store."""
        digest = hashlib.sha256()
        for token, text in zip(self.tokens, self.texts):
            digest.update(token.encode("utf-8", "surrogatepass") + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(np.asarray(self.special, bool).tobytes())
        digest.update(f"eos={int(self.eos_token_id)} bos={int(self.bos_token_id)}".encode())
        return digest.hexdigest()[:16]

    def dataset(self) -> xr.Dataset:
        names = sorted(self.files)
        sizes = [len(self.files[name]) for name in names]
        starts = np.cumsum([0, *sizes])[:-1].tolist()
        payload = b"".join(self.files[name] for name in names)
        attrs = {"key": self.key, "size": len(self.tokens), "eos_token_id": int(self.eos_token_id),
                 "bos_token_id": int(self.bos_token_id), "tokenizer_class": self.tokenizer_class,
                 "files": [[name, int(start), size] for name, start, size in zip(names, starts, sizes)]}
        return xr.Dataset({
            "token": ("token_id", np.array(self.tokens, dtype=object)),
            "text": ("token_id", np.array(self.texts, dtype=object)),
            "special": ("token_id", np.asarray(self.special, bool)),
            "file_bytes": ("byte", np.frombuffer(payload, np.uint8)),
        }, attrs=attrs)


def _root(location: StoreLocation) -> zarr.Group:
    return zarr.open_group(location.zarr_store(), mode="a", use_consolidated=False, zarr_format=3)


def write_vocabulary(location: StoreLocation, label: str, vocabulary: Vocabulary,
                     refresh_metadata: bool = True) -> bool:
    """Record ``label``'s vocabulary (an entry is written once per key); returns whether anything changed.

    Hold the structure lease. ``refresh_metadata=False`` leaves consolidating to the caller (a build
    opening its slot consolidates once for both).
    """
    key = vocabulary.key
    complete = complete_children(location, VOCAB_GROUP)
    if vocabulary_keys(location).get(label) == key and key in complete:
        return False
    if key not in complete:
        write_item(location, f"{VOCAB_GROUP}/{key}", string_columns(vocabulary.dataset()))
    group = _root(location).require_group(VOCAB_GROUP)
    models = dict(group.attrs.get(MODELS_ATTR, {}))
    group.attrs.update({"format": VOCAB_FORMAT, "format_version": VOCAB_VERSION,
                        "description": "see docs/store-format.md", MODELS_ATTR: {**models, label: key}})
    if refresh_metadata:
        consolidate(location)
    return True


def vocabulary_keys(location: StoreLocation) -> dict[str, str]:
    """Model label -> vocabulary key, for the models whose vocabulary the store holds ({} if none)."""
    try:
        group = zarr.open_group(location.zarr_store(read_only=True), path=VOCAB_GROUP, mode="r",
                                use_consolidated=False, zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return {}
    return {str(label): str(key) for label, key in dict(group.attrs.get(MODELS_ATTR, {})).items()}


def read_vocabulary(location: StoreLocation, label: str) -> xr.Dataset:
    """Model ``label``'s vocabulary: the table loaded, the tokenizer files lazy (read when decoding runs)."""
    key = vocabulary_keys(location).get(label)
    if key is None:
        raise StoreLocationError(
            f"store {location.display()!r} holds no vocabulary for model {label!r} (collected before the "
            "store kept one); rerun the same python -m builders.collect command to add it")
    return read_vocabulary_entry(location, key)


def read_vocabulary_entry(location: StoreLocation, key: str) -> xr.Dataset:
    """The vocabulary entry ``key`` (from :func:`vocabulary_keys`), read as :func:`read_vocabulary` reads it."""
    entry = open_item(location, f"{VOCAB_GROUP}/{key}")
    if entry.attrs.get(COMPLETE_ATTR) is not True:
        raise StoreLocationError(f"vocabulary entry {key!r} in {location.display()!r} is incomplete; "
                                 "rerun the same python -m builders.collect command to finish it")
    return entry.assign({name: entry[name].load() for name in ("token", "text", "special")})


def tokenizer_files(entry: xr.Dataset) -> dict[str, bytes]:
    """File name -> bytes of the tokenizer files kept with a vocabulary entry."""
    payload = np.asarray(entry["file_bytes"].values, np.uint8).tobytes()
    return {str(name): payload[int(start):int(start) + int(size)] for name, start, size in entry.attrs["files"]}


def vocab_problems(location: StoreLocation, stats_models: list[str] | None) -> list[str]:
    """What breaks the contract of the ``vocab`` group (docs/store-format.md); [] for a store without one."""
    keys = vocabulary_keys(location)
    problems: list[str] = []
    complete = set(complete_children(location, VOCAB_GROUP))
    for label, key in keys.items():
        if key not in complete:
            problems.append(f"vocab: model {label!r} names entry {key!r}, which is missing or incomplete")
        if stats_models is not None and label not in stats_models:
            problems.append(f"vocab: model {label!r} is not a model of the stats group")
    for key in sorted(complete):
        problems += [f"vocab/{key}: {problem}" for problem in _entry_problems(open_item(location, f"{VOCAB_GROUP}/{key}"), key)]
    return problems


def _entry_problems(entry: xr.Dataset, key: str) -> list[str]:
    problems = [f"lacks attribute {name!r}" for name in ENTRY_ATTRS if name not in entry.attrs]
    expected = {"token": "token_id", "text": "token_id", "special": "token_id", "file_bytes": "byte"}
    for name, dim in expected.items():
        if name not in entry.variables or entry[name].dims != (dim,):
            problems.append(f"variable {name!r} missing or not along {dim!r}")
    if problems:
        return problems
    loaded = entry.load()
    if loaded.attrs.get("size") != loaded.sizes["token_id"]:
        problems.append(f"attrs['size'] {loaded.attrs.get('size')!r} is not the {loaded.sizes['token_id']} tokens")
    files = loaded.attrs["files"]
    if any(int(start) < 0 or int(size) < 0 or int(start) + int(size) > loaded.sizes["byte"] for _, start, size in files):
        problems.append(f"a file lies outside file_bytes: {files!r}")
    table = Vocabulary([str(t) for t in loaded["token"].values], [str(t) for t in loaded["text"].values],
                       loaded["special"].values, int(loaded.attrs["eos_token_id"]), int(loaded.attrs["bos_token_id"]))
    if table.key != key:
        problems.append(f"its table hashes to {table.key!r}, not its key")
    return problems

