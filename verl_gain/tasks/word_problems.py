"""A small built-in dataset of GSM8K-style word problems (verl format), generated in code, to try the scorer on.

``python -m verl_gain.tasks.word_problems OUT.parquet [--rows 64]`` writes it. The problems vary in length and in the
number of steps (1-4), so a scored order has something to show; they are made up here, not taken from GSM8K.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam")
ITEMS = ("apples", "stickers", "marbles", "books", "pencils", "cookies", "stamps", "shells")
EXAMPLE_SEED = 2506


def word_problem(rng: random.Random) -> tuple[str, int, int]:
    """One problem of 1-4 steps: (text, integer answer, number of steps)."""
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    count = rng.randint(3, 40)
    text = [f"{name} has {count} {item}."]
    steps = rng.randint(1, 4)
    for _ in range(steps):
        kind = rng.choice(("buy", "give", "double", "share"))
        if kind == "buy":
            extra = rng.randint(2, 25)
            text.append(f"Then {name} buys {extra} more {item} at the market.")
            count += extra
        elif kind == "give" and count > 2:
            given = rng.randint(1, count - 1)
            text.append(f"{name} gives {given} {item} to {other}.")
            count -= given
        elif kind == "double":
            text.append(f"A friend gives {name} as many {item} as {name} has now.")
            count *= 2
        else:
            groups = rng.choice((2, 3, 4))
            count = count - count % groups
            text.append(f"{name} keeps only {count} {item} and puts them into {groups} equal boxes.")
            count //= groups
            text.append(f"{name} gives away every box but one.")
    text.append(f"How many {item} does {name} have now?")
    return " ".join(text), count, steps


def example_dataset(rows: int = 64, seed: int = EXAMPLE_SEED) -> pd.DataFrame:
    """``rows`` problems as a verl-format frame (data_source, prompt, ability, reward_model, extra_info, level)."""
    rng = random.Random(seed)
    records = []
    for index in range(rows):
        question, answer, steps = word_problem(rng)
        records.append(
            {
                "data_source": "verl_gain/example_word_problems",
                "prompt": [{"role": "user", "content": f"{question} {INSTRUCTION}"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(answer)},
                "extra_info": {"split": "train", "index": index},
                "level": steps,  # a difficulty column, as MATH has, for `verl-gain inspect`
            }
        )
    return pd.DataFrame(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="parquet file to write")
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example_dataset(args.rows).to_parquet(out)
    print(f"wrote {args.rows} example prompts to {out}")


if __name__ == "__main__":
    main()
