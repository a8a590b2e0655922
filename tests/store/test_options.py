"""One KEY=VALUE storage-option parser for every entry point, values typed as YAML scalars."""

from __future__ import annotations

import pytest

from store import ConfigError, InputError, parse_storage_options


def test_values_are_typed_as_yaml_scalars() -> None:
    parsed = parse_storage_options(["anon=false", "use_ssl=0", "endpoint_url=http://127.0.0.1:9000",
                                    "key=", "config_kwargs={connect_timeout: 3}", "token=a=b"])
    assert parsed == {"anon": False, "use_ssl": 0, "endpoint_url": "http://127.0.0.1:9000", "key": "",
                      "config_kwargs": {"connect_timeout": 3}, "token": "a=b"}
    assert parsed["anon"] is False


@pytest.mark.parametrize("item", ["novalue", "=true", " =1", "anon=[1,"])
def test_bad_items_name_the_item_and_the_fix(item: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_storage_options([item])
    message = str(error.value)
    assert isinstance(error.value, InputError) and "\n" not in message
    assert repr(item) in message and "KEY=VALUE" in message


def test_the_builders_use_the_same_parser() -> None:
    from builders._cli import parse_mapping

    items = ["anon=false", "endpoint_url=http://127.0.0.1:9000", "retries=3"]
    assert parse_mapping(items) == parse_storage_options(items)
    assert parse_mapping({"anon": True}) == {"anon": True}
    with pytest.raises(ConfigError, match="'novalue'"):
        parse_mapping(["novalue"])


def test_collect_rejects_a_bad_storage_option_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from builders.collect import main

    assert main(["--store", "unused.zarr", "--storage_options", "anon=[1,"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "'anon=[1,'" in err
