"""Integration: the real SmolLM2-135M-Instruct through the default command, a few thousand tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from builders._embedded import file_sha256, gguf_path
from store import validate_store

pytestmark = pytest.mark.slow


def test_default_collect_on_smollm2(smollm2_folder: Path, smollm2_store: tuple[Path, str]) -> None:
    store, out = smollm2_store
    assert "2,048 tokens x 3 layers x 13 metrics (+64 channels)" in out
    dataset = validate_store(str(store))
    assert list(dataset.model.values) == ["smollm2-135m-instruct"]
    assert dataset.layer_index.values.tolist() == [[-1, 15, 28]]
    provenance = dataset.attrs["models"]["smollm2-135m-instruct"]
    assert provenance["file_sha256"] == file_sha256(gguf_path())
    assert provenance["hidden_size"] == 576 and provenance["architecture"] == "LlamaConfig"
    values = dataset.value.values
    assert np.isfinite(values).all()
    # the residual stream grows with depth: pre_last norms exceed embedding norms for almost every token
    l2 = dataset.value.sel(metric="l2_norm").values[0]
    assert np.mean(l2[2] > l2[0]) > 0.99
    from pydoc_data.topics import topics

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    first_doc = topics[sorted(topics)[0]]
    expected = tokenizer(first_doc, add_special_tokens=False)["input_ids"][:100]
    assert dataset.token_id.values[0, :100].tolist() == expected


def test_argmax_channel_and_vocabulary_match_a_direct_forward_and_the_tokenizer(
        smollm2_folder: Path, smollm2_store: tuple[Path, str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis import open_store
    from analysis._tokens import vocabulary_of
    from store import StoreLocation

    dataset = open_store(str(smollm2_store[0]))
    token_ids = dataset.token_id.values[0].reshape(-1, 512)[:2]  # the first batch, as collect ran it
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32)
    with torch.inference_mode():
        hidden = model(input_ids=torch.as_tensor(token_ids), output_hidden_states=True).hidden_states
    # embed is hidden[0]; block N's raw output is hidden[N + 1] (middle = 15, pre_last = 28)
    for layer, states in zip(("embed", "middle", "pre_last"), (hidden[0], hidden[16], hidden[29])):
        expected = np.argmax(np.abs(states.reshape(-1, 576).numpy()), axis=-1)
        stored = dataset.argmax_channel.sel(model="smollm2-135m-instruct", layer=layer).values[:1024]
        np.testing.assert_array_equal(stored, expected, err_msg=layer)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    vocabulary = vocabulary_of(StoreLocation(str(smollm2_store[0])), "smollm2-135m-instruct")
    for row in dataset.token_id.values[0].reshape(-1, 512):
        assert vocabulary.decode(row) == tokenizer.decode(row.tolist())
    assert vocabulary.text(np.arange(len(tokenizer))) == tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
