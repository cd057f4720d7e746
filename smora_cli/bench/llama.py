"""Random-init Llama models and a byte-level BPE tokenizer, built from configs (no download).

`LLAMA_1B` is the GPU check's model: Llama-3.2-1B's body (hidden 2048, 16 layers, 32 query
and 8 key/value heads, MLP 8192) with a 32,000-word vocabulary, 1.10 B parameters. `TINY`
has the same structure (GQA, SwiGLU) at a size a CPU runs in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LLAMA_1B = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 2048,
}
TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def llama_parameters(spec: dict) -> int:
    """Parameters of an untied LlamaForCausalLM of `spec` (embeddings, layers, norms, head)."""
    d, ffn = spec["hidden_size"], spec["intermediate_size"]
    head_dim = d // spec["num_attention_heads"]
    kv = spec["num_key_value_heads"] * head_dim
    attention = 2 * d * d + 2 * d * kv
    layer = attention + 3 * d * ffn + 2 * d
    return 2 * spec["vocab_size"] * d + spec["num_hidden_layers"] * layer + d


def byte_bpe_tokenizer(lines: list[str], vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on `lines` (any text encodes; no unknown bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def write_random_llama(
    directory: Path,
    spec: dict,
    corpus: list[str],
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Save a random-init LlamaForCausalLM of `spec` and a tokenizer trained on `corpus`.

    The weights are initialised on `device` (a 1B model initialises in seconds on a GPU,
    a minute on a CPU) and saved in `dtype`: float32 runs then load the same values that
    bf16 runs do, exactly.

    Raises:
        ValueError: the tokenizer needs more ids than `spec["vocab_size"]`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_bpe_tokenizer(corpus, vocab_size=min(400, spec["vocab_size"]))
    if len(tokenizer) > spec["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids, the model {spec['vocab_size']}")
    config = LlamaConfig(
        **spec,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_config(path: Path, spec: dict) -> Path:
    """The config.json of `spec` alone (what `bench_adapters.py --model-config` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_type": "llama", **spec}, indent=2) + "\n")
    return path
