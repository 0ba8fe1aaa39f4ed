"""The embedded household environment: determinism, splits, command handling, the expert planner,
the registry / pool plumbing, and the terminal play CLI."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from sdar.envs import EnvPool, Observation, StepResult, group_seeds, make_env, register_env
from sdar.envs.household import SPLITS, TASK_TYPES, ExpertPlanner, HouseholdEnv, expert_policy
from sdar.envs.household.tasks import all_goals, goals_for, is_unseen, unseen_combinations

REPO = Path(__file__).resolve().parents[2]
NOTHING = "Nothing happens."


def run_expert(env: HouseholdEnv, seed: int) -> tuple[bool, list[str]]:
    """Plays one episode with the expert, checking each action is admissible; (won, actions)."""
    env.reset(seed)
    planner, actions = ExpertPlanner(), []
    while True:
        action = planner(env)
        assert action in env.admissible_actions, (env.split, seed, action, env.admissible_actions)
        actions.append(action)
        result = env.step(action)
        if result.done:
            return result.won, actions


def transcript(split: str, seed: int, actions: list[str]) -> list[tuple]:
    env = HouseholdEnv(split)
    obs = env.reset(seed)
    out = [(obs.text, obs.task, tuple(obs.admissible_actions), repr(obs.info))]
    for action in actions:
        r = env.step(action)
        o = r.observation
        out.append((o.text, tuple(o.admissible_actions), r.reward, r.done, r.won, repr(o.info)))
    return out


def test_expert_wins_every_task_type_and_split():
    covered = set()
    for split in SPLITS:
        env = HouseholdEnv(split)
        for seed in range(100):
            won, actions = run_expert(env, seed)
            assert won, (split, seed, env.goal, actions)
            assert len(actions) <= env.max_steps
            covered.add((split, env.goal.task_type))
    assert covered == {(s, t) for s in SPLITS for t in TASK_TYPES}


def test_expert_policy_function_follows_each_env():
    envs = [HouseholdEnv(), HouseholdEnv("valid_unseen")]
    for env, seed in zip(envs, (11, 12), strict=True):
        env.reset(seed)
    results = [None, None]
    while None in results:  # interleave two episodes: one planner per env
        for i, env in enumerate(envs):
            if results[i] is None:
                r = env.step(expert_policy(env))
                results[i] = r.won if r.done else None
    assert results == [True, True]


def test_random_policy_rarely_wins():
    rng = random.Random(1234)
    wins = 0
    episodes = 200
    for i in range(episodes):
        env = HouseholdEnv(SPLITS[i % 3])
        obs = env.reset(i)
        while True:
            r = env.step(rng.choice(obs.admissible_actions))
            obs = r.observation
            if r.done:
                wins += r.won
                break
    rate = wins / episodes
    print(f"random admissible-action policy success rate: {rate:.3f} over {episodes} episodes")
    assert rate < 0.25


def test_same_split_and_seed_give_identical_episodes():
    actions = ["look", "inventory", "go to cabinet 1", "open cabinet 1", "go to countertop 1", "take x"]
    for split in SPLITS:
        for seed in (0, 7, 123456789):
            env = HouseholdEnv(split)
            won, expert_actions = run_expert(env, seed)
            assert won
            assert transcript(split, seed, actions) == transcript(split, seed, actions)
            assert transcript(split, seed, expert_actions) == transcript(split, seed, expert_actions)
            assert run_expert(HouseholdEnv(split), seed)[1] == expert_actions
    # a reused env replays a seed exactly after other episodes
    env = HouseholdEnv()
    first = env.reset(5)
    env.reset(6)
    again = env.reset(5)
    assert first == again


def test_different_seeds_and_splits_differ():
    def signature(split, seed):
        obs = HouseholdEnv(split).reset(seed)
        return (obs.text, obs.task)

    train = {signature("train", s) for s in range(50)}
    assert len(train) >= 45
    assert signature("train", 0) != signature("valid_seen", 0)


def test_observation_format_and_info():
    env = HouseholdEnv("valid_seen")
    obs = env.reset(3)
    assert obs.text.startswith("You are in the middle of a room. Looking quickly around you, you see a")
    assert obs.task.startswith("Your task is to: ") and obs.task.endswith(".")
    assert set(obs.info) >= {"task_type", "split", "room", "goal", "step"}
    assert obs.info["task_type"] in TASK_TYPES and obs.info["split"] == "valid_seen" and obs.info["step"] == 0
    assert set(obs.info["goal"]) == {"object", "target"}
    assert obs.admissible_actions[-2:] == ["inventory", "look"]
    assert env.name == "household" and env.action_format == "action" and env.max_steps == 50
    r = env.step("look")
    assert r.observation.info["step"] == 1 and r.reward == 0.0 and not r.done


def test_goal_texts_follow_alfworld_style():
    texts = {g.task_type: g.text for g in all_goals()}
    assert texts["pick_two"].startswith("Your task is to: put two ")
    examples = {
        ("clean", "mug", "cabinet"): "Your task is to: put a clean mug in cabinet.",
        ("pick_two", "pencil", "drawer"): "Your task is to: put two pencils in drawer.",
        ("heat", "egg", "countertop"): "Your task is to: heat some egg and put it in countertop.",
        ("cool", "apple", "diningtable"): "Your task is to: cool some apple and put it in diningtable.",
        ("look_at_obj_in_light", "book", "desklamp"): "Your task is to: look at book under the desklamp.",
        ("pick_two", "knife", "countertop"): "Your task is to: put two knives in countertop.",
    }
    by_combo = {(g.task_type, g.obj, g.target): g.text for g in all_goals()}
    for combo, text in examples.items():
        assert by_combo[combo] == text


def test_unseen_combinations_are_held_out():
    unseen = unseen_combinations()
    for task_type in TASK_TYPES:
        assert goals_for("valid_unseen", task_type), task_type
        assert goals_for("train", task_type), task_type
    share = len(unseen) / len(all_goals())
    assert 0.12 < share < 0.25, share
    sampled = {split: set() for split in SPLITS}
    for split in SPLITS:
        env = HouseholdEnv(split)
        for seed in range(1500):
            env.reset(seed)
            sampled[split].add(env.goal.combination)
            assert is_unseen(env.goal) == (split == "valid_unseen")
    assert sampled["valid_unseen"] <= unseen
    assert not (sampled["train"] | sampled["valid_seen"]) & sampled["valid_unseen"]
    assert not (sampled["train"] | sampled["valid_seen"]) & unseen
    assert {c[0] for c in sampled["valid_unseen"]} == set(TASK_TYPES)


@pytest.mark.parametrize(
    "action",
    ["", "   ", "x" * 10_000, "go to " + "cabinet 1" * 1000, "ouvrir le frigo ☃ 🍎", "None", "null",
     "take", "go to", "go to fridge 99", "move apple 1 to", "\x00\n\t", "use desklamp 1", "heat"],
)  # fmt: skip
def test_garbage_actions_are_harmless(action):
    env = HouseholdEnv()
    env.reset(1)
    before = list(env.admissible_actions)
    r = env.step(action)
    assert r.observation.text == NOTHING
    assert r.reward == 0.0 and not r.done and not r.won
    assert r.observation.admissible_actions == before
    assert r.observation.info["step"] == 1


def test_non_string_actions_are_harmless():
    env = HouseholdEnv()
    env.reset(2)
    for action in (None, 3, b"look", ["look"]):
        assert env.step(action).observation.text == NOTHING


def test_lenient_normalisation():
    env = HouseholdEnv()
    obs = env.reset(3)
    first = obs.admissible_actions[0]
    r = env.step("  " + first.upper().replace(" ", "   ") + ".  ")
    assert r.observation.text.startswith("You arrive at")
    assert r.info["valid_action"]


def test_command_semantics_closed_containers_and_one_held_object():
    env = HouseholdEnv()
    for seed in range(200):  # find a layout with an object inside a closed receptacle
        env.reset(seed)
        world = env.world
        inside = [(o, r) for o, r in world.where.items() if world.is_openable(r)]
        if inside:
            break
    obj, recep = inside[0]
    assert f"take {obj} from {recep}" not in env.admissible_actions
    assert env.step(f"take {obj} from {recep}").observation.text == NOTHING
    assert env.step(f"go to {recep}").observation.text == f"You arrive at {recep}. The {recep} is closed."
    assert env.step(f"take {obj} from {recep}").observation.text == NOTHING
    opened = env.step(f"open {recep}").observation
    assert opened.text.startswith(f"You open the {recep}. The {recep} is open. In it, you see ")
    assert obj in opened.text
    assert f"take {obj} from {recep}" in opened.admissible_actions
    took = env.step(f"take {obj} from {recep}").observation
    assert took.text == f"You pick up the {obj} from the {recep}."
    assert not any(a.startswith("take ") for a in took.admissible_actions)  # one object at a time
    assert env.step("inventory").observation.text.endswith(f" {obj}.")
    moved = env.step(f"put {obj} in/on {recep}").observation  # old ALFWorld syntax reads as "move"
    assert moved.text == f"You move the {obj} to the {recep}."
    assert env.step("inventory").observation.text == "You are not carrying anything."
    assert env.step(f"close {recep}").observation.text == f"You close the {recep}."


def test_appliances_mark_state():
    env = HouseholdEnv()
    for seed in range(500):
        env.reset(seed)
        if env.goal.task_type == "heat":
            break
    planner = ExpertPlanner()
    while not env.done:
        action = planner(env)
        r = env.step(action)
        if action.startswith("heat "):
            assert r.observation.text.startswith("You heat the ")
            held = env.world.holding
            assert "hot" in env.world.states[held]
            assert env.step(f"examine {held}").observation.text == f"This is a hot {held}."
    assert env.won


def test_max_steps_ends_the_episode_lost():
    env = HouseholdEnv(max_steps=3)
    env.reset(0)
    results = [env.step("look") for _ in range(3)]
    assert [r.done for r in results] == [False, False, True]
    assert not results[-1].won and results[-1].reward == 0.0
    after = env.step("look")  # stepping a finished episode does not raise
    assert after.done and not after.won and after.reward == 0.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="split"):
        HouseholdEnv("test")
    with pytest.raises(ValueError, match="max_steps"):
        HouseholdEnv(max_steps=0)
    env = HouseholdEnv()
    for seed in (-1, 1.5, "3", None, True):
        with pytest.raises(ValueError, match="seed"):
            env.reset(seed)
    with pytest.raises(RuntimeError, match="reset"):
        HouseholdEnv().step("look")


def test_make_env_household():
    env = make_env("household", split="valid_unseen", max_steps=20)
    assert isinstance(env, HouseholdEnv) and env.split == "valid_unseen" and env.max_steps == 20
    assert env.reset(4).info["split"] == "valid_unseen"


class CountTo:
    """A tiny user-defined environment: say the number that is the seed modulo 5."""

    name = "count_to"

    def reset(self, seed: int) -> Observation:
        self.target = str(seed % 5)
        return Observation("Say a number.", f"Your task is to: say {self.target}.", list("01234"), {})

    def step(self, action: str) -> StepResult:
        won = action.strip() == self.target
        obs = Observation("Yes." if won else "No.", f"say {self.target}", list("01234"), {})
        return StepResult(obs, float(won), True, won, {})


def test_custom_env_runs_through_pool():
    register_env("count_to_test", CountTo, overwrite=True)
    seeds = group_seeds([3, 8], group_size=2)
    with EnvPool("count_to_test", size=len(seeds), workers=2) as pool:
        observations = pool.reset(seeds)
        assert [o.task for o in observations] == ["Your task is to: say 3."] * 4
        results = pool.step(["3", "0", "3", "3"])
        assert [r.won for r in results] == [True, False, True, True]
        assert pool.all_done
    with EnvPool("household", size=4, workers=2, split="valid_seen") as pool:
        observations = pool.reset(group_seeds([1, 2], 2))
        assert observations[0].text == observations[1].text and observations[0].task == observations[1].task
        results = pool.step(["look", "inventory", None, "look"])
        assert results[2] is None and results[0].observation.info["split"] == "valid_seen"


def play(*args: str, stdin_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdar.envs.play", *args],
        cwd=REPO,
        input=stdin_text,
        stdin=subprocess.DEVNULL if stdin_text is None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_play_cli_expert_wins():
    done = play("household", "--seed", "3", "--expert")
    assert done.returncode == 0, done.stderr
    assert "Your task is to:" in done.stdout
    assert "Episode over: won" in done.stdout
    assert "Traceback" not in done.stderr


def test_play_cli_scripted_session_then_eof():
    done = play("household", "--seed", "3", stdin_text="look\n1\ninventory\n")
    assert done.returncode == 0, done.stderr
    assert "You are not carrying anything." in done.stdout
    assert "You arrive at" in done.stdout  # "1" picked the first listed action
    assert "Traceback" not in done.stderr


def test_play_cli_rejects_unknown_env():
    done = play("no_such_env")
    assert done.returncode == 2 and "unknown environment" in done.stderr
