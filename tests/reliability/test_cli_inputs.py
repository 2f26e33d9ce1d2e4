"""The bad-input catalogue of ``verl-gain score | inspect | eval | plan | check-signal``.

Every case runs the command line through the CLI's ``main`` (in this process, so that a hundred cases take seconds)
and asserts: the exit status, exactly one line on stderr that starts with ``verl-gain <command>: error:`` and says
what to do, no traceback, nothing on stdout, and no partial output (neither the case's own folder nor the shared
inputs change). ``test_cli_subprocess.py`` runs a few of them as real processes, and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.cli import main as cli_main
from verl_gain.scoring.scores_file import FINGERPRINT_KEY, dataset_fingerprint, read_scores, write_scores

QUESTIONS = ["What is 2+2?", "Is 91 prime?", "Compute 17*23."]
UNWRITABLE = "/proc/verl-gain-no-such-place"
"""A place no one can create files in, root included (procfs)."""


def verl_rows(questions: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "data_source": ["openai/gsm8k"] * len(questions),
            "prompt": [[{"role": "user", "content": q}] for q in questions],
            "reward_model": [{"ground_truth": "4", "style": "rule"} for _ in questions],
            "extra_info": [{"index": i} for i in range(len(questions))],
        }
    )


def scores_of(questions: list[str]) -> pd.DataFrame:
    n = len(questions)
    return pd.DataFrame(
        {
            "position": range(n),
            "index": pd.array(list(range(n)), dtype="Int64"),
            "intra": [0.1 * i for i in range(n)],
            "inter": [0.2] * n,
            "key": [0.1 * i + 0.2 for i in range(n)],
            "n_fixed": [10] * n,
            "n_question": [5] * n,
            "mean_cosine": [0.3] * n,
            "n_tokens": [15] * n,
        }
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The shared inputs, good and broken (never written to by a case)."""
    w = tmp_path_factory.mktemp("world")
    tiny = make_tiny_model_dir(w / "tiny")
    for name in ("tiny_trunc", "tiny_noweights", "tiny_notemplate"):
        shutil.copytree(tiny, w / name)
    weights = w / "tiny_trunc" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (w / "tiny_noweights" / "model.safetensors").unlink()
    config = json.loads((w / "tiny_notemplate" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (w / "tiny_notemplate" / "tokenizer_config.json").write_text(json.dumps(config))
    (w / "tiny_notemplate" / "chat_template.jinja").unlink(missing_ok=True)

    verl_rows(QUESTIONS).to_parquet(w / "data.parquet")
    verl_rows([]).to_parquet(w / "no_rows.parquet")
    verl_rows(["Something else entirely?"] * 3).to_parquet(w / "other.parquet")
    pd.DataFrame({"prompt": verl_rows(QUESTIONS)["prompt"]}).to_parquet(w / "prompts_only.parquet")
    verl_rows(QUESTIONS).assign(prompt=["plain text"] * 3).to_parquet(w / "string_prompt.parquet")
    verl_rows(["fine", " ", "fine"]).to_parquet(w / "empty_question.parquet")
    (w / "data.csv").write_text("prompt\nhello\n")
    (w / "garbage.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (w / "empty.json").write_text("[]")
    (w / "zero.jsonl").write_bytes(b"")
    (w / "surrogate.jsonl").write_text('{"prompt": [{"role": "user", "content": "hi \\ud800"}]}\n')
    (w / "not_object.jsonl").write_text("[1, 2]\n")
    (w / "nested.json").write_text("[" * 100_000)
    (w / "notes.jsonl").write_text('{"loss": 1.0}\n')
    (w / "a_file").write_text("")
    (w / "blocked.parquet.parts").write_text("")

    fingerprint = {"dataset": dataset_fingerprint(verl_rows(QUESTIONS)["prompt"].tolist())}
    write_scores(w / "scores.parquet", scores_of(QUESTIONS), fingerprint)
    write_scores(w / "zero_rows.parquet", scores_of([]), fingerprint)
    good = (w / "scores.parquet").read_bytes()
    (w / "scores_empty.parquet").write_bytes(b"")
    (w / "scores_truncated.parquet").write_bytes(good[: len(good) // 2])
    (w / "scores_garbage.parquet").write_bytes(b"\x00garbage\xff" * 100)
    table = pq.read_table(w / "scores.parquet")
    damaged = table.replace_schema_metadata({**table.schema.metadata, FINGERPRINT_KEY: b"{not json"})
    pq.write_table(damaged, w / "scores_damaged_fingerprint.parquet")
    pq.write_table(pa.table({"position": [0]}), w / "not_scores.parquet")
    (w / "scores_folder.parquet").mkdir()

    actor = w / "checkpoint" / "global_step_1" / "actor"
    actor.mkdir(parents=True)
    (actor / "model_world_size_1_rank_0.pt").write_bytes(b"not a torch file")
    return w


@dataclass(frozen=True)
class Case:
    """One bad command line: ``{w}`` is the shared inputs' folder, ``{t}`` the case's own (empty) folder."""

    argv: str
    message: str
    code: int = 2
    progress: str = ""
    """What the command may print on stdout before it fails (a note before a long step), as a regex."""


SCORE = "score --data {w}/data.parquet --model {w}/tiny --quiet"
INSPECT = "inspect {w}/scores.parquet --out-dir {t}/plots"
PLAN = "plan --rows 100 --batch 4 --steps 5"
EVAL = "eval --model {w}/tiny --data {w}/data.parquet --output-dir {t}/eval"
SIGNAL = "check-signal --model {w}/tiny --data {w}/data.parquet --sample 3"

CASES = {
    # ------------------------------------------------------------------------------------------ score: --out
    "score --out is a folder": Case(f"{SCORE} --out {{t}}", r"--out .* is a folder; give a file path"),
    "score --out under a file": Case(f"{SCORE} --out {{w}}/a_file/s.parquet", r"a_file is a file, not a folder"),
    "score --out in an unwritable place": Case(f"{SCORE} --out {UNWRITABLE}/s.parquet", r"cannot write in /proc"),
    "score --out exists, 0 bytes": Case(
        f"{SCORE} --out {{w}}/scores_empty.parquet", r"scores_empty.parquet is not a readable scores file.*--overwrite"
    ),
    "score --out exists, truncated": Case(
        f"{SCORE} --out {{w}}/scores_truncated.parquet", r"not a readable scores file \(truncated or not parquet"
    ),
    "score --out exists, garbage": Case(f"{SCORE} --out {{w}}/scores_garbage.parquet", r"not a readable scores file"),
    "score --out exists, not a scores file": Case(
        f"{SCORE} --out {{w}}/not_scores.parquet", r"not a verl-gain scores file .*--overwrite"
    ),
    "score --out exists, damaged fingerprint": Case(
        f"{SCORE} --out {{w}}/scores_damaged_fingerprint.parquet", r"its fingerprint is damaged"
    ),
    "score --out whose chunk folder is a file": Case(
        f"{SCORE} --out {{w}}/blocked.parquet", r"blocked.parquet.parts \(where an interrupted run keeps"
    ),
    # ------------------------------------------------------------------------------------------ score: options
    "score skips every row": Case(
        f"{SCORE} --out {{t}}/s.parquet --max-length 2 --skip-long",
        r"every prompt \(3\) is longer .* raise --max-length",
    ),
    "score template kwargs set tokenize": Case(
        f'{SCORE} --out {{t}}/s.parquet --apply-chat-template-kwargs {{{{"tokenize":false}}}}',
        r"may not set tokenize",
    ),
    "score template kwargs set add_generation_prompt": Case(
        f'{SCORE} --out {{t}}/s.parquet --apply-chat-template-kwargs {{{{"add_generation_prompt":false}}}}',
        r"may not set add_generation_prompt",
    ),
    "score template kwargs not JSON": Case(
        f"{SCORE} --out {{t}}/s.parquet --apply-chat-template-kwargs nope", r"is not valid JSON"
    ),
    "score template kwargs a list": Case(
        f"{SCORE} --out {{t}}/s.parquet --apply-chat-template-kwargs [1,2]", r"must be a JSON object"
    ),
    "score --token-budget 0": Case(f"{SCORE} --out {{t}}/s.parquet --token-budget 0", r"--token-budget: must be a"),
    "score --chunk-size -1": Case(f"{SCORE} --out {{t}}/s.parquet --chunk-size -1", r"--chunk-size: must be a"),
    "score --max-length 1": Case(
        f"{SCORE} --out {{t}}/s.parquet --max-length 1", r"max_length must be an integer >= 2"
    ),
    "score --max-length abc": Case(f"{SCORE} --out {{t}}/s.parquet --max-length abc", r"must be an integer, got 'abc'"),
    "score --inter-weight nan": Case(f"{SCORE} --out {{t}}/s.parquet --inter-weight nan", r"must be a finite number"),
    "score --dtype float8": Case(f"{SCORE} --out {{t}}/s.parquet --dtype float8", r"dtype must be auto or one of"),
    "score --device tpu": Case(f"{SCORE} --out {{t}}/s.parquet --device tpu", r"device must be auto, cpu, cuda"),
    "score --layout diagonal": Case(f"{SCORE} --out {{t}}/s.parquet --layout diagonal", r"invalid choice: 'diagonal'"),
    "score --capture mlp_input:99": Case(f"{SCORE} --out {{t}}/s.parquet --capture mlp_input:99", r"out of range"),
    "score --capture mlp_input:abc": Case(
        f"{SCORE} --out {{t}}/s.parquet --capture mlp_input:abc", r"layer index must be an integer"
    ),
    "score --capture input:model.nope": Case(
        f"{SCORE} --out {{t}}/s.parquet --capture input:model.nope", r"model.nope"
    ),
    "score without --data": Case("score --model {w}/tiny --out {t}/s.parquet", r"required: --data"),
    # ------------------------------------------------------------------------------------------ score: data
    "score --data missing": Case(
        "score --data {w}/nope.parquet --model {w}/tiny --out {t}/s.parquet", r"does not exist"
    ),
    "score --data .csv": Case("score --data {w}/data.csv --model {w}/tiny --out {t}/s.parquet", r"unsupported type"),
    "score --data garbage parquet": Case(
        "score --data {w}/garbage.parquet --model {w}/tiny --out {t}/s.parquet", r"cannot read garbage.parquet"
    ),
    "score --data parquet with no rows": Case(
        "score --data {w}/no_rows.parquet --model {w}/tiny --out {t}/s.parquet", r"the dataset has no rows"
    ),
    "check-signal --data with no rows": Case(
        "check-signal --model {w}/tiny --data {w}/no_rows.parquet", r"has no prompts"
    ),
    "score --data empty JSON list": Case(
        "score --data {w}/empty.json --model {w}/tiny --out {t}/s.parquet", r"empty.json holds no rows"
    ),
    "score --data 0-byte JSON lines": Case(
        "score --data {w}/zero.jsonl --model {w}/tiny --out {t}/s.parquet", r"zero.jsonl holds no rows"
    ),
    "score --data lone surrogate": Case(
        "score --data {w}/surrogate.jsonl --model {w}/tiny --out {t}/s.parquet", r"row 0 holds a lone surrogate"
    ),
    "score --data row not an object": Case(
        "score --data {w}/not_object.jsonl --model {w}/tiny --out {t}/s.parquet", r"row 0 is a list, not an object"
    ),
    "score --data nested too deep": Case(
        "score --data {w}/nested.json --model {w}/tiny --out {t}/s.parquet", r"cannot read nested.json"
    ),
    "score --data without the prompt column": Case(
        "score --data {w}/data.parquet --prompt-key messages --model {w}/tiny --out {t}/s.parquet",
        r"column 'messages' not found .*--prompt-key",
    ),
    "score --data prompt is text": Case(
        "score --data {w}/string_prompt.parquet --model {w}/tiny --out {t}/s.parquet", r"row 0: prompt is a str"
    ),
    "score --data empty question": Case(
        "score --data {w}/empty_question.parquet --model {w}/tiny --out {t}/s.parquet", r"row 1: the question"
    ),
    # ------------------------------------------------------------------------------------------ score: model
    "score --model missing": Case(
        "score --data {w}/data.parquet --model {w}/nope --out {t}/s.parquet", r"not a Hugging Face model folder"
    ),
    "score --model truncated weights": Case(
        "score --data {w}/data.parquet --model {w}/tiny_trunc --out {t}/s.parquet", r"truncated or damaged"
    ),
    "score --model without weights": Case(
        "score --data {w}/data.parquet --model {w}/tiny_noweights --out {t}/s.parquet", r"has no weight files"
    ),
    "score --model without chat template": Case(
        "score --data {w}/data.parquet --model {w}/tiny_notemplate --out {t}/s.parquet", r"has no chat template"
    ),
    # ------------------------------------------------------------------------------------------ inspect
    "inspect missing file": Case("inspect {w}/nope.parquet", r"does not exist; create it with `verl-gain score`"),
    "inspect 0-byte file": Case("inspect {w}/scores_empty.parquet", r"not a readable scores file \(0 bytes"),
    "inspect truncated file": Case("inspect {w}/scores_truncated.parquet", r"not a readable scores file"),
    "inspect garbage file": Case("inspect {w}/scores_garbage.parquet", r"not a readable scores file"),
    "inspect a folder": Case("inspect {w}/scores_folder.parquet", r"not a readable scores file \(it is a folder"),
    "inspect not a scores file": Case("inspect {w}/not_scores.parquet", r"not a verl-gain scores file"),
    "inspect damaged fingerprint": Case("inspect {w}/scores_damaged_fingerprint.parquet", r"fingerprint is damaged"),
    "inspect 0-row scores file": Case("inspect {w}/zero_rows.parquet", r"holds no scored prompt \(0 rows\)"),
    "inspect --top -3": Case(f"{INSPECT} --top -3", r"--top: must be an integer >= 0, got -3"),
    "inspect --top abc": Case(f"{INSPECT} --top abc", r"--top: must be an integer"),
    "inspect --by without --data": Case(f"{INSPECT} --by level", r"--by 'level' needs --data"),
    "inspect --data of another dataset": Case(f"{INSPECT} --data {{w}}/other.parquet", r"different dataset"),
    "inspect --out-dir is a file": Case("inspect {w}/scores.parquet --out-dir {w}/a_file", r"a_file is a file"),
    "inspect --out-dir unwritable": Case(f"inspect {{w}}/scores.parquet --out-dir {UNWRITABLE}", r"cannot write"),
    # ------------------------------------------------------------------------------------------ plan
    "plan --scores 0-byte": Case(f"{PLAN.replace('--rows 100', '--scores {w}/scores_empty.parquet')}", r"0 bytes"),
    "plan --scores truncated": Case(
        f"{PLAN.replace('--rows 100', '--scores {w}/scores_truncated.parquet')}", r"not a readable scores file"
    ),
    "plan --scores 0 rows": Case("plan --scores {w}/zero_rows.parquet --batch 1 --steps 5", r"holds no scored prompt"),
    "plan --steps 0": Case("plan --rows 100 --batch 4 --steps 0", r"--steps: must be a positive integer"),
    "plan --batch -1": Case("plan --rows 100 --batch -1 --steps 5", r"--batch: must be a positive integer"),
    "plan --rows 0": Case("plan --rows 0 --batch 4 --steps 5", r"--rows: must be a positive integer"),
    "plan --angle inf": Case(f"{PLAN} --angle inf", r"--angle: must be a finite number"),
    "plan --out-dir is a file": Case(f"{PLAN} --out-dir {{w}}/a_file", r"a_file is a file, not a folder"),
    "plan --accuracy not a trace": Case(f"{PLAN} --accuracy {{w}}/notes.jsonl", r"is not a GAIN trace"),
    "plan gain override of the wrong type": Case(f"{PLAN} gain.n_fraction=abc", r"gain.n_fraction must be in"),
    "plan gain switch that is not a boolean": Case(f"{PLAN} gain.enable=maybe", r"gain.enable must be true or false"),
    # ------------------------------------------------------------------------------------------ eval
    "eval --model good bad": Case(
        "eval --model {w}/tiny {w}/nope --data {w}/data.parquet --output-dir {t}/eval", r"nope does not exist"
    ),
    "eval --model truncated weights": Case(
        "eval --model {w}/tiny_trunc --data {w}/data.parquet --output-dir {t}/eval", r"truncated or damaged"
    ),
    "eval checkpoint whose merge fails": Case(
        "eval --model {w}/checkpoint/global_step_1 --data {w}/data.parquet --output-dir {t}/eval",
        r"model merger could not merge .*merge it with python -m verl.model_merger",
        progress=r"^\[verl-gain eval\] merging the FSDP checkpoint .*\n$",
    ),
    "eval --output-dir is a file": Case(
        "eval --model {w}/tiny --data {w}/data.parquet --output-dir {w}/a_file", r"a_file is a file"
    ),
    "eval --output-dir under a file": Case(
        "eval --model {w}/tiny --data {w}/data.parquet --output-dir {w}/a_file/out", r"a_file is a file"
    ),
    "eval --data missing": Case(
        "eval --model {w}/tiny --data {w}/nope.parquet --output-dir {t}/eval", r"does not exist: run the recipe"
    ),
    "eval --data garbage": Case(
        "eval --model {w}/tiny --data {w}/garbage.parquet --output-dir {t}/eval", r"cannot read benchmark file"
    ),
    "eval --data without verl columns": Case(
        "eval --model {w}/tiny --data {w}/prompts_only.parquet --output-dir {t}/eval", r"lacks verl columns"
    ),
    "eval --data with no problems": Case(
        "eval --model {w}/tiny --data {w}/no_rows.parquet --output-dir {t}/eval", r"holds no problems"
    ),
    "eval --n-samples 0": Case(f"{EVAL} --n-samples 0", r"--n-samples: must be a positive integer"),
    "eval greedy with 2 samples": Case(f"{EVAL} --n-samples 2", r"greedy decoding .* --n-samples 1"),
    "eval --top-p 2": Case(f"{EVAL} --top-p 2", r"top_p must be in"),
    "eval --device tpu": Case(f"{EVAL} --device tpu", r"invalid choice: 'tpu'"),
    # ------------------------------------------------------------------------------------------ check-signal
    "check-signal --data missing": Case("check-signal --model {w}/tiny --data {w}/nope.parquet", r"does not exist"),
    "check-signal --data without reward columns": Case(
        "check-signal --model {w}/tiny --data {w}/prompts_only.parquet", r"lacks verl columns"
    ),
    "check-signal --sample 0": Case(f"{SIGNAL} --sample 0", r"--sample: must be a positive integer"),
    "check-signal --sample larger than the data": Case(f"{SIGNAL} --sample 10", r"larger than the data"),
    "check-signal --responses 1": Case(f"{SIGNAL} --responses 1", r"--responses must be >= 2"),
    "check-signal --temperature 0": Case(f"{SIGNAL} --temperature 0", r"--temperature must be > 0"),
    "check-signal --out-dir is a file": Case(f"{SIGNAL} --out-dir {{w}}/a_file", r"a_file is a file"),
    "check-signal --model truncated": Case(
        "check-signal --model {w}/tiny_trunc --data {w}/data.parquet --sample 3", r"truncated or damaged"
    ),
    "check-signal --capture mlp_input:99": Case(f"{SIGNAL} --capture mlp_input:99", r"out of range"),
    # ------------------------------------------------------------------------------------------ the command
    "no subcommand that exists": Case("bogus", r"invalid choice: 'bogus'"),
}


def listing(folder: Path) -> dict[str, int]:
    """Every path below ``folder`` with its size (folders: -1)."""
    return {str(path.relative_to(folder)): (-1 if path.is_dir() else path.stat().st_size) for path in folder.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_with_the_fix_and_leaves_nothing_behind(world, tmp_path, capsys, name):
    case = CASES[name]
    argv = case.argv.format(w=world, t=tmp_path).split()
    world_before, case_before = listing(world), listing(tmp_path)
    capsys.readouterr()
    code = cli_main(argv)
    out, err = capsys.readouterr()
    command = "verl-gain" + ("" if argv[0] == "bogus" else f" {argv[0]}")
    assert code == case.code, f"exit {code}; stderr: {err}"
    assert re.fullmatch(case.progress, out) if case.progress else out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    assert "Traceback" not in err
    assert re.search(case.message, lines[0]), lines[0]
    assert listing(world) == world_before, "a shared input changed"
    assert listing(tmp_path) == case_before, "partial output was left behind"


def test_the_catalogue_covers_every_subcommand():
    commands = {case.argv.split()[0] for case in CASES.values()}
    assert {"score", "inspect", "plan", "eval", "check-signal"} <= commands
    assert len(CASES) >= 80


def test_an_unreadable_out_is_replaced_with_overwrite(world, tmp_path, capsys):
    """The one "existing --out" case that must succeed: ``--overwrite`` replaces a 0-byte or truncated file."""
    for broken in ("scores_empty.parquet", "scores_truncated.parquet"):
        (tmp_path / broken).mkdir()
        out = tmp_path / broken / "scores.parquet"
        shutil.copy(world / broken, out)
        argv = ["score", "--data", f"{world}/data.parquet", "--model", f"{world}/tiny", "--out", str(out)]
        assert cli_main([*argv, "--quiet", "--overwrite"]) == 0, capsys.readouterr().err
        scores, _, _ = read_scores(out)
        assert len(scores) == len(QUESTIONS)
        assert [p.name for p in out.parent.iterdir()] == [out.name]  # no chunk folder or temp file left


def test_the_unwritable_place_is_unwritable_for_this_user():
    """The catalogue's unwritable place must refuse even root (else those cases would test nothing)."""
    with pytest.raises(OSError):
        os.makedirs(UNWRITABLE)
