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
from store import validate_store
from store.errors import ConfigError
from tiny_models import FAMILIES, LAYERS, MIDDLE, PRE_LAST

Runner = Callable[..., tuple[int, str, str]]


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
    assert indices == [-1, MIDDLE, PRE_LAST]
    modules = models.collection_modules(model, indices, n_layers)
    token_ids = torch.randint(0, 200, (2, 16))
    channel_index = np.array([[0, 5, 9]] * 3)
    hooks_before = [len(m._forward_hooks) for m in modules]
    with StatsCapture(modules, ["rms", "kurtosis"], channel_index) as capture:
        values, channels, peaks = capture.run(models.decoder_body(model), token_ids)
    assert [len(m._forward_hooks) for m in modules] == hooks_before, "hooks must be removed on exit"
    assert values.shape == (3, 2, 32) and channels.shape == (3, 32, 3)
    # reference: the full forward pass's hidden states (before the final norm)
    with torch.inference_mode():
        hidden = models.decoder_body(model)(input_ids=token_ids, output_hidden_states=True).hidden_states
        embedded = model.get_input_embeddings()(token_ids)
    # hidden[i + 1] is block i's raw output (the last entry, after the final norm, is never used)
    for position, reference in enumerate([embedded, hidden[MIDDLE + 1], hidden[PRE_LAST + 1]]):
        expected = compute_metrics(reference, ["rms", "kurtosis"]).numpy()
        np.testing.assert_allclose(values[position], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(channels[position], reference.reshape(-1, 32)[:, [0, 5, 9]].numpy(), rtol=1e-6)
        # argmax_channel: the channel of max|x|, which the k sampled channels usually miss
        np.testing.assert_array_equal(peaks[position], np.argmax(np.abs(reference.reshape(-1, 32).numpy()), -1))


_SEQ_LEN = 64
_SMALL_BUILD = ["--data.max_tokens", "256", "--data.max_seq_len", str(_SEQ_LEN), "--data.batch_size", "2",
                "--stats.channels", "8", "--stats.commit_tokens", "128", "--model.device", "cpu",
                "--progress", "false"]


def _reference_outputs(model: torch.nn.Module, rows: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Each collection point's activations (tokens, d) from plain forwards, no hooks involved.

    Batched as collect batches the rows, so the arithmetic (and MoE routing) is the same.
    """
    embedded, middle, pre_last = [], [], []
    with torch.inference_mode():
        for batch in rows.split(batch_size):
            hidden = model(input_ids=batch, output_hidden_states=True, use_cache=False).hidden_states
            # the embedding module's own output (docs/store-format.md); for GPT-2 hidden[0] differs,
            # it already has the position embeddings added
            embedded.append(model.get_input_embeddings()(batch))
            middle.append(hidden[MIDDLE + 1])  # hidden[i + 1]: block i's raw output
            pre_last.append(hidden[PRE_LAST + 1])
    return {name: torch.cat(parts).reshape(rows.numel(), -1)
            for name, parts in (("embed", embedded), ("middle", middle), ("pre_last", pre_last))}


def _plain_metrics(x: torch.Tensor) -> dict[str, np.ndarray]:
    """rms, l2_norm and max_value written out here, independently of builders._metrics."""
    x = x.double()
    return {"rms": x.square().mean(-1).sqrt().numpy(), "l2_norm": x.square().sum(-1).sqrt().numpy(),
            "max_value": x.amax(-1).numpy()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_collected_layer_is_its_own_block(family: str, tiny_model: Callable[[str], Path],
                                               collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    code, _, err = collect_cli("--model.name", str(tiny_model(family)), "--store", str(store), *_SMALL_BUILD)
    assert code == 0, err
    dataset = validate_store(str(store)).isel(model=0)
    assert dataset.layer_index.values.tolist() == [-1, MIDDLE, PRE_LAST]
    # token t is position t % len of row t // len
    rows = torch.as_tensor(dataset.token_id.values.astype(np.int64)).reshape(-1, _SEQ_LEN)
    references = _reference_outputs(_load(tiny_model(family)), rows, batch_size=2)
    expected = {layer: _plain_metrics(x) for layer, x in references.items()}
    # the test has power only if the three points really differ
    for one, other in [("embed", "middle"), ("middle", "pre_last"), ("embed", "pre_last")]:
        assert not np.allclose(expected[one]["rms"], expected[other]["rms"], rtol=1e-3), (one, other)
    for layer, reference in references.items():
        stored = dataset.sel(layer=layer)
        for metric, values in expected[layer].items():
            np.testing.assert_allclose(stored.value.sel(metric=metric).values, values, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{family} {layer} {metric}")
        channels = reference[:, stored.channel_index.values.astype(np.int64)].numpy()
        np.testing.assert_array_equal(stored.channel_value.values, channels,
                                      err_msg=f"{family} {layer} channels")


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
