"""Tests for the skill bank (sdar.skills): texts, bank loading, retrieval strategies, teacher context."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from sdar.envs.household.catalog import (
    APPLIANCE,
    CLEANABLE,
    COOLABLE,
    HEATABLE,
    LAMPS,
    LIGHT_INSPECTABLE,
    LOCATION_PRIORS,
    RECEPTACLES,
    TASK_TYPES,
)
from sdar.skills import (
    STRATEGIES,
    BM25Retriever,
    KeywordRetriever,
    SkillBank,
    UCBRetriever,
    classify_task,
    env_family,
    env_variant,
    make_retriever,
    teacher_context,
)
from sdar.skills.bank import SkillFile
from sdar.skills.check_texts import check_household, prior_lines

# family -> task type -> representative task texts (as the environments phrase them)
TASKS: dict[str, dict[str, list[str]]] = {
    "household": {
        "pick_and_place": [
            "Your task is to: put some spraybottle on toilet.",
            "Your task is to: put a book in shelf.",
        ],
        "pick_two": [
            "Your task is to: put two pencils in drawer.",
            "Your task is to: put two mug in cabinet.",
        ],
        "clean": [
            "Your task is to: put a clean mug in cabinet.",
            "Your task is to: clean some knife and put it in microwave.",
        ],
        "heat": [
            "Your task is to: heat some egg and put it in countertop.",
            "Your task is to: put a hot apple in fridge.",
        ],
        "cool": [
            "Your task is to: cool some apple and put it in diningtable.",
            "Your task is to: cool some tomato and put it in microwave.",
        ],
        "look_at_obj_in_light": [
            "Your task is to: look at book under the desklamp.",
            "Your task is to: examine the cd with the floorlamp.",
        ],
    },
    "textworld": {
        "cooking": [
            "You are hungry! Let's cook a delicious meal. Check the cookbook in the kitchen for the recipe. "
            "Once done, enjoy your meal!"
        ],
        "treasure_hunter": [
            "Who's got a virtual machine and is about to play through a round of TextWorld? You do! "
            "Retrieve the golden key from the floor of the attic."
        ],
        "coin_collector": ["Your objective is to find the coin and take it."],
    },
    "searchqa": {
        "lookup": ["What is the capital of Peru?", "What is the atomic number of oxygen?"],
        "multi_hop": [
            "What is the currency of the country whose capital is Lima?",
            "What is the period of the element with symbol Fe?",
        ],
        "comparison": [
            "Which country has a larger population, Chile or Peru?",
            "Which element has the higher atomic number, iron or copper?",
        ],
    },
}
CASES = [(family, task_type, task) for family, types in TASKS.items() for task_type, texts in types.items()
         for task in texts]  # fmt: skip


# ---- the bank and its texts -------------------------------------------------------------------------


def test_builtin_families_have_general_and_every_task_type():
    assert SkillBank.builtin_families() == ["household", "searchqa", "textworld"]
    for family, types in TASKS.items():
        bank = SkillBank.load(family)
        assert bank.family == family
        assert bank.names == ["general", *sorted(types)]
        for skill_file in bank.files:
            assert len(skill_file.entries) >= 2, f"{family}/{skill_file.name}.md needs several entries"
            assert all(entry.title and entry.body for entry in skill_file.entries)
    assert set(SkillBank.load("household").type_names) == set(TASK_TYPES)


def test_env_names_map_to_families():
    assert env_family("textworld:cooking") == "textworld"
    assert env_family("household") == "household"
    assert env_variant("textworld:cooking") == "cooking"
    assert env_variant("household") is None
    assert SkillBank.load("textworld:coin_collector") is SkillBank.load("textworld")
    with pytest.raises(ValueError, match="no built-in skills"):
        SkillBank.load("chess")
    with pytest.raises(ValueError):
        env_family("")


def test_household_texts_agree_with_the_catalog():
    assert check_household() == []
    # the most likely receptacle of every object class is the first one its global line names
    lines = prior_lines(SkillBank.load("household"))
    top_listed = {obj: pairs[0][0] for _, obj, room, pairs in lines if room is None}
    for obj, prior in LOCATION_PRIORS.items():
        best = max(prior.values())
        assert prior[top_listed[obj]] == best, obj


def test_consistency_check_catches_drift():
    files = {f.name: f.text for f in SkillBank.load("household").files}
    files["general"] = files["general"].replace(
        "- egg: fridge (80%), countertop (20%)", "- egg: countertop (80%), fridge (20%)"
    )
    files["look_at_obj_in_light"] += "\n\n## Objects in a bedroom\n- pillow: bed (100%)\n"
    files["heat"] += "\n- kitchen: fridge, microwave\n"
    del files["pick_two"]
    problems = "\n".join(check_household(SkillBank("household", files)))
    assert "egg: countertop is 80%, catalog says 20%" in problems
    assert "never places a pillow in a bedroom" in problems
    assert "room 'kitchen'" in problems
    assert "missing skill file pick_two.md" in problems


def test_keyword_classifies_every_goal_the_household_env_poses():
    tasks = pytest.importorskip("sdar.envs.household.tasks")
    goals = tasks.all_goals()
    assert {goal.task_type for goal in goals} == set(TASK_TYPES)
    wrong = [goal.text for goal in goals if classify_task(goal.text, "household") != goal.task_type]
    assert not wrong, wrong[:5]


def test_household_commands_cover_what_the_expert_plays():
    household = pytest.importorskip("sdar.envs.household")
    commands = SkillBank.load("household").general.entries[0].body
    for seed in range(20):
        env, expert = household.HouseholdEnv(), household.ExpertPlanner()
        env.reset(seed)
        while not env.done:
            action = expert(env)
            verb = action.split()[0]
            assert f"`{verb} " in commands, action
            env.step(action)
        assert env.won


def test_household_type_files_name_their_objects_and_appliances():
    bank = SkillBank.load("household")
    for task_type, objects in (("heat", HEATABLE), ("cool", COOLABLE), ("clean", CLEANABLE)):
        text = bank.file(task_type).text
        assert f"{APPLIANCE[task_type]} 1" in text
        for obj in objects:
            assert re.search(rf"\b{obj}\b", text), (task_type, obj)
    look = bank.file("look_at_obj_in_light").text
    for lamp in LAMPS:
        assert f"use {lamp} 1" in look
    for obj in LIGHT_INSPECTABLE:
        assert re.search(rf"\b{obj}\b", look), obj


def test_texts_reveal_no_episode_specifics():
    """Skills must hold for every episode, so they never name a numbered instance such as
    "cabinet 3" or "apple 2": which cabinet holds the apple is seed-specific, and even "cabinet 1"
    would single out one of several cabinets. Allowed are "<class> 1" names that are the same in
    every episode: the appliances the task commands name (microwave 1, fridge 1, sinkbasin 1:
    every room with the class has an instance 1) and the classes with exactly one instance per
    room (desklamp 1, floorlamp 1, desk 1, toilet 1...), which have no other name. Search-QA skills
    must not carry answers, so they name no concrete country or element."""
    single = {name for name, ((_, most), _) in RECEPTACLES.items() if most == 1}
    allowed = {f"{name} 1" for name in (*APPLIANCE.values(), *single)}
    assert {"microwave 1", "fridge 1", "sinkbasin 1", "desklamp 1", "floorlamp 1"} <= allowed
    assert "cabinet 1" not in allowed and "countertop 1" not in allowed
    for name in APPLIANCE.values():
        assert RECEPTACLES[name][0][0] >= 1  # every room with the appliance has its instance 1
    classes = sorted({*RECEPTACLES, *LOCATION_PRIORS}, key=len, reverse=True)
    numbered = re.compile(rf"\b({'|'.join(classes)})s? (\d+)\b")
    for family in SkillBank.builtin_families():
        for skill_file in SkillBank.load(family).files:
            for match in numbered.finditer(skill_file.text):
                assert match.group(0) in allowed, f"{family}/{skill_file.name}.md names {match.group(0)!r}"
    qa = SkillBank.load("searchqa").text().lower()
    for fact in ("peru", "lima", "france", "paris", "japan", "tokyo", "germany", "euro", "oxygen", "iron",
                 "carbon", "hydrogen", "gold", "fe", "au", "spanish", "english"):  # fmt: skip
        assert not re.search(rf"\b{fact}\b", qa), fact


def test_markdown_entries_split_at_level_two_headings_outside_code():
    text = "# Title\nintro line\n\n## First\nbody one\n```\n## not a heading\n```\n## Second\nbody two\n"
    parsed = SkillFile.parse("demo", text)
    assert [e.title for e in parsed.entries] == ["Title", "First", "Second"]
    assert "## not a heading" in parsed.entries[1].body
    assert parsed.entries[2].text == "## Second\nbody two"


def test_from_directory_with_user_skills(tmp_path):
    (tmp_path / "general.md").write_text(
        "# Pond\n## Patience\nWait quietly by the water.\n", encoding="utf-8"
    )
    (tmp_path / "fishing.md").write_text(
        "## Fishing: bait\nUse worms as bait for trout.\n\n## Fishing: casting\nCast near reeds.\n",
        encoding="utf-8",
    )
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    bank = SkillBank.from_directory(tmp_path, family="pond")
    assert bank.family == "pond" and bank.names == ["general", "fishing"]
    assert len(bank.entries) == 3
    keyword = make_retriever("keyword", bank)
    text = keyword.retrieve("Go fishing for trout.")
    assert text.startswith("# Pond") and "worms" in text
    assert keyword.retrieve("Sit still.") == bank.general.text  # no type matched: general only
    assert keyword.retrieve("Sit still.", task_type="fishing").endswith("Cast near reeds.")
    assert "worms" in make_retriever("full", bank).retrieve("anything")
    bm25 = make_retriever("bm25", bank, k=1)
    assert bm25.retrieve("which bait for trout?") == "## Fishing: bait\nUse worms as bait for trout."
    assert SkillBank.from_directory(tmp_path).family == tmp_path.name
    with pytest.raises(FileNotFoundError):
        SkillBank.from_directory(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no"):
        SkillBank.from_directory(tmp_path / "empty")


# ---- retrieval --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize(("family", "task_type", "task"), CASES)
def test_every_strategy_returns_skills_for_every_task(strategy, family, task_type, task):
    retriever = make_retriever(strategy, rng=3) if strategy in ("random", "ucb") else make_retriever(strategy)
    env_name = f"textworld:{task_type}" if family == "textworld" else family
    text = retriever.retrieve(task, task_type=task_type, env_name=env_name)
    assert isinstance(text, str) and len(text.strip()) > 100
    # a retriever bound to the family's bank answers without env_name too
    bound = make_retriever(strategy, SkillBank.load(family))
    assert bound.retrieve(task).strip()


@pytest.mark.parametrize(("family", "task_type", "task"), CASES)
def test_keyword_classifies_representative_tasks(family, task_type, task):
    assert classify_task(task, family) == task_type
    retriever = KeywordRetriever()
    bank = SkillBank.load(family)
    text = retriever.retrieve(task, env_name=family)
    assert text == bank.general.text + "\n\n" + bank.file(task_type).text


def test_keyword_falls_back_to_given_type_then_env_variant():
    retriever = KeywordRetriever()
    household = SkillBank.load("household")
    assert retriever.infer_task_type("Your task is to: do it.", "heat", "household") == "heat"
    assert retriever.infer_task_type("Your task is to: do it.", None, "household") is None
    assert retriever.retrieve("Your task is to: do it.", env_name="household") == household.general.text
    # keyword rules win over a given task type; unknown given types are ignored
    assert retriever.infer_task_type("put two pens in drawer.", "heat", "household") == "pick_two"
    assert retriever.infer_task_type("do it", "no_such_type", "household") is None
    wake = "You wake up in a room."
    assert retriever.infer_task_type(wake, None, "textworld:coin_collector") == "coin_collector"
    assert retriever.infer_task_type(wake, "treasure_hunter", "textworld") == "treasure_hunter"


def test_retriever_needs_an_env_or_a_bank_of_the_right_family():
    with pytest.raises(ValueError, match="env_name"):
        KeywordRetriever().retrieve("put two pens in drawer.")
    with pytest.raises(ValueError, match="household"):
        KeywordRetriever(SkillBank.load("household")).retrieve("What is it?", env_name="searchqa")


def test_full_returns_every_file():
    bank = SkillBank.load("textworld")
    text = make_retriever("full").retrieve("anything", env_name="textworld:cooking")
    assert all(skill_file.text in text for skill_file in bank.files)


def test_random_is_seeded_and_varies():
    bank = SkillBank.load("household")
    task = TASKS["household"]["heat"][0]
    draws = [make_retriever("random", bank, rng=7) for _ in range(2)]
    seq_a = [draws[0].retrieve(task) for _ in range(30)]
    seq_b = [draws[1].retrieve(task) for _ in range(30)]
    assert seq_a == seq_b
    assert all(text.startswith(bank.general.text) for text in seq_a)
    assert len(set(seq_a)) > 2
    assert make_retriever("random", bank, rng=random.Random(7)).retrieve(task) == seq_a[0]


def _simulate_ucb(seed: int, rounds: int = 300, good: str = "heat") -> list[str]:
    ucb = make_retriever("ucb", rng=seed)
    chosen = []
    for _ in range(rounds):
        name = ucb.select("Your task is to: heat some egg and put it in countertop.", env_name="household")
        ucb.update(name, 1.0 if name == good else 0.0, env_name="household")
        chosen.append(name)
    return chosen


def test_ucb_shifts_toward_the_rewarded_file_and_is_deterministic():
    chosen = _simulate_ucb(seed=0)
    assert set(chosen[:6]) == set(SkillBank.load("household").type_names)  # plays every arm first
    late = Counter(chosen[-100:])
    assert late["heat"] >= 80, late
    assert Counter(chosen)["heat"] > len(chosen) / 2
    assert _simulate_ucb(seed=0) == chosen
    assert _simulate_ucb(seed=1)[:6] != chosen[:6]  # the seed drives the (tie-broken) exploration order


def test_ucb_retrieve_update_and_stats():
    ucb = UCBRetriever(SkillBank.load("searchqa"), rng=0)
    text = ucb.retrieve("Which is larger, A or B?")
    assert ucb.last_file in ("lookup", "multi_hop", "comparison")
    assert text.endswith(SkillBank.load("searchqa").file(ucb.last_file).text)
    ucb.update(ucb.last_file, 1.0)
    assert ucb.counts()[ucb.last_file] == 1 and ucb.means()[ucb.last_file] == 1.0
    with pytest.raises(ValueError, match="not a 'searchqa' skill file"):
        ucb.update("general", 1.0)
    with pytest.raises(ValueError):
        ucb.update(ucb.last_file, float("nan"))
    with pytest.raises(ValueError):
        UCBRetriever(c=-1.0)


def test_bm25_returns_the_most_relevant_entry():
    bm25 = BM25Retriever(k=3)
    ranked = bm25.retrieve_entries("how do I operate the microwave?", env_name="household")
    assert ranked and ranked[0][0].file == "heat" and "microwave" in ranked[0][0].body
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    text = bm25.retrieve("how do I operate the microwave?", env_name="household")
    assert text.startswith(f"## {ranked[0][0].title}")
    top = bm25.retrieve_entries("grill the ingredient with the BBQ", env_name="textworld:cooking")[0][0]
    assert (top.file, top.title) == ("cooking", "Cooking: processing ingredients")
    query = "remove thousands separators before comparing numbers"
    assert bm25.retrieve_entries(query, env_name="searchqa")[0][0].file == "comparison"
    # nothing in common with any entry: falls back to the first k entries (general skills)
    fallback = bm25.retrieve("zzzz qqqq", env_name="household")
    assert fallback.startswith("## Household skills") or fallback.startswith("## Commands")
    with pytest.raises(ValueError):
        BM25Retriever(k=0)


def test_make_retriever_names_and_errors():
    assert sorted(STRATEGIES) == ["bm25", "full", "keyword", "random", "ucb"]
    assert isinstance(make_retriever(), KeywordRetriever)
    assert isinstance(make_retriever(" BM25 ", k=2), BM25Retriever)
    with pytest.raises(ValueError, match=r"unknown skill retrieval strategy 'oracle'.*keyword"):
        make_retriever("oracle")
    with pytest.raises(TypeError):
        make_retriever("keyword", bank="household")


def test_teacher_context_format_is_exact():
    assert teacher_context("S") == "[Privileged Skill Information]\nS\n\n"
    skills = KeywordRetriever().retrieve(TASKS["household"]["cool"][0], env_name="household")
    assert teacher_context(skills) == f"[Privileged Skill Information]\n{skills}\n\n"
