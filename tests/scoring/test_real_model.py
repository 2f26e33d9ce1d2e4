"""The real SmolLM2-135M-Instruct on GSM8K prompts from ../shared/data (slow: minutes of CPU)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_gain.model_sources import SMOLLM2_NAME, resolve_model
from verl_gain.scoring.scorer import ScoreConfig, score_dataset, score_prompts
from verl_gain.scoring.segments import PromptSegmenter

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.parquet"
ROWS = 64

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason="needs ../shared/data/gsm8k/train.parquet"),
]


def test_64_gsm8k_prompts_with_smollm2(tmp_path):
    data = pd.read_parquet(GSM8K_TRAIN).iloc[:ROWS].reset_index(drop=True)
    result = score_dataset(data, SMOLLM2_NAME, tmp_path / "scores.parquet", ScoreConfig(chunk_size=32), progress=False)
    scores = result.scores
    assert len(scores) == ROWS and scores["position"].tolist() == list(range(ROWS))
    assert scores["index"].tolist() == [info["index"] for info in data["extra_info"]]
    assert np.isfinite(scores[["intra", "inter", "key"]].to_numpy()).all()
    assert scores["key"].std() > 1e-3  # prompts are told apart
    # SmolLM2's hidden states are anisotropic: all cosines are high (docs/method.md)
    assert 0.3 < scores["intra"].mean() < 1.0 and 0.3 < scores["inter"].mean() < 1.0
    assert result.fingerprint["model"]["name"] == SMOLLM2_NAME
    assert result.fingerprint["capture"]["module"] == "model.layers.29.mlp"

    model_dir = resolve_model(SMOLLM2_NAME)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    segmenter = PromptSegmenter(tokenizer, model_type="llama")
    prompts = [segmenter(p) for p in data["prompt"]]
    for prompt, messages, n_question in zip(prompts, data["prompt"], scores["n_question"]):
        assert tokenizer.decode(prompt.question_token_ids()) == messages[-1]["content"]
        assert prompt.n_question == n_question

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    subset = prompts[:8]
    alone = score_prompts(model, subset, token_budget=1)
    for layout in ("left", "packed"):
        batched = score_prompts(model, subset, layout=layout)
        np.testing.assert_allclose(batched["key"], alone["key"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(alone["key"], scores["key"].to_numpy()[:8], rtol=0, atol=1e-5)
