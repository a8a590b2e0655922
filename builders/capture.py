"""``python -m builders.capture``: every hidden state of a generation, whole, into the store's ``captures`` group.

For each model and prompt: generate a continuation, run prompt + continuation once, and
store every layer's hidden states (embedding, each decoder block's raw output, the final
norm's output) with the token ids, the texts and per-layer statistics. Prints the
statistics as one JSON report (the reference capture tool's shape). Re-running skips the
captures already complete.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from builders import _models as models
from builders._cli import run_cli
from builders._config import read_text_file
from builders._item_configs import CaptureConfig
from builders._npy_export import export_activations, export_stats
from builders._provenance import now, versions
from builders._states import Capture, capture, make_deterministic
from builders.errors import DataError
from store import (
    CAPTURES_GROUP,
    Lease,
    StoreLocation,
    check_ours_or_empty,
    check_output_path,
    complete_items,
    consolidate,
    item_path,
    open_item,
    prepare_group,
    remove_items,
    reporting_write_faults,
    slot_key,
    structure_lease,
    write_item,
)
from store.errors import StoreMismatchError

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


@dataclass(frozen=True)
class _Model:
    """One model to capture, checked: where it loads from and how many blocks it has."""

    config: models.ModelConfig
    source: models.ModelSource
    n_layers: int
    tokenizer: Any


def read_prompts(config: CaptureConfig) -> list[str]:
    """The prompts, one capture each: --prompt, or the non-blank lines of --prompt_file."""
    if not config.prompt_file:
        return [config.prompt]
    text = read_text_file(config.prompt_file, "prompt_file", "a UTF-8 text file with one prompt per line")
    return [line for line in text.splitlines() if line.strip()]


def _check(config: CaptureConfig) -> tuple[StoreLocation, list[str], list[_Model]]:
    """Every check that can fail, before any weights load or anything is written."""
    location = StoreLocation(config.store, config.storage_options)
    if config.report:
        _check_report(check_output_path(config.report, "report"))
    if config.export:
        check_output_path(config.export[1], "export folder", folder=True)
    location.check_writable()
    check_ours_or_empty(location)
    prompts = read_prompts(config)
    checked = []
    for model_config in config.model.model_configs():
        source = models.resolve_source(model_config)
        n_layers = models.num_layers(models.load_model_config(source, model_config))
        checked.append(_Model(model_config, source, n_layers, models.load_tokenizer(source, model_config)))
        _check_settings(location, source.label, config, prompts)
    labels = [model.source.label for model in checked]
    if len(set(labels)) != len(labels):
        raise DataError(f"two models get the same label {labels!r}; give each one with --model.label")
    return location, prompts, checked


def _check_report(path: Path) -> None:
    """An existing --report file is replaced only if it is a report of ours (never a user's other file)."""
    if not path.exists():
        return
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        ours = isinstance(document, list) and all(isinstance(item, dict) and "layer_stats" in item for item in document)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ours = False
    if not ours:
        raise DataError(f"report {str(path)!r} exists and is not a capture report; choose a new --report path "
                        "(an earlier report of this command is replaced)")


def _check_settings(location: StoreLocation, label: str, config: CaptureConfig, prompts: list[str]) -> None:
    """Captures of one model share their settings, and capture N is always prompt N; else --overwrite."""
    if config.overwrite:
        return
    for index, path in sorted(complete_items(location, CAPTURES_GROUP, label).items()):
        attrs = open_item(location, path).attrs
        if json.loads(attrs.get("capture_settings", "{}")) != config.capture_settings():
            raise StoreMismatchError(
                f"model {label!r} in store {location.display()!r} was captured with other settings "
                f"({attrs.get('capture_settings')}); rerun with those, choose another --store, "
                "or pass --overwrite to capture again")
        if index < len(prompts) and attrs.get("prompt") != prompts[index]:
            raise StoreMismatchError(
                f"capture {index} of model {label!r} in store {location.display()!r} is of another prompt "
                f"({attrs.get('prompt')!r:.60}); give the same prompts in the same order, choose another "
                "--store, or pass --overwrite to replace this model's captures")


def run(config: CaptureConfig) -> int:
    location, prompts, checked = _check(config)
    models.quiet_loading(config.progress)
    if config.deterministic:
        make_deterministic()
    reports = []
    for model in checked:
        reports += _capture_model(config, location, prompts, model)
    with structure_lease(location, "consolidate after captures"):
        consolidate(location)
    text = json.dumps(reports, indent=2)
    print(text)
    if config.report:
        Path(config.report).expanduser().write_text(text + "\n", encoding="utf-8")
    if config.export:
        folder = Path(config.export[1]).expanduser()
        export_stats(reports, folder)
        for model in checked:  # the last capture's, as the reference tool keeps one file per model
            export_activations(open_item(location, item_path(CAPTURES_GROUP, model.source.label, len(prompts) - 1)),
                               folder)
    return 0


def _capture_model(config: CaptureConfig, location: StoreLocation, prompts: list[str], model: _Model) -> list[dict[str, Any]]:
    label = model.source.label
    loaded = models.load_model(model.source, model.config)
    lease = Lease(location, slot_key(CAPTURES_GROUP, label), f"capture model {label!r}")
    reports = []
    with reporting_write_faults(location), lease.acquire(interrupt=True):
        if config.overwrite:
            remove_items(location, CAPTURES_GROUP, label)  # no capture of the old settings is left behind
        done = complete_items(location, CAPTURES_GROUP, label)
        for index, prompt in enumerate(tqdm(prompts, desc=f"capture {label}", disable=not config.progress)):
            if index not in done:
                taken = capture(loaded, model.tokenizer, prompt, config.generate, model.n_layers)
                lease.ensure_held()
                prepare_group(location, CAPTURES_GROUP, label, {"model_id": model.source.model_id,
                                                                 "file_sha256": model.source.file_sha256})
                write_item(location, item_path(CAPTURES_GROUP, label, index),
                           _dataset(taken, prompt, model, config, loaded), _encoding(taken))
            reports.append(_report(open_item(location, item_path(CAPTURES_GROUP, label, index))))
    return reports


def _dataset(taken: Capture, prompt: str, model: _Model, config: CaptureConfig, loaded: torch.nn.Module) -> xr.Dataset:
    states = taken.states.float().numpy() if taken.states.dtype == torch.bfloat16 else taken.states.numpy()
    is_prompt = np.arange(taken.token_ids.shape[0]) < taken.n_prompt_tokens
    dtype = str(taken.states.dtype).removeprefix("torch.")
    attrs = {
        "model_name": model.source.model_id, "label": model.source.label, "prompt": prompt,
        "generated_text": taken.generated_text, "n_prompt_tokens": taken.n_prompt_tokens, "dtype": dtype,
        "stored_dtype": str(states.dtype), "device": str(models.input_device(loaded)),
        "capture_settings": json.dumps(config.capture_settings(), sort_keys=True),
        "layer_stats": layer_stats(states, taken.layer_names, dtype), "created": now(), "versions": versions(),
    }
    attrs["size_summary"] = size_summary(attrs["layer_stats"])
    return xr.Dataset(
        {"hidden_state": (("layer", "position", "hidden"), states),
         "token_id": (("position",), taken.token_ids.astype(np.int32)),
         "is_prompt": (("position",), is_prompt)},
        coords={"layer": np.array(taken.layer_names, dtype=object)}, attrs=attrs)


def _encoding(taken: Capture) -> dict[str, Any]:
    _, positions, hidden = taken.states.shape
    return {"hidden_state": {"chunks": (1, positions, hidden)}}  # one chunk per layer


_PRECISION_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float64": 64}


def layer_stats(states: np.ndarray, names: list[str], dtype: str) -> list[dict[str, Any]]:
    """Per layer: shape (with the batch axis of 1, as the reference tool reports), count, min, max, mean."""
    stats = []
    for name, layer in zip(names, states):
        values = layer.astype(np.float64)
        stats.append({"layer": name, "shape": [1, *layer.shape], "num_elements": int(layer.size),
                      "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
                      "dtype": f"torch.{dtype}", "precision_bits": _PRECISION_BITS.get(dtype, 0)})
    return stats


def size_summary(stats: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [entry["num_elements"] for entry in stats]
    return {"min_size": min(sizes), "max_size": max(sizes), "avg_size": sum(sizes) / len(sizes)}


def _report(stored: xr.Dataset) -> dict[str, Any]:
    """The reference tool's per-model JSON for one capture (plus where it is in the store)."""
    keys = ("model_name", "prompt", "generated_text", "size_summary", "layer_stats", "label", "device")
    return {key: stored.attrs[key] for key in keys}


def main(argv: list[str] | None = None) -> int:
    return run_cli(CaptureConfig, argv, "python -m builders.capture", DESCRIPTION, run)

if __name__ == "__main__":
    sys.exit(main())
