"""Integration: the real SmolLM2-135M-Instruct through the default command, a few thousand tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from builders._embedded import file_sha256, gguf_path
from store import validate_store

pytestmark = pytest.mark.slow
Runner = Callable[..., tuple[int, str, str]]


def test_default_collect_on_smollm2(smollm2_folder: Path, collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "smollm2.zarr"
    code, out, err = collect_cli("--store", str(store), "--data.max_tokens", "2048", "--stats.commit_tokens", "1024",
                                 "--progress", "false")
    assert code == 0, err
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
    from transformers import AutoTokenizer
    from pydoc_data.topics import topics

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    first_doc = topics[sorted(topics)[0]]
    expected = tokenizer(first_doc, add_special_tokens=False)["input_ids"][:100]
    assert dataset.token_id.values[0, :100].tolist() == expected
