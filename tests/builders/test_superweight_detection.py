"""Detection finds planted super weights at their (layer, row, col) in Hugging Face layout, then stops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from builders import _models as models
from builders._detect import STOP_KNOWN, STOP_LIMIT, STOP_NOTHING, detect, layer_table
from builders._down_proj import down_projections
from builders._spikes import Maxima
from tests.tiny_models import FAMILIES, LAYERS, plant_super_weight

LAYER, ROW, COL, EXPERT = 2, 7, 11, 1
TENSORS = {
    "llama": "model.layers.2.mlp.down_proj.weight",
    "qwen3": "model.layers.2.mlp.down_proj.weight",
    "olmo": "model.layers.2.mlp.down_proj.weight",
    "gpt2": "transformer.h.2.mlp.c_proj.weight",
    "gpt_neox": "gpt_neox.layers.2.mlp.dense_4h_to_h.weight",
    "mixtral": "model.layers.2.mlp.experts.down_proj",
    "qwen_moe": "model.layers.2.mlp.experts.down_proj",
}


def _model(family: str) -> Any:
    torch.manual_seed(0)
    return FAMILIES[family]().eval()


def _detect(model: Any, threshold: float = 50.0, max_iterations: int = 10, eligible: Any = None) -> Any:
    projections = [projection for layer in down_projections(model, LAYERS) for projection in layer]
    batch = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    return detect(models.decoder_body(model), projections, [batch], LAYERS, threshold, max_iterations,
                  eligible or (lambda layer, expert: True), progress=False)


@pytest.mark.parametrize("family", ["llama", "qwen3", "olmo", "gpt2", "gpt_neox", "mixtral", "qwen_moe"])
def test_a_planted_super_weight_is_found_where_it_was_planted_and_the_search_stops(family: str) -> None:
    model = _model(family)
    plant_super_weight(model, LAYER, ROW, COL, expert=EXPERT)
    before = {name: parameter.clone() for name, parameter in model.named_parameters()}
    detection = _detect(model)
    expert = EXPERT if family in ("mixtral", "qwen_moe") else -1
    assert [(w.layer, w.row, w.col, w.expert) for w in detection.weights] == [(LAYER, ROW, COL, expert)]
    found = detection.weights[0]
    assert found.tensor == TENSORS[family] and found.value == pytest.approx(5.0)
    assert found.input_spike > 50 and found.output_spike > 50
    assert detection.stop_reason == STOP_NOTHING and len(detection.iterations) == 2
    parameter = dict(model.named_parameters())[found.tensor]
    assert parameter[found.projection.element(ROW, COL, expert)].item() == pytest.approx(5.0)  # the HF element
    assert found.layout == ("in_out" if family == "gpt2" else "out_in")
    assert all(torch.equal(parameter, before[name]) for name, parameter in model.named_parameters())  # put back


def test_the_first_iteration_records_every_layer_and_only_the_planted_layer_passes() -> None:
    model = _model("llama")
    plant_super_weight(model, LAYER, ROW, COL)
    first = _detect(model).iterations[0]
    assert first.shape == (LAYERS, 8)
    assert np.flatnonzero(first[:, 7] == 1).tolist() == [LAYER]
    assert int(first[LAYER, 1]) == COL and int(first[LAYER, 4]) == ROW
    assert 0 <= first[LAYER, 2] < 128 and 0 <= first[LAYER, 5] < 128  # token numbers inside the batch


def test_an_unplanted_model_has_no_super_weight() -> None:
    detection = _detect(_model("llama"))
    assert detection.weights == [] and detection.stop_reason == STOP_NOTHING and len(detection.iterations) == 1


def test_the_search_stops_at_max_iterations() -> None:
    detection = _detect(_model("llama"), threshold=1e-3, max_iterations=3)
    assert len(detection.weights) == 3 and detection.stop_reason == STOP_LIMIT
    assert len({(w.layer, w.col) for w in detection.weights}) == 3  # each names a new input channel


def test_an_expert_that_is_not_eligible_is_never_a_candidate() -> None:
    model = _model("mixtral")
    plant_super_weight(model, LAYER, ROW, COL, expert=EXPERT)
    detection = _detect(model, eligible=lambda layer, expert: expert != EXPERT)
    assert detection.weights == [] and detection.stop_reason == STOP_NOTHING  # the planted spike is invisible
    assert len(_detect(model).weights) == 1  # and found when the expert is eligible


def test_a_layer_passes_only_when_both_its_input_and_its_output_spike() -> None:
    values = np.array([[60.0, 1, 0, 40.0, 2, 0], [40.0, 1, 0, 60.0, 2, 0], [60.0, 3, 5, 61.0, 4, 6]])
    maxima = Maxima(values, np.array([-1, -1, -1]), np.array([0, 1, 2]), np.array([0, 1, 2]))
    table, chosen = layer_table(maxima, 3, 50.0, lambda layer, expert: True)
    assert table[:, 7].tolist() == [0, 0, 1] and chosen.tolist() == [0, 1, 2]


def test_per_layer_the_projection_with_the_largest_output_is_kept() -> None:
    values = np.array([[10.0, 1, 0, 20.0, 2, 0], [90.0, 3, 1, 80.0, 4, 1]])
    maxima = Maxima(values, np.array([-1, 2]), np.array([0, 0]), np.array([0, 1]))
    table, _ = layer_table(maxima, 1, 50.0, lambda layer, expert: True)
    assert table[0, 6] == 2 and table[0, 3] == 80.0 and table[0, 7] == 1


def test_a_spiking_column_names_one_super_weight_and_the_search_then_stops() -> None:
    model = _model("llama")
    column = model.model.layers[LAYER].mlp.down_proj.weight[:, COL].clone()
    plant_super_weight(model, LAYER, ROW, COL)
    with torch.no_grad():  # give the rest of the column back: the input spike reaches every row through it
        weight = model.model.layers[LAYER].mlp.down_proj.weight
        weight[:, COL] = torch.where(torch.arange(len(column)) == ROW, weight[:, COL], column * 20)
    detection = _detect(model)
    assert [(w.layer, w.row, w.col) for w in detection.weights] == [(LAYER, ROW, COL)]
    assert detection.stop_reason == STOP_KNOWN and detection.iterations[1][LAYER, 7] == 1  # still passes, known column
