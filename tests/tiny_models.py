"""A tiny random Qwen2 causal LM and its tokenizer, built locally (nothing is downloaded).

Shared by the trainer tests (``tests/trainer/conftest.py``) and the integration tests. Shape:
hidden 128, 2 layers, 2 query heads of head_dim 64, 1 KV head, intermediate 256; the tokenizer is
made like the embedded model's (``sdar.tiny.build_tokenizer``).
"""

from __future__ import annotations

from pathlib import Path

TINY_WORDS = tuple(
    "the a an is are was go take open close look north south east west room door key box table "
    "chair apple lamp book red green blue small big you i it and or not to in on at with from "
    "think act answer search yes no done what where which one two three four five six seven eight "
    "nine ten . , ? !".split()
)


def build_tiny_model(path: Path, *, tie: bool, seed: int = 0) -> Path:
    """Write a tiny random Qwen2 and its tokenizer to ``path``; return ``path``."""
    import random

    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from sdar.tiny import build_tokenizer

    rng = random.Random(seed)
    texts = [" ".join(rng.choice(TINY_WORDS) for _ in range(12)) for _ in range(400)] + list(TINY_WORDS)
    build_tokenizer(texts, path, full_alphabet=False)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).eval()
        # embeddings scaled for next-token entropies of a few nats (varied, not uniform)
        model.get_input_embeddings().weight.normal_(0.0, 0.04 if tie else 0.02)
        if not tie:
            model.get_output_embeddings().weight.normal_(0.0, 0.15)
        # tilt the EOS row toward the average final hidden state, so that responses end (EOS) after
        # a few dozen tokens at temperature 1-2 (P(EOS) about 2-4% per token), as the stop tests need
        contexts = torch.randint(0, len(tokenizer), (32, 24), generator=torch.Generator().manual_seed(seed))
        direction = model.model(contexts).last_hidden_state.mean((0, 1))
        model.get_output_embeddings().weight[eos] += 2.0 * direction / direction.norm()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=eos)
    model.save_pretrained(path)
    return path
