"""Config precedence (defaults < YAML < flags) and validation before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders._cli import field_docs, parse_config
from builders._config import CollectConfig, DataConfig
from store.errors import ConfigError


def test_defaults_need_no_arguments() -> None:
    config = parse_config(CollectConfig, [], "collect", "")
    assert config.model.name == "embedded:smollm2-135m-instruct"
    assert config.stats.layers == ["embed", "middle", "pre_last"]
    assert len(config.stats.metrics) == 14


def test_yaml_then_flags_override(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data:\n  max_tokens: 2048\n  batch_size: 4\nstats:\n  layers: [embed, 5]\nstore: s3://b/x.zarr\n")
    config = parse_config(CollectConfig, ["--config", str(yaml_file), "--data.batch_size", "8",
                                          "--storage_options", "endpoint_url=http://127.0.0.1:1"], "c", "")
    assert (config.data.max_tokens, config.data.batch_size) == (2048, 8)
    assert config.stats.layers == ["embed", "layer_5"]
    assert config.store == "s3://b/x.zarr" and config.storage_options == {"endpoint_url": "http://127.0.0.1:1"}


def test_every_field_has_help_text() -> None:
    for cls in (DataConfig,):
        assert set(field_docs(cls)) == {"name", "subset", "split", "text_field", "max_tokens", "batch_size",
                                        "max_seq_len"}


def test_help_lists_zipf_activation_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(CollectConfig, ["--help"], "collect", "")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model.name", "--data.name", "--data.subset", "--data.max_tokens", "--data.batch_size",
                 "--data.max_seq_len", "--store", "--overwrite"):
        assert flag in out


def test_max_tokens_below_one_row_is_rejected() -> None:
    with pytest.raises(ConfigError, match="smaller than one row"):
        DataConfig(max_tokens=100, max_seq_len=512)
