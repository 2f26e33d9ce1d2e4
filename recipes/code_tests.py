"""The code tasks' prompt template and test normalisation, shared by LiveCodeBench and DeepCoder-style data.

The public releases describe tests in several shapes; all become the ground truth ``verl_gain.rewards.code_reward``
reads (a JSON string):
- LiveCodeBench: a list of ``{"input", "output", "testtype": "stdin" | "functional"}``; functional inputs are lines of
  JSON arguments, outputs JSON; the function name is in the row's ``metadata`` (``func_name``).
- DeepCoder ``primeintellect``: a list of ``{"type": "stdin_stdout" | "function_call", "input", "output",
  "fn_name"}``; DeepCoder ``lcbv5``/``codeforces``: LiveCodeBench's shape.
- DeepCoder ``taco`` (APPS style): ``{"inputs": [...], "outputs": [...], "fn_name"?: ...}``.
"""

from __future__ import annotations

import json
from typing import Any

# The prompt template of the code tasks, one per test kind. {question} is the problem statement.
STDIO_INSTRUCTION = (
    "{question}\n\nWrite a Python 3 program that reads the input from standard input and writes the answer to "
    "standard output. Reply with the complete program in a single ```python code block."
)
FUNCTIONAL_INSTRUCTION = (
    "{question}\n\nComplete the following starter code in Python 3. Reply with the complete solution in a single "
    "```python code block.\n\n```python\n{starter_code}\n```"
)
FUNCTIONAL_INSTRUCTION_NO_STARTER = (
    "{question}\n\nWrite a Python 3 function named `{fn_name}` that solves the problem. Reply with the complete "
    "solution in a single ```python code block."
)
STDIO_TYPES = frozenset({"stdin", "stdin_stdout", "stdio"})
FUNCTIONAL_TYPES = frozenset({"functional", "function_call", "call"})


def code_prompt(question: str, tests: dict, starter_code: str | None = None) -> str:
    """The user message of a code problem for its test kind."""
    if tests["kind"] == "stdio":
        return STDIO_INSTRUCTION.format(question=question.rstrip())
    if starter_code and starter_code.strip():
        return FUNCTIONAL_INSTRUCTION.format(question=question.rstrip(), starter_code=starter_code.rstrip())
    return FUNCTIONAL_INSTRUCTION_NO_STARTER.format(question=question.rstrip(), fn_name=tests["fn_name"])


def _as_text(value: Any) -> str:
    """An APPS input/output (a string, or a list of lines) as one text."""
    if isinstance(value, list | tuple):
        return "\n".join(str(item) for item in value)
    return str(value)


def _as_arguments(value: Any) -> list:
    """Function-call arguments: a list as is, or LiveCodeBench's lines of JSON values."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [json.loads(line) for line in value.split("\n") if line.strip()]
    return [value]


def _as_value(value: Any) -> Any:
    """An expected return value: JSON text decoded, anything else as is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def normalise_tests(cases: Any, fn_name: str | None = None) -> dict:
    """The reward's test dict (``kind`` stdio or functional, ``cases``) from any of the shapes in the module docstring.

    ``fn_name`` is the row-level function name (LiveCodeBench metadata); a case's own ``fn_name`` or
    ``metadata.func_name`` overrides it. Raises ValueError when there is no test case.
    """
    if hasattr(cases, "tolist"):
        cases = cases.tolist()
    if isinstance(cases, dict):  # APPS/TACO: parallel lists
        inputs, outputs = list(cases.get("inputs") or []), list(cases.get("outputs") or [])
        fn_name = cases.get("fn_name") or fn_name
        cases = [{"input": i, "output": o, "fn_name": fn_name} for i, o in zip(inputs, outputs)]
    if not cases:
        raise ValueError("a code problem without test cases")
    first = cases[0]
    case_type = str(first.get("testtype") or first.get("type") or "").lower()
    name = first.get("fn_name") or (first.get("metadata") or {}).get("func_name") or fn_name
    functional = case_type in FUNCTIONAL_TYPES or (case_type not in STDIO_TYPES and bool(name))
    if functional:
        if not name:
            raise ValueError("function-call tests without a function name (fn_name / metadata.func_name)")
        return {
            "kind": "functional",
            "fn_name": str(name),
            "cases": [{"args": _as_arguments(c["input"]), "expected": _as_value(c["output"])} for c in cases],
        }
    return {"kind": "stdio", "cases": [{"input": _as_text(c["input"]), "output": _as_text(c["output"])} for c in cases]}
