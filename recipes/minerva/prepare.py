"""Minerva math (OCWCourses, 272 problems; evaluation only) -> verl parquet ``test.parquet``.

Input: ``--local-path`` with the release's JSON/JSONL/parquet (``problem``/``question``, ``answer`` as a string or a
list); otherwise ``math-ai/minervamath`` through ``datasets``.
The prompt template is the boxed-answer one of ``recipes/math/prepare.py``.

    python recipes/minerva/prepare.py --local-path ../shared/data/eval/minerva_eval.json \
        --output-dir ~/data/verl-gain/minerva
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.common import build_rows, load_split, prepare_parser, write_parquet
from recipes.math.prepare import math_row
from verl_gain.rewards import MINERVA_DATA_SOURCE

HUB_ID, HUB_CONFIG, HUB_SPLIT = "math-ai/minervamath", None, "test"
SPLIT = "test"


def main(argv: list[str] | None = None) -> int:
    args = prepare_parser(__doc__.splitlines()[0], "minerva").parse_args(argv)
    records = load_split(args.local_path, SPLIT, HUB_ID, HUB_CONFIG, HUB_SPLIT)
    rows = build_rows(records, SPLIT, lambda r, s, i: math_row(r, s, i, MINERVA_DATA_SOURCE), args.max_rows)
    write_parquet(rows, Path(args.output_dir) / f"{SPLIT}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
