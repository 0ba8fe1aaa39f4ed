"""searchqa: corpus and splits, BM25 retrieval quality, answer scoring, the episode rules."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

for _module in ("bm25s", "countryinfo", "mendeleev"):
    pytest.importorskip(_module, reason=f"searchqa needs {_module} (pip install bm25s countryinfo mendeleev)")

from sdar.envs import EnvPool, make_env  # noqa: E402
from sdar.envs.searchqa import (  # noqa: E402
    ADMISSIBLE_ACTIONS,
    INVALID_ACTION,
    SearchQAEnv,
    exact_match,
    get_corpus,
    normalize_answer,
    parse_action,
    search,
)
from sdar.envs.searchqa.corpus import SPLITS, TASK_TYPES, split_of  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return get_corpus()


def _python(code: str) -> str:
    """Runs ``code`` in a fresh interpreter that imports sdar from this checkout; returns stdout."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


def _rate(questions, hit) -> float:
    return sum(1 for q in questions if hit(q)) / len(questions)


# ---------------------------------------------------------------- corpus


def test_corpus_has_every_type_in_every_split(corpus):
    counts = corpus.counts()
    for split in SPLITS:
        for task_type in TASK_TYPES:
            assert counts[split].get(task_type, 0) >= 50, (split, task_type, counts)
    assert sum(counts["train"].values()) > 4 * sum(counts["test"].values())
    for question in corpus.questions:
        assert question.split == split_of(question.question)
        assert question.answers and all(pid in corpus.passage_index for pid in question.gold_pids)
        expected_hops = 1 if question.task_type == "lookup" else 2
        assert len(set(question.gold_pids)) == expected_hops, question
    assert len({q.question for q in corpus.questions}) == len(corpus.questions)
    assert len({q.qid for q in corpus.questions}) == len(corpus.questions)


def test_passages_state_the_answers(corpus):
    """Every lookup answer is written in its gold passage (normalised), so the corpus answers it."""
    for question in corpus.questions:
        if question.task_type != "lookup":
            continue
        text = normalize_answer(corpus.passages[corpus.passage_index[question.gold_pids[0]]].text)
        assert any(f" {normalize_answer(a)} " in f" {text} " for a in question.answers), question


def test_corpus_is_deterministic(corpus):
    code = (
        "from sdar.envs.searchqa import get_corpus; import hashlib; c = get_corpus();"
        "print(hashlib.sha256(repr((c.passages, c.questions)).encode()).hexdigest())"
    )
    assert (
        _python(code).strip()
        == hashlib.sha256(repr((corpus.passages, corpus.questions)).encode()).hexdigest()
    )


# ---------------------------------------------------------------- retrieval


def test_lookup_gold_passage_in_top3(corpus):
    lookups = [q for q in corpus.questions if q.task_type == "lookup"]
    rate = _rate(lookups, lambda q: q.gold_pids[0] in search(q.question, 3))
    print(f"lookup: gold passage in top-3 for {rate:.2%} of {len(lookups)} questions")
    assert rate >= 0.9


def test_multi_hop_needs_two_retrievals(corpus):
    multi = [q for q in corpus.questions if q.task_type == "multi_hop"]
    first = _rate(multi, lambda q: q.gold_pids[0] in search(q.question, 3))
    both = _rate(multi, lambda q: set(q.gold_pids) <= set(search(q.question, 3)))
    # second hop: the bridge entity (found in the first passage) added to the query
    second = _rate(
        multi, lambda q: q.gold_pids[1] in search(f"{q.gold_pids[1].split('/')[1]} {q.question}", 3)
    )
    print(
        f"multi_hop ({len(multi)}): first hop {first:.2%}, second hop {second:.2%}, both at once {both:.2%}"
    )
    assert first >= 0.9 and second >= 0.9
    assert both <= 0.2  # the question alone rarely brings up the second passage


def test_search_results_are_ranked_and_bounded():
    assert search("capital city of Peru Lima", 1) == ["country/Peru/geography"]
    assert search("Which chemical element has the symbol He?", 1) == ["element/Helium/properties"]
    assert search("atomic number 26", 1) == ["element/Iron/properties"]
    assert search("internet domain .at", 1) == ["country/Austria/people"]
    assert search("zzzz qqqq", 3) == []
    assert len(search("country", 3)) == 3


# ---------------------------------------------------------------- scoring and parsing


def test_normalize_answer():
    assert normalize_answer("The  Peso!") == "peso"
    assert normalize_answer("  An apple, a day ") == "apple day"
    assert normalize_answer("São Tomé") == "sao tome"
    assert normalize_answer("N'Djamena") == "ndjamena"
    assert normalize_answer("30,814,175") == "30814175"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("") == ""


def test_exact_match():
    assert exact_match("lima", ["Lima"])
    assert exact_match("  The Lima. ", ["Lima"])
    assert exact_match("+51", ["51"])
    assert exact_match("Peru", ["Republic of Peru", "Peru"])
    assert not exact_match("Lima, Peru", ["Lima"])
    assert not exact_match("", ["Lima"])


def test_parse_action():
    assert parse_action("<search>capital of Peru</search>") == ("search", "capital of Peru")
    assert parse_action("I think... <answer> Lima </answer> done") == ("answer", "Lima")
    assert parse_action("<ANSWER>Lima</ANSWER>") == ("answer", "Lima")
    assert parse_action("<search>capital of\nPeru") == ("search", "capital of Peru")  # stop string eaten
    assert parse_action("search: capital of Peru") == ("search", "capital of Peru")
    assert parse_action("Answer:Lima") == ("answer", "Lima")
    for bad in ["", "Lima", "<search></search>", "answer:", "<query>x</query>", None, 3]:
        assert parse_action(bad) is None, bad


# ---------------------------------------------------------------- episodes


def test_reset_is_deterministic_and_covers_the_split():
    a, b = SearchQAEnv(split="valid"), SearchQAEnv(split="valid")
    for seed in (0, 1, 7, 12345):
        first, second = a.reset(seed), b.reset(seed)
        assert first == second and first.task == a.question.question
    assert first.admissible_actions == ADMISSIBLE_ACTIONS
    seen = {a.reset(seed).task for seed in range(len(a))}
    assert len(seen) == len(a)
    assert {a.reset(seed).info["task_type"] for seed in range(30)} == set(TASK_TYPES)
    assert a.reset(3).task == a.reset(3 + len(a)).task


def test_scripted_episode_wins():
    env = make_env("searchqa")
    assert env.action_format == "search" and env.max_steps == 4
    obs = env.reset(0)
    assert obs.text == f"Question: {obs.task}" and obs.info["step"] == 0
    result = env.step(f"<search>{obs.task}</search>")
    assert not result.done and result.reward == 0.0
    assert result.observation.text.startswith("Doc 1 (Title: ")
    assert result.info["retrieved"] and result.observation.text.count("\nDoc ") == 2
    result = env.step(f"<answer>{env.question.answers[0]}</answer>")
    assert result.done and result.won and result.reward == 1.0 and result.info["step"] == 2
    assert not result.info["truncated"]
    after = env.step("<answer>again</answer>")  # nothing more happens once done
    assert after.done and after.reward == 0.0 and not after.won


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_scripted_episode_by_type(task_type):
    env = SearchQAEnv(split="test", task_types=[task_type])
    for seed in range(5):
        env.reset(seed)
        question = env.question
        # lookup / multi-hop: the question, then the bridge entity; comparison: each entity in turn
        entities = [pid.split("/")[1] for pid in question.gold_pids]
        queries = [f"{e} {question.question}" for e in entities] if task_type == "comparison" else []
        queries = queries or [question.question] + [f"{e} {question.question}" for e in entities[1:]]
        retrieved = set()
        for query in queries:
            retrieved |= set(env.step(f"<search>{query}</search>").info["retrieved"])
        assert set(question.gold_pids) <= retrieved, question
        result = env.step(f"answer: {question.answers[-1].upper()}")
        assert result.won and result.done and result.reward == 1.0


def test_wrong_answer_ends_the_episode():
    env = SearchQAEnv()
    env.reset(5)
    result = env.step("<answer>definitely not it</answer>")
    assert result.done and not result.won and result.reward == 0.0
    assert result.info["gold"] == list(env.question.answers)


def test_invalid_actions_and_turn_limit():
    env = SearchQAEnv(split="test")
    env.reset(1)
    invalid = ["Lima", "", "<search></search>", "<answer>"]
    for step, action in enumerate(invalid, start=1):
        result = env.step(action)
        assert result.observation.text == INVALID_ACTION
        assert result.reward == 0.0 and not result.won and result.info["invalid"]
        assert result.info["step"] == step and result.done == (step == 4)
    assert result.info["truncated"]
    env.reset(2)
    for step in range(1, 5):
        result = env.step("<search>capital</search>")
        assert result.done == (step == 4) and result.reward == 0.0
    assert result.info["truncated"] and not result.won
    env.reset(3)  # a new episode starts clean
    assert not env.step("<search>capital</search>").done


def test_variants_arguments_and_pool():
    assert make_env("searchqa:test").split == "test"
    assert SearchQAEnv(variant="valid").split == "valid"
    with pytest.raises(ValueError, match="split"):
        SearchQAEnv(split="dev")
    with pytest.raises(ValueError, match="disagree"):
        SearchQAEnv(split="train", variant="test")
    with pytest.raises(ValueError, match="task_types"):
        SearchQAEnv(task_types=["trivia"])
    with pytest.raises(ValueError, match="max_steps"):
        SearchQAEnv(max_steps=0)
    with pytest.raises(RuntimeError, match="reset"):
        SearchQAEnv().step("<search>x</search>")
    types = Counter(q.task_type for q in SearchQAEnv(task_types=("comparison",)).questions)
    assert set(types) == {"comparison"}
    with EnvPool("searchqa", size=4, workers=2) as pool:
        observations = pool.reset([0, 0, 1, 1])
        assert observations[0] == observations[1] and observations[0].task != observations[2].task
        results = pool.step(["<search>Peru</search>", None, "answer: x", "bogus"])
        assert results[1] is None and results[2].done and not results[0].done


def test_build_is_fast():
    code = (
        "import time; t = time.perf_counter(); from sdar.envs import make_env;"
        "make_env('searchqa').reset(0); print(time.perf_counter() - t)"
    )
    seconds = float(_python(code).strip())
    print(f"searchqa import + corpus + index: {seconds:.2f} s")
    assert seconds < 10
