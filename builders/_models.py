"""Load any causal LM and find its embedding and decoder layers, architecture-agnostically."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from builders._config import EMBEDDED_SMOLLM2, NAMED_LAYERS, ModelConfig
from builders._embedded import file_sha256, float32_folder
from builders.errors import ModelError
from store.errors import ConfigError, first_line

# Where decoder layers live, by family: Llama/Qwen/OLMo/Mixtral, GPT-2, GPT-NeoX, OPT.
_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


@dataclass(frozen=True)
class ModelSource:
    """What ``from_pretrained`` gets: a hub id or folder, an optional GGUF file, and provenance."""

    path: str
    gguf_file: str
    label: str
    model_id: str
    revision: str
    file_sha256: str


def _label_from(name: str) -> str:
    stem = Path(name.rstrip("/")).name.removesuffix(".gguf")
    return re.sub(r"[^A-Za-z0-9._-]", "-", stem).lower() or "model"


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1


def resolve_source(config: ModelConfig) -> ModelSource:
    """Turn ``--model.name`` into a loadable source; a missing local path fails here."""
    if config.name == EMBEDDED_SMOLLM2:
        folder, sha = float32_folder()
        label = config.label or "smollm2-135m-instruct"
        return ModelSource(str(folder), "", label, EMBEDDED_SMOLLM2, "", sha)
    path = Path(config.name).expanduser()
    label = config.label or _label_from(config.name)
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name, label, config.name, "", file_sha256(path))
    if path.is_dir():
        return ModelSource(str(path), config.gguf_file, label, config.name, "", _folder_sha256(path))
    if _looks_local(config.name) or path.exists():
        raise ModelError(
            f"model {config.name!r} not found: no such folder or .gguf file; "
            "pass an existing path, a hub id like HuggingFaceTB/SmolLM2-135M, or embedded:smollm2-135m-instruct"
        )
    return ModelSource(config.name, config.gguf_file, label, config.name, config.revision, "")


def _folder_sha256(folder: Path) -> str:
    """One digest over the weight files, so a store records exactly which weights ran."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        digest.update(file.name.encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def _pretrained_kwargs(source: ModelSource, config: ModelConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    if source.revision:
        kwargs["revision"] = source.revision
    return kwargs


def _load_error(source: ModelSource, what: str, error: Exception) -> ModelError:
    return ModelError(
        f"cannot load the {what} of model {source.model_id!r}: {first_line(error)}; "
        "check --model.name (hub id, local folder or .gguf file) and your network or HF_TOKEN"
    )


# What a missing, truncated or foreign model file raises from transformers and the gguf reader
# (a GGUF header cut short is a struct.error).
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, struct.error)


def load_model_config(source: ModelSource, config: ModelConfig) -> Any:
    """The model's config only (no weights), enough to check layer numbers early."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.path, **_pretrained_kwargs(source, config))
    except _LOAD_ERRORS as error:
        raise _load_error(source, "config", error) from error


def num_layers(model_config: Any) -> int:
    config = getattr(model_config, "text_config", None) or model_config
    for attribute in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, attribute, None), int):
            return int(getattr(config, attribute))
    raise ModelError(f"cannot tell how many decoder layers {type(model_config).__name__} has")


def hidden_size(model_config: Any) -> int:
    config = getattr(model_config, "text_config", None) or model_config
    return int(config.hidden_size)


def check_sequence_length(model_config: Any, seq_len: int, flag: str) -> None:
    """Refuse rows longer than the model's position table (an index error deep in the forward otherwise)."""
    config = getattr(model_config, "text_config", None) or model_config
    limit = next((getattr(config, name) for name in ("max_position_embeddings", "n_positions")
                  if isinstance(getattr(config, name, None), int)), None)
    if limit is not None and seq_len > limit:
        raise ConfigError(f"{flag} {seq_len} exceeds the model's {limit} positions; pass --{flag} {limit} or less")


def resolve_layers(labels: list[str], n_layers: int) -> list[int]:
    """Decoder-layer number behind each label (-1 for the embedding output)."""
    named = {"embed": -1, "middle": n_layers // 2, "pre_last": n_layers - 2}
    indices = []
    for label in labels:
        index = named[label] if label in NAMED_LAYERS else int(label.removeprefix("layer_"))
        if not -1 <= index < n_layers or (label != "embed" and index < 0):
            raise ConfigError(
                f"layer {label!r} is out of range: the model has {n_layers} decoder layers "
                f"(layer_0 .. layer_{n_layers - 1}); pick layers inside that range"
            )
        indices.append(index)
    return indices


def pick_device(config: ModelConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if not _available(device):  # else torch raises deep inside model.to() (e.g. "not linked with support for mps")
        raise ConfigError(f"model.device {config.device!r} is not available on this machine; use --model.device auto "
                          "(cuda when present, else cpu) or cpu")
    return device


def _available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return True


def pick_dtype(config: ModelConfig, device: torch.device) -> torch.dtype:
    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer(source: ModelSource, config: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **_pretrained_kwargs(source, config))
    except _LOAD_ERRORS as error:
        raise _load_error(source, "tokenizer", error) from error
    if tokenizer.eos_token_id is None:
        raise ModelError(f"the tokenizer of {source.model_id!r} has no EOS token to join documents with")
    return tokenizer


def quiet_loading(progress: bool) -> None:
    """Without --progress, transformers' bars go too (its "Loading weights" bar among them)."""
    if not progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def load_model(source: ModelSource, config: ModelConfig) -> nn.Module:
    """The causal LM in eval mode, on its device (or spread by ``device_map='auto'``)."""
    from transformers import AutoModelForCausalLM

    device = pick_device(config)
    kwargs = {**_pretrained_kwargs(source, config), "dtype": pick_dtype(config, device)}
    if config.device_map:
        kwargs["device_map"] = config.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    except _LOAD_ERRORS as error:
        raise _load_error(source, "weights", error) from error
    if not config.device_map:
        model.to(device)
    return model.eval()


def _get_path(root: nn.Module, dotted: str) -> Any:
    target: Any = root
    for part in dotted.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


def decoder_layers(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The ModuleList of decoder blocks, by known paths, else the one list of that length."""
    for dotted in _LAYER_PATHS:
        found = _get_path(model, dotted)
        if isinstance(found, nn.ModuleList) and len(found) == n_layers:
            return found
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if len(candidates) == 1:
        return candidates[0]
    raise ModelError(
        f"cannot find the {n_layers} decoder layers of {type(model).__name__}; "
        "this architecture needs an entry in builders/_models.py _LAYER_PATHS"
    )


def collection_modules(model: nn.Module, layer_indices: list[int], n_layers: int) -> list[nn.Module]:
    """The module whose output is each collection point (embedding for -1)."""
    layers = decoder_layers(model, n_layers)
    embedding = model.get_input_embeddings()
    return [embedding if index < 0 else layers[index] for index in layer_indices]


def decoder_body(model: nn.Module) -> nn.Module:
    """The model without its LM head: the head's output is never collected."""
    return getattr(model, "base_model", model)


# Llama/Qwen/OLMo/Gemma, GPT-2, GPT-NeoX and OPT (under .decoder), Phi
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm", "final_layernorm")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm between the last decoder layer and the LM head (the logit lens applies it too)."""
    body = decoder_body(model)
    for owner in (body, getattr(body, "decoder", None)):
        for name in _FINAL_NORMS:
            found = getattr(owner, name, None)
            if isinstance(found, nn.Module):
                return found
    raise ModelError(f"cannot find the final norm of {type(model).__name__} (looked for {list(_FINAL_NORMS)!r} "
                     "on its body); this architecture needs an entry in builders/_models.py _FINAL_NORMS")


def input_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device
