"""Shared fixtures: tiny models, a moto S3 server on loopback, the real SmolLM2, a CLI runner."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import torch
from tiny_models import FAMILIES, PLANTED, plant_super_weight, save_model, save_tiny_model

from store import StoreLocation

BUCKET = "activations"


@pytest.fixture(autouse=True, scope="session")
def _private_fits_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fits go to a session folder, never the user's cache; the converted SmolLM2 stays shared.

    A test that sets ``$ACTIVATION_CACHE`` itself (to check the cache's layout) gets that folder.
    """
    from store import CACHE_ENV

    folder, outer = tmp_path_factory.mktemp("activation-cache"), os.environ.get(CACHE_ENV)

    def cache_root() -> Path:
        inner = os.environ.get(CACHE_ENV)
        return Path(inner) if inner and inner != outer else folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("analysis._fits_cache.cache_root", cache_root)
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Folder of a tiny random model of a family, saved once per session."""
    cache: dict[str, Path] = {}

    def make(family: str = "llama") -> Path:
        if family not in cache:
            with contextlib.redirect_stderr(io.StringIO()):  # transformers' "Writing model shards" bar
                cache[family] = save_tiny_model(family, tmp_path_factory.mktemp(family))
        return cache[family]

    return make


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models with a super weight planted at tiny_models.PLANTED (layer 2, row 7, col 11; expert 1 for MoE)."""
    layer, row, col, expert = PLANTED
    folders = {}
    for family in ("llama", "gpt2", "gpt_neox", "mixtral", "qwen_moe"):
        torch.manual_seed(0)
        model = FAMILIES[family]()
        plant_super_weight(model, layer, row, col, expert=expert)
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' "Writing model shards" bar
            folders[family] = save_model(model, tmp_path_factory.mktemp(f"planted-{family}"))
    return folders


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain English text, a few thousand bytes (the byte tokenizer makes one token of each)."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n\n".join(list(topics.values())[:3])[:6000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on 127.0.0.1 with an empty bucket."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, object]:
    return {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The real SmolLM2-135M-Instruct as cached float32 safetensors (converted once)."""
    pytest.importorskip("gguf")
    from builders._embedded import float32_folder

    return float32_folder()[0]


@pytest.fixture(scope="session")
def smollm2_store(smollm2_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The default command's store, 2,048 tokens of SmolLM2 (built once): its path and what it printed."""
    from builders.collect import main

    store = tmp_path_factory.mktemp("smollm2") / "smollm2.zarr"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--store", str(store), "--data.max_tokens", "2048", "--stats.commit_tokens", "1024",
                     "--progress", "false"])
    assert code == 0, printed.getvalue()
    return store, printed.getvalue()


TINY_ARGS = [
    "--data.max_tokens", "4096", "--data.max_seq_len", "128", "--data.batch_size", "2",
    "--stats.channels", "8", "--stats.commit_tokens", "1024", "--stats.shard_tokens", "1024",
    "--model.device", "cpu",
    "--progress", "false",
]


def in_process(module: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``python -m <module>`` in-process: (exit code, stdout, stderr)."""
    import importlib

    main = importlib.import_module(module).main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def collect_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    return in_process("builders.collect", capsys)


@pytest.fixture
def vectors_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    return in_process("builders.vectors", capsys)


@pytest.fixture
def sw_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    return in_process("builders.superweights", capsys)


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new store location on each backend: a local folder, and S3 (moto on 127.0.0.1)."""
    if request.param == "local":
        return StoreLocation(str(tmp_path / "store.zarr"))
    options = request.getfixturevalue("s3_options")
    return StoreLocation(f"s3://{BUCKET}/{uuid.uuid4().hex}.zarr", options)


@pytest.fixture
def target(location: StoreLocation) -> tuple[StoreLocation, list[str]]:
    """A new store location on each backend and the CLI arguments that name it."""
    if not location.is_remote:
        return location, ["--store", location.url]
    endpoint = location.storage_options["endpoint_url"]
    return location, ["--store", location.url, "--storage_options", f"endpoint_url={endpoint}"]


@pytest.fixture(scope="session")
def captured_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Path:
    """A store with one capture (tiny Llama, "Hello world" + 4 generated tokens); copy it before writing."""
    from builders.capture import main as capture_main

    store = tmp_path_factory.mktemp("captured") / "captured.zarr"
    code = capture_main(["--model.name", str(tiny_model("llama")), "--store", str(store), "--prompt", "Hello world",
                         "--generate.max_new_tokens", "4", "--model.device", "cpu", "--progress", "false"])
    assert code == 0
    return store
