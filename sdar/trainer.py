"""The training loop: multi-turn group rollouts -> GRPO advantages -> old / reference / teacher
log-probs -> the fused objective on hidden states -> one optimiser step -> weights pushed to the
engine -> metrics, evaluation, checkpoints.

Read :meth:`Trainer.train_step` top to bottom for one step of SDAR.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from . import algo, checkpoint
from .config import TrainConfig
from .distributed import DataParallel
from .metrics import MetricsLog, plot_run, read_metrics
from .policy import IGNORE, LossTerms, micro_batches, pack, policy_loss, response_logprobs, scatter_rows
from .rollout import RolloutBatch, RolloutRunner, environment_for_split

EVAL_SAMPLING_SEED = 20_261_122  # evaluation samples with fixed seeds: before/after see the same draws
EVAL_SEED_OFFSET = 1_000_000  # environments without splits evaluate on seeds training never uses


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seed the global RNG that libraries draw from)
    torch.manual_seed(seed)


def prepare_initial_model(config: TrainConfig, out_dir: Path, log=print) -> Path:
    """The model RL starts from: ``config.model`` as given, or the embedded tiny model built here
    and (unless ``--no-warmstart``) warm-started on expert demonstrations. Reused when present."""
    if config.model:
        return Path(config.model)
    initial = Path(config.initial_model or out_dir / "initial_model")
    if (initial / "sdar_initial.json").exists():
        return initial
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .skills import make_retriever
    from .tiny import build_tiny_model
    from .warmstart import demonstrations, supervised_warmstart

    started = time.time()
    retriever = make_retriever(config.skills, **({"k": config.skills_k} if config.skills == "bm25" else {}))
    demos = []
    if config.warmstart:
        if config.env != "household":
            raise ValueError(
                "the warm start uses household expert demonstrations: pass --no-warmstart or --model"
            )
        demos = list(
            demonstrations(
                episodes=config.warmstart_episodes,
                noise=config.warmstart_noise,
                skill_fraction=config.warmstart_skill_fraction,
                history_turns=config.history_turns,
                max_turns=config.max_turns,
                retriever=retriever,
                seed=config.seed,
                env_kwargs=config.environment_kwargs(),
            )
        )
    # the tokenizer also learns the demonstrations' phrasing (their think lines)
    texts = sorted({d.response for d in demos})
    build_dir = build_tiny_model(
        out_dir / "tiny_model", env_name=config.env, seed=config.seed, extra_texts=texts
    )
    tokenizer = AutoTokenizer.from_pretrained(str(build_dir))
    model = AutoModelForCausalLM.from_pretrained(str(build_dir), dtype=torch.float32)
    losses = []
    if demos:
        log(f"warm start: {len(demos)} demonstrated turns, {config.warmstart_steps} steps")
        losses = supervised_warmstart(
            model,
            tokenizer,
            demos,
            steps=config.warmstart_steps,
            batch_size=config.warmstart_batch,
            lr=config.warmstart_lr,
            seed=config.seed,
        )
    initial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(initial), safe_serialization=True)
    tokenizer.save_pretrained(str(initial))
    record = {"demonstrations": len(demos), "losses": losses[-5:], "seconds": round(time.time() - started, 1)}
    (initial / "sdar_initial.json").write_text(json.dumps(record, indent=1))
    return initial


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig`; :meth:`train` runs it."""

    def __init__(self, config: TrainConfig, log=print) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .engines import make_engine
        from .skills import make_retriever

        self.config = config
        # torchrun: data parallel over ranks (sdar/distributed.py); rank 0 alone logs, evaluates, saves
        self.parallel = DataParallel.from_environment()
        self.is_main = self.parallel is None or self.parallel.is_main
        self.log = log if self.is_main else (lambda *args, **kwargs: None)
        self.preset = algo.get_preset(config.algo)
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed)
        if self.is_main:
            (self.out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
            self.model_path = prepare_initial_model(config, self.out_dir, log)
        if self.parallel is not None:  # the other ranks wait for rank 0 to build the initial model
            self.parallel.barrier()
            self.model_path = prepare_initial_model(config, self.out_dir, self.log)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        dtype = getattr(torch, config.dtype)
        self.policy = AutoModelForCausalLM.from_pretrained(str(self.model_path), dtype=dtype)
        self.policy.eval()  # no dropout: the loss must score the tokens the engine sampled
        self.reference = None
        if config.kl_coef != 0:
            self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        # the unsharded weights the engine and the no-grad passes use: the policy itself in one process;
        # under torchrun a full copy per rank, refreshed from the FSDP shards after every step
        self.scorer = self.policy
        if self.parallel is not None:
            if config.resume:
                raise ValueError("--resume is not supported under torchrun yet: resume in one process")
            self.scorer = copy.deepcopy(self.policy).requires_grad_(False)
            self.parallel.shard(self.policy)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        warmup = max(config.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup)
        )
        self.step = 0
        self.task_cursor = 0

        self.retriever = None
        if self.preset.needs_teacher or self.preset.student_skills:
            self.retriever = make_retriever(
                config.skills, **({"k": config.skills_k} if config.skills == "bm25" else {})
            )
        engine_kind = config.engine
        if config.tensor_parallel > 1 and engine_kind != "vllm":
            raise ValueError(
                f"--tensor-parallel {config.tensor_parallel} needs --engine vllm, got {engine_kind!r}"
            )
        if self.parallel is not None and engine_kind == "vllm" and not torch.cuda.is_available():
            self.log("torchrun on CPU: one HF engine per rank (vLLM-CPU is one engine per process group)")
            engine_kind = "hf"
        self.engine = make_engine(
            engine_kind,
            str(self.model_path),
            seed=config.seed + (0 if self.parallel is None else 1009 * self.parallel.rank),
            model=self.scorer,
            max_model_len=config.max_model_len,
            **({"tensor_parallel_size": config.tensor_parallel} if config.tensor_parallel > 1 else {}),
        )
        runner_options = dict(
            env_name=config.env,
            max_turns=config.max_turns,
            history_turns=config.history_turns,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            invalid_penalty=config.invalid_penalty,
            retriever=self.retriever,
            student_skills=self.preset.student_skills,
        )
        self.train_runner = RolloutRunner(
            self.engine,
            self.tokenizer,
            environment_for_split(config.env, "train", config.environment_kwargs()),
            self.tasks_per_rank() * config.group_size,
            need_teacher=self.preset.needs_teacher,
            **runner_options,
        )
        self.eval_runner = RolloutRunner(
            self.engine,
            self.tokenizer,
            environment_for_split(config.env, config.eval_split, config.environment_kwargs()),
            config.eval_episodes,
            need_teacher=False,
            **runner_options,
        )
        self.metrics = MetricsLog(self.out_dir, tensorboard=config.tensorboard) if self.is_main else None
        self.checkpoints = self.out_dir / "checkpoints"
        if config.resume:
            self._resume()

    # ----- state ---------------------------------------------------------------------------------

    def _resume(self) -> None:
        path = checkpoint.latest_checkpoint(self.checkpoints)
        if path is None:
            self.log(f"--resume: no checkpoint under {self.checkpoints}; starting from scratch")
            return
        state = checkpoint.load_checkpoint(
            path, model=self.policy, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.step, self.task_cursor = state["step"], state["task_cursor"]
        if self.retriever is not None and state.get("retriever") and hasattr(self.retriever, "load_state"):
            self.retriever.load_state(state["retriever"])
        self.push_weights()
        self.log(f"resumed from {path} at step {self.step}")

    def push_weights(self) -> None:
        """The engine gets the policy's current weights (gathered from the shards under torchrun)."""
        if self.parallel is not None:
            self.parallel.gather_full_weights(self.policy, into=self.scorer)
        self.engine.push_weights(self.scorer)

    def save(self) -> Path | None:
        """A checkpoint (rank 0 only). Under torchrun it holds the full weights; the optimiser state saved
        is rank 0's shard, so such a checkpoint serves ``sdar eval`` and ``--model``, not ``--resume``."""
        if not self.is_main:
            return None
        state = {"task_cursor": self.task_cursor, "config": self.config.to_dict()}
        if self.retriever is not None and hasattr(self.retriever, "state"):
            state["retriever"] = self.retriever.state()
        return checkpoint.save_checkpoint(
            self.checkpoints,
            self.step,
            model=self.scorer,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            trainer_state=state,
        )

    # ----- one step ------------------------------------------------------------------------------

    def tasks_per_rank(self) -> int:
        """Tasks this process rolls out per step: all of them, or its share under torchrun."""
        tasks = range(self.config.tasks_per_step)
        return len(tasks) if self.parallel is None else len(self.parallel.share(tasks))

    def next_task_seeds(self) -> list[int]:
        seeds = list(range(self.task_cursor, self.task_cursor + self.config.tasks_per_step))
        self.task_cursor += self.config.tasks_per_step
        return seeds

    def train_step(self) -> dict:
        config, preset = self.config, self.preset
        started = time.time()

        # 1. rollouts: B tasks x G episodes, every turn a row with the engine's log-probs
        seeds = self.next_task_seeds()
        if self.parallel is not None:  # each rank rolls out its share of the tasks (whole groups)
            seeds = self.parallel.share(seeds)
        rollouts = self.train_runner.run(
            seeds, config.group_size, sampling_seed=config.seed * 1_000_003 + self.step
        )
        engine_seconds = time.time() - started
        rows = rollouts.rows

        # 2. GRPO advantages over all rows of each group
        rewards = torch.tensor([row.reward for row in rows], dtype=torch.float64)
        groups = torch.tensor([row.group for row in rows])
        advantages = algo.group_advantages(rewards, groups)

        # 3. no-grad passes with the weights the rollouts used: reference and teacher log-probs
        pad = self.tokenizer.pad_token_id
        responses = [(row.prompt_ids, row.response_ids) for row in rows]
        old = [torch.tensor(row.old_logprobs, dtype=torch.float32) for row in rows]
        ref = None
        if self.reference is not None:
            ref = response_logprobs(
                self.reference,
                responses,
                pad_id=pad,
                token_budget=config.token_budget,
                temperature=config.temperature,
            )
        teacher = None
        if preset.needs_teacher:
            teacher_pairs = [(row.teacher_prompt_ids, row.response_ids) for row in rows]
            teacher = response_logprobs(
                self.scorer,
                teacher_pairs,
                pad_id=pad,
                token_budget=config.token_budget,
                temperature=config.temperature,
            )

        # 4. the objective, micro-batch by micro-batch, normalised by the step's token count
        token_count = sum(len(row.response_ids) for row in rows)
        if self.parallel is not None:  # the normaliser is the step's token count over every rank
            token_count = int(self.parallel.sum([token_count])[0])
        rlsd_coef = algo.rlsd_coefficient(preset, self.step)
        totals: dict[str, float] = defaultdict(float)
        loss_value = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        batches = micro_batches([len(p) + len(r) for p, r in responses], config.token_budget)
        passes = [(b, 1.0) for b in batches]
        if self.parallel is not None:  # as many passes on every rank (FSDP's collectives)
            passes = self.parallel.padded_micro_batches(batches)
        for indices, weight in passes:
            batch = pack([responses[i] for i in indices], pad)
            row_advantages = scatter_rows(
                [torch.full((len(rows[i].response_ids),), float(advantages[i])) for i in indices], batch
            )
            old_tokens = scatter_rows([old[i] for i in indices], batch)
            teacher_tokens = None if teacher is None else scatter_rows([teacher[i] for i in indices], batch)
            if rlsd_coef:
                row_advantages = algo.rlsd_advantages(
                    row_advantages, teacher_tokens, old_tokens, rlsd_coef, preset.rlsd_clip
                )
            if not preset.policy_gradient:
                row_advantages = torch.zeros_like(row_advantages)
            terms = LossTerms(
                row_advantages,
                old_tokens,
                None if ref is None else scatter_rows([ref[i] for i in indices], batch),
                teacher_tokens,
            )
            loss, stats = policy_loss(
                self.policy,
                batch,
                terms,
                normalizer=float(token_count),
                sdar_coef=preset.sdar_coef,
                beta=preset.beta,
                gate=preset.gate,
                objective=preset.objective,
                kl_coef=config.kl_coef,
                entropy_coef=config.entropy_coef,
                clip_low=config.clip_low,
                clip_high=config.clip_high,
                dual_clip=config.dual_clip,
                temperature=config.temperature,
                skill_sd_coef=preset.skill_sd_coef,
            )
            if weight == 0.0:  # a pass that only keeps this rank in step with the others (FSDP)
                (loss * 0.0).backward()
                continue
            loss.backward()
            loss_value += float(loss.detach())
            response = batch.targets != IGNORE
            for name in ("gate", "gap", "entropy", "kl", "ratio"):
                totals[name] += float(getattr(stats, name)[response].sum())
            totals["gate_active"] += float((stats.gate[response] > 0.5).sum())
            totals["clipped"] += float(stats.clipped[response].sum())

        # 5. one optimiser step, then the engine generates with the new weights
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), config.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.push_weights()
        if self.parallel is not None:
            loss_value, *sums = self.parallel.sum([loss_value, *(totals[n] for n in TOTALS)])
            totals.update(zip(TOTALS, sums, strict=True))
        parity = None
        if config.debug_parity:
            from .engines import engine_logprob_parity

            parity = engine_logprob_parity(
                self.engine,
                self.scorer,
                [rows[0].prompt_ids],
                max_new_tokens=8,
                temperature=config.temperature,
                seed=self.step,
            )
        self.step += 1
        seconds = time.time() - started
        record = {
            "kind": "train",
            "step": self.step,
            "success": rollouts.success_rate,
            "reward": float(np.mean([e.reward for e in rollouts.episodes])),
            "valid_ratio": float(np.mean([row.valid for row in rows])) if rows else 0.0,
            "turns": float(np.mean([e.turns for e in rollouts.episodes])),
            "loss": loss_value,
            "grad_norm": grad_norm,
            "tokens": token_count,
            "gate_mean": totals["gate"] / max(token_count, 1),
            "gate_active": totals["gate_active"] / max(token_count, 1),
            "gap_mean": totals["gap"] / max(token_count, 1),
            "entropy": totals["entropy"] / max(token_count, 1),
            "kl": totals["kl"] / max(token_count, 1),
            "clip_fraction": totals["clipped"] / max(token_count, 1),
            "rlsd_coef": rlsd_coef,
            "lr": self.scheduler.get_last_lr()[0],
            "engine_seconds": round(engine_seconds, 3),
            "train_seconds": round(seconds - engine_seconds, 3),
            "tokens_per_second": (rollouts.generated_tokens + token_count) / max(seconds, 1e-9),
            **{f"success/{k}": v for k, v in success_by_type(rollouts).items()},
        }
        if parity is not None:
            record["engine_parity"] = parity
        if self.parallel is not None:  # episode statistics over every rank's rollouts
            wins, episodes, reward, turns, valid, n_rows = self.parallel.sum(
                [
                    sum(e.won for e in rollouts.episodes),
                    len(rollouts.episodes),
                    sum(e.reward for e in rollouts.episodes),
                    sum(e.turns for e in rollouts.episodes),
                    sum(row.valid for row in rows),
                    len(rows),
                ]
            )
            record.update(
                success=wins / episodes,
                reward=reward / episodes,
                turns=turns / episodes,
                valid_ratio=valid / max(n_rows, 1),
            )
        return record

    # ----- evaluation and the whole run ---------------------------------------------------------

    def evaluate(self, label: str = "eval") -> dict:
        """Success on ``eval_episodes`` held-out episodes (fixed seeds and sampling seeds)."""
        offset = (
            0
            if self.config.env == "household" or self.config.env.startswith("searchqa")
            else EVAL_SEED_OFFSET
        )
        seeds = [offset + i for i in range(self.config.eval_episodes)]
        started = time.time()
        rollouts = self.eval_runner.run(seeds, 1, sampling_seed=EVAL_SAMPLING_SEED)
        return {
            "kind": "eval",
            "label": label,
            "step": self.step,
            "success": rollouts.success_rate,
            "reward": float(np.mean([e.reward for e in rollouts.episodes])),
            "valid_ratio": float(np.mean([row.valid for row in rollouts.rows])) if rollouts.rows else 0.0,
            "turns": float(np.mean([e.turns for e in rollouts.episodes])),
            "seconds": round(time.time() - started, 2),
            **{f"success/{k}": v for k, v in success_by_type(rollouts).items()},
        }

    def train(self) -> dict:
        config = self.config
        if not self.is_main:  # torchrun: the other ranks only take part in the steps
            while self.step < config.steps:
                self.train_step()
            return {}
        before = None
        if self.step == 0:
            before = self.evaluate("before")
            self.metrics.write(before)
            self.log(
                f"before training: success {before['success']:.1%} on {config.eval_episodes} held-out "
                "episodes"
            )
        progress = _progress(config.progress, total=config.steps, initial=self.step)
        while self.step < config.steps:
            record = self.train_step()
            self.metrics.write(record)
            progress.update(1)
            progress.set_postfix(
                success=f"{record['success']:.2f}",
                gate=f"{record['gate_mean']:.2f}",
                loss=f"{record['loss']:.3f}",
            )
            if config.eval_every and self.step % config.eval_every == 0 and self.step < config.steps:
                self.metrics.write(self.evaluate())
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save()
        progress.close()
        after = self.evaluate("after")
        self.metrics.write(after)
        self.save()
        summary = {"algo": config.algo, "env": config.env, "steps": self.step, "after": after["success"]}
        if before is None:  # resumed: the evaluation before training is in the metrics file
            before = next(
                (r for r in read_metrics(self.out_dir / "metrics.jsonl") if r.get("label") == "before"), None
            )
        if before is not None:
            summary["before"] = before["success"]
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        plot = plot_run(self.out_dir)
        self.log(format_summary(summary, plot))
        return summary

    def close(self) -> None:
        self.train_runner.close()
        self.eval_runner.close()
        self.engine.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.parallel is not None:
            self.parallel.close()


TOTALS = ("gate", "gap", "entropy", "kl", "ratio", "gate_active", "clipped")


def success_by_type(rollouts: RolloutBatch) -> dict[str, float]:
    by_type: dict[str, list[bool]] = defaultdict(list)
    for episode in rollouts.episodes:
        if episode.task_type:
            by_type[episode.task_type].append(episode.won)
    return {name: sum(wins) / len(wins) for name, wins in sorted(by_type.items())}


def format_summary(summary: dict, plot: Path | None) -> str:
    lines = ["", "| held-out success | before | after |", "| --- | --: | --: |"]
    before = summary.get("before")
    lines.append(
        f"| {summary['algo']} on {summary['env']} ({summary['steps']} steps) | "
        f"{'-' if before is None else f'{before:.1%}'} | {summary['after']:.1%} |"
    )
    if plot is not None:
        lines.append(f"curves: {plot}")
    return "\n".join(lines)


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step")
