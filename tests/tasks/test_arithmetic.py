"""The embedded arithmetic task: deterministic generation, level shares, a held-out split, the reward."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from verl_gain.tasks import arithmetic
from verl_gain.tasks.arithmetic import LEVELS, compute_score, final_number, generate, write_task


def test_generation_is_deterministic_distinct_and_round_robin_over_levels() -> None:
    first, again = generate(100, seed=7), generate(100, seed=7)
    assert first == again
    assert generate(100, seed=8) != first
    assert len({p.question for p in first}) == 100
    counts = pd.Series([p.level for p in first]).value_counts()
    assert set(counts.index) == set(LEVELS) and counts.max() - counts.min() <= 1


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_answer_is_the_exact_result_of_its_question(level: int) -> None:
    for problem in generate(30, seed=level, levels=(level,)):
        numbers = [int(n) for n in re.findall(r"\d+", problem.question)]
        if "larger" in problem.question:
            expected = max(numbers)
        elif "-" in problem.question:
            expected = numbers[0] - numbers[1]
        else:
            expected = numbers[0] + numbers[1]
        assert problem.answer == expected, problem


def test_impossible_requests_fail_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown level"):
        generate(4, levels=(99,))
    with pytest.raises(ValueError, match="distinct problems"):
        generate(200, levels=(1,))  # single-digit sums: only 81 distinct questions


def test_written_task_is_verl_format_with_a_disjoint_held_out_split(tmp_path) -> None:
    train_path, test_path = write_task(tmp_path, train=60, test=20, seed=3)
    train, test = pd.read_parquet(train_path), pd.read_parquet(test_path)
    assert (len(train), len(test)) == (60, 20)
    questions = lambda df: {row[0]["content"] for row in df["prompt"]}  # noqa: E731
    assert not questions(train) & questions(test)
    row = train.iloc[0]
    assert row["data_source"] == f"{arithmetic.DATA_SOURCE}/level{row['level']}"
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].endswith(arithmetic.INSTRUCTION)
    assert list(train["extra_info"].map(lambda e: e["index"])) == list(range(60))
    assert {e["split"] for e in test["extra_info"]} == {"test"}


@pytest.mark.parametrize(
    ("reply", "truth", "correct"),
    [
        ("7", "7", True),
        ("The answer is 12.", "12", True),
        ("3 + 4 = 7", "7", True),
        ("1,024", "1024", True),
        ("7.0", "7", True),
        ("-3", "-3", True),
        ("12, no wait, 13", "12", False),
        ("seven", "7", False),
        ("", "7", False),
        ("70", "7", False),
    ],
)
def test_reward_scores_the_last_number(reply: str, truth: str, correct: bool) -> None:
    assert compute_score(arithmetic.DATA_SOURCE, reply, truth) == {
        "score": float(correct),
        "acc": float(correct),
        "reward_failed": 0.0,
        "reward_error": "",
    }


def test_final_number_of_text_without_numbers_is_none() -> None:
    assert final_number("no digits here") is None


@pytest.mark.parametrize("path", ["file", "pkg"])
def test_verl_loads_the_reward_by_file_path_and_by_package(path: str) -> None:
    from verl.utils.import_utils import load_extern_object

    target = arithmetic.__file__ if path == "file" else f"pkg://{arithmetic.__name__}"
    reward = load_extern_object(target, "compute_score")
    assert reward(arithmetic.DATA_SOURCE, "so 9", "9")["acc"] == 1.0


def test_a_request_larger_than_a_level_takes_all_of_it_and_fills_up_from_the_others() -> None:
    # Levels 1 and 5 hold 81 and 88 distinct questions: 720 problems (the learning-speed study's 320 + 400) take every
    # one of them, and the other levels share the rest evenly.
    problems = generate(720, seed=arithmetic.DEFAULT_SEED)
    counts = pd.Series([p.level for p in problems]).value_counts().to_dict()
    assert len({p.question for p in problems}) == 720
    assert counts[1] == 81 and counts[5] == 88
    assert max(counts[k] for k in (2, 3, 4)) - min(counts[k] for k in (2, 3, 4)) <= 1


def test_a_request_every_level_can_fill_is_plain_round_robin() -> None:
    # The demo's task (400 problems) must not change with the exhausted-level rule: every level keeps its equal share,
    # in turn, and the first problems are those of a pure rotation.
    problems = generate(400, seed=arithmetic.DEFAULT_SEED)
    assert [p.level for p in problems] == [1 + i % 5 for i in range(400)]
