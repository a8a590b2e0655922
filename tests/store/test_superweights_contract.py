"""The ``superweights`` group's write/read/validate cycle, on every backend: a local folder and S3 (moto).

Tables follow the item protocol (tests/store/test_items.py): written whole, then marked complete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr
import zarr

from store import (
    SUMMARY_TABLE,
    ConfigError,
    ContractError,
    StoreLocation,
    StoreLocationError,
    complete_tables,
    consolidate,
    model_attrs,
    prepare_superweights,
    read_table,
    remove_superweights_model,
    summarise,
    superweight_labels,
    validate_store,
    write_item,
    write_summary,
    write_table,
)

THRESHOLD = 50.0


def _attrs(architecture: str = "LlamaForCausalLM", n_layers: int = 4, is_moe: bool = False) -> dict[str, object]:
    return {"model_id": f"tiny/{architecture}", "architecture": architecture, "n_layers": n_layers,
            "hidden_size": 8, "intermediate_size": 16, "is_moe": is_moe, "n_experts": 4 if is_moe else 0,
            "dtype": "float32", "device": "cpu", "versions": {"torch": "2"}, "created": "2026-01-01T00:00:00Z",
            "settings": json.dumps({"detect": {"spike_threshold": THRESHOLD}}), "n_params": np.int64(123)}


def _detection(n_layers: int = 4, spikes: tuple[int, ...] = (1, 3)) -> xr.Dataset:
    """One iteration per spike (that layer passes), then a last one where nothing does."""
    shape = (len(spikes) + 1, n_layers)
    input_max, output_max = np.ones(shape, np.float32), np.ones(shape, np.float32)
    for iteration, layer in enumerate(spikes):
        input_max[iteration, layer], output_max[iteration, layer] = 80.0 + layer, 300.0 + layer
    dims = ("iteration", "layer")
    return xr.Dataset(
        {"input_max": (dims, input_max), "input_channel": (dims, np.full(shape, 7, np.int32)),
         "input_token": (dims, np.full(shape, 3, np.int32)), "output_max": (dims, output_max),
         "output_channel": (dims, np.full(shape, 2, np.int32)), "output_token": (dims, np.full(shape, 3, np.int32)),
         "expert": (dims, np.full(shape, -1, np.int32)),
         "passed": (dims, (input_max > THRESHOLD) & (output_max > THRESHOLD))},
        coords={"iteration": np.arange(shape[0], dtype=np.int32), "layer": np.arange(n_layers, dtype=np.int32)},
        attrs={"spike_threshold": THRESHOLD, "max_iterations": 10, "calibration_tokens": 64,
               "stop_reason": "nothing passed the threshold"})


def _weights(layers: tuple[int, ...] = (1, 3), layout: str = "out_in", expert: int = -1) -> xr.Dataset:
    n = len(layers)
    tensors = np.array([f"model.layers.{layer}.mlp.down_proj.weight" for layer in layers], dtype=object)
    return xr.Dataset({
        "tensor": ("record", tensors), "layer": ("record", np.array(layers, np.int32)),
        "row": ("record", np.arange(2, 2 + n, dtype=np.int32)), "col": ("record", np.full(n, 7, np.int32)),
        "expert": ("record", np.full(n, expert, np.int32)), "layout": ("record", np.array([layout] * n, dtype=object)),
        "value": ("record", np.linspace(-2.5, 1.5, n).astype(np.float32)),
        "input_spike": ("record", np.full(n, 81.0, np.float32)), "output_spike": ("record", np.full(n, 301.0, np.float32)),
        "iteration": ("record", np.arange(n, dtype=np.int32)),
    })


def _evaluations(perplexities: dict[str, float], n_weights: int) -> xr.Dataset:
    """Perplexity and loss of each ablation, and one accuracy task."""
    rows = []
    for ablation, perplexity in perplexities.items():
        zeroed = ("" if ablation == "baseline" else ablation[2:] if ablation.startswith("sw")
                  else ",".join(map(str, range(n_weights))))
        rows += [(ablation, zeroed, "perplexity", "wikitext", "perplexity", perplexity, 4096),
                 (ablation, zeroed, "perplexity", "wikitext", "loss", math.log(perplexity), 4096),
                 (ablation, zeroed, "accuracy", "arc_easy", "acc", 0.5 if ablation == "baseline" else 0.25, 100)]
    columns = list(zip(*rows)) if rows else [[]] * 7
    names = ("ablation", "zeroed", "kind", "task", "metric")
    data = {name: ("record", np.array(column, dtype=object)) for name, column in zip(names, columns)}
    data |= {"value": ("record", np.array(columns[5], np.float64)), "n": ("record", np.array(columns[6], np.int64))}
    return xr.Dataset(data, attrs={"window_len": 128, "stride": 64, "text": "wikitext", "samples": 10,
                                   "accuracy_samples": 100, "seed": 0})


def _router(n_layers: int = 4, n_experts: int = 4) -> xr.Dataset:
    p_active = np.linspace(0.0, 0.5, n_layers * n_experts, dtype=np.float32).reshape(n_layers, n_experts)
    co_spike = np.zeros_like(p_active)
    co_spike[1, 2] = 0.9
    dims = ("layer", "expert")
    return xr.Dataset({"p_active": (dims, p_active), "scored": (dims, p_active >= 0.01), "co_spike": (dims, co_spike),
                       "co_spiking": (dims, (p_active >= 0.01) & (co_spike >= 0.12)),
                       "causal_delta_ppl": (dims, np.full(p_active.shape, np.nan, np.float32))},
                      attrs={"router_samples": 10, "p_active_floor": 0.01, "co_spike_threshold": 0.12,
                             "causal_scoring": False})


DENSE_PPL = {"baseline": 10.0, "sw0": 40.0, "sw1": 12.0, "all": 500.0, "all_restored": 11.0}


def _dense_model(location: StoreLocation, label: str = "dense") -> None:
    prepare_superweights(location, label, _attrs())
    write_table(location, label, "detection", _detection())
    write_table(location, label, "weights", _weights())
    write_table(location, label, "evaluations", _evaluations(DENSE_PPL, 2))


def _moe_model(location: StoreLocation, label: str = "moe") -> None:
    prepare_superweights(location, label, _attrs("OlmoeForCausalLM", 6, is_moe=True))
    write_table(location, label, "detection", _detection(6, (2,)))
    write_table(location, label, "weights", _weights((2,), expert=3))
    write_table(location, label, "evaluations", _evaluations({"baseline": 8.0, "sw0": 16.0}, 1))
    write_table(location, label, "router", _router(6))


def _validate(location: StoreLocation) -> None:
    consolidate(location)  # as builds do when they finish
    validate_store(location)


def test_every_table_round_trips_with_its_dtypes(location: StoreLocation) -> None:
    _moe_model(location)
    expected = {"detection": _detection(6, (2,)), "weights": _weights((2,), expert=3),
                "evaluations": _evaluations({"baseline": 8.0, "sw0": 16.0}, 1), "router": _router(6)}
    assert complete_tables(location, "moe") == set(expected)
    for table, written in expected.items():
        stored = read_table(location, "moe", table)
        xr.testing.assert_equal(stored, written)
        assert {name: stored[name].dtype for name in stored.variables} == \
               {name: written[name].dtype for name in written.variables}
        assert stored.attrs == {**written.attrs, "complete": True}
        assert list(stored.data_vars) == list(written.data_vars)  # the schema's order, not Zarr's listing
    assert read_table(location, "moe", "weights")["tensor"].values.tolist() == ["model.layers.2.mlp.down_proj.weight"]
    assert model_attrs(location, "moe")["n_params"] == 123 and model_attrs(location, "moe")["is_moe"] is True
    _validate(location)


def test_an_empty_weights_table_round_trips(location: StoreLocation) -> None:
    prepare_superweights(location, "plain", _attrs())
    write_table(location, "plain", "detection", _detection(spikes=()))
    write_table(location, "plain", "weights", _weights(()))
    write_table(location, "plain", "evaluations", _evaluations({"baseline": 9.0}, 0))
    weights = read_table(location, "plain", "weights")
    assert weights.sizes == {"record": 0}
    assert weights["tensor"].dtype == object and weights["layer"].dtype == np.int32  # text stays text when empty
    _validate(location)
    row = summarise(location).sel(model="plain")
    assert int(row["n_superweights"]) == 0 and row["layers"].item() == ""
    assert float(row["baseline_perplexity"]) == 9.0 and math.isnan(float(row["severity"]))


def test_an_uncommitted_table_is_not_read_and_is_named(location: StoreLocation) -> None:
    _dense_model(location)
    node = zarr.open_group(location.zarr_store(), path="superweights/dense/weights", mode="r+",
                           use_consolidated=False)
    node.attrs["complete"] = False  # a build killed before the marker
    assert complete_tables(location, "dense") == {"detection", "evaluations"}
    with pytest.raises(StoreLocationError, match="is incomplete"):
        read_table(location, "dense", "weights")
    assert summarise(location).sizes["model"] == 0  # no summary row without complete weights
    consolidate(location)
    with pytest.raises(ContractError, match=r"superweights/dense/weights is incomplete \(a build was interrupted"):
        validate_store(location)


def test_two_models_summary_and_removing_one_keeps_the_other(location: StoreLocation) -> None:
    _dense_model(location)
    _moe_model(location)
    write_summary(location)
    assert superweight_labels(location) == ["dense", "moe"]
    summary = read_table(location, "", SUMMARY_TABLE)
    assert summary["model"].values.tolist() == ["dense", "moe"]
    assert summary["n_superweights"].values.tolist() == [2, 1]
    assert summary["layers"].values.tolist() == ["1,3", "2"]
    assert summary["relative_depth"].values.tolist() == ["0.333,1.000", "0.400"]
    assert summary["architecture"].values.tolist() == ["LlamaForCausalLM", "OlmoeForCausalLM"]
    np.testing.assert_allclose(summary["severity"].values, [50.0, 2.0])  # the MoE model's one weight is "all"
    np.testing.assert_allclose(summary["worst_single_ratio"].values, [4.0, 2.0])
    np.testing.assert_allclose(summary["all_zeroed_perplexity"].values, [500.0, 16.0])
    _validate(location)
    remove_superweights_model(location, "dense")
    write_summary(location)
    assert superweight_labels(location) == ["moe"]
    assert complete_tables(location, "moe") == {"detection", "weights", "evaluations", "router"}
    assert read_table(location, "", SUMMARY_TABLE)["model"].values.tolist() == ["moe"]
    _validate(location)


def test_write_table_refuses_what_breaks_the_schema(location: StoreLocation) -> None:
    prepare_superweights(location, "m", _attrs())
    with pytest.raises(ContractError, match="unknown superweights table 'weight'"):
        write_table(location, "m", "weight", _weights())
    with pytest.raises(ContractError, match="variable 'value' is missing"):
        write_table(location, "m", "weights", _weights().drop_vars("value"))
    with pytest.raises(ContractError, match="'layout' holds 'row_col'"):
        write_table(location, "m", "weights", _weights(layout="row_col"))
    with pytest.raises(ContractError, match="'layer' has dtype int64"):
        write_table(location, "m", "weights", _weights().assign(layer=("record", np.array([1, 3]))))
    with pytest.raises(ConfigError, match="'../m'"):
        prepare_superweights(location, "../m", _attrs())
    assert complete_tables(location, "m") == set()  # nothing was written


def _break(location: StoreLocation, path: str, change: Callable[[xr.Dataset], xr.Dataset]) -> None:
    """Rewrite one committed table with ``change`` applied, past write_table's checks."""
    write_item(location, path, change(read_table(location, *path.split("/")[1:])))


@pytest.mark.parametrize(("path", "change", "named"), [
    ("superweights/dense/weights", lambda t: t.drop_vars("row"), r"superweights/dense/weights: variable 'row' is missing"),
    ("superweights/dense/weights", lambda t: t.assign(layout=("record", np.array(["out_in", "rows"], object))),
     r"'layout' holds 'rows', expected one of \['out_in', 'in_out'\]"),
    ("superweights/dense/weights", lambda t: t.assign(col=("record", np.array([7, -1], np.int32))),
     r"'col' holds -1, below 0"),
    ("superweights/dense/evaluations", lambda t: t.assign(ablation=t["ablation"].where(t["ablation"] != "sw1", "top")),
     r"ablation 'top' is not baseline"),
    ("superweights/dense/evaluations", lambda t: t.assign(ablation=t["ablation"].where(t["ablation"] != "sw1", "sw7")),
     r"zeroes weights record 7, but weights has 2 records"),
    ("superweights/dense/detection", lambda t: t.assign_attrs(stop_reason="tired"), r"stop_reason 'tired'"),
    ("superweights/dense/detection", lambda t: t.assign(passed=~t["passed"]), r"'passed' is not input_max > 50.0"),
    ("superweights/moe/router", lambda t: t.rename({"expert": "slot"}), r"'p_active' has dims \('layer', 'slot'\)"),
])
def test_the_validator_names_a_broken_table(location: StoreLocation, path: str,
                                            change: Callable[[xr.Dataset], xr.Dataset], named: str) -> None:
    _dense_model(location)
    _moe_model(location)
    _validate(location)
    _break(location, path, change)
    consolidate(location)
    with pytest.raises(ContractError, match=named):
        validate_store(location)


def test_the_validator_names_the_group_format_and_a_router_of_a_dense_model(location: StoreLocation) -> None:
    _dense_model(location)
    write_table(location, "dense", "router", _router())
    consolidate(location)
    with pytest.raises(ContractError, match="a router table, but the model's is_moe is False"):
        validate_store(location)
    group = zarr.open_group(location.zarr_store(), path="superweights", mode="r+", use_consolidated=False)
    group.attrs["format"] = "something-else"
    consolidate(location)
    with pytest.raises(ContractError, match="superweights: format is 'something-else'"):
        validate_store(location)


def test_xarray_opens_the_store_as_a_datatree(location: StoreLocation) -> None:
    _dense_model(location)
    _moe_model(location)
    write_summary(location)
    consolidate(location)
    source = location.zarr_store(read_only=True) if location.is_remote else location.url
    tree = xr.open_datatree(source, engine="zarr")
    assert set(tree["superweights"].children) == {"dense", "moe", SUMMARY_TABLE}
    np.testing.assert_array_equal(tree["superweights/dense/weights"]["layer"].values, [1, 3])
    assert tree["superweights/moe/router"].dataset.sizes == {"layer": 6, "expert": 4}
