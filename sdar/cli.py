"""``sdar`` command line.

    sdar train                              # the embedded default: tiny model, household env, SDAR
    sdar train --algo grpo --steps 20       # any TrainConfig field is a flag; --config file.yaml
    sdar train --model /path/to/hf-model --no-warmstart --env searchqa
    sdar eval runs/sdar                     # evaluate a run's latest checkpoint on held-out episodes
    sdar compare --algos grpo,sdar --seeds 3

``compare`` warm-starts the embedded model once, then trains each algorithm with each seed in its
own process from that same model (the seed varies the tasks and the sampling), and writes
compare.json, compare.md and compare.png. Rerunning the same command after a crash keeps the runs
that finished (they have summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .config import TrainConfig, add_config_arguments, config_from_args


def _train(args: argparse.Namespace) -> int:
    from .trainer import Trainer

    config = config_from_args(args)
    trainer = Trainer(config)
    try:
        trainer.train()
    finally:
        trainer.close()
    return 0


def _eval(args: argparse.Namespace) -> int:
    from . import checkpoint
    from .trainer import Trainer

    run = Path(args.run)
    saved = json.loads((run / "config.json").read_text())
    saved.update(out_dir=str(run), resume=False, steps=0, progress=False, tensorboard=False, warmstart=True)
    if args.episodes:
        saved["eval_episodes"] = args.episodes
    if args.split:
        saved["eval_split"] = args.split
    saved["initial_model"] = saved.get("initial_model") or str(run / "initial_model")
    trainer = Trainer(TrainConfig(**saved))
    try:
        path = Path(args.checkpoint) if args.checkpoint else checkpoint.latest_checkpoint(run / "checkpoints")
        if path is not None:
            checkpoint.load_checkpoint(path, model=trainer.policy)
            trainer.engine.push_weights(trainer.policy)
        result = trainer.evaluate("eval")
    finally:
        trainer.close()
    print(json.dumps({"checkpoint": str(path) if path else "initial model", **result}, indent=1))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import summarise_comparison

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    out = Path(getattr(args, "out_dir", "runs/compare"))
    out.mkdir(parents=True, exist_ok=True)
    base = config_from_args(args)
    started = time.time()
    initial = base.initial_model or base.model
    if initial is None:  # one warm start shared by every run: all of them start from the same policy
        from .trainer import prepare_initial_model

        print("[compare] preparing the shared initial model", flush=True)
        initial = str(prepare_initial_model(base, out))
    runs = []
    for seed in range(args.seeds):
        for algo in algos:
            run_dir = out / f"seed{seed}" / algo
            config = dict(base.to_dict(), algo=algo, seed=seed, out_dir=str(run_dir), progress=False)
            config["resume"] = True  # a run cut off by a crash continues from its last checkpoint
            if base.model is None:
                config["initial_model"] = initial
            if (run_dir / "summary.json").exists():  # finished by an earlier, interrupted compare
                print(f"[compare] seed {seed} {algo}: already done, kept", flush=True)
                runs.append({"algo": algo, "seed": seed, "dir": str(run_dir)})
                continue
            config_file = run_dir / "requested_config.json"
            run_dir.mkdir(parents=True, exist_ok=True)
            config_file.write_text(json.dumps(config, indent=1))
            elapsed = time.time() - started
            print(f"[compare] seed {seed} {algo}: training ({elapsed:.0f} s elapsed)", flush=True)
            command = [sys.executable, "-m", "sdar.cli", "train", "--config", str(config_file)]
            with open(run_dir / "train.log", "w") as log:
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
            if done.returncode != 0:
                print(f"[compare] seed {seed} {algo} failed; see {run_dir / 'train.log'}", flush=True)
                return done.returncode
            runs.append({"algo": algo, "seed": seed, "dir": str(run_dir)})
    report = summarise_comparison(runs, out)
    print(report)
    print(f"[compare] {len(runs)} runs in {time.time() - started:.0f} s; results in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdar", description="Multi-turn GRPO + SDAR training for LLM agents"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (no arguments: the embedded default)")
    add_config_arguments(train)
    train.set_defaults(run=_train)
    evaluate = commands.add_parser("eval", help="evaluate a run on held-out episodes")
    evaluate.add_argument("run", help="the run's output folder (has config.json)")
    evaluate.add_argument("--checkpoint", help="a checkpoint folder (default: the run's latest)")
    evaluate.add_argument("--episodes", type=int)
    evaluate.add_argument("--split")
    evaluate.set_defaults(run=_eval)
    compare = commands.add_parser("compare", help="train several algorithms with several seeds and plot them")
    compare.add_argument("--algos", default="grpo,sdar")
    compare.add_argument("--seeds", type=int, default=3)
    add_config_arguments(compare)
    compare.set_defaults(run=_compare)
    return parser


def quiet_libraries() -> None:
    """Keep the console to sdar's own progress: transformers' load bars and info logs off."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get("SDAR_VERBOSE"):
        quiet_libraries()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
