"""The custom-reward example in docs/rewards.md works as written, loaded by verl's own loader."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "rewards.md"
MARKER = "<!-- custom-reward-example -->"


def test_custom_reward_example(tmp_path):
    from verl.utils.import_utils import load_extern_object

    text = DOC.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL).group(1)
    path = tmp_path / "my_reward.py"
    path.write_text(block)
    compute_score = load_extern_object(str(path), "compute_score")
    short = compute_score("HuggingFaceH4/MATH-500", "so \\boxed{4}", "4")
    long = compute_score("HuggingFaceH4/MATH-500", "x" * 3000 + " \\boxed{4}", "4")
    wrong = compute_score("HuggingFaceH4/MATH-500", "\\boxed{5}", "4")
    assert (short["score"], long["score"], wrong["score"]) == (1.0, 0.5, 0.0)
    assert short["acc"] == long["acc"] == 1.0 and wrong["acc"] == 0.0
