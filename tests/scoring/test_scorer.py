"""The scorer on tiny real models: layouts agree, the statistic is the L x L one, files are fingerprinted, runs
resume."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tiny import make_custom_code_model_dir, make_tiny_model, make_tiny_model_dir, make_tokenizer
from verl_gain.cli import main as cli_main
from verl_gain.core.angles import FIXED_SEGMENT, QUESTION_SEGMENT
from verl_gain.scoring.capture import HiddenStateCapture
from verl_gain.scoring.scorer import ScoreConfig, parts_dir_for, plan_batches, score_dataset, score_prompts
from verl_gain.scoring.scores_file import (
    FingerprintMismatch,
    dataset_fingerprint,
    key_by_position,
    read_scores,
)
from verl_gain.scoring.segments import PromptSegmenter

QUESTIONS = [
    "What is 2+2?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?",
    "x",
    "Compute 17*23.",
    "A train leaves at 3pm going 60 mph; another leaves at 4pm going 80 mph. When does the second catch up?",
    "Is 91 prime?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much?",
]
TOLERANCE = 1e-5
BF16_KEY_TOLERANCE = 4e-3
"""|key_bf16 - key_fp32| allowed: bf16 keeps 8 significant bits, so each hidden-state component is off by up to 2^-9
relative (2e-3), and a mean cosine over many token pairs (accumulated in fp32) by less; observed 7e-4 here."""


def _rows(questions):
    return pd.DataFrame(
        {
            "data_source": ["test"] * len(questions),
            "prompt": [[{"role": "user", "content": q}] for q in questions],
            "extra_info": [{"index": 100 + i, "split": "train"} for i in range(len(questions))],
        }
    )


@pytest.fixture(scope="module")
def segmenter():
    return PromptSegmenter(make_tokenizer("smollm2"))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("capture", ["mlp_input", "final_norm"])
def test_packed_left_right_and_one_at_a_time_agree(segmenter, arch, capture):
    model = make_tiny_model(len(segmenter.tokenizer), arch=arch, layers=2)
    prompts = [segmenter([{"role": "user", "content": q}]) for q in QUESTIONS]
    one_at_a_time = score_prompts(model, prompts, capture=capture, token_budget=1)
    for layout in ("right", "left", "packed"):
        batched = score_prompts(model, prompts, capture=capture, layout=layout, token_budget=10_000)
        for name in ("intra", "inter", "key"):
            np.testing.assert_allclose(batched[name], one_at_a_time[name], rtol=0, atol=TOLERANCE, err_msg=layout)
        np.testing.assert_array_equal(batched["n_question"], one_at_a_time["n_question"])
    full_forward = score_prompts(model, prompts, capture=capture, early_exit=False)
    np.testing.assert_allclose(full_forward["key"], one_at_a_time["key"], rtol=0, atol=TOLERANCE)


def test_scores_equal_the_brute_force_cosine_matrix(segmenter):
    """The naive procedure: one prompt, its captured hidden states, the full L x L cosine matrix."""
    model = make_tiny_model(len(segmenter.tokenizer), layers=2)
    prompts = [segmenter([{"role": "user", "content": q}]) for q in QUESTIONS[:4]]
    scores = score_prompts(model, prompts, inter_weight=8.0, layout="packed")
    for i, prompt in enumerate(prompts):
        with torch.no_grad(), HiddenStateCapture(model) as capture:
            model(input_ids=torch.tensor([prompt.input_ids]))
            unit = torch.nn.functional.normalize(capture.pop()[0].double(), dim=-1)  # [L, H]
        cos = unit @ unit.T  # [L, L]
        seg = torch.tensor(prompt.segment_ids)
        q, f = seg == QUESTION_SEGMENT, seg == FIXED_SEGMENT
        block, nq = cos[q][:, q], int(q.sum())
        intra = float((block.sum() - block.diagonal().sum()) / (nq * (nq - 1))) if nq > 1 else 0.0
        inter = float(cos[q][:, f].mean())
        assert scores["intra"][i] == pytest.approx(intra, abs=TOLERANCE)
        assert scores["inter"][i] == pytest.approx(inter, abs=TOLERANCE)
        assert scores["key"][i] == pytest.approx(intra + 8.0 * inter, abs=8 * TOLERANCE)
        assert scores["n_question"][i] == nq and scores["n_tokens"][i] == len(prompt)


def test_batches_respect_the_token_budget():
    lengths = [50, 40, 40, 30, 10, 10, 10, 200]
    padded = plan_batches(lengths, token_budget=100)
    assert padded == [[0, 1], [2, 3], [4, 5, 6], [7]]
    for batch in padded[:-1]:
        assert max(lengths[i] for i in batch) * len(batch) <= 100
    assert plan_batches(lengths, token_budget=100, layout="packed") == [[0, 1], [2, 3, 4, 5, 6], [7]]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", template="smollm2")


def test_scores_file_has_the_columns_the_index_and_a_fingerprint_checked_on_read(tiny_dir, tmp_path):
    data = _rows(QUESTIONS)
    out = tmp_path / "scores.parquet"
    result = score_dataset(data, tiny_dir, out, ScoreConfig(token_budget=256, chunk_size=3), progress=False)
    scores, fingerprint, info = read_scores(out)
    assert list(scores.columns) == [
        *("position", "index", "intra", "inter", "key", "n_fixed", "n_question", "mean_cosine", "n_tokens")
    ]
    assert scores["position"].tolist() == list(range(len(QUESTIONS)))
    assert scores["index"].tolist() == [100 + i for i in range(len(QUESTIONS))]
    assert np.isfinite(scores[["intra", "inter", "key"]].to_numpy()).all()
    assert fingerprint["dataset"] == dataset_fingerprint(data["prompt"], "prompt")
    assert fingerprint["dataset"]["rows"] == len(QUESTIONS)
    assert fingerprint["capture"] == {"spec": "mlp_input", "module": "model.layers.1.mlp", "hook_on": "input"}
    assert fingerprint["model"]["weights_sha256"] and fingerprint["template"]["sha256"]
    assert fingerprint["config"]["inter_weight"] == 1.0
    assert info["chunks_computed"] == 3 and result.chunks_reused == 0
    assert not parts_dir_for(out).exists()
    np.testing.assert_array_equal(key_by_position(scores, len(QUESTIONS)), scores["key"].to_numpy())

    # the same file against another dataset: one reordered row, one dropped row, one edited question
    for other in (data.iloc[[1, 0, *range(2, len(data))]], data.iloc[:-1], _rows([*QUESTIONS[:-1], "edited"])):
        with pytest.raises(FingerprintMismatch, match=r"different dataset .*dataset\.(sha256|rows)"):
            read_scores(out, expected={"dataset": dataset_fingerprint(other["prompt"], "prompt")})
    # a re-saved copy with an extra column is the same dataset
    same = data.assign(extra_column=1)
    read_scores(out, expected={"dataset": dataset_fingerprint(same["prompt"], "prompt")})


def test_the_fingerprint_depends_on_the_model(tiny_dir, tmp_path):
    data = _rows(QUESTIONS[:3])
    other_model = make_tiny_model_dir(tmp_path / "other", template="smollm2", seed=1)
    a = score_dataset(data, tiny_dir, tmp_path / "a.parquet", progress=False)
    b = score_dataset(data, other_model, tmp_path / "b.parquet", progress=False)
    assert a.fingerprint["dataset"] == b.fingerprint["dataset"]
    assert a.fingerprint["model"]["weights_sha256"] != b.fingerprint["model"]["weights_sha256"]
    assert not np.allclose(a.scores["key"], b.scores["key"])
    # rerunning into a file scored with another model is refused unless asked to overwrite
    with pytest.raises(ValueError, match="scored with another dataset/model/config; pass --overwrite"):
        score_dataset(data, other_model, tmp_path / "a.parquet", progress=False)
    again = score_dataset(data, other_model, tmp_path / "a.parquet", overwrite=True, progress=False)
    np.testing.assert_allclose(again.scores["key"], b.scores["key"])
    # the same weights in another folder are the same model: the file is up to date
    moved = shutil.copytree(other_model, tmp_path / "moved")
    assert score_dataset(data, moved, tmp_path / "a.parquet", progress=False).chunks_computed == 0


def test_bf16_scores_are_accumulated_in_fp32_and_stay_near_the_fp32_scores(tiny_dir, tmp_path):
    data = _rows(QUESTIONS)
    fp32 = score_dataset(data, tiny_dir, tmp_path / "fp32.parquet", ScoreConfig(dtype="float32"), progress=False)
    bf16 = score_dataset(data, tiny_dir, tmp_path / "bf16.parquet", ScoreConfig(dtype="bfloat16"), progress=False)
    assert (fp32.fingerprint["config"]["dtype"], bf16.fingerprint["config"]["dtype"]) == ("float32", "bfloat16")
    assert bf16.scores["key"].dtype == np.float64
    difference = (bf16.scores[["intra", "inter", "key"]] - fp32.scores[["intra", "inter", "key"]]).abs().to_numpy()
    assert 0 < difference.max() < BF16_KEY_TOLERANCE  # bf16 did run, and moved no score by more than its rounding


def test_bf16_scoring_on_a_cpu_without_bf16_warns_in_one_line_with_the_cost(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("verl_gain.inference.cpu_bf16_instructions", lambda *args: ())  # a CPU without bf16
    data = _rows(QUESTIONS[:2])
    score_dataset(data, tiny_dir, tmp_path / "bf16.parquet", ScoreConfig(dtype="bfloat16"), progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "slower than fp32" in warnings[0] and "--dtype=fp32" in warnings[0]
    score_dataset(data, tiny_dir, tmp_path / "auto.parquet", ScoreConfig(dtype="auto"), progress=False)
    assert "warning" not in capsys.readouterr().err  # auto picks fp32 there, silently


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_without_recomputing_finished_chunks(tiny_dir, tmp_path):
    data = _rows(QUESTIONS)  # 7 prompts, chunks of 2 -> 4 chunks; token budget 1 -> one forward per prompt
    config = ScoreConfig(token_budget=1, chunk_size=2, dtype="float32")  # the dtype of the model loaded below
    out = tmp_path / "scores.parquet"
    reference = score_dataset(data, tiny_dir, tmp_path / "reference.parquet", config, progress=False).scores

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    calls = []

    def count_and_interrupt(module, args, kwargs):
        calls.append(1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise Interrupt

    model.register_forward_pre_hook(count_and_interrupt, with_kwargs=True)
    interrupt_at = 6  # the 6th forward = the 2nd prompt of chunk 3: chunks 1-2 are done, chunk 3 is half done
    with pytest.raises(Interrupt):
        score_dataset(data, tiny_dir, out, config, progress=False, loaded=(model, tokenizer))
    assert sorted(p.name for p in parts_dir_for(out).glob("chunk-*.parquet")) == [
        "chunk-00000.parquet",
        "chunk-00001.parquet",
    ]
    assert not out.exists()

    calls.clear()
    interrupt_at = None
    result = score_dataset(data, tiny_dir, out, config, progress=False, loaded=(model, tokenizer))
    assert len(calls) == 3  # chunk 3 (2 prompts) and chunk 4 (1 prompt); chunks 1-2 were read back
    assert (result.chunks_reused, result.chunks_computed) == (2, 2)
    pd.testing.assert_frame_equal(result.scores, reference)

    calls.clear()
    assert score_dataset(data, tiny_dir, out, config, progress=False, loaded=(model, tokenizer)).chunks_computed == 0
    assert calls == []  # an up-to-date file is not recomputed


def test_stale_chunks_from_another_config_are_recomputed(tiny_dir, tmp_path):
    data = _rows(QUESTIONS[:4])
    out = tmp_path / "scores.parquet"
    parts = parts_dir_for(out)
    first = score_dataset(data, tiny_dir, tmp_path / "w1.parquet", ScoreConfig(chunk_size=2), progress=False)
    # plant chunks computed with inter_weight 1 where a run with inter_weight 8 will look for its chunks
    parts.mkdir()
    for chunk in sorted(parts_dir_for(tmp_path / "w1.parquet").parent.glob("w1.parquet.parts/*")):
        chunk.rename(parts / chunk.name)
    result = score_dataset(data, tiny_dir, out, ScoreConfig(chunk_size=2, inter_weight=8.0), progress=False)
    assert result.chunks_reused == 0
    intra = first.scores["intra"].to_numpy().copy()
    one_token = first.scores["n_question"].to_numpy() < 2  # "x": no question pairs, its intra is the others' mean
    assert one_token.tolist() == [False, False, True, False]
    intra[one_token] = intra[~one_token].mean()
    np.testing.assert_allclose(result.scores["key"], intra + 8 * first.scores["inter"], atol=1e-9)


# ----------------------------------------------------------------------------------------- bad input, via the CLI
def _cli(capsys, *args):
    capsys.readouterr()  # drop what the test's own set-up printed
    code = cli_main(["score", *map(str, args), "--quiet"])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        (_rows(QUESTIONS[:2]).rename(columns={"prompt": "messages"}), [], "column 'prompt' not found .* --prompt-key"),
        (_rows(QUESTIONS[:2]).assign(prompt=["plain text", "x"]), [], "row 0: prompt is a str, not a list of chat"),
        (_rows(["fine", " "]), [], r"row 1: the question \(last user message\) is empty"),
        (
            _rows(["short", QUESTIONS[1], QUESTIONS[4]]),
            ["--max-length", "150"],
            "2 prompt.* longer than --max-length 150 tokens \\(rows 1, 2\\); .* --skip-long",
        ),
    ],
)
def test_bad_data_is_refused_in_one_line(tiny_dir, tmp_path, capsys, rows, extra, message):
    data = tmp_path / "data.parquet"
    rows.to_parquet(data)
    code, err = _cli(capsys, "--data", data, "--model", tiny_dir, "--out", tmp_path / "s.parquet", *extra)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("verl-gain score: error: ")
    assert re.search(message, err), err


def test_skip_long_leaves_rows_out_and_counts_them(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_rows(["short", QUESTIONS[1], "also short"]).to_dict(orient="records")))
    out = tmp_path / "s.parquet"
    args = ["--data", str(data), "--model", str(tiny_dir), "--out", str(out), "--max-length", "150", "--skip-long"]
    code = cli_main(["score", *args, "--quiet"])
    assert code == 0
    assert "skipped 1 prompts longer than 150 tokens" in capsys.readouterr().out
    scores, _, info = read_scores(out)
    assert scores["position"].tolist() == [0, 2] and info["skipped_long"] == [1]
    with pytest.raises(FingerprintMismatch, match="1 dataset rows have no score .*positions \\[1\\]"):
        key_by_position(scores, 3)


def test_unknown_model_and_model_without_template_are_refused(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data.parquet"
    _rows(QUESTIONS[:2]).to_parquet(data)
    code, err = _cli(capsys, "--data", data, "--model", tmp_path / "nowhere", "--out", tmp_path / "s.parquet")
    assert code == 2 and "is not a Hugging Face model folder" in err and len(err.splitlines()) == 1

    bare = make_tiny_model_dir(tmp_path / "bare")
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    code, err = _cli(capsys, "--data", data, "--model", bare, "--out", tmp_path / "s.parquet")
    assert code == 2 and "has no chat template" in err and len(err.splitlines()) == 1


def test_a_model_with_its_own_code_is_refused_with_the_flag_and_scored_with_it(tmp_path, capsys):
    """A hub model with ``auto_map`` code: without ``--trust-remote-code`` one line naming the flag, before any
    weights load; with it, scored (before: ``verl-gain score`` had no way to run such a model)."""
    custom = make_custom_code_model_dir(tmp_path / "custom")
    data = tmp_path / "data.parquet"
    _rows(QUESTIONS[:3]).to_parquet(data)
    out = tmp_path / "s.parquet"
    code, err = _cli(capsys, "--data", data, "--model", custom, "--out", out)
    assert code == 2 and len(err.splitlines()) == 1 and "--trust-remote-code" in err, err
    assert not out.exists()
    code, err = _cli(capsys, "--data", data, "--model", custom, "--out", out, "--trust-remote-code")
    assert code == 0, err
    assert read_scores(out)[0]["position"].tolist() == [0, 1, 2]


def test_bad_options_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="token_budget must be a positive integer"):
        ScoreConfig(token_budget=0)
    with pytest.raises(ValueError, match="layout must be one of right, left, packed"):
        ScoreConfig(layout="diagonal")
    with pytest.raises(ValueError, match="inter_weight must be a finite number"):
        ScoreConfig(inter_weight=float("nan"))
