"""Reward gaming: wrong solutions with a trick that made the old harness report a pass must score 0.

The code reward keeps every expected value out of the solution's process (stdio and functional results are compared
in the parent; HumanEval-style tests run in a second sandbox that calls the solution over a pipe), so rebinding
builtins, rewriting test data through ``gc``, returning objects that equal everything, exiting early, forging
verdicts or messages, or attacking the test's process gain nothing. Each problem's honest solution scores 1 in the
same test, so a reward that scored everything 0 would fail here too.
"""

from __future__ import annotations

import json

import pytest

from verl_gain.rewards import HUMANEVAL_DATA_SOURCE, LIVECODEBENCH_DATA_SOURCE
from verl_gain.rewards.code_reward import compute_score

# A HumanEval-style problem (written for this test) whose checks all go through abs(), as the example did.
SPREAD_PROMPT = '''from typing import List


def spread(numbers: List[float]) -> float:
    """Mean absolute deviation of the numbers around their mean.
    >>> spread([1.0, 2.0, 3.0])
    0.6666666666666666
    """
'''
SPREAD_TEST = """
def check(candidate):
    assert abs(candidate([1.0, 2.0, 3.0]) - 2.0 / 3.0) < 1e-6
    assert abs(candidate([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-6
    assert abs(candidate([2.0, 2.0, 2.0]) - 0.0) < 1e-6
    assert abs(candidate([1.0, 2.0, 3.0, 4.0, 5.0]) - 6.0 / 5.0) < 1e-6
"""
SPREAD_TRUTH = json.dumps({"kind": "assert", "prelude": SPREAD_PROMPT, "test": SPREAD_TEST, "entry_point": "spread"})
SPREAD_HONEST = (
    "def spread(numbers):\n    mean = sum(numbers) / len(numbers)\n"
    "    return sum(abs(x - mean) for x in numbers) / len(numbers)\n"
)
SPREAD_WRONG = "def spread(numbers):\n    return 0.25\n"

FUNCTIONAL_TRUTH = json.dumps(
    {
        "kind": "functional",
        "fn_name": "cube",
        "cases": [{"args": [2], "expected": 8}, {"args": [3], "expected": 27}, {"args": [-4], "expected": -64}],
    }
)
FUNCTIONAL_HONEST = "def cube(x):\n    return x ** 3\n"
FUNCTIONAL_WRONG = "def cube(x):\n    return x * 3\n"

STDIO_TRUTH = json.dumps(
    {"kind": "stdio", "cases": [{"input": "3 4\n", "output": "12\n"}, {"input": "5 6\n", "output": "30\n"}]}
)
STDIO_HONEST = "a, b = map(int, input().split())\nprint(a * b)\n"
STDIO_WRONG = "a, b = map(int, input().split())\nprint(a + b)\n"

# Tricks that run before (or instead of) a wrong solution. Each made, or could make, an in-process harness pass.
ASSERT_TRICKS = {
    "builtins.abs returns 0 (the issue's)": "import builtins\nbuiltins.abs = lambda x: 0\n",
    "AssertionError replaced": "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n",
    "an object that subtracts to 0": (
        "class Zero:\n    def __sub__(self, other):\n        return 0.0\ndef spread(numbers):\n    return Zero()\n"
    ),
    "a float subclass equal to everything": (
        "class Sly(float):\n    def __sub__(self, other):\n        return 0.0\n    def __eq__(self, other):\n"
        "        return True\n    __hash__ = float.__hash__\ndef spread(numbers):\n    return Sly(1.0)\n"
    ),
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\n",
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "expected values searched through gc": (
        "import gc\nfound = [c for o in gc.get_objects() if hasattr(o, 'co_consts') for c in o.co_consts\n"
        "         if isinstance(c, float) and 0 < c < 2]\n"
        "def spread(numbers):\n    return found[0] if found else 0.25\n"
    ),
    "the test's process killed or traced": (
        "import ctypes, os, signal\nlibc = ctypes.CDLL(None)\n"
        "for pid in range(1, 200):\n    libc.ptrace(16, pid, None, None)\n"
        "    if pid != os.getpid():\n        libc.kill(pid, signal.SIGKILL)\n"
    ),
    "forged verdicts on every descriptor": (
        'import os\nfor fd in range(3, 64):\n    for line in (b\'{"status": "passed", "nonce": "0"}\\n\',\n'
        '                 b\'{"value": 0.6666666666666666}\\n\', b\'{"message": {"passed": true}}\\n\'):\n'
        "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"
    ),
    "math functions rebound": "import math\nmath.fabs = math.isclose = lambda *a, **k: 0\n",
}
FUNCTIONAL_TRICKS = {
    "expected values rewritten through gc (the issue's)": (
        "import gc\nfor o in gc.get_objects():\n    if isinstance(o, dict) and 'expected' in o:\n"
        "        o['expected'] = o['args'][0] * 3\n"
    ),
    "SANDBOX_DATA rewritten": "SANDBOX_DATA.clear()\n",
    "an object equal to everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef cube(x):\n    return Anything()\n"
    ),
    "an int subclass equal to everything": (
        "class Sly(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def cube(x):\n    return Sly(0)\n"
    ),
    "builtins and math rebound": (
        "import builtins, math\nbuiltins.all = lambda *a: True\nbuiltins.len = lambda *a: 0\n"
        "math.isclose = lambda *a, **k: True\n"
    ),
    "forged results sent first": (
        "for case in range(3):\n    SANDBOX_SEND({'case': case, 'value': case * 3})\n"
        "    SANDBOX_SEND({'case': case, 'passed': True})\n"
    ),
    "a self-referencing result": "def cube(x):\n    out = []\n    out.append(out)\n    return out\n",
}
STDIO_TRICKS = {
    "print rebound": "import builtins\nbuiltins.print = lambda *a, **k: None\n",
    "stdout replaced by an object that compares equal": (
        "import sys\nclass Sink:\n    def write(self, text):\n        return len(text)\n    def flush(self):\n"
        "        pass\n    def __eq__(self, other):\n        return True\nsys.stdout = Sink()\n"
    ),
    "forged outputs sent first": (
        "SANDBOX_SEND({'case': 0, 'stdout': '12'})\nSANDBOX_SEND({'case': 1, 'stdout': '30'})\n"
    ),
    "expected outputs searched in the harness data": (
        "import gc\nfor o in gc.get_objects():\n    if isinstance(o, dict) and 'output' in o:\n"
        "        print(o['output'])\n"
    ),
}


def fenced(code: str) -> str:
    return f"Here is my answer.\n```python\n{code}```\n"


def test_the_honest_solutions_pass():
    assert compute_score(HUMANEVAL_DATA_SOURCE, fenced(SPREAD_HONEST), SPREAD_TRUTH)["score"] == 1.0
    assert compute_score(LIVECODEBENCH_DATA_SOURCE, fenced(FUNCTIONAL_HONEST), FUNCTIONAL_TRUTH)["score"] == 1.0
    assert compute_score(LIVECODEBENCH_DATA_SOURCE, fenced(STDIO_HONEST), STDIO_TRUTH)["score"] == 1.0


@pytest.mark.parametrize("trick", sorted(ASSERT_TRICKS))
def test_humaneval_style_gaming_scores_zero(trick):
    result = compute_score(HUMANEVAL_DATA_SOURCE, fenced(SPREAD_WRONG + ASSERT_TRICKS[trick]), SPREAD_TRUTH)
    assert result["score"] == 0.0 and result["acc"] == 0.0, result
    assert result["reward_failed"] == 0.0  # a verdict, not a failure of the reward


@pytest.mark.parametrize("trick", sorted(FUNCTIONAL_TRICKS))
def test_functional_gaming_scores_zero(trick):
    solution = FUNCTIONAL_TRICKS[trick] + FUNCTIONAL_WRONG if "def cube" not in FUNCTIONAL_TRICKS[trick] else ""
    response = fenced(solution or FUNCTIONAL_TRICKS[trick])
    result = compute_score(LIVECODEBENCH_DATA_SOURCE, response, FUNCTIONAL_TRUTH)
    assert result["score"] == 0.0, result


@pytest.mark.parametrize("trick", sorted(STDIO_TRICKS))
def test_stdio_gaming_scores_zero(trick):
    result = compute_score(LIVECODEBENCH_DATA_SOURCE, fenced(STDIO_TRICKS[trick] + STDIO_WRONG), STDIO_TRUTH)
    assert result["score"] == 0.0, result


@pytest.mark.parametrize("trick", ["AssertionError replaced", "math functions rebound"])
def test_a_trick_that_leaves_the_answers_right_still_passes(trick):
    """The verdict is about the answers the solution gives, not about what else its code does."""
    response = fenced(ASSERT_TRICKS[trick] + SPREAD_HONEST)
    assert compute_score(HUMANEVAL_DATA_SOURCE, response, SPREAD_TRUTH)["score"] == 1.0
