"""DeepCoder-Preview training problems (agentica-org, MIT; subsets primeintellect, taco, lcbv5, codeforces) ->
verl parquet ``train.parquet`` (and ``test.parquet`` when the input has a test split).

Input: ``--local-path`` with the release's parquet files (columns ``problem``, ``tests`` as a JSON string,
``metadata``/``starter_code`` optional), a directory of ``train*``/``test*`` files or a single file; otherwise the
``--subsets`` of ``agentica-org/DeepCoder-Preview-Dataset`` through ``datasets``. Problems whose tests cannot be
read are skipped and counted (``--max-tests`` keeps the first N cases of very large test sets).

    python recipes/deepcoder/prepare.py --local-path DeepCoder-Preview-Dataset/primeintellect \
        --output-dir ~/data/verl-gain/deepcoder
"""

from __future__ import annotations

import json
import sys
from functools import partial
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
    read_records,
    split_files,
    user_prompt,
    verl_row,
    write_parquet,
)
from verl_gain.rewards import DEEPCODER_DATA_SOURCE

HUB_ID = "agentica-org/DeepCoder-Preview-Dataset"
SUBSETS = ("primeintellect", "taco", "lcbv5", "codeforces")


def make_row(record: dict, split: str, index: int, max_tests: int | None, skipped: list) -> dict | None:
    metadata = decode_packed_json(record.get("metadata") or "{}") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    try:
        tests = normalise_tests(decode_packed_json(field(record, "tests")), metadata.get("func_name"))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        skipped.append(f"{type(exc).__name__}: {exc}")
        return None
    if max_tests is not None:
        tests["cases"] = tests["cases"][:max_tests]
    question = str(field(record, "problem", "question"))
    starter_code = record.get("starter_code") or metadata.get("starter_code")
    prompt = user_prompt(code_prompt(question, tests, starter_code))
    return verl_row(DEEPCODER_DATA_SOURCE, prompt, "code", json.dumps(tests), split, index, question)


def load_records(local_path: str | None, split: str, subsets: list[str]) -> list[dict]:
    """The rows of ``split``: a single local file is the train split; a directory holds ``<split>*`` files; the hub
    subsets otherwise. A missing test split is no error."""
    if local_path is not None:
        path = Path(local_path).expanduser()
        if path.is_file():
            return read_records(path) if split == "train" else []
        files = split_files(path, split)
        if not files and split == "train":
            raise SystemExit(f"no train* files (JSON, JSONL, parquet) under {path}")
        return [row for file in files for row in read_records(file)]
    records: list[dict] = []
    for subset in subsets:
        try:
            records += load_split(None, split, HUB_ID, subset)
        except SystemExit:
            if split == "train":
                raise
    return records


def main(argv: list[str] | None = None) -> int:
    parser = prepare_parser(__doc__.splitlines()[0], "deepcoder")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), help="hub subsets to load (default: all)")
    parser.add_argument("--max-tests", type=int, default=None, help="keep the first N test cases of a problem")
    args = parser.parse_args(argv)
    for split in ("train", "test"):
        records = load_records(args.local_path, split, args.subsets)
        if not records:
            continue
        skipped: list[str] = []
        rows = build_rows(records, split, partial(make_row, max_tests=args.max_tests, skipped=skipped), args.max_rows)
        if skipped:
            print(f"skipped {len(skipped)} {split} problems with unreadable tests (first: {skipped[0]})")
        write_parquet(rows, Path(args.output_dir) / f"{split}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
