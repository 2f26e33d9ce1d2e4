"""DeepScaleR-Preview (40,315 problems: AIME, AMC, Omni-MATH, STILL) -> verl parquet ``train.parquet``.

Input: ``--local-path`` with the release's ``deepscaler.json`` (a JSON list of ``problem``, ``answer``,
``solution``); otherwise ``agentica-org/DeepScaleR-Preview-Dataset`` through ``datasets``.
The prompt template is the boxed-answer one of ``recipes/math/prepare.py``.

    python recipes/deepscaler/prepare.py --local-path deepscaler.json --output-dir ~/data/verl-gain/deepscaler
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.common import build_rows, load_split, prepare_parser, write_parquet
from recipes.math.prepare import math_row
from verl_gain.rewards import DEEPSCALER_DATA_SOURCE

HUB_ID, HUB_CONFIG, HUB_SPLIT = "agentica-org/DeepScaleR-Preview-Dataset", None, "train"
SPLIT = "train"


def main(argv: list[str] | None = None) -> int:
    args = prepare_parser(__doc__.splitlines()[0], "deepscaler").parse_args(argv)
    records = load_split(args.local_path, SPLIT, HUB_ID, HUB_CONFIG, HUB_SPLIT)
    rows = build_rows(records, SPLIT, lambda r, s, i: math_row(r, s, i, DEEPSCALER_DATA_SOURCE), args.max_rows)
    write_parquet(rows, Path(args.output_dir) / f"{SPLIT}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
