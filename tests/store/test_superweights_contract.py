"""The ``superweights`` group's write/read/validate cycle, on every backend: a local folder and S3 (moto).

Tables follow the item protocol (tests/store/test_items.py): written whole, then marked complete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from small_superweights import (
    DENSE_PPL,
    TOKEN_CLASSES,
    detection_table,
    evaluations_table,
    model_attributes,
    neuron_cards_table,
    router_table,
    weight_cards_table,
    weights_table,
)

from store import (
    CARD_METRICS,
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


def _dense_model(location: StoreLocation, label: str = "dense") -> None:
    prepare_superweights(location, label, model_attributes())
    write_table(location, label, "detection", detection_table())
    write_table(location, label, "weights", weights_table())
    write_table(location, label, "evaluations", evaluations_table(DENSE_PPL, 2))


def _moe_model(location: StoreLocation, label: str = "moe") -> None:
    prepare_superweights(location, label, model_attributes("OlmoeForCausalLM", 6, is_moe=True))
    write_table(location, label, "detection", detection_table(6, (2,)))
    write_table(location, label, "weights", weights_table((2,), expert=3))
    write_table(location, label, "evaluations", evaluations_table({"baseline": 8.0, "sw0": 16.0}, 1))
    write_table(location, label, "router", router_table(6))


def _validate(location: StoreLocation) -> None:
    consolidate(location)  # as builds do when they finish
    validate_store(location)


def test_every_table_round_trips_with_its_dtypes(location: StoreLocation) -> None:
    _moe_model(location)
    expected = {"detection": detection_table(6, (2,)), "weights": weights_table((2,), expert=3),
                "evaluations": evaluations_table({"baseline": 8.0, "sw0": 16.0}, 1), "router": router_table(6)}
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


def test_an_empty_weights_table_round_trips(local_location: StoreLocation) -> None:
    location = local_location
    prepare_superweights(location, "plain", model_attributes())
    write_table(location, "plain", "detection", detection_table(spikes=()))
    write_table(location, "plain", "weights", weights_table(()))
    write_table(location, "plain", "evaluations", evaluations_table({"baseline": 9.0}, 0))
    weights = read_table(location, "plain", "weights")
    assert weights.sizes == {"record": 0}
    assert weights["tensor"].dtype == object and weights["layer"].dtype == np.int32  # text stays text when empty
    _validate(location)
    row = summarise(location).sel(model="plain")
    assert int(row["n_superweights"]) == 0 and row["layers"].item() == ""
    assert float(row["baseline_perplexity"]) == 9.0 and math.isnan(float(row["severity"]))


def test_an_uncommitted_table_is_not_read_and_is_named(local_location: StoreLocation) -> None:
    location = local_location
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


def test_two_models_summary_datatree_removal_and_a_broken_table(location: StoreLocation) -> None:
    """The whole cycle on each backend, on one store (each S3 store costs seconds on moto): two models, the
    summary, the DataTree view, removing one model, then the validator naming a broken table."""
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
    _assert_datatree(location)
    remove_superweights_model(location, "dense")
    write_summary(location)
    assert superweight_labels(location) == ["moe"]
    assert complete_tables(location, "moe") == {"detection", "weights", "evaluations", "router"}
    assert read_table(location, "", SUMMARY_TABLE)["model"].values.tolist() == ["moe"]
    _validate(location)
    path, change, named = BROKEN_TABLES[-1]  # the router of the model that is left
    _break(location, path, change)
    consolidate(location)
    with pytest.raises(ContractError, match=named):
        validate_store(location)


def test_write_table_refuses_what_breaks_the_schema(location: StoreLocation) -> None:
    prepare_superweights(location, "m", model_attributes())
    with pytest.raises(ContractError, match="unknown superweights table 'weight'"):
        write_table(location, "m", "weight", weights_table())
    with pytest.raises(ContractError, match="variable 'value' is missing"):
        write_table(location, "m", "weights", weights_table().drop_vars("value"))
    with pytest.raises(ContractError, match="'layout' holds 'row_col'"):
        write_table(location, "m", "weights", weights_table(layout="row_col"))
    with pytest.raises(ContractError, match="'layer' has dtype int64"):
        write_table(location, "m", "weights", weights_table().assign(layer=("record", np.array([1, 3]))))
    with pytest.raises(ConfigError, match="'../m'"):
        prepare_superweights(location, "../m", model_attributes())
    assert complete_tables(location, "m") == set()  # nothing was written


def _break(location: StoreLocation, path: str, change: Callable[[xr.Dataset], xr.Dataset]) -> None:
    """Rewrite one committed table with ``change`` applied, past write_table's checks."""
    write_item(location, path, change(read_table(location, *path.split("/")[1:])))


@pytest.fixture
def local_location(tmp_path: Path) -> StoreLocation:
    """A local store: for rules that read the same tables on every backend (a case costs about 10 s on moto)."""
    return StoreLocation(str(tmp_path / "store.zarr"))


BROKEN_TABLES = [
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
]


@pytest.mark.parametrize(("path", "change", "named"), BROKEN_TABLES)
def test_the_validator_names_a_broken_table(local_location: StoreLocation, path: str,
                                            change: Callable[[xr.Dataset], xr.Dataset], named: str) -> None:
    _assert_named(local_location, path, change, named)


def _assert_named(location: StoreLocation, path: str, change: Callable[[xr.Dataset], xr.Dataset], named: str) -> None:
    _dense_model(location)
    _moe_model(location)
    _validate(location)
    _break(location, path, change)
    consolidate(location)
    with pytest.raises(ContractError, match=named):
        validate_store(location)


def test_the_validator_names_the_group_format_and_a_router_of_a_dense_model(local_location: StoreLocation) -> None:
    location = local_location
    _dense_model(location)
    write_table(location, "dense", "router", router_table(4, co_spikes={(1, 2): 0.9}))
    consolidate(location)
    with pytest.raises(ContractError, match="a router table, but the model's is_moe is False"):
        validate_store(location)
    group = zarr.open_group(location.zarr_store(), path="superweights", mode="r+", use_consolidated=False)
    group.attrs["format"] = "something-else"
    consolidate(location)
    with pytest.raises(ContractError, match="superweights: format is 'something-else'"):
        validate_store(location)


def _assert_datatree(location: StoreLocation) -> None:
    """xarray opens the whole store (two models and the summary, consolidated) as a DataTree."""
    source = location.zarr_store(read_only=True) if location.is_remote else location.url
    tree = xr.open_datatree(source, engine="zarr")
    assert set(tree["superweights"].children) == {"dense", "moe", SUMMARY_TABLE}
    np.testing.assert_array_equal(tree["superweights/dense/weights"]["layer"].values, [1, 3])
    assert tree["superweights/moe/router"].dataset.sizes == {"layer": 6, "expert": 4}


CARD_TABLES = {"neuron_cards": neuron_cards_table, "weight_cards": weight_cards_table}


def _card_attributes() -> dict[str, object]:
    """A model node made by the vocabulary analyses alone: the provenance, no builder "settings"."""
    return {name: value for name, value in model_attributes().items() if name != "settings"}


def _write_cards(location: StoreLocation, label: str) -> None:
    write_table(location, label, "neuron_cards", neuron_cards_table())
    write_table(location, label, "weight_cards", weight_cards_table())


def test_card_tables_round_trip_beside_the_other_tables(local_location: StoreLocation) -> None:
    """Local only: the tables go through the same item writer as the others (their S3 round trip is tested
    above), and tests/analysis/test_vocab_cli.py builds and validates cards on S3 end to end."""
    location = local_location
    _dense_model(location)
    _write_cards(location, "dense")
    assert complete_tables(location, "dense") == {"detection", "weights", "evaluations", "neuron_cards",
                                                  "weight_cards"}
    for table, make in CARD_TABLES.items():
        written, stored = make(), read_table(location, "dense", table)
        xr.testing.assert_equal(stored, written)
        assert {name: stored[name].dtype for name in stored.variables} == \
               {name: written[name].dtype for name in written.variables}
        assert stored.attrs == {**written.attrs, "complete": True}
        assert list(stored.data_vars) == list(written.data_vars)
    neurons = read_table(location, "dense", "neuron_cards")
    assert neurons["token_class"].values.tolist() == list(TOKEN_CLASSES)
    assert neurons["up_tok"].values.tolist() == [["t0", "t1", "t2"], ["t100", "t101", "t102"]]
    examples = neurons["enrichment_examples"].sel(card=1, token_class="digits_years").item()
    assert type(examples) is str and json.loads(examples) == ["1999"]
    assert neurons["source"].values.tolist() == ["superweight", "asked"]
    cards = read_table(location, "dense", "weight_cards")
    assert cards["metric"].values.tolist() == ["loss", "entropy", "topk_margin", "stopword_mass"] == list(CARD_METRICS)
    assert cards.sizes == {"card": 2, "metric": 4, "rank": 3, "cascade_layer": 2, "window": 4}
    assert "rank" not in cards.coords and "window" not in cards.coords
    assert cards["cascade_layer"].values.tolist() == [0, 2] and cards["layer"].values.tolist() == [1, 3]
    assert cards["window_tokens"].values.tolist() == [60, 61, 62, 63]
    assert float(cards["ci_high"].sel(card=1, metric="entropy")) == 2.125
    assert json.loads(cards.attrs["settings"])["cards"]["top_k"] == 3
    _validate(location)


def test_a_node_with_card_tables_only_needs_no_settings(local_location: StoreLocation) -> None:
    location = local_location
    prepare_superweights(location, "cards", _card_attributes())
    write_table(location, "cards", "neuron_cards", neuron_cards_table())
    given = weight_cards_table().assign(weights_record=("card", np.full(2, -1, np.int32)))  # no weights table
    write_table(location, "cards", "weight_cards", given)
    assert "settings" not in model_attrs(location, "cards")
    _validate(location)
    write_table(location, "cards", "weights", weights_table())  # now a super-weight build's table: settings needed
    consolidate(location)
    with pytest.raises(ContractError, match=r"superweights/cards: attrs lack \['settings'\]") as raised:
        validate_store(location)
    assert "weight_cards" not in str(raised.value)


def test_cards_without_a_weights_table_name_no_weights_record(local_location: StoreLocation) -> None:
    prepare_superweights(local_location, "cards", _card_attributes())
    _write_cards(local_location, "cards")  # records 0 and 1, but the model has no weights table
    consolidate(local_location)
    with pytest.raises(ContractError, match=r"weight_cards: names weights records, but the model has no weights"):
        validate_store(local_location)


def test_a_card_node_still_needs_its_provenance(local_location: StoreLocation) -> None:
    location = local_location
    attrs = _card_attributes()
    del attrs["model_id"]
    prepare_superweights(location, "cards", attrs)
    _write_cards(location, "cards")
    consolidate(location)
    with pytest.raises(ContractError, match=r"superweights/cards: attrs lack \['model_id'\]"):
        validate_store(location)


def _set(table: xr.Dataset, name: str, index: tuple[int, ...], value: object) -> xr.Dataset:
    """``table`` with one element of variable ``name`` changed."""
    values = table[name].values.copy()
    values[index] = value
    return table.assign({name: (table[name].dims, values)})


def _without_attr(table: xr.Dataset, name: str) -> xr.Dataset:
    table = table.copy(deep=True)
    del table.attrs[name]
    return table


BROKEN_CARDS = [
    ("weight_cards", lambda t: t.isel(metric=[1, 0, 2, 3]),
     (r"'metric' is \['entropy', 'loss', 'topk_margin', 'stopword_mass'\], "
      r"expected \['loss', 'entropy', 'topk_margin', 'stopword_mass'\]")),
    ("weight_cards", lambda t: _set(t, "ci_low", (1, 2), 9.0), r"'ci_low' lies above 'ci_high' somewhere"),
    ("neuron_cards", lambda t: _set(t, "tensor", (1,), "mlp_in"),
     r"'tensor' holds 'mlp_in', expected one of \['mlp_out', 'expert_out', 'shared_expert_out'\]"),
    ("weight_cards", lambda t: _set(t, "tensor", (0,), "mlp_in"), r"'tensor' holds 'mlp_in'"),
    ("neuron_cards", lambda t: _set(t, "source", (0,), "random"),
     r"'source' holds 'random', expected one of \['superweight', 'asked'\]"),
    ("neuron_cards", lambda t: _set(t, "up_id", (1, 2), -1), r"'up_id' holds -1, below 0"),
    ("weight_cards", lambda t: _set(t, "window_tokens", (3,), 0), r"'window_tokens' holds 0, below 1"),
    ("neuron_cards", lambda t: t.drop_vars("kurt"), r"variable 'kurt' is missing"),
    ("weight_cards", lambda t: _without_attr(t, "bootstrap"), r"attrs lack 'bootstrap'"),
]


@pytest.mark.parametrize(("table", "change", "named"), BROKEN_CARDS)
def test_a_broken_card_table_is_refused_and_named(local_location: StoreLocation, table: str,
                                                  change: Callable[[xr.Dataset], xr.Dataset], named: str) -> None:
    """write_table refuses it (nothing is committed); written past it, the validator names it."""
    location = local_location
    prepare_superweights(location, "cards", _card_attributes())
    broken = change(CARD_TABLES[table]())
    with pytest.raises(ContractError, match=rf"'superweights/cards/{table}' breaks the schema: .*{named}"):
        write_table(location, "cards", table, broken)
    assert complete_tables(location, "cards") == set()
    write_item(location, f"superweights/cards/{table}", broken)
    consolidate(location)
    with pytest.raises(ContractError, match=rf"superweights/cards/{table}: {named}"):
        validate_store(location)


@pytest.mark.parametrize(("records", "named"), [((0, 5), 5), ((0, 2), 2)])
def test_a_weight_card_naming_a_missing_weights_record_is_named(local_location: StoreLocation,
                                                                records: tuple[int, ...], named: int) -> None:
    location = local_location
    _dense_model(location)  # weights: 2 records
    cards = weight_cards_table().assign(weights_record=("card", np.array(records, np.int32)))
    write_table(location, "dense", "weight_cards", cards)  # the table alone follows the schema
    assert "weight_cards" in complete_tables(location, "dense")
    consolidate(location)
    with pytest.raises(ContractError, match=rf"superweights/dense/weight_cards: names weights record {named}, "
                                            r"but weights has 2 records"):
        validate_store(location)


def test_prepare_without_replace_keeps_an_existing_nodes_attributes(local_location: StoreLocation) -> None:
    location = local_location
    prepare_superweights(location, "new", {**_card_attributes(), "dtype": "bfloat16"}, replace=False)
    assert model_attrs(location, "new")["dtype"] == "bfloat16"  # a new node gets them
    prepare_superweights(location, "m", model_attributes())
    prepare_superweights(location, "m", {**_card_attributes(), "dtype": "bfloat16", "device": "cuda"}, replace=False)
    kept = model_attrs(location, "m")
    assert kept["dtype"] == "float32" and kept["device"] == "cpu" and "settings" in kept
    prepare_superweights(location, "m", {**model_attributes(), "dtype": "bfloat16"})  # replace=True, the default
    assert model_attrs(location, "m")["dtype"] == "bfloat16"
    assert model_attrs(location, "m")["model_id"] == "tiny/LlamaForCausalLM"
