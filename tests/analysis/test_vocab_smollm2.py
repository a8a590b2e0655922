"""The vocabulary cards of SmolLM2-135M's super weight W[507, 1229] of layer 11, on a little bundled text.

Zeroing it raises the loss by far more than zeroing a random coordinate of the same matrix, and
(measured, 1.54 vs 0.04 nats on this text) by far more than zeroing its whole neuron. A likely
reason: the rest of column 1229 still writes the spiking channel into every other hidden row, now
without the massive row 507 that dominated the RMS norm. The neuron card's top tokens are the largest entries of the
unembedding against the column, computed here directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from analysis import vocab

LAYER, ROW, COL = 11, 507, 1229


@pytest.fixture(scope="module")
def cards(smollm2_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    store = tmp_path_factory.mktemp("vocab-smollm2") / "cards.zarr"
    code = vocab.main([str(store), "--models", str(smollm2_folder), "--model.label", "smollm2", "--model.device", "cpu",
                       "--weights", f"{LAYER},{ROW},{COL}", "--tokens", "768", "--window-len", "256", "--stride", "128",
                       "--bootstrap", "200", "--progress", "false"])
    assert code == 0
    return {"neurons": vocab.neuron_cards(str(store)), "weights": vocab.weight_cards(str(store))}


def test_zeroing_the_super_weight_costs_far_more_loss_than_a_random_coordinate(cards: dict[str, list[dict]]) -> None:
    (card,) = cards["weights"]
    assert (card["layer"], card["row"], card["col"]) == (LAYER, ROW, COL)
    delta, random_delta = card["deltas"]["loss"], card["controls"]["random_coord_delta"]["loss"]
    assert delta > 0.5  # nats per token: the perplexity grows several-fold
    assert abs(random_delta) < delta / 100
    assert 0 < card["controls"]["neuron_zero_delta"]["loss"] < delta / 10
    interval = card["bootstrap"]["loss"]
    assert 0 < interval["ci_2.5"] < delta < interval["ci_97.5"]


def test_the_neuron_card_lists_the_columns_strongest_tokens(cards: dict[str, list[dict]], smollm2_folder: Path) -> None:
    (card,) = cards["neurons"]
    weights = load_file(str(next(smollm2_folder.glob("*.safetensors"))))
    column = weights[f"model.layers.{LAYER}.mlp.down_proj.weight"][:, COL].double()
    unembedding = weights.get("lm_head.weight", weights["model.embed_tokens.weight"]).double()  # tied
    effects = (unembedding @ (column * weights["model.norm.weight"].double())).numpy()
    assert [token["id"] for token in card["top_tokens_up"]] == list(np.argsort(-effects)[:20])
    assert [token["id"] for token in card["top_tokens_down"]] == list(np.argsort(effects)[:20])
    np.testing.assert_allclose([token["effect"] for token in card["top_tokens_up"]], np.sort(effects)[::-1][:20],
                               rtol=1e-4)
