"""Math reward for verl: the model's final answer compared with the ground truth by ``math-verify``.

verl contract: ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict`` with
``score`` (1.0 correct, 0.0 otherwise), ``acc`` (the same 0/1 correctness, what GAIN-RL's window update reads) and
``pred`` (the extracted final answer, "" when none was found).

Which part of the response is the answer (the prompt templates ask for exactly these forms):
- GSM8K (``data_source`` containing "gsm8k"): the number after the last ``####``; failing that the last ``\\boxed{}``.
- everything else: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``).
- ``lenient=True`` (a reward kwarg): when there is no such marker, let math-verify find a final answer anywhere in the
  text ("the answer is 5", the last ``$...$``); off by default, so that training rewards the requested format.

Equivalence is math-verify's (LaTeX, fractions vs decimals, intervals, sets, tuples, equations ``x=2`` vs ``2``,
symbolic simplification), not string normalisation. math-verify bounds its work with ``signal.alarm``, which only
works in a main thread; verl's reward loop calls reward functions from a thread pool, so off the main thread the check
runs in a small pool of worker processes (started on first use) where the alarm works. Import cost here is small:
math-verify itself is imported on first use.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from typing import Any

from verl_gain.rewards.failsafe import never_raises

# Parsing and comparison limits inside math-verify (its own defaults are 5 s each).
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5
# The worker-process path waits this long for one answer before giving up on it (and restarting the pool): both
# math-verify timeouts plus start-up of a fresh worker (importing sympy takes ~1-2 s).
WORKER_TIMEOUT_S = 30
WORKERS_ENV = "VERL_GAIN_MATH_WORKERS"
DEFAULT_WORKERS = 4
# Only the end of a long response can hold its final answer; this bounds regex and parsing work on runaway output.
MAX_SOLUTION_CHARS = 32_000
# A final answer longer than this is not an answer (and could make symbolic comparison very slow).
MAX_ANSWER_CHARS = 1_000

BOXED_COMMANDS = ("\\boxed", "\\fbox")
GSM8K_MARKER = "####"
_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched), or of ``\\boxed x``; else None."""
    start = max(text.rfind(command) for command in BOXED_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in BOXED_COMMANDS if text.startswith(c, start))
    position = start + len(command)
    if position < len(text) and text[position] == " ":  # "\boxed 5": the token up to a space or a dollar sign
        token = re.match(r" +([^\s$]+)", text[position:])
        return token.group(1) if token else None
    if position >= len(text) or text[position] != "{":
        return None
    depth = 0
    for index in range(position, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[position + 1 : index]
    return None  # unbalanced: the response was cut off inside the box


def gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####`` (thousands separators and a leading $ removed), or None."""
    position = text.rfind(GSM8K_MARKER)
    if position < 0:
        return None
    number = _NUMBER.search(text[position + len(GSM8K_MARKER) :].replace("$", ""))
    if number is None:
        return None
    return number.group(0).replace(",", "")


def is_gsm8k(data_source: str) -> bool:
    return "gsm8k" in (data_source or "").lower()


def final_answer(solution_str: str, data_source: str = "") -> str | None:
    """The final answer the response commits to (see the module docstring), or None."""
    text = solution_str[-MAX_SOLUTION_CHARS:]
    answer = gsm8k_answer(text) if is_gsm8k(data_source) else None
    if answer is None:
        answer = last_boxed_content(text)
    if answer is not None and (not answer.strip() or len(answer) > MAX_ANSWER_CHARS):
        return None
    return answer


def verify_answer(ground_truth: str, candidate: str, whole_text: bool = False) -> tuple[bool, str]:
    """Whether ``candidate`` equals ``ground_truth`` by math-verify, and the answer string math-verify extracted.

    ``candidate`` is a bare answer (wrapped in ``\\boxed{}`` here) or, with ``whole_text``, a response to search.
    Uses ``signal.alarm`` timeouts: call it in a main thread (``check_answer`` takes care of that).
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    targets = [LatexExtractionConfig(), ExprExtractionConfig()]
    golds = []
    for form in (f"\\boxed{{{ground_truth}}}", f"${ground_truth}$"):  # "10\%" only parses in the second form
        golds = parse(form, extraction_config=targets, parsing_timeout=PARSE_TIMEOUT_S)
        if golds:
            break
    text = candidate if whole_text else f"\\boxed{{{candidate}}}"
    predictions = parse(text, extraction_config=targets, parsing_timeout=PARSE_TIMEOUT_S)
    if not predictions:
        return False, ""
    extracted = str(predictions[-1]) if isinstance(predictions[-1], str) else str(predictions[0])
    if not golds:
        return False, extracted
    return bool(verify(golds, predictions, timeout_seconds=VERIFY_TIMEOUT_S)), extracted


_pool_lock = threading.Lock()
_pool = None


def _worker_pool():
    """Spawned worker processes (signal timeouts work in their main threads); created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            import multiprocessing

            workers = int(os.environ.get(WORKERS_ENV, DEFAULT_WORKERS))
            _pool = multiprocessing.get_context("spawn").Pool(processes=max(1, workers))
        return _pool


def _restart_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.terminate()
            _pool = None


def check_answer(ground_truth: str, candidate: str, whole_text: bool = False) -> tuple[bool, str]:
    """``verify_answer`` from any thread: directly in a main thread, else in a worker process. Never raises."""
    try:
        if threading.current_thread() is threading.main_thread():
            return verify_answer(ground_truth, candidate, whole_text)
        # By module name, so that it pickles even when verl loaded this file from a path under another name.
        function = importlib.import_module("verl_gain.rewards.math_reward").verify_answer
        pending = _worker_pool().apply_async(function, (ground_truth, candidate, whole_text))
        try:
            return pending.get(timeout=WORKER_TIMEOUT_S)
        except Exception as exc:
            import multiprocessing

            if isinstance(exc, multiprocessing.TimeoutError):
                _restart_pool()
            return False, ""
    except Exception:  # math-verify's own timeouts and parse failures: not correct
        return False, ""


@never_raises
def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    lenient: bool = False,
    **kwargs: Any,
) -> dict[str, float | str]:
    """verl reward: 1.0 when the response's final answer equals ``ground_truth`` (see the module docstring)."""
    gold = str(ground_truth).strip()
    answer = final_answer(solution_str or "", data_source)
    if answer is not None:
        correct, _ = check_answer(gold, answer)
        pred = answer
    elif lenient and solution_str:
        correct, pred = check_answer(gold, solution_str[-MAX_SOLUTION_CHARS:], whole_text=True)
    else:
        correct, pred = False, ""
    return {"score": float(correct), "acc": float(correct), "pred": pred}
