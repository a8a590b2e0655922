"""ZipfActivation's YAML configs, read as they are: its keys translated to this project's, with one line
per key whose meaning changes.

ZipfActivation (its README and developer guide in ../shared/reference-tools/) nests dataclasses:
``model`` (name, dtype, device_map), ``data`` (name, subset, split, max_tokens, batch_size,
max_seq_len, streaming), ``collection_points`` / ``explicit_layers``, ``metrics``,
``channel_sample_size``, ``max_samples_for_fit``, ``seed`` and ``output`` (results_dir, plot_format).
Its exact nesting of the middle keys is not documented, so they are recognised by name wherever they
sit (top level or inside a section such as ``statistics`` or ``fitting``). A file is read as
ZipfActivation's when it holds one of the keys only it has; ``model`` and ``data`` keys this project
shares keep their meaning.
"""

from __future__ import annotations

from typing import Any

from store.errors import ConfigError

# keys only ZipfActivation's files have: their presence says whose file it is
OWN_KEYS = ("collection_points", "explicit_layers", "channel_sample_size", "max_samples_for_fit", "output")
OUTPUT_KEYS = ("results_dir", "plot_format")
_SECTIONS = ("statistics", "stats", "collection", "fitting", "fit", "plotting")  # where the middle keys may sit
_NOTES = {
    "max_samples_for_fit": "max_samples_for_fit ({value}): every value is fitted here (Clauset's exact xmin scan "
                           "over all tokens); the cap is ignored, so alpha and xmin can differ from a subsampled fit",
    "streaming": "data.streaming ({value}): text is always streamed here; the key is ignored",
    "seed": "seed ({value}): stats.channel_seed, the seed of the sampled channels (the channels differ from "
            "ZipfActivation's, which drew them with torch)",
}


def is_zipf_activation(document: dict[str, Any]) -> bool:
    return any(key in document for key in OWN_KEYS) or any(
        isinstance(document.get(section), dict) and any(key in document[section] for key in OWN_KEYS)
        for section in _SECTIONS)


def _flat(document: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys and those of the known middle sections, merged (sections first, top level wins)."""
    merged: dict[str, Any] = {}
    for section in _SECTIONS:
        part = document.get(section)
        if isinstance(part, dict):
            merged.update(part)
    merged.update({key: value for key, value in document.items() if key not in _SECTIONS})
    return merged


def _layers(flat: dict[str, Any]) -> list[str] | None:
    explicit = flat.get("explicit_layers")
    if explicit:
        if not isinstance(explicit, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in explicit):
            raise ConfigError(f"explicit_layers must be a list of layer numbers, got {explicit!r}; e.g. [0, 5, 10]")
        return [f"layer_{index}" for index in explicit]
    points = flat.get("collection_points")
    return None if points is None else [str(point) for point in points]


def _stats(flat: dict[str, Any]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    layers = _layers(flat)
    if layers is not None:
        stats["layers"] = layers
    for theirs, ours in (("metrics", "metrics"), ("channel_sample_size", "channels"), ("seed", "channel_seed")):
        if flat.get(theirs) is not None:
            stats[ours] = flat[theirs]
    return stats


def _section(document: dict[str, Any], name: str, dropped: tuple[str, ...]) -> dict[str, Any]:
    part = document.get(name) or {}
    if not isinstance(part, dict):
        raise ConfigError(f"{name} must be a mapping of keys, got {part!r}")
    return {key: value for key, value in part.items() if key not in dropped and value is not None}


def translate(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(this project's config sections, the pipeline's output options, one note per key whose meaning changes)."""
    flat = _flat(document)
    output = document.get("output") or {}
    if not isinstance(output, dict):
        raise ConfigError(f"output must be a mapping (results_dir, plot_format), got {output!r}")
    unknown = sorted(set(output) - set(OUTPUT_KEYS))
    if unknown:
        raise ConfigError(f"output.{unknown[0]} is not carried over (docs/migrating.md); remove it, keep "
                          f"{' and '.join(OUTPUT_KEYS)}")
    sections = {"model": _section(document, "model", ()), "data": _section(document, "data", ("streaming",)),
                "stats": _stats(flat)}
    given = {"max_samples_for_fit": flat.get("max_samples_for_fit"), "seed": flat.get("seed"),
             "streaming": (document.get("data") or {}).get("streaming")}
    notes = [text.format(value=given[key]) for key, text in _NOTES.items() if given[key] is not None]
    return {name: part for name, part in sections.items() if part}, dict(output), notes
