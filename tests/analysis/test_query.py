"""analysis.query: every query against a brute force over the loaded arrays, on local and S3 stores."""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from conftest import BUCKET, TINY_ARGS
from small_stores import downgrade_to_format_1, write_slot
from tiny_models import EOS_ID

from analysis import open_store
from analysis.query import channel_histogram, main, position_stats, token_stats, tokens_above, top_tokens
from builders.collect import main as collect
from store import (
    ModelSlot,
    StatsLayout,
    StoreLocation,
    Vocabulary,
    consolidate,
    finish,
    open_session,
    validate_store,
    vocabulary_keys,
    write_vocabulary,
)
from store.errors import InputError

Runner = Callable[..., tuple[int, str, str]]
SEQ_LEN = 50
SYNTHETIC = StatsLayout(layers=("embed", "middle"), metrics=("rms", "linf_norm"), n_tokens=600, n_channels=2,
                        token_chunk=100, requested_shard_tokens=200)  # three shards: three dask blocks to merge


@pytest.fixture(scope="module")
def tiny_store(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store collected from the tiny Llama: real token ids, its vocabulary, argmax_channel."""
    path = tmp_path_factory.mktemp("query") / "s.zarr"
    assert collect(["--model.name", str(tiny_model("llama")), "--store", str(path), *TINY_ARGS]) == 0
    return path


def _synthetic_values() -> np.ndarray:
    """Values with many ties (a few distinct numbers) and NaNs: what top-k must order deterministically."""
    rng = np.random.default_rng(7)
    values = rng.integers(0, 12, size=(2, 2, 600)).astype(np.float32)
    values[rng.random(values.shape) < 0.05] = np.nan
    return values


SYNTHETIC_ATTRS = {"format": "activation-stats", "format_version": 2, "metric_definitions": {"rms": "", "linf_norm": ""},
                   "dataset": {"name": "test"}, "created": "now", "versions": {}, "token_chunk": 100,
                   "build_config": {"data": {"max_seq_len": SEQ_LEN}, "stats": {"shard_tokens": 200}}}


def _slot(label: str) -> ModelSlot:
    return ModelSlot(label, np.array([-1, 1]), np.array([[0, 3], [0, 3]]),
                     {"model_id": label, "revision": "", "config": {}, "created": "now", "versions": {}})


def _add_model(location: StoreLocation, label: str, seed: int, texts: str = " t{}") -> None:
    """A model slot of random values over random ids of a 40-token vocabulary whose texts follow ``texts``."""
    session = open_session(location, SYNTHETIC, _slot(label), SYNTHETIC_ATTRS)
    rng = np.random.default_rng(seed)
    values = _synthetic_values() if seed == 3 else rng.normal(size=(2, 2, 600)).astype(np.float32)
    write_slot(session, values, rng.normal(size=(2, 600, 2)).astype(np.float32),
               rng.integers(0, 40, 600).astype(np.int32), np.arange(600) // 70)
    finish(location, session, 600)
    tokens = [f"t{i}" for i in range(40)]
    write_vocabulary(location, label, Vocabulary(tokens, [texts.format(i) for i in range(40)], np.zeros(40, bool), 0))


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "s.zarr"
    _add_model(StoreLocation(str(path)), "m", seed=3)
    return path


def _brute_top(values: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    index = np.flatnonzero(~np.isnan(values))
    key = -values[index] if largest else values[index]
    order = np.lexsort((index, key))[:k]  # by value, ties to the earlier token
    return values[index[order]], index[order]


@pytest.mark.parametrize("k", [1, 7, 64, 1000])
@pytest.mark.parametrize("largest", [True, False])
def test_top_k_equals_a_numpy_brute_force(synthetic_store: Path, k: int, largest: bool) -> None:
    dataset = open_store(str(synthetic_store))
    for layer in ("embed", "middle"):
        frame = top_tokens(dataset, "linf_norm", layer, k=k, smallest=not largest, context=0)
        loaded = dataset.value.sel(model="m", layer=layer, metric="linf_norm").values
        values, tokens = _brute_top(loaded, k, largest)
        np.testing.assert_array_equal(frame["token_index"], tokens)
        np.testing.assert_array_equal(frame["value"], values)
        np.testing.assert_array_equal(frame["rank"], np.arange(1, len(tokens) + 1))
        np.testing.assert_array_equal(frame["position"], tokens % SEQ_LEN)
        np.testing.assert_array_equal(frame["row"], tokens // SEQ_LEN)
        np.testing.assert_array_equal(frame["token_id"], dataset.token_id.values[0, tokens])
        assert frame["text"].tolist() == [f" t{i}" for i in frame["token_id"]]  # the stored vocabulary's texts
        np.testing.assert_array_equal(frame["doc_index"], dataset.doc_index.values[0, tokens])
        layer_slot = list(dataset.layer.values).index(layer)
        np.testing.assert_array_equal(frame["argmax_channel"], dataset.argmax_channel.values[0, layer_slot, tokens])
    if k == 1000:  # every token: windows cut at row starts and ends (position 0 and 49) and at the last token
        frame = top_tokens(dataset, "linf_norm", "middle", k=k, smallest=not largest, context=3)
        ids = dataset.token_id.values[0]
        for token, context in zip(frame["token_index"], frame["context"]):
            row = token // SEQ_LEN * SEQ_LEN
            before = "".join(f" t{i}" for i in ids[max(row, token - 3):token])  # no tokenizer.json: texts joined
            after = "".join(f" t{i}" for i in ids[token + 1:min(row + SEQ_LEN, token + 4)])
            assert context == f"{before}[[ t{ids[token]}]]{after}"
        assert {0, SEQ_LEN - 1} <= set(frame["position"]) and 599 in set(frame["token_index"])


def test_threshold_and_median_equal_a_numpy_brute_force(synthetic_store: Path) -> None:
    dataset = open_store(str(synthetic_store))
    linf = dataset.value.sel(model="m", layer="middle", metric="linf_norm").values
    rms = dataset.value.sel(model="m", layer="middle", metric="rms").values
    frame = tokens_above(dataset, "linf_norm", "middle", threshold=4.0, times_median=1.5, median_of="rms",
                         limit=None, context=0)
    expected = np.flatnonzero((linf > 4.0) & (linf > 1.5 * np.nanmedian(rms)))
    order = np.lexsort((expected, -linf[expected]))
    np.testing.assert_array_equal(frame["token_index"], expected[order])
    assert frame["median"].unique().tolist() == [np.nanmedian(rms)]
    only = tokens_above(dataset, "linf_norm", "middle", threshold=10.0, limit=5, context=0)
    np.testing.assert_array_equal(only["token_index"], _brute_top(np.where(linf > 10, linf, np.nan), 5, True)[1])


def test_the_stored_vocabulary_decodes_rows_as_the_tokenizer(tiny_store: Path, tiny_model: Callable[[str], Path]) -> None:
    from transformers import AutoTokenizer

    from analysis._tokens import vocabulary_of

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llama"))
    dataset = open_store(str(tiny_store))
    vocabulary = vocabulary_of(StoreLocation(str(tiny_store)), str(dataset.model.values[0]))
    rows = dataset.token_id.values[0].reshape(-1, 128)
    for row in rows[:6]:
        assert vocabulary.decode(row) == tokenizer.decode(row.tolist())
    assert vocabulary.text(np.arange(len(tokenizer))) == tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    assert vocabulary.eos_token_id == EOS_ID and vocabulary.special[EOS_ID]


def test_context_is_the_decoded_window_around_each_hit(tiny_store: Path, tiny_model: Callable[[str], Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llama"))
    frame = top_tokens(str(tiny_store), "l2_norm", "pre_last", k=5, context=3)
    token_ids = open_store(str(tiny_store)).token_id.values[0]
    for token, context, text in zip(frame["token_index"], frame["context"], frame["text"]):
        start = max(token - 3, token // 128 * 128)
        end = min(token + 4, (token // 128 + 1) * 128)
        before, after = tokenizer.decode(token_ids[start:token]), tokenizer.decode(token_ids[token + 1:end])
        assert context == f"{before}[[{text}]]{after}"
        assert text == tokenizer.decode([int(token_ids[token])])


def test_token_stats_equal_a_pandas_groupby(tiny_store: Path) -> None:
    dataset = open_store(str(tiny_store))
    frame = token_stats(dataset, "kurtosis", "middle")
    loaded = pd.DataFrame({"token_id": dataset.token_id.values[0],
                           "value": dataset.value.sel(layer="middle", metric="kurtosis").values[0].astype(np.float64)})
    expected = loaded.groupby("token_id")["value"].agg(["count", "mean", "max"])
    ours = frame.set_index("token_id").sort_index()
    np.testing.assert_array_equal(ours["count"], expected["count"])
    np.testing.assert_allclose(ours["mean"], expected["mean"], rtol=1e-12)
    np.testing.assert_array_equal(ours["max"], expected["max"])
    assert (np.diff(frame["count"]) <= 0).all()  # sorted by count, most frequent first
    assert frame.set_index("token_id").loc[220, "token"] == "Ġ"  # the byte-level space, as the tokenizer spells it


def test_position_stats_equal_a_brute_force(tiny_store: Path) -> None:
    dataset = open_store(str(tiny_store))
    values = dataset.value.sel(layer="middle", metric="linf_norm").values[0].astype(np.float64)
    token_ids = dataset.token_id.values[0]
    by_position = position_stats(dataset, "linf_norm", "middle")
    positions = np.arange(values.size) % 128
    np.testing.assert_allclose(by_position["mean"], [values[positions == p].mean() for p in range(128)], rtol=1e-12)
    np.testing.assert_array_equal(by_position["max"], [values[positions == p].max() for p in range(128)])
    kinds = position_stats(dataset, "linf_norm", "middle", by="kind").set_index("kind")
    after_eos = np.r_[False, token_ids[:-1] == EOS_ID] & (positions > 0)
    assert after_eos.any()  # the text holds document ends inside rows
    for kind, mask in (("first_in_row", positions == 0), ("after_eos", after_eos),
                       ("other", (positions > 0) & ~after_eos)):
        assert kinds.loc[kind, "count"] == mask.sum()
        assert kinds.loc[kind, "max"] == values[mask].max()


def test_channel_histogram_counts_argmax_channel(tiny_store: Path) -> None:
    dataset = open_store(str(tiny_store))
    frame = channel_histogram(dataset, top=None)
    for j, layer in enumerate(dataset.layer.values):
        counts = np.bincount(dataset.argmax_channel.values[0, j], minlength=32)
        rows = frame[frame.layer == layer]
        assert dict(zip(rows["channel"], rows["count"])) == {c: n for c, n in enumerate(counts) if n}
        assert (np.diff(rows["count"]) <= 0).all() and rows["share"].sum() == pytest.approx(1.0)
    assert len(channel_histogram(dataset, layer="middle", top=2)) == 2


def test_queries_on_s3_equal_the_local_copy(tiny_store: Path, s3_options: dict[str, object]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_options["endpoint_url"]})
    key = f"{BUCKET}/{uuid.uuid4().hex}.zarr"
    fs.put(str(tiny_store), key, recursive=True)
    local, remote = open_store(str(tiny_store)), open_store(f"s3://{key}", storage_options=dict(s3_options))
    queries = [lambda d: top_tokens(d, "linf_norm", "middle", k=10),
               lambda d: tokens_above(d, "l2_norm", "embed", times_median=1.2),
               lambda d: token_stats(d, "rms", "pre_last"),
               lambda d: position_stats(d, "gini", "middle", by="kind"),
               lambda d: channel_histogram(d, top=3)]
    for query in queries:
        pd.testing.assert_frame_equal(query(remote), query(local))


def test_the_cli_prints_and_writes_csv_json_parquet(tiny_store: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tiny_store), "top", "--layer", "middle", "--metric", "linf_norm", "-k", "5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "argmax_channel" in printed and "[[" in printed and len(printed.splitlines()) == 6
    expected = top_tokens(str(tiny_store), "linf_norm", "middle", k=5)
    for output_format in ("csv", "json", "parquet"):
        output = tmp_path / f"top.{output_format}"
        assert main([*args, "--format", output_format, "--output", str(output)]) == 0
        read = {"csv": lambda p: pd.read_csv(p, keep_default_na=False), "parquet": pd.read_parquet,
                "json": lambda p: pd.DataFrame(json.loads(p.read_text()))}[output_format](output)
        assert read["token_index"].tolist() == expected["token_index"].tolist()
        assert read["context"].tolist() == expected["context"].tolist()
    assert main([str(tiny_store), "tokens", "--format", "csv", "--limit", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


@pytest.mark.parametrize("args, says", [
    (["top", "--metric", "nope"], "unknown metric 'nope'"),
    (["top", "--layer", "layer_99"], "unknown layer 'layer_99'"),
    (["top", "-k", "0"], "-k must be at least 1, got 0"),
    (["top", "-k", "-3"], "got -3"),
    (["top", "--model", "other"], "unknown model 'other'"),
    (["above"], "needs a bound"),
    (["top", "--threshold", "1"], "--threshold applies to the above query"),
    (["channels", "--top", "0"], "--top must be at least 1"),
    (["top", "--format", "parquet"], "--format parquet writes a file"),
    (["top", "--context", "-1"], "context must be 0 or more"),
    (["tokens", "--limit", "0"], "--limit must be at least 1, got 0"),
    (["top", "--output", "."], "is a folder"),
    (["top", "--output", "s3://bucket/top.csv"], "is a URL"),
    (["above", "--times_median", "10", "--median_of", "nope"], "unknown metric 'nope'"),
    (["above", "--median_of", "rms", "--threshold", "1"], "--median_of needs --times_median"),
    (["above", "--threshold", "nan"], "--threshold must be a finite number"),
])
def test_bad_queries_give_one_error_line(tiny_store: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                         says: str) -> None:
    code = None
    try:
        code = main([str(tiny_store), *args])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err


def test_a_store_from_before_the_query_layer_still_answers(tiny_store: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No vocabulary and no argmax_channel: token texts are empty (one warning), the histogram is refused."""
    old = tmp_path / "old.zarr"
    shutil.copytree(tiny_store, old)
    downgrade_to_format_1(StoreLocation(str(old)))
    zarr.open_group(str(old), mode="r+", use_consolidated=False).__delitem__("vocab")
    consolidate(StoreLocation(str(old)))
    validate_store(str(old))
    with pytest.warns(UserWarning, match="no vocabulary for model"):
        frame = top_tokens(str(old), "linf_norm", "middle", k=3)
    assert "argmax_channel" not in frame and set(frame["text"]) == {""} and set(frame["context"]) == {""}
    np.testing.assert_array_equal(frame["token_index"], top_tokens(str(tiny_store), "linf_norm", "middle", k=3)["token_index"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([str(old), "channels"]) == 2
        assert "has no argmax_channel" in capsys.readouterr().err
        assert main([str(old), "positions", "--by", "kind"]) == 2
    err = capsys.readouterr().err
    assert "positions by kind needs model" in err and "EOS token" in err


def test_a_dataset_that_forgot_its_store_is_refused(synthetic_store: Path) -> None:
    derived = xr.Dataset(open_store(str(synthetic_store)).data_vars)  # encoding dropped
    with pytest.raises(InputError, match="not the one analysis.open_store returned"):
        top_tokens(derived)


def test_token_stats_across_models_that_share_a_tokenizer(synthetic_store: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, path)
    location = StoreLocation(str(path))
    _add_model(location, "n", seed=4)  # the same vocabulary: one entry, compared token by token
    _add_model(location, "o", seed=5, texts="<{}>")  # another vocabulary
    assert len(set(vocabulary_keys(location).values())) == 2
    dataset = open_store(str(path))
    frame = token_stats(dataset, "rms", "middle", model=["m", "n"])
    assert frame["model"].unique().tolist() == ["m", "n"]
    for label in ("m", "n"):
        loaded = pd.DataFrame({"token_id": dataset.token_id.sel(model=label).values,
                               "value": dataset.value.sel(model=label, layer="middle", metric="rms").values})
        expected = loaded.groupby("token_id")["value"].agg(["count", "mean", "max"])
        ours = frame[frame.model == label].set_index("token_id").sort_index()
        np.testing.assert_array_equal(ours["count"], expected["count"])
        np.testing.assert_allclose(ours["mean"], expected["mean"], rtol=1e-6)
    for models in (["m", "o"], None):
        with pytest.raises(InputError, match="different \\(or unknown\\) tokenizers.*'o'"):
            token_stats(dataset, "rms", "middle", model=models)
    hits = top_tokens(dataset, "rms", "embed", k=30, model="n", context=0)  # reads model n's slot, not m's
    tokens = hits["token_index"].to_numpy()
    np.testing.assert_array_equal(hits["token_id"], dataset.token_id.sel(model="n").values[tokens])
    np.testing.assert_array_equal(hits["argmax_channel"], dataset.argmax_channel.sel(model="n", layer="embed").values[tokens])
    np.testing.assert_array_equal(hits["value"], np.sort(dataset.value.sel(model="n", layer="embed", metric="rms").values)[::-1][:30])
    with pytest.raises(InputError, match="not the one analysis.open_store returned"):
        top_tokens(dataset.sel(model=["n"]))  # narrowed: its slot 0 is model m's in the store


def test_a_model_with_no_committed_token_gives_empty_tables(synthetic_store: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    shutil.copytree(synthetic_store, path)
    location = StoreLocation(str(path))
    open_session(location, SYNTHETIC, _slot("z"), SYNTHETIC_ATTRS)  # a slot, no unit committed
    with pytest.warns(UserWarning):  # every model is trimmed to the shortest commit: none here
        dataset = open_store(str(path))
    assert dataset.sizes["token"] == 0
    assert len(top_tokens(dataset, k=5, model="m")) == 0
    assert len(tokens_above(dataset, threshold=1.0, times_median=2.0, model="m")) == 0
    assert len(token_stats(dataset, model="m")) == 0
    assert len(position_stats(dataset, model="m", by="kind")) == 0
    assert channel_histogram(dataset, model="m")["count"].sum() == 0
