"""A tokenizer that yields fewer tokens than the tiny models' byte tokenizer for the same text."""

from __future__ import annotations

import shutil
from pathlib import Path


def merging_tokenizer_model(folder: Path, source: Path, corpus: str, vocab_size: int = 300) -> Path:
    """A copy of the tiny model at ``source`` whose tokenizer merges frequent byte pairs of ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    shutil.copytree(source, folder)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([corpus], trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder
