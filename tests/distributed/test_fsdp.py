"""Data parallelism (sdar/distributed.py): one step's loss and gradients with the policy sharded by
FSDP2 over 2 gloo processes on CPU equal the single-process ones on the same data.

Fixed packed rows are split across the ranks (``DataParallel.share``), the normaliser is the
all-reduced global token count, the ranks run different numbers of micro-batches (so the padding
passes of ``padded_micro_batches`` are exercised), and ``policy_loss`` (the trainer's loss path,
through the FSDP root) is backpropagated. Rank 0 gathers the full gradients; the test compares them,
and the summed loss, to an unsharded run (relative tolerance 1e-5). The gathered full weights
(``gather_full_weights``, what the engine receives) must equal the unsharded weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_models import build_tiny_model

WORLD_SIZE = 2
TOKEN_BUDGET = 24  # small: rank 0 runs 3 micro-batches, rank 1 one (and two padding passes)
OPTIONS = dict(
    sdar_coef=0.5,
    beta=5.0,
    gate="gap",
    objective="sdar",
    kl_coef=0.01,
    entropy_coef=0.01,
    clip_low=0.2,
    clip_high=0.2,
    dual_clip=3.0,
    temperature=1.0,
)


def fixed_rows(vocab: int) -> list[tuple[list[int], list[int]]]:
    """Seven (prompt ids, response ids) pairs of assorted lengths."""
    generator = torch.Generator().manual_seed(7)
    rows = []
    for prompt_len, response_len in [(5, 3), (2, 2), (6, 4), (2, 1), (9, 7), (3, 2), (10, 3)]:
        ids = torch.randint(3, vocab - 1, (prompt_len + response_len,), generator=generator).tolist()
        rows.append((ids[:prompt_len], ids[prompt_len:]))
    return rows


def row_terms(rows, scorer) -> list[dict[str, torch.Tensor]]:
    """Per-row advantages and old / reference / teacher log-probs (near the model's own)."""
    from sdar.policy import response_logprobs

    own = response_logprobs(scorer, rows, pad_id=0, token_budget=4096)
    terms = []
    for i, logprobs in enumerate(own):
        generator = torch.Generator().manual_seed(100 + i)
        noise = [torch.randn(len(logprobs), generator=generator) for _ in range(3)]
        terms.append(
            dict(
                advantages=torch.full((len(logprobs),), (-1.0) ** i * (0.5 + 0.1 * i)),
                old=logprobs + 0.1 * noise[0],
                ref=logprobs + 0.1 * noise[1],
                teacher=logprobs + 0.8 * noise[2],
            )
        )
    return terms


def step(model, rows, terms, indices_per_pass, token_count: float) -> float:
    """Forward + backward of policy_loss over the passes; returns the summed loss."""
    from sdar.policy import LossTerms, pack, policy_loss, scatter_rows

    total = 0.0
    for indices, weight in indices_per_pass:
        batch = pack([rows[i] for i in indices], 0)

        def tokens(name, indices=indices, batch=batch):
            return scatter_rows([terms[i][name] for i in indices], batch)

        loss, _ = policy_loss(
            model,
            batch,
            LossTerms(tokens("advantages"), tokens("old"), tokens("ref"), tokens("teacher")),
            normalizer=token_count,
            **OPTIONS,
        )
        (loss * weight).backward()
        total += float(loss.detach()) * weight
    return total


def load_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def run_rank(rank: int, init_file: str, model_dir: str, out_file: str) -> None:
    from sdar.distributed import DataParallel
    from sdar.policy import micro_batches

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = load_model(model_dir)
        unsharded = copy.deepcopy(model)
        rows = fixed_rows(model.config.vocab_size)
        terms = row_terms(rows, unsharded)
        parallel = DataParallel(rank=rank, world_size=WORLD_SIZE, device=torch.device("cpu"))
        parallel.shard(model)

        mine = parallel.share(list(range(len(rows))))
        token_count = parallel.sum([sum(len(rows[i][1]) for i in mine)])[0]
        local = micro_batches([len(rows[i][0]) + len(rows[i][1]) for i in mine], TOKEN_BUDGET)
        padded = parallel.padded_micro_batches(local)
        passes = [([mine[j] for j in batch], weight) for batch, weight in padded]
        loss = parallel.sum([step(model, rows, terms, passes, float(token_count))])[0]
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}

        gathered = load_model(model_dir)
        parallel.gather_full_weights(model, into=gathered)
        expected = unsharded.state_dict()
        same_weights = all(torch.equal(v, expected[k]) for k, v in gathered.state_dict().items())
        own_passes = parallel.sum([len(local) if r == rank else 0 for r in range(WORLD_SIZE)])
        if rank == 0:
            torch.save(dict(loss=loss, grads=grads, same_weights=same_weights, passes=own_passes), out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_two_rank_fsdp_step_equals_one_process(tmp_path, tie):
    from sdar.policy import micro_batches

    model_dir = build_tiny_model(tmp_path / "model", tie=tie)
    out_file = tmp_path / "rank0.pt"
    mp.spawn(
        run_rank,
        args=(str(tmp_path / "init"), str(model_dir), str(out_file)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    sharded = torch.load(out_file)
    assert sharded["same_weights"], "the gathered full weights differ from the unsharded model's"
    assert sharded["passes"] == [3, 1], "the ranks should run different numbers of micro-batches"

    model = load_model(model_dir)
    rows = fixed_rows(model.config.vocab_size)
    terms = row_terms(rows, model)
    token_count = float(sum(len(response) for _, response in rows))
    passes = [(b, 1.0) for b in micro_batches([len(p) + len(r) for p, r in rows], TOKEN_BUDGET)]
    loss = step(model, rows, terms, passes, token_count)

    assert sharded["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)
    for name, parameter in model.named_parameters():
        expected = parameter.grad
        scale = float(expected.abs().max()) + 1e-12
        error = float((sharded["grads"][name] - expected).abs().max())
        assert error <= 1e-5 * scale, f"{name}: max error {error:.3g} vs max |grad| {scale:.3g}"


def test_share_and_environment_need_no_process_group(monkeypatch):
    from sdar.distributed import DataParallel

    parallel = DataParallel(rank=1, world_size=3, device=torch.device("cpu"))
    assert parallel.share(list(range(8))) == [1, 4, 7]
    with pytest.raises(ValueError, match="tasks-per-step"):
        parallel.share([0, 1])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert DataParallel.from_environment() is None  # a plain process trains alone
