"""Training configuration: one plain dataclass, overridable from a YAML/JSON file and the command line.

Precedence: defaults < ``--config file.yaml|json`` < ``--field value`` flags. Every field is a flag
(``--lr 3e-4``, ``--env textworld:cooking``, ``--no-warmstart``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    # what to train
    algo: str = "sdar"  # grpo | skill_grpo | opsd | grpo_opsd | skill_sd | rlsd | sdar | sdar_pg
    model: str | None = None  # local Hugging Face model path; None builds the embedded tiny model
    initial_model: str | None = None  # an already warm-started embedded model to start from (compare)
    dtype: str = "float32"
    max_model_len: int = 4096
    env: str = "household"  # household | textworld:<kind> | searchqa | any registered name
    skills: str = "bm25"  # skill retrieval for the teacher (and skill_grpo's student)
    skills_k: int = 1  # entries per retrieval (bm25)
    # rollouts
    tasks_per_step: int = 4  # B
    group_size: int = 4  # G
    max_turns: int = 15
    history_turns: int = 2  # K
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    invalid_penalty: float = 0.1
    engine: str = "vllm"  # vllm | hf
    tensor_parallel: int = 1  # vLLM tensor-parallel size (GPUs per engine); 1 on CPU
    # optimisation
    steps: int = 40
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 3
    grad_clip: float = 1.0
    token_budget: int = 16384  # tokens per micro-batch (padded)
    kl_coef: float = 0.01  # KL to the reference (the weights RL starts from); 0 disables it
    entropy_coef: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = 3.0
    # warm start (embedded default only)
    warmstart: bool = True
    warmstart_steps: int = 900
    warmstart_episodes: int = 400
    warmstart_batch: int = 16
    warmstart_lr: float = 3e-3
    warmstart_noise: float = 0.3  # fraction of random actions in demonstrations without skills
    warmstart_skill_fraction: float = 0.5  # demonstrations that carry skills (and no noise)
    # evaluation, logging, checkpoints
    eval_every: int = 10
    eval_episodes: int = 48
    eval_split: str = "valid_seen"
    checkpoint_every: int = 10
    out_dir: str = "runs/sdar"
    seed: int = 0
    resume: bool = False
    debug_parity: bool = False  # check engine log-probs against the trainer after each weight push
    tensorboard: bool = True
    progress: bool = True
    # passed to the environment; None: {"max_instances": 1} for the embedded model on household (a
    # small world, one receptacle of each class, that a tiny model can learn on CPU), else {}
    env_kwargs: dict[str, Any] | None = None

    def environment_kwargs(self) -> dict[str, Any]:
        if self.env_kwargs is not None:
            return dict(self.env_kwargs)
        return {"max_instances": 1} if self.env == "household" and self.model is None else {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Fields from a YAML (``.yaml``/``.yml``) or JSON file; unknown keys are an error."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown TrainConfig fields {unknown}; known: {sorted(known)}")
    return data


def _parse_optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "") else float(text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field (booleans get ``--flag/--no-flag``), all defaulting to
    "not given" so that file values are only overridden by flags actually passed."""
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "env_kwargs":
            parser.add_argument(
                flag, type=json.loads, default=argparse.SUPPRESS, help="environment kwargs (JSON)"
            )
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif f.type in ("int", int):
            parser.add_argument(flag, type=int, default=argparse.SUPPRESS)
        elif f.type in ("float", float):
            parser.add_argument(flag, type=float, default=argparse.SUPPRESS)
        elif f.type == "float | None":
            parser.add_argument(flag, type=_parse_optional_float, default=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    """TrainConfig from defaults, then ``args.config``'s file, then the flags given, then ``overrides``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    values.update(overrides)
    return TrainConfig(**values)
