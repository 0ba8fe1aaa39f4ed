"""The embedded default model: a tiny Qwen2-architecture causal LM and a word-level tokenizer,
built locally from the environment's own text (nothing is downloaded).

The tokenizer is a byte-level BPE trained on the environment's observations, tasks, actions, the
prompt instructions and the environment's skill texts (so nearly every word is one token), plus
the chat and response-format special tokens. Qwen2 with head_dim 64 runs unchanged under vLLM (CPU
or GPU) and Hugging Face.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .envs import make_env
from .prompts import ACTION_INSTRUCTIONS, SEARCH_INSTRUCTIONS

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FORMAT_TOKENS = (
    "<think>",
    "</think>",
    "<action>",
    "</action>",
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the embedded model (about 0.8M parameters plus embeddings)."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 32  # vLLM needs one of 32, 64, 80, 96, ...
    intermediate_size: int = 384
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True


def environment_texts(
    env_name: str, episodes: int = 400, seed: int = 0, extra_texts: Iterable[str] = ()
) -> Iterable[str]:
    """Text an agent meets in ``env_name``: observations, tasks and actions from random play (and
    the expert's, for household), every split the environment has, and its skill texts."""
    from .skills import SkillBank

    rng = random.Random(seed)
    splits = ("train", "valid_seen", "valid_unseen") if env_name == "household" else (None,)
    for split in splits:
        env = make_env(env_name, **({"split": split} if split else {}))
        expert = None
        if env_name == "household":
            from .envs.household import ExpertPlanner

            expert = ExpertPlanner()
        for episode in range(episodes // len(splits)):
            observation = env.reset(episode)
            yield observation.task
            yield observation.text
            yield from observation.admissible_actions
            for _ in range(getattr(env, "max_steps", 30)):
                use_expert = expert is not None and episode % 2 == 0
                action = expert(env) if use_expert else rng.choice(observation.admissible_actions or ["look"])
                result = env.step(action)
                observation = result.observation
                yield observation.text
                yield from observation.admissible_actions
                if result.done:
                    break
        corpus = getattr(env, "vocabulary_texts", None)
        if callable(corpus):
            yield from corpus()
    bank = SkillBank.load(env_name)
    yield bank.text()
    yield ACTION_INSTRUCTIONS
    yield SEARCH_INSTRUCTIONS
    yield "Task: Observation: Action: Admissible actions: | user assistant"
    yield "user\nassistant\n"
    yield from extra_texts


def build_tokenizer(
    texts: Iterable[str], out_dir: str | Path, *, vocab_size: int = 4096, full_alphabet: bool = True
):
    """A byte-level BPE tokenizer trained on ``texts`` with Qwen2's own pre-tokenisation, saved to
    ``out_dir``. transformers loads any tokenizer next to a qwen2 config as ``Qwen2Tokenizer``
    (byte-level BPE from vocab + merges), so the tokenizer must be exactly that kind to load the
    same everywhere (transformers, vLLM). With this small corpus every word ends up one token.
    ``full_alphabet=False`` starts from the corpus's own characters instead of all 256 bytes (a
    smaller vocabulary that cannot encode other text: for test models)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [],
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    fast.add_tokens(list(FORMAT_TOKENS))  # whole tokens, kept when special tokens are skipped
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    env_name: str = "household",
    spec: TinyModelSpec | None = None,
    seed: int = 0,
    episodes: int = 400,
    extra_texts: Iterable[str] = (),
) -> Path:
    """Builds (or reuses, if already built with the same recipe) the embedded model in ``out_dir``:
    tokenizer from ``env_name``'s text, randomly initialised Qwen2 weights (seeded). Returns the path."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    spec = spec or TinyModelSpec()
    extra_texts = list(extra_texts)
    extra_digest = hashlib.sha256("\n".join(extra_texts).encode()).hexdigest()
    recipe = {"env": env_name, "seed": seed, "episodes": episodes, "extra": extra_digest, **asdict(spec)}
    recipe_file = out / "sdar_recipe.json"
    if recipe_file.exists() and json.loads(recipe_file.read_text()) == recipe:
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(environment_texts(env_name, episodes=episodes, seed=seed, extra_texts=extra_texts), out)
    tokenizer = AutoTokenizer.from_pretrained(str(out))  # as every consumer will load it
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    recipe_file.write_text(json.dumps(recipe, indent=1))
    return out
