"""Token segments of a chat prompt, derived from the tokenizer's own chat template.

GAIN-RL splits a prompt into the fixed part (system prompt, few-shot turns, template tokens, the generation
prompt) and the question (the content of the last user message); docs/method.md, "Segments". The boundaries
come from rendering, never from fixed offsets:

1. ``input_ids`` are the ids verl 0.9.1's rollout feeds the model: ``SingleTurnAgentLoop.run`` ->
   ``AgentLoopBase.ct_build_initial_tokens`` -> ``ContinuousTokenBuilder.build_initial_tokens(messages)``, i.e.
   ``apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **data.apply_chat_template_kwargs)``
   (the builder is chosen from the model's ``config.model_type``, as rollout does). The segmenter calls that very
   builder, so the ids are rollout's by construction. Rollout then left-truncates to ``rollout.prompt_length``
   (``AgentLoopBase._cap_text_prompt_length``); ``SegmentedPrompt.left_truncated`` mirrors it.
2. The question's characters: the messages are rendered to text twice, once as given and once with the question
   replaced by a sentinel; the text before and after the sentinel is the template's, so the question spans the
   characters between them in the real render (this also handles templates that ``trim`` the content or inject a
   default system prompt).
3. Tokens: the rendered text is tokenised with character offsets; when that reproduces rollout's ids exactly, a
   token is a question token if its characters overlap the question's (a token that straddles the boundary carries
   question text, so it counts as question). Otherwise (a builder that does not tokenise the rendered text, or a
   tokenizer without offsets) the ids of the sentinel render are diffed against rollout's ids: the common prefix
   and suffix are fixed, the rest is the question.

Everything here that depends on verl's internals is in ``_rollout_builder`` and ``_render_text`` (the one place to
update for another verl release).

Public API (the verl actor reuses it): ``PromptSegmenter(tokenizer, apply_chat_template_kwargs, model_type)``;
calling it on a list of chat messages returns a ``SegmentedPrompt`` with ``input_ids`` and per-token
``segment_ids`` (``FIXED_SEGMENT`` = 0 / ``QUESTION_SEGMENT`` = 1 from ``verl_gain.core.angles``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from verl_gain.core.angles import FIXED_SEGMENT, QUESTION_SEGMENT
from verl_gain.scoring.errors import ScoringInputError

QUESTION_SENTINEL = "GAINQUESTIONSENTINEL"
"""Stands in for the question in the second render: letters only, so no template filter (trim, escape) alters it."""


class PromptError(ScoringInputError):
    """A prompt cannot be segmented (one line naming what is wrong with it)."""


@dataclass(frozen=True)
class SegmentedPrompt:
    """A tokenised prompt with its segment ids.

    Attributes:
        input_ids: ``[L]`` token ids, exactly as verl's rollout tokenises the prompt.
        segment_ids: ``[L]`` ``FIXED_SEGMENT`` or ``QUESTION_SEGMENT`` per token.
        method: how the question tokens were found: ``"offsets"`` or ``"token_diff"`` (see the module docstring).
    """

    input_ids: list[int]
    segment_ids: list[int]
    method: str = field(default="offsets", compare=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_question(self) -> int:
        return sum(1 for s in self.segment_ids if s == QUESTION_SEGMENT)

    @property
    def n_fixed(self) -> int:
        return sum(1 for s in self.segment_ids if s == FIXED_SEGMENT)

    def question_token_ids(self) -> list[int]:
        return [t for t, s in zip(self.input_ids, self.segment_ids) if s == QUESTION_SEGMENT]

    def left_truncated(self, max_length: int) -> SegmentedPrompt:
        """The last ``max_length`` tokens, as verl's ``AgentLoopBase._cap_text_prompt_length`` keeps them."""
        if len(self.input_ids) <= max_length:
            return self
        return SegmentedPrompt(self.input_ids[-max_length:], self.segment_ids[-max_length:], self.method)


def to_plain(value: Any) -> Any:
    """Messages as plain Python objects (parquet gives numpy arrays of dicts), ``None`` fields dropped."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def normalize_messages(prompt: Any, row: int | str | None = None) -> list[dict[str, Any]]:
    """Check that ``prompt`` is a list of chat messages and return it as plain dicts.

    Raises:
        PromptError: naming ``row`` and what is wrong.
    """
    where = f"row {row}: " if row is not None else ""
    messages = to_plain(prompt)
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if isinstance(messages, list) else f"a {type(prompt).__name__}"
        raise PromptError(
            f"{where}prompt is {got}, not a list of chat messages like [{{'role': 'user', 'content': '...'}}]; "
            "convert the dataset to verl's format (or point --prompt-key at the messages column)"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise PromptError(
                f"{where}message {i} is {message!r:.80}, not a dict with 'role' and 'content'; "
                "convert the dataset to verl's chat format"
            )
    return messages


def last_user_index(messages: list[dict[str, Any]], row: int | str | None = None) -> int:
    """Index of the last user message (the question), checked to have non-empty text content."""
    where = f"row {row}: " if row is not None else ""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            content = messages[i]["content"]
            if not isinstance(content, str):
                raise PromptError(
                    f"{where}the last user message's content is a {type(content).__name__}, not text; "
                    "only text prompts can be scored"
                )
            if not content.strip():
                raise PromptError(f"{where}the question (last user message) is empty; fill it in or drop the row")
            return i
    raise PromptError(f"{where}the prompt has no user message, so it has no question; add one or drop the row")


def _rollout_builder(tokenizer: Any, apply_chat_template_kwargs: dict[str, Any], model_type: str | None) -> Any:
    """verl 0.9.1's Continuous Token builder, created as ``AgentLoopBase.__init__`` creates it for a text model."""
    from verl.utils.tokenizer import continuous_token_wiring

    # verl warns once per builder that a model type without a specific builder gets the default one (what rollout
    # does too); in a scoring run that line is noise.
    wiring_logger = logging.getLogger(continuous_token_wiring.__name__)
    level = wiring_logger.level
    wiring_logger.setLevel(logging.ERROR)
    try:
        return continuous_token_wiring.create_continuous_token_builder(
            tokenizer, hf_model_type=model_type, chat_template_kwargs=dict(apply_chat_template_kwargs)
        )
    finally:
        wiring_logger.setLevel(level)


def _render_text(
    tokenizer: Any, messages: list[dict[str, Any]], apply_chat_template_kwargs: dict[str, Any], tools: Any
) -> str:
    """The prompt as text, through verl's ``apply_chat_template`` wrapper (what the builder renders)."""
    from verl.utils.tokenizer.chat_template import apply_chat_template

    return apply_chat_template(
        tokenizer, messages, tokenize=False, add_generation_prompt=True, tools=tools, **apply_chat_template_kwargs
    )


def chat_template_identity(
    tokenizer: Any, apply_chat_template_kwargs: dict[str, Any] | None = None, tools: Any = None
) -> dict[str, Any]:
    """Identity of the prompt rendering for a fingerprint: template text hash, kwargs and tools."""
    template = getattr(tokenizer, "chat_template", None)
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return {
        "sha256": hashlib.sha256((text or "").encode()).hexdigest(),
        "apply_chat_template_kwargs": dict(apply_chat_template_kwargs or {}),
        "tools_sha256": hashlib.sha256(json.dumps(tools, sort_keys=True).encode()).hexdigest() if tools else None,
    }


class PromptSegmenter:
    """Tokenise chat prompts as verl's rollout does and mark the question tokens.

    Args:
        tokenizer: the model's Hugging Face tokenizer (with a chat template).
        apply_chat_template_kwargs: the dataset's ``data.apply_chat_template_kwargs`` (e.g. ``enable_thinking``).
        model_type: ``config.model_type`` of the model (selects verl's builder family; ``None`` = generic).
        tools: tool schemas, when the rollout passes them (the tool agent loop); ``None`` for single-turn.
    """

    def __init__(
        self,
        tokenizer: Any,
        apply_chat_template_kwargs: dict[str, Any] | None = None,
        model_type: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise PromptError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; use a chat (instruct) "
                "model or add a chat_template to its tokenizer_config.json"
            )
        self.tokenizer = tokenizer
        self.apply_chat_template_kwargs = dict(apply_chat_template_kwargs or {})
        self.tools = tools
        self.builder = _rollout_builder(tokenizer, self.apply_chat_template_kwargs, model_type)

    def template_identity(self) -> dict[str, Any]:
        return chat_template_identity(self.tokenizer, self.apply_chat_template_kwargs, self.tools)

    def rollout_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt ids rollout builds (before its left truncation to ``rollout.prompt_length``)."""
        return list(self.builder.build_initial_tokens(messages, tools=self.tools))

    def __call__(self, prompt: Sequence[dict[str, Any]] | Any, row: int | str | None = None) -> SegmentedPrompt:
        """Segment one prompt (chat messages; numpy arrays from parquet are accepted)."""
        messages = normalize_messages(prompt, row)
        q = last_user_index(messages, row)
        ids = self.rollout_ids(messages)
        sentinel_messages = copy.deepcopy(messages)
        sentinel_messages[q]["content"] = QUESTION_SENTINEL
        segments = self._by_offsets(messages, sentinel_messages, ids)
        method = "offsets"
        if segments is None:
            segments = self._by_token_diff(sentinel_messages, ids)
            method = "token_diff"
        if QUESTION_SEGMENT not in segments:
            where = f"row {row}: " if row is not None else ""
            raise PromptError(f"{where}the question renders to no tokens; fill in the last user message")
        return SegmentedPrompt(ids, segments, method)

    def _by_offsets(
        self, messages: list[dict[str, Any]], sentinel_messages: list[dict[str, Any]], ids: list[int]
    ) -> list[int] | None:
        kwargs = self.apply_chat_template_kwargs
        text = _render_text(self.tokenizer, messages, kwargs, self.tools)
        sentinel_text = _render_text(self.tokenizer, sentinel_messages, kwargs, self.tools)
        if sentinel_text.count(QUESTION_SENTINEL) != 1:
            return None
        before, after = sentinel_text.split(QUESTION_SENTINEL)
        if len(before) + len(after) > len(text) or not (text.startswith(before) and text.endswith(after)):
            return None
        q_start, q_end = len(before), len(text) - len(after)
        if not getattr(self.tokenizer, "is_fast", False):
            return None
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(encoded["input_ids"]) != ids:
            return None
        return [
            QUESTION_SEGMENT if start < q_end and end > q_start and end > start else FIXED_SEGMENT
            for start, end in encoded["offset_mapping"]
        ]

    def _by_token_diff(self, sentinel_messages: list[dict[str, Any]], ids: list[int]) -> list[int]:
        other = self.rollout_ids(sentinel_messages)
        prefix = 0
        while prefix < min(len(ids), len(other)) and ids[prefix] == other[prefix]:
            prefix += 1
        suffix = 0
        while suffix < min(len(ids), len(other)) - prefix and ids[-1 - suffix] == other[-1 - suffix]:
            suffix += 1
        return [QUESTION_SEGMENT if prefix <= i < len(ids) - suffix else FIXED_SEGMENT for i in range(len(ids))]


# ------------------------------------------------------------------------------------------- many prompts at once
MAX_SEGMENT_WORKERS = 32
"""Processes ``segment_prompts`` uses at most (tokenising is CPU-bound; more rarely pays off on one machine)."""
MIN_PROMPTS_PER_WORKER = 2000
"""Below this many prompts per process, forking costs more than it saves (~1-2 ms per prompt on one core)."""
CHUNKS_PER_WORKER = 8
"""Work units per process: small enough for an even finish and a moving progress bar."""
_forked_segmenter: PromptSegmenter | None = None
_forked_prompts: Sequence[Any] | None = None
_forked_max_length: int | None = None


def _segment_range(bounds: tuple[int, int]) -> list[SegmentedPrompt]:
    """In a forked process: the prompts ``[start, end)`` that the parent left in this module."""
    start, end = bounds
    return [_segment_one(_forked_segmenter, _forked_prompts[i], i, _forked_max_length) for i in range(start, end)]


def _segment_one(segmenter: PromptSegmenter, prompt: Any, row: int, max_length: int | None) -> SegmentedPrompt:
    segmented = segmenter(prompt, row=row)
    return segmented if max_length is None else segmented.left_truncated(max_length)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity, else the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def segment_prompts(
    segmenter: PromptSegmenter,
    prompts: Sequence[Any],
    max_length: int | None = None,
    workers: int | None = None,
    min_prompts_per_worker: int = MIN_PROMPTS_PER_WORKER,
    progress: bool = True,
) -> list[SegmentedPrompt]:
    """``segmenter(prompt, row=i)`` (left-truncated to ``max_length``) for every prompt, in order, on several
    processes when there are many prompts.

    The processes are forked, so they inherit the segmenter and the prompts (nothing is pickled but the results) and
    import nothing: this is safe inside a Ray actor (verl's task runner forks its data-loader workers the same way).
    Where fork is unavailable the prompts are segmented here, one after the other.

    Args:
        segmenter: the ``PromptSegmenter`` of the run.
        prompts: chat prompts (lists of messages), e.g. a dataset's prompt column.
        max_length: rollout's ``prompt_length`` (left truncation), or None.
        workers: processes to use (default: the CPUs available, at most ``MAX_SEGMENT_WORKERS``), fewer when there
            are not ``min_prompts_per_worker`` prompts for each.
        min_prompts_per_worker: see ``workers``.
        progress: show a progress bar.
    """
    import multiprocessing

    from tqdm import tqdm

    count = len(prompts)
    workers = min(workers or min(available_cpus(), MAX_SEGMENT_WORKERS), count // max(min_prompts_per_worker, 1))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        iterator = tqdm(range(count), desc="segmenting prompts", unit="prompt", disable=not progress)
        return [_segment_one(segmenter, prompts[i], i, max_length) for i in iterator]
    global _forked_segmenter, _forked_prompts, _forked_max_length
    _forked_segmenter, _forked_prompts, _forked_max_length = segmenter, prompts, max_length
    size = -(-count // (workers * CHUNKS_PER_WORKER))
    bounds = [(start, min(start + size, count)) for start in range(0, count, size)]
    out: list[SegmentedPrompt] = []
    try:
        with (
            multiprocessing.get_context("fork").Pool(workers) as pool,
            tqdm(
                total=count, desc=f"segmenting prompts ({workers} processes)", unit="prompt", disable=not progress
            ) as bar,
        ):
            for part in pool.imap(_segment_range, bounds):  # in order
                out.extend(part)
                bar.update(len(part))
    finally:
        _forked_segmenter = _forked_prompts = _forked_max_length = None
    return out
