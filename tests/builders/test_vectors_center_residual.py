"""``--vectors.center_residual``: the hooked block outputs minus each token's mean over d, as
TransformerLens' default weight processing (center_writing_weights) makes its residual stream.

Tiny GPT-NeoX (LayerNorm, parallel attention and MLP, as Pythia) is checked three ways: against a
direct computation, against a copy whose writing weights are centred the way TransformerLens
centres them, and through the ``--text`` path. RMSNorm models are refused, and a store is never
mixed raw and centred.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from small_stores import tree_digest
from tiny_models import save_model

from builders import _models as models
from builders._config import ModelConfig
from builders._documents import bos_id
from builders._pooling import LONG_DEPTHS, SHORT_DEPTHS, Segments, pool
from builders._states import block_outputs
from builders.vectors import TextVectors, main

Runner = Callable[..., tuple[int, str, str]]
TEXTS = [" ".join(f"word{(i * 7 + j) % 50}" for j in range(2 + (i * 3) % 11)) for i in range(8)]  # 2-12 words
# float32 storage: the vectors differ from a direct computation only by float32 rounding (batching, padding;
# measured below 1e-7), while centring moves them by more than 1e-3: values are about 0.03 in this tiny model
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}




def _args(corpus: Path) -> list[str]:
    """Eight short documents in batches of three (so padded), pooled in float32 and stored as float32."""
    return ["--data.name", str(corpus), "--data.id_field", "id", "--data.max_seq_len", "128",
            "--data.batch_size", "3", "--vectors.unit_docs", "4", "--vectors.dtype", "float32",
            "--model.device", "cpu", "--progress", "false"]


def _write_corpus(folder: Path) -> Path:
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    return path


def _stored(store: Path) -> xr.Dataset:
    return xr.open_zarr(store, group="vectors").load()


@pytest.fixture(scope="module")
def centred_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> tuple[Path, Path]:
    """Tiny GPT-NeoX's vectors with --vectors.center_residual true (built once): the store and its corpus."""
    folder = tmp_path_factory.mktemp("centred")
    corpus, store = _write_corpus(folder), folder / "centred.zarr"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["--model.name", str(tiny_model("gpt_neox")), "--store", str(store), *_args(corpus),
                     "--vectors.center_residual", "true"])
    assert code == 0
    return store, corpus


def _load(folder: Path) -> tuple[torch.nn.Module, Any]:
    config = ModelConfig(name=str(folder), device="cpu")
    source = models.resolve_source(config)
    return models.load_model(source, config), models.load_tokenizer(source, config)


def _blocks(model: torch.nn.Module, token_ids: list[int]) -> torch.Tensor:
    """(layer, tokens, d) float32: every decoder block's raw output, hooked as the builder hooks them."""
    n_layers = models.num_layers(model.config)
    with block_outputs(list(models.decoder_layers(model, n_layers))) as outputs, torch.inference_mode():
        model(input_ids=torch.tensor([token_ids]), use_cache=False)
    return torch.stack([output[0].float() for output in outputs])  # type: ignore[index]


def _tokens(tokenizer: Any, text: str) -> list[int]:
    """A document as the build tokenises it: BOS (here EOS), then the text without special tokens."""
    return [bos_id(tokenizer), *tokenizer(text, add_special_tokens=False)["input_ids"]]


def _pooled(layer_mean: torch.Tensor) -> dict[str, np.ndarray]:
    """One document's short and long vectors from its (tokens, d) layer mean, with the build's pooling."""
    rows, segments = layer_mean[None], Segments.whole([layer_mean.shape[0]])
    return {"short": pool(rows, segments, SHORT_DEPTHS, last_token=False)[0].numpy(),
            "long": pool(rows, segments, LONG_DEPTHS, last_token=True)[0].numpy()}


def test_centred_vectors_equal_a_direct_computation(centred_store: tuple[Path, Path],
                                                    tiny_model: Callable[[str], Path]) -> None:
    """Each token's block outputs minus their mean over d, averaged over the pooled blocks, then pooled."""
    store, _ = centred_store
    stored = _stored(store)
    assert stored.attrs["build_config"]["vectors"]["center_residual"] is True
    (provenance,) = stored.attrs["models"].values()
    layers = provenance["layers"]
    assert layers == [3, 4, 5]  # the last block among them: its raw output, never the final norm's
    model, tokenizer = _load(tiny_model("gpt_neox"))
    for doc, text in enumerate(TEXTS):
        token_ids = _tokens(tokenizer, text)
        assert stored["n_tokens"].values[0, doc] == len(token_ids)  # nothing truncated
        chosen = _blocks(model, token_ids)[layers]
        centred = _pooled((chosen - chosen.mean(dim=-1, keepdim=True)).mean(dim=0))
        raw = _pooled(chosen.mean(dim=0))
        for pooling in ("short", "long"):
            vector = stored[pooling].values[0, doc]
            np.testing.assert_allclose(vector, centred[pooling], **TOLERANCE)
            assert np.abs(vector - raw[pooling]).max() > 1e-3  # the centring is there: far above the tolerance
    # pooling is linear and its weights sum to 1: every part of every vector keeps a zero mean over d
    assert np.abs(stored["short"].values[0].mean(axis=-1)).max() < 1e-6
    assert np.abs(stored["long"].values[0].reshape(len(TEXTS), 4, -1).mean(axis=-1)).max() < 1e-6


def _centre_writing_weights(model: torch.nn.Module) -> None:
    """TransformerLens' center_writing_weights on a GPT-NeoX: every weight and bias that writes to the
    residual stream loses its mean over d (no W_pos: GPT-NeoX is rotary). Hugging Face's Linear weight is
    (out, in), so the mean is over dimension 0; an embedding's rows are the d values."""
    body = model.gpt_neox
    with torch.no_grad():
        body.embed_in.weight -= body.embed_in.weight.mean(dim=1, keepdim=True)  # W_E
        for layer in body.layers:
            for writer in (layer.attention.dense, layer.mlp.dense_4h_to_h):  # W_O, b_O and W_out, b_out
                writer.weight -= writer.weight.mean(dim=0, keepdim=True)
                writer.bias -= writer.bias.mean()


def test_centring_equals_transformerlens_centred_writing_weights(
        centred_store: tuple[Path, Path], tiny_model: Callable[[str], Path], vectors_cli: Runner,
        tmp_path: Path) -> None:
    """A copy with centred writing weights computes the same (LayerNorm ignores the mean), and its raw block
    outputs are the original's minus their per-token mean at every block: so the option's vectors of the
    original equal the plain vectors of the copy."""
    original, tokenizer = _load(tiny_model("gpt_neox"))
    centred = copy.deepcopy(original)
    _centre_writing_weights(centred)
    token_ids = _tokens(tokenizer, " ".join(TEXTS))
    raw, processed = _blocks(original, token_ids), _blocks(centred, token_ids)
    assert raw.shape[0] == models.num_layers(original.config) == 6
    assert raw.mean(dim=-1).abs().amax(dim=-1).min() > 1e-3  # every block's output has a mean worth removing
    torch.testing.assert_close(processed, raw - raw.mean(dim=-1, keepdim=True), rtol=0, atol=1e-6)
    with torch.inference_mode():
        logits = [model(input_ids=torch.tensor([token_ids])).logits for model in (original, centred)]
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-5)  # the same function of the tokens

    store, corpus = centred_store
    folder = save_model(centred, tmp_path / "centred-weights")
    plain = tmp_path / "plain.zarr"
    code, _, err = vectors_cli("--model.name", str(folder), "--store", str(plain), *_args(corpus))
    assert code == 0, err
    assert "center_residual" not in _stored(plain).attrs["build_config"]["vectors"]  # built raw
    for pooling in ("short", "long"):
        np.testing.assert_allclose(_stored(plain)[pooling].values, _stored(store)[pooling].values, **TOLERANCE)


def test_a_text_is_pooled_centred_like_its_store(centred_store: tuple[Path, Path], vectors_cli: Runner) -> None:
    """--text and TextVectors read the setting from the store: a stored document's text gets its vector."""
    store, _ = centred_store
    stored = _stored(store)
    on_demand = TextVectors(str(store))([TEXTS[6], TEXTS[1]])
    for pooling in ("short", "long"):
        np.testing.assert_allclose(on_demand[pooling], stored[pooling].values[0, [6, 1]], **TOLERANCE)
    code, out, err = vectors_cli("--store", str(store), "--text", TEXTS[6], "--query.k", "2", "--progress", "false")
    assert code == 0, err
    assert out.splitlines()[2].split()[:3] == ["1", "6", "doc-6"]


def test_an_rmsnorm_model_is_refused_before_anything_is_written(tiny_model: Callable[[str], Path],
                                                               vectors_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    code, out, err = vectors_cli("--model.name", str(tiny_model("llama")), "--store", str(store),
                                 *_args(_write_corpus(tmp_path)), "--vectors.center_residual", "true")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "vectors.center_residual True" in err and "LlamaRMSNorm" in err
    assert "use --vectors.center_residual false; TransformerLens does not centre RMSNorm models" in err
    assert not store.exists()


def test_raw_and_centred_vectors_never_share_a_store(centred_store: tuple[Path, Path],
                                                     tiny_model: Callable[[str], Path], vectors_cli: Runner,
                                                     tmp_path: Path) -> None:
    centred, corpus = centred_store
    model = str(tiny_model("gpt_neox"))
    store = tmp_path / "v.zarr"
    assert vectors_cli("--model.name", model, "--store", str(store), *_args(corpus))[0] == 0
    for target, flag in ((store, "true"), (centred, "false")):
        before = tree_digest(target)
        code, _, err = vectors_cli("--model.name", model, "--store", str(target), *_args(corpus),
                                   "--vectors.center_residual", flag)
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert "different configuration" in err and "vectors.center_residual" in err
        assert tree_digest(target) == before
    code, _, err = vectors_cli("--model.name", model, "--store", str(store), *_args(corpus),
                               "--vectors.center_residual", "true", "--overwrite")
    assert code == 0, err  # asked for: the group is rebuilt centred
    for pooling in ("short", "long"):
        np.testing.assert_allclose(_stored(store)[pooling].values, _stored(centred)[pooling].values, **TOLERANCE)
