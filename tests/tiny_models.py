"""Tiny randomly initialised causal LMs of each architecture family, saved to a folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB = 320
HIDDEN = 32
# Six blocks, so embed (-1), middle (6 // 2 = 3) and pre_last (6 - 2 = 4) are three different
# collection points and a test can tell them apart (with 4, middle and pre_last were both block 2).
LAYERS = 6
MIDDLE = LAYERS // 2
PRE_LAST = LAYERS - 2
EOS_ID = 256  # the byte tokenizer's end-of-text token


def _llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                        num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2))


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=512,
                                      bos_token_id=EOS_ID, eos_token_id=EOS_ID))


def _qwen3() -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, head_dim=8,
                                        num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2))


def _gpt_neox() -> Any:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                            num_hidden_layers=LAYERS, num_attention_heads=4))


def _olmo() -> Any:
    from transformers import OlmoConfig, OlmoForCausalLM

    return OlmoForCausalLM(OlmoConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                      num_hidden_layers=LAYERS, num_attention_heads=4))


def _mixtral() -> Any:
    from transformers import MixtralConfig, MixtralForCausalLM

    return MixtralForCausalLM(MixtralConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                            num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                            num_local_experts=4, num_experts_per_tok=2))


def _qwen_moe() -> Any:
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    return Qwen2MoeForCausalLM(Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                              moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                              num_hidden_layers=LAYERS, num_attention_heads=4,
                                              num_key_value_heads=2, num_experts=4, num_experts_per_tok=2))


def _opt() -> Any:
    # activationCaptureLib's documented example model (facebook/opt-125m): learned positions, a
    # decoder under model.decoder, the final LayerNorm inside the decoder
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=64, num_hidden_layers=LAYERS,
                                    num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=HIDDEN,
                                    bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=1))


FAMILIES: dict[str, Callable[[], Any]] = {
    "llama": _llama,
    "gpt2": _gpt2,
    "qwen3": _qwen3,
    "gpt_neox": _gpt_neox,
    "olmo": _olmo,
    "mixtral": _mixtral,
    "qwen_moe": _qwen_moe,
    "opt": _opt,
}


def byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges learned: fast, offline, deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def merged_tokenizer(training_text: str, vocab_size: int = 300) -> Any:
    """A byte-level BPE tokenizer with merges learned on ``training_text``.

    It cuts the same text into fewer tokens than :func:`byte_tokenizer` (with other ids),
    for stores whose models tokenize differently; ``vocab_size`` stays below ``VOCAB``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator([training_text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def save_tiny_model(family: str, folder: Path, seed: int = 0, tokenizer: Any = None) -> Path:
    """A tiny random ``family`` model and its tokenizer (the byte tokenizer unless given) in ``folder``."""
    torch.manual_seed(seed)
    return save_model(FAMILIES[family](), folder, tokenizer)


PLANTED = (2, 7, 11, 1)  # layer, row, col and (MoE) expert of the super weight in conftest's ``planted`` models


def plant_super_weight(model: Any, layer: int, row: int, col: int, expert: int = 0, value: float = 5.0) -> None:
    """Plant a super weight ``W[row, col]`` (Hugging Face layout) in ``layer``'s MLP down projection.

    Input channel ``col`` is made to spike (a bias of 200 where the MLP has biases, else its
    gate and up rows scaled 300 times, which gives spikes in the thousands), ``W[row, col]`` is
    set to ``value`` and the rest of column ``col`` to 0, so that once the planted weight is
    zeroed no output spike is left and detection stops. For MoE models the weight goes into
    ``expert``'s slice of the fused experts tensor.
    """
    mlp = _mlp(model, layer)
    with torch.no_grad():
        if hasattr(mlp, "experts"):
            experts = mlp.experts
            intermediate = experts.down_proj.shape[-1]
            experts.gate_up_proj[expert, [col, intermediate + col]] *= 300
            experts.down_proj[expert, :, col] = 0
            experts.down_proj[expert, row, col] = value
        elif hasattr(mlp, "c_proj"):  # GPT-2: Conv1D weights are (in, out)
            mlp.c_fc.bias[col] = 200.0
            mlp.c_proj.weight[col, :] = 0
            mlp.c_proj.weight[col, row] = value
        elif hasattr(mlp, "dense_4h_to_h"):
            mlp.dense_h_to_4h.bias[col] = 200.0
            mlp.dense_4h_to_h.weight[:, col] = 0
            mlp.dense_4h_to_h.weight[row, col] = value
        else:
            mlp.gate_proj.weight[col] *= 300
            mlp.up_proj.weight[col] *= 300
            mlp.down_proj.weight[:, col] = 0
            mlp.down_proj.weight[row, col] = value


def _mlp(model: Any, layer: int) -> Any:
    body = model.base_model
    blocks = getattr(body, "layers", None) or body.h
    return blocks[layer].mlp


def save_model(model: Any, folder: Path, tokenizer: Any = None) -> Path:
    """``model`` (a tiny model, perhaps with planted structure) and its tokenizer in ``folder``."""
    model.save_pretrained(folder)
    (tokenizer or byte_tokenizer()).save_pretrained(folder)
    return folder
