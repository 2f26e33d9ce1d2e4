"""The math reward on hand-checked (response, ground truth) pairs: equivalent forms, wrong answers, malformed output."""

from __future__ import annotations

import threading

import pytest

from verl_gain.rewards import GSM8K_DATA_SOURCE, MATH500_DATA_SOURCE, math_reward
from verl_gain.rewards.math_reward import compute_score, final_answer, gsm8k_answer, last_boxed_content

MATH = MATH500_DATA_SOURCE
GSM8K = GSM8K_DATA_SOURCE

# (data_source, response, ground truth, correct?) -- each checked by hand.
PAIRS = [
    # equivalent forms
    (MATH, "So the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True),
    (MATH, "The probability is \\boxed{0.5}.", "\\frac{1}{2}", True),
    (MATH, "\\boxed{\\dfrac{3}{4}}", "\\frac34", True),
    (MATH, "\\boxed{3/4}", "\\frac{3}{4}", True),
    (MATH, "\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True),
    (MATH, "\\boxed{2\\pi}", "2 \\pi", True),
    (MATH, "\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    (MATH, "\\boxed{(x+1)^2}", "x^2+2x+1", True),
    (MATH, "Thus $x = \\boxed{5}$.", "x=5", True),
    (MATH, "\\boxed{[0,1)}", "[0,1)", True),
    (MATH, "\\boxed{2, 1}", "1,2", True),
    (MATH, "\\boxed{1000}", "1,000", True),
    (MATH, "\\boxed{10\\%}", "10\\%", True),
    (MATH, "\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    (MATH, "\\boxed{ 12 }", "12", True),
    (MATH, "\\boxed{025}", "25", True),
    (MATH, "First \\boxed{7}, but on reflection \\boxed{8}.", "8", True),  # the last box counts
    (MATH, "\\fbox{42}", "42", True),
    (MATH, "\\boxed 9", "9", True),
    # wrong answers
    (MATH, "\\boxed{3}", "2", False),
    (MATH, "\\boxed{\\frac{1}{3}}", "0.33", False),
    (MATH, "\\boxed{[0,1]}", "[0,1)", False),
    (MATH, "\\boxed{-5}", "5", False),
    (MATH, "\\boxed{x^2+1}", "x^2-1", False),
    (MATH, "First \\boxed{8}, but on reflection \\boxed{7}.", "8", False),
    # malformed or missing final answers
    (MATH, "", "2", False),
    (MATH, "The answer is 2.", "2", False),  # no box: the requested format is \boxed{}
    (MATH, "\\boxed{", "2", False),  # cut off inside the box
    (MATH, "\\boxed{2", "2", False),
    (MATH, "\\boxed{}", "2", False),
    (MATH, "\\boxed{\\frac{1}{}}", "1", False),
    (MATH, "x" * 100_000 + " \\boxed{17}", "17", True),  # a runaway response still ends in its answer
    (MATH, "\\boxed{" + "9" * 2000 + "}", "9", False),  # an answer far too long to be one
    # GSM8K: "#### N" first, then \boxed{}
    (GSM8K, "48 / 2 = 24 clips in May. 48 + 24 = 72.\n#### 72", "72", True),
    (GSM8K, "She makes $18 every day.\n#### $18", "18", True),
    (GSM8K, "Total is 1,000 dollars.\n#### 1,000", "1000", True),
    (GSM8K, "#### 18.00", "18", True),
    (GSM8K, "The answer is \\boxed{72}.", "72", True),
    (GSM8K, "#### 71", "72", False),
    (GSM8K, "#### 72.5", "72", False),
    (GSM8K, "The answer is 72.", "72", False),  # neither #### nor a box
    (GSM8K, "####", "72", False),
]


@pytest.mark.parametrize(("data_source", "response", "ground_truth", "correct"), PAIRS)
def test_hand_checked_pairs(data_source, response, ground_truth, correct):
    result = compute_score(data_source, response, ground_truth)
    assert set(result) == {"score", "acc", "pred", "reward_failed", "reward_error"}
    assert result["score"] == result["acc"] == (1.0 if correct else 0.0), result


def test_pair_count():
    assert len(PAIRS) >= 30


def test_lenient_mode_searches_the_whole_text():
    assert compute_score(MATH, "The final answer is 204 minutes.", "204")["score"] == 0.0
    assert compute_score(MATH, "The final answer is 204 minutes.", "204", lenient=True)["score"] == 1.0
    assert compute_score(MATH, "I think it is 5.", "6", lenient=True)["score"] == 0.0


def test_pred_is_the_extracted_answer():
    assert compute_score(MATH, "so \\boxed{\\frac{a}{b}} done", "a/b")["pred"] == "\\frac{a}{b}"
    assert compute_score(GSM8K, "#### 1,234", "1234")["pred"] == "1234"
    assert compute_score(MATH, "no answer", "3")["pred"] == ""


def test_extractors():
    assert last_boxed_content("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed_content("no box") is None
    assert last_boxed_content("\\boxed{unclosed {") is None
    assert gsm8k_answer("so #### -3,500.5 dollars") == "-3500.5"
    assert gsm8k_answer("#### none") is None
    assert final_answer("#### 4 and \\boxed{5}", GSM8K) == "4"
    assert final_answer("#### 4 and \\boxed{5}", MATH) == "5"


def test_ground_truth_types_from_parquet():
    """Ground truths may arrive as numbers (AMC) and with surrounding spaces."""
    assert compute_score(MATH, "\\boxed{142}", 142.0)["score"] == 1.0
    assert compute_score(MATH, "\\boxed{142}", " 142 ")["score"] == 1.0


def test_scores_off_the_main_thread_like_verl_reward_loop(monkeypatch):
    """verl calls reward functions from a thread pool, where math-verify's signal timeouts cannot work."""
    monkeypatch.setenv(math_reward.WORKERS_ENV, "1")
    results: dict[str, dict] = {}

    def score(name: str, response: str, truth: str) -> None:
        results[name] = compute_score(MATH, response, truth)

    threads = [
        threading.Thread(target=score, args=("right", "\\boxed{\\frac{2}{4}}", "0.5")),
        threading.Thread(target=score, args=("wrong", "\\boxed{0.25}", "0.5")),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        math_reward._restart_pool()  # stop the worker processes this test started
    assert results["right"]["score"] == 1.0
    assert results["wrong"]["score"] == 0.0
