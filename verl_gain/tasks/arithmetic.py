"""The embedded task of ``make demo``: short arithmetic and word problems in graded difficulty levels.

Everything is generated from a seed (no data files, no network) and written in verl's RL format; the reward parses
the last number of the reply. The levels are chosen so that SmolLM2-135M-Instruct's *sampled* accuracy at the demo's
rollout temperature (0.4, ``ROLLOUT_TEMPERATURE``) spans roughly 15% to 70%: GRPO needs reward variance inside a
group, and a curriculum needs an easy end and a hard end. ``bench/measure_task_levels.py`` measures it; its figures
are in docs/results.md. Levels are numbered by that measured accuracy, easiest first:

  1  addition of two single-digit numbers          "What is 3 + 4?"
  2  one-step word problem, single digits          "Mia has 5 apples and gets 3 more. ..."
  3  the larger of two two-digit numbers           "Which is larger, 47 or 39?"
  4  two-digit plus two-digit                      "What is 36 + 48?"
  5  subtraction within 20                         "What is 15 - 7?"

(Two-digit plus one-digit was measured and left out: the model almost never gets it, sampled or greedy.)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from verl_gain.rewards.failsafe import never_raises

DATA_SOURCE = "verl_gain/arithmetic"
INSTRUCTION = "Reply with the number only."
"""Appended to every question: the model is verbose, and a short reply is both easier to parse and to learn."""
DEFAULT_SEED = 2506
ROLLOUT_TEMPERATURE = 0.4
"""The demo's rollout temperature: at 1.0 SmolLM2-135M is too erratic here (sampled accuracy <= 17% on every level)."""
NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben")
ITEMS = ("apples", "books", "coins", "cards", "pens", "shells")


class Problem(NamedTuple):
    """One generated problem: its question, exact integer answer and difficulty level.

    (A NamedTuple, not a dataclass: verl may load this module from its file path, outside ``sys.modules``, where
    ``@dataclass`` fails.)
    """

    question: str
    answer: int
    level: int


def _add_single(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"What is {a} + {b}?", a + b


def _larger(rng: random.Random) -> tuple[str, int]:
    a, b = rng.sample(range(10, 100), 2)
    return f"Which is larger, {a} or {b}?", max(a, b)


def _word_one_step(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b


def _subtract_within_20(rng: random.Random) -> tuple[str, int]:
    a = rng.randint(10, 20)
    b = rng.randint(2, 9)
    return f"What is {a} - {b}?", a - b


def _add_two_two(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(11, 89), rng.randint(11, 89)
    return f"What is {a} + {b}?", a + b


LEVELS: dict[int, Callable[[random.Random], tuple[str, int]]] = {
    1: _add_single,
    2: _word_one_step,
    3: _larger,
    4: _add_two_two,
    5: _subtract_within_20,
}


EXHAUSTED_AFTER_DRAWS = 2000
"""A level that draws only questions already generated this many times in a row has no new ones left (levels 1 and
5 have 81 and 88 distinct questions): it leaves the rotation and the other levels fill the rest. Far above the draws
a nearly exhausted level needs (81 draws for the last single-digit sum, on average), so a request that fits every
level gives the same problems as plain round robin."""


def generate(count: int, seed: int = DEFAULT_SEED, levels: tuple[int, ...] | None = None) -> list[Problem]:
    """``count`` distinct problems, levels in turn (round robin), deterministic from ``seed``.

    A level that runs out of distinct questions (``EXHAUSTED_AFTER_DRAWS``) leaves the rotation, so a large request
    holds every question of the small levels and more of the others.
    """
    rotation = list(levels or LEVELS)
    unknown = sorted(set(rotation) - set(LEVELS))
    if unknown:
        raise ValueError(f"unknown level(s) {unknown}; levels are {sorted(LEVELS)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    problems: list[Problem] = []
    turn = 0
    repeats = 0  # consecutive draws of already-seen questions by the level whose turn it is
    while len(problems) < count:
        if not rotation:
            raise ValueError(f"cannot generate {count} distinct problems from levels {tuple(levels or LEVELS)}")
        level = rotation[turn % len(rotation)]
        question, answer = LEVELS[level](rng)
        if question in seen:
            repeats += 1
            if repeats >= EXHAUSTED_AFTER_DRAWS:
                rotation.remove(level)
                repeats = 0
            continue
        repeats = 0
        seen.add(question)
        problems.append(Problem(question, answer, level))
        turn += 1
    return problems


def to_verl_rows(problems: list[Problem], split: str) -> pd.DataFrame:
    """verl's RL format: data_source, prompt (chat messages), ability, reward_model, extra_info, plus ``level``."""
    return pd.DataFrame(
        [
            {
                "data_source": f"{DATA_SOURCE}/level{p.level}",  # verl reports validation accuracy per data source
                "prompt": [{"role": "user", "content": f"{p.question} {INSTRUCTION}"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
                "extra_info": {"split": split, "index": i, "level": p.level},
                "level": p.level,
            }
            for i, p in enumerate(problems)
        ]
    )


def write_task(out_dir: str | Path, train: int = 320, test: int = 80, seed: int = DEFAULT_SEED) -> tuple[Path, Path]:
    """Write ``train.parquet`` and a held-out ``test.parquet`` (no question in both) under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = generate(train + test, seed)
    rng = random.Random(seed + 1)
    rng.shuffle(problems)
    train_path, test_path = out_dir / "train.parquet", out_dir / "test.parquet"
    to_verl_rows(problems[:train], "train").to_parquet(train_path)
    to_verl_rows(problems[train:], "test").to_parquet(test_path)
    return train_path, test_path


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """The last number written in ``text`` (thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


@never_raises
def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """verl reward: 1 when the reply's last number equals the answer, else 0 (``acc`` is the same 0/1)."""
    predicted = final_number(solution_str)
    correct = predicted is not None and predicted == float(ground_truth)
    return {"score": float(correct), "acc": float(correct)}
