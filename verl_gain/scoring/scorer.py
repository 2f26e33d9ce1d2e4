"""The GAIN pre-pass: one prefill over a dataset's prompts, reduced to angle statistics inside the capture hook.

Pipeline (``score_dataset``; the ``verl-gain score`` command is a thin wrapper):

1. Read the dataset (verl-format parquet, JSON or JSON lines; column ``prompt`` = chat messages) and check every
   row before any model is loaded (``ScoringInputError``, one line naming the row and the fix).
2. Tokenise every prompt exactly as verl's rollout does and mark its segments (``PromptSegmenter``).
3. Sort prompts by length and deal them into chunks of about ``chunk_size`` prompts (chunk c gets every n-th
   prompt of the length order, so every chunk spans all lengths); each chunk is sorted by length again (longest
   first, so a memory problem shows in its first batch) and cut into batches of at most ``token_budget`` tokens
   (padded ``B x L_max``, or the packed sum). Each finished chunk is written to ``<out>.parts/chunk-XXXXX.parquet`` with
   the run's fingerprint; a rerun skips the chunks present with a matching fingerprint and positions, and the
   chunks are merged into ``<out>`` at the end.
4. Each batch runs one forward pass, stopped right after the capture point (``early_exit``: later layers and the
   LM head never run); the captured ``[B, L, H]`` (or packed ``[1, T, H]``) hidden states are reduced at once to
   per-segment sums of unit vectors (``verl_gain.core.angles``), so memory holds one batch of activations,
   whatever the dataset size.

Why length-sorted token budgets and padding rather than packing by default: on a CPU (and with SDPA, which has no
varlen kernel) a packed row attends over a dense ``T x T`` block-diagonal mask, so attention work grows with the
square of the packed length, while sorted padded batches waste almost nothing. ``layout="packed"`` exists for
parity with verl's remove-padding path (and is tested to give the same scores).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from verl_gain.core.angles import (
    IGNORE_SEGMENT,
    STAT_FIELDS,
    SegmentSums,
    angle_statistics,
    segment_sums_packed,
    segment_sums_padded,
)
from verl_gain.inference import (
    DTYPES,
    InferenceSettingError,
    ModelFilesError,
    check_model_weights,
    load_causal_lm,
    pad_rows,
    remote_code_fix,
    resolve_cpu_precision,
    resolve_device,
    resolve_dtype,
)
from verl_gain.output_paths import OutputPathError, check_output_file
from verl_gain.scoring.capture import CapturePoint, HiddenStateCapture, meta_model, resolve_capture_point
from verl_gain.scoring.constants import (
    DEFAULT_CAPTURE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_BUDGET,
    LAYOUTS,
    RESERVED_TEMPLATE_KWARGS,
)
from verl_gain.scoring.errors import ScoringInputError
from verl_gain.scoring.scores_file import (
    FingerprintMismatch,
    UnreadableScoresFile,
    check_fingerprint,
    dataset_fingerprint,
    extra_info_index,
    model_identity,
    prompt_column,
    read_data_file,
    read_fingerprint,
    read_scores,
    scores_table,
    stats_columns,
    table_keys,
    write_scores,
)
from verl_gain.scoring.segments import PromptSegmenter, SegmentedPrompt


@dataclass
class ScoreConfig:
    """Options of a scoring run.

    Attributes:
        prompt_key: dataset column with the chat messages (verl's ``data.prompt_key``).
        apply_chat_template_kwargs: verl's ``data.apply_chat_template_kwargs`` (e.g. ``{"enable_thinking": False}``).
        capture: capture point spec (``mlp_input``, ``final_norm``, ``mlp_input:<i>``, ``input:/output:<path>``).
        inter_weight: w in ``key = intra + w * inter`` (the paper's code used 8; the scores keep intra and inter, so
            the key can be recomputed with another weight).
        max_length: longest prompt in tokens; ``None`` = the model's ``max_position_embeddings``.
        skip_long: leave prompts longer than ``max_length`` out (counted) instead of refusing the dataset.
        token_budget: tokens per forward pass.
        layout: ``right`` | ``left`` | ``packed`` (see ``LAYOUTS``).
        chunk_size: prompts per resumable chunk file.
        device: ``auto`` (cuda when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        dtype: ``auto`` (bfloat16 on a GPU or a CPU with bf16 instructions, else float32) | ``float32`` |
            ``bfloat16`` | ``float16``. The statistics are accumulated in fp32 whatever the model's dtype.
        early_exit: stop each forward at the capture point (skips later layers and the LM head).
        trust_remote_code: run the model folder's own code (``auto_map``), as verl's
            ``actor_rollout_ref.model.trust_remote_code``; without it such a model is refused with the flag to set.
    """

    prompt_key: str = "prompt"
    apply_chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    capture: str = DEFAULT_CAPTURE
    inter_weight: float = 1.0
    max_length: int | None = None
    skip_long: bool = False
    token_budget: int = DEFAULT_TOKEN_BUDGET
    layout: str = "right"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    device: str = "auto"
    dtype: str = "auto"
    early_exit: bool = True
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_key, str) or not self.prompt_key:
            raise ScoringInputError(f"prompt_key must be a column name, got {self.prompt_key!r}")
        if not isinstance(self.apply_chat_template_kwargs, dict):
            raise ScoringInputError(
                f"apply_chat_template_kwargs must be a dict (e.g. {{'enable_thinking': false}}), "
                f"got {self.apply_chat_template_kwargs!r}"
            )
        reserved = sorted(set(self.apply_chat_template_kwargs) & set(RESERVED_TEMPLATE_KWARGS))
        if reserved:
            raise ScoringInputError(
                f"apply_chat_template_kwargs may not set {', '.join(reserved)}: prompts are rendered as verl's rollout "
                "renders them (add_generation_prompt=True, as text, then tokenised); pass only template variables "
                "such as enable_thinking"
            )
        if not (isinstance(self.inter_weight, (int, float)) and math.isfinite(self.inter_weight)):
            raise ScoringInputError(
                f"inter_weight must be a finite number (default 1, paper 8), got {self.inter_weight!r}"
            )
        self.inter_weight = float(self.inter_weight)
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ScoringInputError(f"max_length must be an integer >= 2 (tokens), got {self.max_length!r}")
        if not isinstance(self.token_budget, int) or self.token_budget < 1:
            raise ScoringInputError(
                f"token_budget must be a positive integer (tokens per forward pass, e.g. {DEFAULT_TOKEN_BUDGET}), "
                f"got {self.token_budget!r}"
            )
        if self.layout not in LAYOUTS:
            raise ScoringInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ScoringInputError(f"chunk_size must be a positive integer (prompts), got {self.chunk_size!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ScoringInputError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ScoringInputError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


# ------------------------------------------------------------------------------------------------- model loading
def load_tokenizer(model_dir: str | os.PathLike, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ScoringInputError(
            f"cannot load the tokenizer of {model_dir}: {str(err).splitlines()[0]}{remote_code_fix(err)}"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise ScoringInputError(
            f"model {str(model_dir)!r} has no chat template, so prompts cannot be rendered as verl's rollout renders "
            "them; use a chat (instruct) model or add a chat_template to its tokenizer_config.json"
        )
    return tokenizer


def load_model(
    model_dir: str | os.PathLike, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False
) -> torch.nn.Module:
    try:
        model = load_causal_lm(model_dir, dtype, trust_remote_code=trust_remote_code)
    except ModelFilesError as err:
        raise ScoringInputError(str(err)) from None
    return model.to(device).eval()


def resolve_capture_on_meta(
    model_dir: str | os.PathLike, spec: str | CapturePoint, trust_remote_code: bool = False
) -> None:
    """Resolve a capture point against the model built from its config on the meta device (no weights are read),
    so that a bad ``--capture`` is refused before a model loads."""
    try:
        skeleton = meta_model(model_dir, trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise ScoringInputError(
            f"cannot read the config of model {model_dir}: {str(err).splitlines()[0]}{remote_code_fix(err)}"
        ) from None
    resolve_capture_point(skeleton, spec)


def check_scores_output(out: Path, overwrite: bool) -> None:
    """``--out`` before any work: a writable file path, its chunk folder free, an existing file readable or replaced.

    Raises ``ScoringInputError`` naming the path and the fix.
    """
    try:
        check_output_file(out)
    except OutputPathError as err:
        raise ScoringInputError(str(err)) from None
    parts = parts_dir_for(out)
    if parts.exists() and not parts.is_dir():
        raise ScoringInputError(f"{parts} (where an interrupted run keeps its finished chunks) is a file: remove it")
    if out.exists() and not overwrite:
        try:
            read_fingerprint(out)
        except (UnreadableScoresFile, FingerprintMismatch) as err:
            raise ScoringInputError(f"--out {err}; or pass --overwrite to replace it") from None


# ------------------------------------------------------------------------------------------------------ batching
def plan_batches(lengths: Sequence[int], token_budget: int, layout: str = "right") -> list[list[int]]:
    """Cut prompts (given in the order to score them, longest first) into batches within ``token_budget``.

    A padded batch costs ``B x max length`` tokens, a packed one the sum of lengths; a prompt longer than the budget
    gets a batch of its own.

    Returns:
        Lists of indices into ``lengths``.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for i, length in enumerate(lengths):
        new_longest, new_total = max(longest, length), total + length
        cost = new_total if layout == "packed" else new_longest * (len(current) + 1)
        if current and cost > token_budget:
            batches.append(current)
            current, new_longest, new_total = [], length, length
        current.append(i)
        longest, total = new_longest, new_total
    if current:
        batches.append(current)
    return batches


def batch_inputs(
    prompts: Sequence[SegmentedPrompt], layout: str, pad_token_id: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Model inputs for one batch, plus the segment ids and (padded) attention mask or (packed) offsets.

    Returns:
        ``(inputs, segment_ids, mask_or_offsets)``: padded: ``input_ids``/``attention_mask``/``position_ids``
        ``[B, L]``, segment ids ``[B, L]``, attention mask ``[B, L]``; packed: ``input_ids``/``position_ids``
        ``[1, T]`` (no attention mask: positions restarting at 0 mark the sequences, and transformers builds the
        block-diagonal causal mask from them), segment ids ``[T]``, offsets ``[B + 1]``.
    """
    lengths = [len(p) for p in prompts]
    if layout == "packed":
        ids = torch.tensor([t for p in prompts for t in p.input_ids], dtype=torch.long)  # [T]
        seg = torch.tensor([s for p in prompts for s in p.segment_ids], dtype=torch.long)  # [T]
        positions = torch.cat([torch.arange(n) for n in lengths])  # [T], restarting per sequence
        offsets = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.long)  # [B + 1]
        inputs = {"input_ids": ids[None].to(device), "position_ids": positions[None].to(device)}  # [1, T]
        return inputs, seg.to(device), offsets.to(device)
    left = layout == "left"
    ids = pad_rows([p.input_ids for p in prompts], pad_token_id, left)  # [B, L]
    seg = pad_rows([p.segment_ids for p in prompts], IGNORE_SEGMENT, left)  # [B, L]
    mask = pad_rows([[1] * n for n in lengths], 0, left)  # [B, L]
    # Positions count real tokens only, so a left-padded prompt sees the same positions as alone (as HF generate
    # and verl compute them); pads get position 0 and are masked out.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, L]
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}
    return inputs, seg.to(device), mask.to(device)


def forward_segment_sums(
    capture: HiddenStateCapture,
    prompts: Sequence[SegmentedPrompt],
    layout: str = "right",
    pad_token_id: int = 0,
    early_exit: bool = True,
) -> SegmentSums:
    """One forward pass over ``prompts``; the captured hidden states reduced to per-segment sums ``[B, K, H]``.

    ``capture`` must have been created with ``stop_forward=early_exit`` and no callback (it keeps the latest tensor).
    """
    device = next(capture.model.parameters()).device
    inputs, segment_ids, mask_or_offsets = batch_inputs(prompts, layout, pad_token_id, device)
    extra = {} if early_exit else {"logits_to_keep": 1}  # without early exit, skip all but one row of logits
    capture.forward(**inputs, use_cache=False, **extra)
    hidden = capture.pop()  # [B, L, H] or [1, T, H]
    if layout == "packed":
        return segment_sums_packed(hidden[0], mask_or_offsets, segment_ids)
    return segment_sums_padded(hidden, mask_or_offsets, segment_ids)


def score_prompts(
    model: torch.nn.Module,
    prompts: Sequence[SegmentedPrompt],
    capture: str | CapturePoint = DEFAULT_CAPTURE,
    inter_weight: float = 1.0,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    layout: str = "right",
    pad_token_id: int = 0,
    early_exit: bool = True,
    progress: Any = None,
) -> dict[str, np.ndarray]:
    """Angle statistics of segmented prompts, in the order given.

    Args:
        model: the causal LM (its device is used).
        prompts: segmented prompts.
        capture, inter_weight, token_budget, layout, early_exit: see ``ScoreConfig``.
        pad_token_id: id written in padding positions (masked out; any valid id works).
        progress: a tqdm bar advanced by the tokens of each batch, or ``None``.

    Returns:
        ``{name: [N]}`` for each of ``STAT_FIELDS`` (intra, inter, key float64; token counts int64), plus
        ``n_tokens`` int64 ``[N]``, in the order given.
    """
    if layout not in LAYOUTS:
        raise ScoringInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first, stable
    batches = plan_batches([len(prompts[i]) for i in order], token_budget, layout)
    stats = np.zeros((len(prompts), len(STAT_FIELDS)))  # [N, F]
    with torch.inference_mode(), HiddenStateCapture(model, capture, stop_forward=early_exit) as hook:
        for batch in batches:
            where = np.asarray([order[j] for j in batch])
            members = [prompts[i] for i in where]
            sums = forward_segment_sums(hook, members, layout, pad_token_id, early_exit)
            # per sample: nothing accumulates but [B, F]
            stats[where] = angle_statistics(sums, inter_weight=inter_weight).stacked().cpu().numpy()
            if progress is not None:
                progress.update(sum(len(p) for p in members))
    return {**stats_columns(stats), "n_tokens": np.array([len(p) for p in prompts], dtype=np.int64)}


# ------------------------------------------------------------------------------------------------ the whole run
@dataclass
class PreparedDataset:
    """A dataset checked and tokenised for scoring.

    Attributes:
        prompts: segmented prompts of the rows that will be scored.
        positions: ``[M]`` dataset rows of ``prompts``.
        indices: ``extra_info.index`` of those rows (``None`` where absent).
        skipped: dataset rows left out as too long (``skip_long``).
        fingerprint: the dataset part of the fingerprint.
        max_length: the length limit applied.
    """

    prompts: list[SegmentedPrompt]
    positions: np.ndarray
    indices: list[int | None]
    skipped: list[int]
    fingerprint: dict[str, Any]
    max_length: int


def prepare_dataset(
    frame: pd.DataFrame, segmenter: PromptSegmenter, config: ScoreConfig, model_max_length: int | None
) -> PreparedDataset:
    """Check every row, tokenise and segment it, and apply the length limit (refuse or skip)."""
    raw = prompt_column(frame, config.prompt_key)
    fingerprint = dataset_fingerprint(raw, config.prompt_key)
    prompts = [segmenter(prompt, row=row) for row, prompt in enumerate(raw)]
    max_length = config.max_length or model_max_length or max(len(p) for p in prompts)
    too_long = [row for row, p in enumerate(prompts) if len(p) > max_length]
    if too_long and not config.skip_long:
        listed = ", ".join(map(str, too_long[:10])) + (" ..." if len(too_long) > 10 else "")
        raise ScoringInputError(
            f"{len(too_long)} prompt(s) are longer than --max-length {max_length} tokens (rows {listed}); "
            "raise --max-length or pass --skip-long to leave them out"
        )
    if len(too_long) == len(prompts):
        raise ScoringInputError(
            f"every prompt ({len(prompts)}) is longer than --max-length {max_length} tokens, so --skip-long would "
            f"leave nothing to score (shortest: {min(len(p) for p in prompts)} tokens); raise --max-length"
        )
    keep = np.setdiff1d(np.arange(len(prompts)), np.asarray(too_long, dtype=np.int64))
    index = extra_info_index(frame)
    return PreparedDataset(
        prompts=[prompts[i] for i in keep],
        positions=keep,
        indices=[index[i] for i in keep],
        skipped=too_long,
        fingerprint=fingerprint,
        max_length=max_length,
    )


def parts_dir_for(out: str | os.PathLike) -> Path:
    """Where a run keeps its finished chunks until they are merged: ``<out>.parts/``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _load_chunk(path: Path, fingerprint: dict[str, Any], positions: np.ndarray) -> pd.DataFrame | None:
    """A finished chunk if it belongs to this run (same fingerprint, same prompts), else ``None``."""
    if not path.is_file():
        return None
    try:
        frame, _, _ = read_scores(path, expected=fingerprint)
    except (FingerprintMismatch, OSError, ValueError):
        return None
    if not np.array_equal(np.sort(frame["position"].to_numpy()), np.sort(positions)):
        return None
    return frame


@dataclass
class ScoreResult:
    """What ``score_dataset`` produced: the table, its fingerprint and run info, and the work done."""

    scores: pd.DataFrame
    fingerprint: dict[str, Any]
    info: dict[str, Any]
    chunks_computed: int = 0
    chunks_reused: int = 0


def score_dataset(
    data: str | os.PathLike | pd.DataFrame,
    model: str | os.PathLike,
    out: str | os.PathLike,
    config: ScoreConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    loaded: tuple[torch.nn.Module, Any] | None = None,
) -> ScoreResult:
    """Score every prompt of a dataset and write the scores file ``out`` (resumable; see the module docstring).

    Args:
        data: a dataset file (parquet / JSON / JSON lines) or a DataFrame.
        model: a local Hugging Face model folder or ``smollm2-135m-instruct`` (``model_sources.resolve_model``).
        out: the scores parquet to write; finished chunks go to ``<out>.parts/`` until the merge.
        config: run options.
        overwrite: replace an existing ``out`` computed with another fingerprint (otherwise refused).
        progress: show a tqdm bar (tokens/s).
        loaded: an already loaded ``(model, tokenizer)`` for ``model`` (skips loading; the folder still provides the
            model identity).

    Returns:
        The ``ScoreResult``.
    """
    from verl_gain.model_sources import SMOLLM2_NAME, resolve_model

    config = config or ScoreConfig()
    out = Path(out)
    started = time.perf_counter()
    check_scores_output(out, overwrite)  # before any work: nothing is loaded for a run that could not be written
    frame = data if isinstance(data, pd.DataFrame) else read_data_file(data)
    prompt_column(frame, config.prompt_key)  # refuse a missing column before loading anything
    try:
        model_dir = resolve_model(model)
        if loaded is None:
            check_model_weights(model_dir)
    except (FileNotFoundError, ModelFilesError) as err:
        raise ScoringInputError(str(err)) from None
    if loaded is None:
        resolve_capture_on_meta(model_dir, config.capture, config.trust_remote_code)
    tokenizer = loaded[1] if loaded else load_tokenizer(model_dir, config.trust_remote_code)
    model_config = json.loads((Path(model_dir) / "config.json").read_text())
    segmenter = PromptSegmenter(tokenizer, config.apply_chat_template_kwargs, model_config.get("model_type"))
    prepared = prepare_dataset(frame, segmenter, config, model_config.get("max_position_embeddings"))

    try:
        device = resolve_device(config.device) if loaded is None else next(loaded[0].parameters()).device
        dtype = resolve_dtype(config.dtype, device) if loaded is None else next(loaded[0].parameters()).dtype
    except InferenceSettingError as err:
        raise ScoringInputError(str(err)) from None
    if loaded is None and device.type == "cpu" and dtype == torch.bfloat16:
        warning = resolve_cpu_precision(config.dtype, setting="--dtype").warning if config.dtype != "auto" else None
        if warning:
            print(f"verl-gain score: warning: {warning}", file=sys.stderr, flush=True)
    net = loaded[0] if loaded else load_model(model_dir, device, dtype, config.trust_remote_code)
    point = resolve_capture_point(net, config.capture)
    fingerprint = {
        "dataset": prepared.fingerprint,
        "model": model_identity(model_dir, name=SMOLLM2_NAME if str(model).lower() == SMOLLM2_NAME else None),
        "capture": point.describe(),
        "template": segmenter.template_identity(),
        "config": {
            "inter_weight": config.inter_weight,
            "max_length": prepared.max_length,
            "skip_long": config.skip_long,
            "dtype": str(dtype).removeprefix("torch."),
        },
    }
    if out.exists():
        try:
            found, info = read_fingerprint(out)
            check_fingerprint(found, fingerprint, what=f"existing {out}")
            frame_out, _, _ = read_scores(out)
            return ScoreResult(frame_out, found, info)
        except (FingerprintMismatch, UnreadableScoresFile):
            if not overwrite:
                raise ScoringInputError(
                    f"{out} exists and was scored with another dataset/model/config; pass --overwrite or another --out"
                ) from None

    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Chunk c takes every n-th prompt of the length order, from the c-th on: every chunk spans all lengths (so the
    # chunks finished before an interruption are a fair sample, and chunks take similar times), and within a chunk
    # prompts are again sorted by length for batching.
    order = sorted(range(len(prepared.prompts)), key=lambda i: -len(prepared.prompts[i]))  # longest first
    num_chunks = math.ceil(len(order) / config.chunk_size)
    chunks = [order[c::num_chunks] for c in range(num_chunks)]
    parts_dir = parts_dir_for(out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    (parts_dir / "fingerprint.json").write_text(json.dumps(fingerprint, indent=1, sort_keys=True))

    from tqdm.auto import tqdm

    total_tokens = sum(len(p) for p in prepared.prompts)
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="scoring", disable=not progress, smoothing=0.1)
    frames: list[pd.DataFrame] = []
    computed = reused = 0
    try:
        for number, members in enumerate(chunks):
            path = parts_dir / f"chunk-{number:05d}.parquet"
            positions = prepared.positions[members]
            chunk = _load_chunk(path, fingerprint, positions)
            if chunk is not None:
                reused += 1
                bar.update(sum(len(prepared.prompts[i]) for i in members))
            else:
                stats = score_prompts(
                    net,
                    [prepared.prompts[i] for i in members],
                    capture=point,
                    inter_weight=config.inter_weight,
                    token_budget=config.token_budget,
                    layout=config.layout,
                    pad_token_id=pad_token_id,
                    early_exit=config.early_exit,
                    progress=bar,
                )
                chunk = scores_table(positions, [prepared.indices[i] for i in members], stats, stats["n_tokens"])
                write_scores(path, chunk, fingerprint)
                computed += 1
            frames.append(chunk)
            bar.set_postfix(chunks=f"{number + 1}/{len(chunks)}", refresh=False)
    finally:
        bar.close()

    scores = (
        pd.concat(frames, ignore_index=True)
        if frames
        else scores_table([], [], stats_columns(np.zeros((0, len(STAT_FIELDS)))), [])
    )
    scores = scores.sort_values("position", kind="stable").reset_index(drop=True)
    # The ranking key of a prompt with an undefined term needs the whole dataset's mean of that term.
    scores["key"] = table_keys(scores, config.inter_weight) if len(scores) else scores["key"]
    bad = scores.loc[~np.isfinite(scores[["intra", "inter", "key"]].to_numpy()).all(axis=1), "position"]
    if len(bad):
        raise ScoringInputError(
            f"{len(bad)} prompt(s) got non-finite scores (rows {bad.tolist()[:10]}); check the model and --dtype"
        )
    info = {
        "rows": len(frame),
        "scored": len(scores),
        "skipped_long": prepared.skipped,
        "tokens": total_tokens,
        "device": str(device),
        "wall_s": round(time.perf_counter() - started, 3),
        "chunks_computed": computed,
        "chunks_reused": reused,
        "score_config": {k: v for k, v in asdict(config).items() if k not in ("device",)},
    }
    write_scores(out, scores, fingerprint, info)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return ScoreResult(scores, fingerprint, info, computed, reused)
