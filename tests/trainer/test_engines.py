"""Generation engines (sdar.engines) on a tiny local Qwen2: sampled-token log-probs equal an fp32 Hugging
Face forward at the sampling temperature (before and after a weight push, tied and untied embeddings),
seeded reproducibility, EOS / stop-string / length endings, left padding, and the vLLM engine (skipped
only when ``import vllm`` fails)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from sdar.engines import (
    Generation,
    HFEngine,
    engine_logprob_parity,
    full_state_dict,
    load_tokenizer,
    make_engine,
    sequence_logprobs,
)

# vLLM's own import-time deprecation noise (torch.distributed.reduce_op)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning")

TOL = 1e-4  # max |engine log-prob - fp32 forward log-prob|
# a stop string spanning two tokens with the space between them: it only matches in correctly
# detokenized text (a word-level vocabulary decoded by the wrong pipeline loses the spaces)
STOP = "the "
TEXTS = (
    "open the door",
    "go north",
    "take the red key from the small box on the table",
    "what is in the room ?",
)
VLLM_MISSING = importlib.util.find_spec("vllm") is None


def hf_model(path) -> torch.nn.Module:
    """The checkpoint as an fp32 HF causal LM in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def chat_prompts(path, texts=TEXTS) -> list[list[int]]:
    """Token ids of ``texts`` as single user turns with the generation prompt (lengths differ)."""
    tokenizer = load_tokenizer(path)
    prompts = []
    for text in texts:
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        prompts.append(tokenizer(chat, add_special_tokens=False).input_ids)
    assert len({len(p) for p in prompts}) > 1
    return prompts


def perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> torch.nn.Module:
    """A copy of ``model`` with every weight (embeddings, and so a tied head, included) moved by noise."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return other


def reference_logprobs(model, generations: list[Generation], temperature: float) -> list[list[float]]:
    return sequence_logprobs(
        model,
        [g.prompt_ids for g in generations],
        [g.token_ids for g in generations],
        temperature=temperature,
    )


def max_diff(generations: list[Generation], reference: list[list[float]]) -> float:
    worst = 0.0
    for gen, ref in zip(generations, reference, strict=True):
        assert len(gen.logprobs) == len(gen.token_ids) == len(ref)
        if ref:
            worst = max(worst, float((torch.tensor(gen.logprobs) - torch.tensor(ref)).abs().max()))
    return worst


def check_endings(engine, generations: list[Generation], max_new_tokens: int) -> None:
    """EOS appears only as the last token of a "stop" generation; "length" ones are exactly full."""
    eos = set(engine.eos_ids)
    for gen in generations:
        assert gen.finish_reason in ("stop", "length")
        assert not eos & set(gen.token_ids[:-1])
        if gen.finish_reason == "stop":
            assert gen.token_ids[-1] in eos
        else:
            assert len(gen.token_ids) == max_new_tokens and gen.token_ids[-1] not in eos
        assert gen.text == engine.tokenizer.decode(gen.token_ids, skip_special_tokens=True)


def check_stop_string(engine, generations: list[Generation]) -> None:
    """Some responses end at the token completing ``STOP``: the text is cut before it, and the string
    was not complete one token earlier."""
    stopped = [g for g in generations if g.finish_reason == "stop" and g.token_ids[-1] not in engine.eos_ids]
    assert stopped
    for gen in stopped:
        full = engine.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        assert STOP in full and STOP not in engine.tokenizer.decode(
            gen.token_ids[:-1], skip_special_tokens=True
        )
        assert gen.text == full[: full.index(STOP)]


# ---------------------------------------------------------------------------------------------------------
# helpers


def test_make_engine_rejects_unknown_kind(tiny_model_dir):
    with pytest.raises(ValueError, match="'sglang'"):
        make_engine("sglang", str(tiny_model_dir(True)))


def test_full_state_dict_adds_the_tied_head():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"tie_word_embeddings": True})()
            self.embed = torch.nn.Embedding(5, 3)

        def get_input_embeddings(self):
            return self.embed

    state = full_state_dict(Tied())
    assert set(state) == {"embed.weight", "lm_head.weight"}
    assert state["lm_head.weight"].data_ptr() == state["embed.weight"].data_ptr()


def test_sequence_logprobs_matches_unpadded_forward(tiny_model_dir):
    model = hf_model(tiny_model_dir(True))
    prompts, responses = [[3, 10, 11, 4], [3, 4]], [[7, 8, 9], [12]]
    got = sequence_logprobs(model, prompts, responses, temperature=0.7)
    for prompt, response, values in zip(prompts, responses, got, strict=True):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float() / 0.7, dim=-1)
        expected = [float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(response)]
        assert max(abs(a - b) for a, b in zip(values, expected, strict=True)) < 1e-5


# ---------------------------------------------------------------------------------------------------------
# Hugging Face engine


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_hf_logprob_parity(tiny_model_dir, tie, temperature):
    path = tiny_model_dir(tie)
    engine = make_engine("hf", str(path))
    prompts = chat_prompts(path)
    parity = engine_logprob_parity(
        engine, hf_model(path), prompts, max_new_tokens=24, temperature=temperature
    )
    assert parity < TOL


def test_hf_seeds_reproducible_and_batch_independent(tiny_model_dir):
    path = tiny_model_dir(True)
    engine = HFEngine(str(path))
    prompts = chat_prompts(path)
    first = engine.generate(prompts, max_new_tokens=20, seeds=[1, 2, 3, 4])
    again = engine.generate(prompts, max_new_tokens=20, seeds=[1, 2, 3, 4])
    other = engine.generate(prompts, max_new_tokens=20, seeds=[5, 6, 7, 8])
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert [g.logprobs for g in first] == [g.logprobs for g in again]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]
    # left padding: each prompt alone (no padding) gives the batch's tokens for the same seed
    for prompt, seed, gen in zip(prompts, [1, 2, 3, 4], first, strict=True):
        alone = engine.generate([prompt], max_new_tokens=20, seeds=[seed])[0]
        assert alone.token_ids == gen.token_ids
        assert max(abs(a - b) for a, b in zip(alone.logprobs, gen.logprobs, strict=True)) < 1e-5
    # without seeds, the engine's own seed makes the run reproducible
    runs = [HFEngine(str(path), seed=3).generate(prompts, max_new_tokens=8) for _ in range(2)]
    assert [g.token_ids for g in runs[0]] == [g.token_ids for g in runs[1]]


def test_hf_eos_stop_string_and_length(tiny_model_dir):
    path = tiny_model_dir(False)
    engine = HFEngine(str(path))
    prompts = chat_prompts(path) * 4
    gens = engine.generate(prompts, max_new_tokens=48, temperature=2.0, seeds=list(range(16)))
    check_endings(engine, gens, 48)
    assert {g.finish_reason for g in gens} == {"stop", "length"}
    check_stop_string(engine, engine.generate(prompts, max_new_tokens=48, seeds=list(range(16)), stop=[STOP]))


def test_hf_top_p_and_greedy(tiny_model_dir):
    path = tiny_model_dir(True)
    engine = HFEngine(str(path))
    model = hf_model(path)
    prompts = chat_prompts(path)
    greedy = engine.generate(prompts, max_new_tokens=16, temperature=0.0)
    tiny_p = engine.generate(prompts, max_new_tokens=16, top_p=1e-6, seeds=[1, 2, 3, 4])
    assert [g.token_ids for g in tiny_p] == [g.token_ids for g in greedy]
    # log-probs stay those of the full distribution at the temperature (no nucleus renormalisation)
    gens = engine.generate(prompts, max_new_tokens=16, temperature=0.8, top_p=0.7, seeds=[1, 2, 3, 4])
    assert max_diff(gens, reference_logprobs(model, gens, 0.8)) < TOL
    assert max_diff(greedy, reference_logprobs(model, greedy, 1.0)) < TOL


def test_hf_push_weights(tiny_model_dir):
    path = tiny_model_dir(True)
    prompts = chat_prompts(path)
    policy = hf_model(path)
    new = perturbed(policy)
    own = HFEngine(str(path))  # own copy: a push copies the weights in
    assert engine_logprob_parity(own, new, prompts, max_new_tokens=16) > 1e-2
    own.push_weights(new)
    assert engine_logprob_parity(own, new, prompts, max_new_tokens=16) < TOL
    borrowed = make_engine("hf", str(path), model=policy)  # borrowed: generates with that very object
    borrowed.push_weights(policy)
    assert borrowed.model is policy
    with torch.no_grad():
        policy.model.norm.weight.mul_(1.5)  # in-place training updates are seen without a push
    assert engine_logprob_parity(borrowed, policy, prompts, max_new_tokens=16) < TOL
    borrowed.push_weights(new)
    assert borrowed.model is new and engine_logprob_parity(borrowed, new, prompts, max_new_tokens=16) < TOL
    borrowed.close()
    with pytest.raises(RuntimeError, match="closed"):
        borrowed.generate(prompts, max_new_tokens=4)


# ---------------------------------------------------------------------------------------------------------
# vLLM engine (one engine per embedding tying, started once for the module)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def vllm_setup(request, tiny_model_dir):
    """(engine, checkpoint path, the fp32 HF model the engine's weights equal)."""
    if VLLM_MISSING:
        pytest.skip("vllm is not importable")
    try:
        import vllm  # noqa: F401
    except Exception as error:  # a broken install is a skip reason too, with the error shown
        pytest.skip(f"import vllm failed: {error!r}")
    path = tiny_model_dir(request.param)
    model = hf_model(path)
    if request.param:
        engine = make_engine("vllm", str(path), max_model_len=256, seed=0, kv_cache_gib=0.25)
    else:  # make_engine(model=...): the engine samples from that model's weights, not the checkpoint's
        model = perturbed(model, scale=0.01, seed=2)  # small: keeps the fixture's EOS tilt working
        engine = make_engine("vllm", str(path), max_model_len=256, seed=0, kv_cache_gib=0.25, model=model)
    yield engine, path, model
    engine.close()


def test_vllm_logprob_parity_before_and_after_push(vllm_setup):
    engine, path, model = vllm_setup
    prompts = chat_prompts(path)
    for temperature in (1.0, 0.7):
        assert engine_logprob_parity(engine, model, prompts, max_new_tokens=24, temperature=temperature) < TOL
    new = perturbed(model)
    assert engine_logprob_parity(engine, new, prompts, max_new_tokens=24) > 1e-2  # the push matters
    engine.push_weights(new)  # same prompts again: a stale prefix cache would show here
    for temperature in (1.0, 0.7):
        assert engine_logprob_parity(engine, new, prompts, max_new_tokens=24, temperature=temperature) < TOL
    engine.push_weights(model)
    assert engine_logprob_parity(engine, model, prompts, max_new_tokens=24) < TOL


def test_vllm_seeds_reproducible(vllm_setup):
    engine, path, _ = vllm_setup
    prompts = chat_prompts(path)
    first = engine.generate(prompts, max_new_tokens=20, seeds=[1, 2, 3, 4])
    again = engine.generate(prompts, max_new_tokens=20, seeds=[1, 2, 3, 4])
    other = engine.generate(prompts, max_new_tokens=20, seeds=[5, 6, 7, 8])
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]
    assert max_diff(first, [g.logprobs for g in again]) < 1e-6
    alone = engine.generate(prompts[2:3], max_new_tokens=20, seeds=[3])[0]
    assert alone.token_ids == first[2].token_ids
    assert [g.prompt_ids for g in first] == prompts


def test_vllm_eos_stop_string_and_length(vllm_setup):
    engine, path, _ = vllm_setup
    prompts = chat_prompts(path) * 4
    gens = engine.generate(prompts, max_new_tokens=48, temperature=2.0, seeds=list(range(16)))
    check_endings(engine, gens, 48)
    assert {g.finish_reason for g in gens} == {"stop", "length"}
    check_stop_string(engine, engine.generate(prompts, max_new_tokens=48, seeds=list(range(16)), stop=[STOP]))


def test_vllm_top_p_logprobs_are_not_renormalised(vllm_setup, monkeypatch):
    engine, path, model = vllm_setup
    prompts = chat_prompts(path)
    engine.push_weights(model)
    gens = engine.generate(prompts, max_new_tokens=16, temperature=0.8, top_p=0.7, seeds=[1, 2, 3, 4])
    assert max_diff(gens, reference_logprobs(model, gens, 0.8)) < TOL
    monkeypatch.setattr(engine, "_scorer", None)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(prompts, max_new_tokens=4, top_p=0.7)


def test_vllm_and_hf_agree_greedily(vllm_setup):
    engine, path, model = vllm_setup
    prompts = chat_prompts(path)
    vllm_gens = engine.generate(prompts, max_new_tokens=16, temperature=0.0)
    hf_gens = HFEngine(str(path), model=model).generate(prompts, max_new_tokens=16, temperature=0.0)
    assert [g.token_ids for g in vllm_gens] == [g.token_ids for g in hf_gens]
    assert [g.text for g in vllm_gens] == [g.text for g in hf_gens]
    assert max_diff(vllm_gens, [g.logprobs for g in hf_gens]) < TOL
