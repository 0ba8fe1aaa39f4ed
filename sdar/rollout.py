"""Multi-turn group rollouts: B tasks x G environments sharing each task's seed, one engine call per
turn for every unfinished episode, every turn kept as a training row.

A row is (prompt ids, response ids, the engine's log-probs of the response) plus, when the
algorithm needs a teacher, the teacher's prompt ids: the same prompt behind the privileged skill
context. Rows get their episode's return (minus the invalid-response penalty for an unparsable
turn) when the episode ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .envs import EnvPool, group_seeds, make_env
from .prompts import build_prompt, chat_prompt_ids, parse_response, with_skills
from .skills import teacher_context


@dataclass
class TurnRow:
    """One turn of one episode, as a training row."""

    group: int  # task index within the step (GRPO group)
    episode: int  # episode index within the step
    turn: int
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]  # the engine's log-probs of response_ids
    teacher_prompt_ids: list[int] | None
    valid: bool
    reward: float = 0.0


@dataclass
class EpisodeResult:
    group: int
    seed: int
    task: str
    task_type: str
    won: bool = False
    reward: float = 0.0
    turns: int = 0
    valid_turns: int = 0
    skill_file: str | None = None


@dataclass
class RolloutBatch:
    rows: list[TurnRow] = field(default_factory=list)
    episodes: list[EpisodeResult] = field(default_factory=list)
    generated_tokens: int = 0

    @property
    def success_rate(self) -> float:
        return sum(e.won for e in self.episodes) / max(len(self.episodes), 1)


def environment_for_split(env_name: str, split: str, extra: dict | None = None):
    """A factory of ``env_name`` environments on ``split`` ("train" or an evaluation split)."""
    kwargs = dict(extra or {})
    if env_name == "household":
        kwargs.setdefault("split", split)
        return lambda: make_env(env_name, **kwargs)
    if env_name.split(":")[0] == "searchqa":
        name = "searchqa:" + ("train" if split == "train" else "valid")
        return lambda: make_env(name, **kwargs)
    return lambda: make_env(env_name, **kwargs)  # textworld: evaluation uses disjoint seeds instead


def request_seed(*parts: int) -> int:
    """A stable 31-bit sampling seed for one generation request."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class RolloutRunner:
    """Plays group rollouts with an engine.

    Args:
        engine: a generation engine (``sdar.engines``).
        tokenizer: the policy's tokenizer.
        env_factory: makes one environment (see :func:`environment_for_split`).
        size: number of environments (B * G).
        retriever: skill retriever for teacher prompts and, with ``student_skills``, student prompts.
        need_teacher: also build teacher prompts.
    """

    def __init__(
        self,
        engine,
        tokenizer,
        env_factory: Callable,
        size: int,
        *,
        env_name: str,
        max_turns: int,
        history_turns: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        invalid_penalty: float,
        retriever=None,
        student_skills: bool = False,
        need_teacher: bool = False,
        max_prompt_tokens: int = 3500,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.pool = EnvPool(env_factory, size, workers=0)
        self.env_name = env_name
        self.action_format = getattr(self.pool.envs[0], "action_format", "action")
        self.max_turns = max_turns
        self.history_turns = history_turns
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.invalid_penalty = invalid_penalty
        self.retriever = retriever
        self.student_skills = student_skills
        self.need_teacher = need_teacher
        self.max_prompt_tokens = max_prompt_tokens

    def close(self) -> None:
        self.pool.close()

    def _prompt_ids(self, task, observation, history, context: str | None) -> list[int]:
        """Chat-formatted prompt ids, dropping the oldest history turns if it is too long."""
        for keep in range(min(self.history_turns, len(history)), -1, -1):
            text = build_prompt(
                task,
                observation.text,
                observation.admissible_actions,
                history[len(history) - keep :],
                action_format=self.action_format,
                history_turns=keep,
            )
            if context:
                text = with_skills(text, context)
            ids = chat_prompt_ids(self.tokenizer, text)
            if len(ids) <= self.max_prompt_tokens:
                return ids
        return ids[-self.max_prompt_tokens :]

    def run(self, task_seeds: list[int], group_size: int, *, sampling_seed: int) -> RolloutBatch:
        """Plays ``len(task_seeds) * group_size`` episodes to the end; returns rows and episode results."""
        seeds = group_seeds(task_seeds, group_size)
        if len(seeds) != len(self.pool):
            raise ValueError(f"the pool has {len(self.pool)} environments; {len(seeds)} episodes requested")
        observations = self.pool.reset(seeds)
        batch = RolloutBatch()
        contexts: list[str | None] = []
        for index, observation in enumerate(observations):
            task_type = observation.info.get("task_type", "")
            episode = EpisodeResult(
                group=index // group_size, seed=seeds[index], task=observation.task, task_type=task_type
            )
            context = None
            if self.retriever is not None and (self.need_teacher or self.student_skills):
                context = teacher_context(self.retriever(observation.task, task_type or None, self.env_name))
                episode.skill_file = getattr(self.retriever, "last_file", None)
            contexts.append(context)
            batch.episodes.append(episode)
        histories: list[list[tuple[str, str]]] = [[] for _ in seeds]
        episode_rows: list[list[TurnRow]] = [[] for _ in seeds]
        current = list(observations)
        active = list(range(len(seeds)))
        for turn in range(self.max_turns):
            if not active:
                break
            prompts, teacher_prompts = [], []
            for index in active:
                episode = batch.episodes[index]
                student_context = contexts[index] if self.student_skills else None
                prompts.append(
                    self._prompt_ids(episode.task, current[index], histories[index], student_context)
                )
                teacher_prompts.append(
                    self._prompt_ids(episode.task, current[index], histories[index], contexts[index])
                    if self.need_teacher
                    else None
                )
            generations = self.engine.generate(
                prompts,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seeds=[request_seed(sampling_seed, index, turn) for index in active],
            )
            actions: list[str | None] = [None] * len(seeds)
            for index, prompt, teacher_prompt, generation in zip(
                active, prompts, teacher_prompts, generations, strict=True
            ):
                parsed = parse_response(generation.text, self.action_format)
                actions[index] = parsed.action
                batch.generated_tokens += len(generation.token_ids)
                episode_rows[index].append(
                    TurnRow(
                        batch.episodes[index].group,
                        index,
                        turn,
                        list(prompt),
                        list(generation.token_ids),
                        list(generation.logprobs),
                        teacher_prompt,
                        parsed.valid,
                    )
                )
            results = self.pool.step(actions)
            still_active = []
            for index in active:
                result = results[index]
                episode = batch.episodes[index]
                episode.turns += 1
                episode.valid_turns += int(episode_rows[index][-1].valid)
                episode.reward += float(result.reward)
                histories[index].append((current[index].text, actions[index]))
                current[index] = result.observation
                if result.done:
                    episode.won = bool(result.won)
                else:
                    still_active.append(index)
            active = still_active
        for index, rows in enumerate(episode_rows):
            episode = batch.episodes[index]
            for row in rows:
                row.reward = episode.reward - (0.0 if row.valid else self.invalid_penalty)
            batch.rows.extend(rows)
            if (
                self.retriever is not None
                and episode.skill_file is not None
                and hasattr(self.retriever, "update")
            ):
                self.retriever.update(episode.skill_file, episode.reward, env_name=self.env_name)
        return batch
