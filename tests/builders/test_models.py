"""Layer resolution and hook capture on tiny models of every architecture family."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import _models as models
from builders._capture import StatsCapture
from builders._config import ModelConfig
from builders._metrics import compute_metrics
from store.errors import ConfigError
from tiny_models import FAMILIES, LAYERS


def _load(folder: Path) -> torch.nn.Module:
    config = ModelConfig(name=str(folder), device="cpu")
    return models.load_model(models.resolve_source(config), config)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_capture_matches_raw_decoder_outputs(family: str, tiny_model: Callable[[str], Path]) -> None:
    model = _load(tiny_model(family))
    config = models.load_model_config(models.resolve_source(ModelConfig(name=str(tiny_model(family)))), ModelConfig())
    n_layers = models.num_layers(config)
    assert n_layers == LAYERS
    indices = models.resolve_layers(["embed", "middle", "pre_last"], n_layers)
    assert indices == [-1, 2, 2]
    modules = models.collection_modules(model, indices, n_layers)
    token_ids = torch.randint(0, 200, (2, 16))
    channel_index = np.array([[0, 5, 9]] * 3)
    hooks_before = [len(m._forward_hooks) for m in modules]
    with StatsCapture(modules, ["rms", "kurtosis"], channel_index) as capture:
        values, channels = capture.run(models.decoder_body(model), token_ids)
    assert [len(m._forward_hooks) for m in modules] == hooks_before, "hooks must be removed on exit"
    assert values.shape == (3, 2, 32) and channels.shape == (3, 32, 3)
    # reference: the full forward pass's hidden states (before the final norm)
    with torch.inference_mode():
        hidden = models.decoder_body(model)(input_ids=token_ids, output_hidden_states=True).hidden_states
        embedded = model.get_input_embeddings()(token_ids)
    for position, reference in enumerate([embedded, hidden[3], hidden[3]]):
        expected = compute_metrics(reference, ["rms", "kurtosis"]).numpy()
        np.testing.assert_allclose(values[position], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(channels[position], reference.reshape(-1, 32)[:, [0, 5, 9]].numpy(), rtol=1e-6)


def test_hooks_removed_when_forward_fails(tiny_model: Callable[[str], Path]) -> None:
    model = _load(tiny_model("llama"))
    modules = models.collection_modules(model, [0, 1], LAYERS)
    hooks_before = [len(m._forward_hooks) for m in modules]
    with pytest.raises(IndexError):
        with StatsCapture(modules, ["rms"], np.zeros((2, 0), int)) as capture:
            capture.run(models.decoder_body(model), torch.tensor([[10_000]]))
    assert [len(m._forward_hooks) for m in modules] == hooks_before


def test_forward_stops_after_last_hooked_layer(tiny_model: Callable[[str], Path]) -> None:
    model = _load(tiny_model("llama"))
    layers = models.decoder_layers(model, LAYERS)
    ran: list[int] = []
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    try:
        with StatsCapture(models.collection_modules(model, [1], LAYERS), ["rms"], np.zeros((1, 0), int)) as c:
            c.run(models.decoder_body(model), torch.randint(0, 200, (1, 8)))
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0, 1]


@pytest.mark.parametrize("labels, expected", [(["layer_0", "layer_3"], [0, 3]), (["middle", "pre_last"], [15, 28])])
def test_resolve_layers(labels: list[str], expected: list[int]) -> None:
    n_layers = 4 if expected[-1] < 4 else 30
    assert models.resolve_layers(labels, n_layers) == expected


def test_resolve_layers_rejects_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"layer 'layer_30' is out of range: the model has 30"):
        models.resolve_layers(["layer_30"], 30)
