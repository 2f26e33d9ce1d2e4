"""LiveCodeBench code generation (``code_generation_lite``, CC-BY 4.0) -> verl parquet ``test.parquet``.

Input: ``--local-path`` with the release's ``test*.jsonl`` files (``question_title``, ``question_content``,
``platform``, ``question_id``, ``contest_date``, ``starter_code``, ``difficulty``, ``public_test_cases`` and
``private_test_cases`` (JSON, or base64 of zlib of a pickled JSON string), ``metadata`` with ``func_name``);
otherwise ``livecodebench/code_generation_lite`` through ``datasets``. ``--start-date``/``--end-date`` keep the
problems of a contest window (the paper's evaluation window is a choice to state next to its numbers).

    python recipes/livecodebench/prepare.py --local-path code_generation_lite/ --start-date 2024-08-01 \
        --output-dir ~/data/verl-gain/livecodebench
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.code_tests import code_prompt, normalise_tests
from recipes.common import (
    build_rows,
    decode_packed_json,
    field,
    load_split,
    prepare_parser,
    user_prompt,
    verl_row,
    write_parquet,
)
from verl_gain.rewards import LIVECODEBENCH_DATA_SOURCE

HUB_ID = "livecodebench/code_generation_lite"
SPLIT = "test"


def make_row(record: dict, split: str, index: int, start: str | None = None, end: str | None = None) -> dict | None:
    date = str(record.get("contest_date") or "")[:10]
    if (start and date < start) or (end and date > end):
        return None
    metadata = decode_packed_json(record.get("metadata") or "{}") or {}
    cases = list(decode_packed_json(record.get("public_test_cases") or "[]"))
    cases += list(decode_packed_json(record.get("private_test_cases") or "[]"))
    tests = normalise_tests(cases, metadata.get("func_name"))
    question = str(field(record, "question_content"))
    prompt = user_prompt(code_prompt(question, tests, record.get("starter_code")))
    extra = {
        key: str(record[key])
        for key in ("question_id", "platform", "difficulty", "contest_date")
        if record.get(key) is not None
    }
    return verl_row(LIVECODEBENCH_DATA_SOURCE, prompt, "code", json.dumps(tests), split, index, question, **extra)


def main(argv: list[str] | None = None) -> int:
    parser = prepare_parser(__doc__.splitlines()[0], "livecodebench")
    parser.add_argument("--start-date", default=None, help="keep problems with contest_date >= YYYY-MM-DD")
    parser.add_argument("--end-date", default=None, help="keep problems with contest_date <= YYYY-MM-DD")
    parser.add_argument("--version", default="release_v5", help="hub version tag when loading from the hub")
    args = parser.parse_args(argv)
    records = load_split(args.local_path, SPLIT, HUB_ID, args.version)
    rows = build_rows(records, SPLIT, lambda r, s, i: make_row(r, s, i, args.start_date, args.end_date), args.max_rows)
    write_parquet(rows, Path(args.output_dir) / f"{SPLIT}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
