"""Tiny random transformer checkpoints (built in-process, no download) for the methods tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ARCHS = ("bert", "roberta", "distilbert", "gpt2", "llama")
CAUSAL_ARCHS = ("gpt2", "llama")
WORDS = (
    "the a good bad movie film great awful not very is was i it and of to this that fun boring "
    "yes no cat dog sat on mat red blue green sky sea"
).split()


def _write_tokenizer(d: Path) -> int:
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[chr(c) for c in range(97, 123)]]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(d)
    return len(vocab)


def _tiny_config(arch: str, vocab: int):  # type: ignore[no-untyped-def]
    import transformers as tf

    common = {"vocab_size": vocab, "pad_token_id": 0}
    if arch == "bert":
        return tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=160, **common)
    if arch == "roberta":
        return tf.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=162, **common)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=160,
                                   **common)
    if arch == "gpt2":
        # initializer_range 0.3: a random tied LM head with std 0.02 gives near-uniform logits
        # that no adapter can sharpen, so LM losses could hardly fall
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=160, bos_token_id=2, eos_token_id=3,
                             initializer_range=0.3, **common)
    if arch == "llama":
        return tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=64, max_position_embeddings=160, bos_token_id=2, eos_token_id=3,
                              initializer_range=0.3, **common)
    raise ValueError(arch)


def make_tiny_model(arch: str, d: Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``arch`` checkpoint (safetensors + WordPiece tokenizer) into ``d``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    d.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer(d)
    torch.manual_seed(seed)
    cls = AutoModelForCausalLM if arch in CAUSAL_ARCHS else AutoModel
    cls.from_config(_tiny_config(arch, vocab)).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: make_tiny_model(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads
    per process made the methods/training files 4x slower; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
