"""Fixtures shared by the trainer tests.

``tiny_model_dir(tie)`` builds (once per session and per ``tie``) a tiny random Qwen2 causal LM and
its tokenizer in a temporary directory and returns the directory (``config.json``,
``model.safetensors``, ``generation_config.json``, tokenizer files), loadable by
``transformers.Auto*`` and by vLLM. The tokenizer is made like the embedded model's
(``sdar.tiny.build_tokenizer``: byte-level BPE over a small word list, chat template, EOS
``<|im_end|>``), so it loads the same everywhere. Nothing is downloaded.

Shape: hidden 128, 2 layers, 2 query heads of head_dim 64 (a size vLLM's attention backends accept),
1 KV head, intermediate 256; ``tie_word_embeddings=tie``. Weights are random (seeded, the global
generator untouched), the embeddings scaled for next-token entropies of a few nats: sampled text is
varied but not uniform, and a response ends (EOS) within a few dozen tokens now and then.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_models import TINY_WORDS, build_tiny_model  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Callable[[bool], Path]:
    """``tiny_model_dir(tie)`` -> directory of a tiny Qwen2 (tied or untied embeddings), built once."""
    built: dict[bool, Path] = {}

    def get(tie: bool = True) -> Path:
        if tie not in built:
            built[tie] = build_tiny_model(tmp_path_factory.mktemp(f"tiny_qwen2_tie{int(tie)}"), tie=tie)
        return built[tie]

    return get
