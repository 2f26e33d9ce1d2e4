"""Segment boundaries from real chat templates (ChatML, SmolLM2, Llama 3, Llama 3.2, Qwen2.5), checked on text."""

import pytest

from tests.tiny import make_tokenizer
from verl_gain.core.angles import FIXED_SEGMENT, QUESTION_SEGMENT
from verl_gain.scoring.segments import PromptError, PromptSegmenter

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
LLAMA_USER = "<|start_header_id|>user<|end_header_id|>\n\n"
LLAMA_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
LLAMA32_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n"
)

QUESTION = "  Tom has 3 apples and buys 2 more. How many apples does he have? "
FEW_SHOT = [
    {"role": "system", "content": "Solve the problem."},
    {"role": "user", "content": "What is 1+1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": QUESTION},
]


def _tokenizer(template: str):
    tok = make_tokenizer(template)
    if template.startswith("llama"):
        tok.bos_token = "<|begin_of_text|>"  # the Llama templates render bos_token as text
    return tok


def _texts(tok, prompt):
    fixed = tok.decode([t for t, s in zip(prompt.input_ids, prompt.segment_ids) if s == FIXED_SEGMENT])
    return fixed, tok.decode(prompt.question_token_ids())


@pytest.mark.parametrize(
    "template, kwargs, expected_fixed, expected_question",
    [
        ("chatml", {}, "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", QUESTION),
        ("smollm2", {}, SMOL_SYSTEM + "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", QUESTION),
        ("qwen2.5", {}, QWEN_SYSTEM + "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", QUESTION),
        ("llama3", {}, "<|begin_of_text|>" + LLAMA_USER + "<|eot_id|>" + LLAMA_ASSISTANT, QUESTION.strip()),
        (
            "llama3.2",
            {"date_string": "01 Jan 2025"},
            LLAMA32_SYSTEM + "<|eot_id|>" + LLAMA_USER + "<|eot_id|>" + LLAMA_ASSISTANT,
            QUESTION.strip(),
        ),
    ],
)
def test_single_turn_segments(template, kwargs, expected_fixed, expected_question):
    tok = _tokenizer(template)
    messages = [{"role": "user", "content": QUESTION}]
    prompt = PromptSegmenter(tok, kwargs)(messages)
    assert prompt.method == "offsets"
    assert _texts(tok, prompt) == (expected_fixed, expected_question)
    # the ids are what rollout feeds the model: the template rendered with the generation prompt
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)["input_ids"]
    assert prompt.input_ids == rendered
    # the question is one contiguous run
    first = prompt.segment_ids.index(QUESTION_SEGMENT)
    assert set(prompt.segment_ids[first : first + prompt.n_question]) == {QUESTION_SEGMENT}
    assert prompt.n_fixed + prompt.n_question == len(prompt)


@pytest.mark.parametrize(
    "template, expected_fixed",
    [
        (
            "chatml",
            "<|im_start|>system\nSolve the problem.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
            "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            "qwen2.5",
            "<|im_start|>system\nSolve the problem.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
            "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            "llama3",
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSolve the problem.<|eot_id|>"
            + LLAMA_USER
            + "What is 1+1?<|eot_id|>"
            + LLAMA_ASSISTANT
            + "2<|eot_id|>"
            + LLAMA_USER
            + "<|eot_id|>"
            + LLAMA_ASSISTANT,
        ),
    ],
)
def test_few_shot_turns_and_system_prompt_are_fixed(template, expected_fixed):
    tok = _tokenizer(template)
    fixed, question = _texts(tok, PromptSegmenter(tok)(FEW_SHOT))
    assert fixed == expected_fixed
    assert question.strip() == QUESTION.strip()


def test_the_question_text_inside_the_fixed_part_does_not_confuse_the_boundaries():
    tok = _tokenizer("smollm2")
    messages = [
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "What is 1+1?"},
    ]
    prompt = PromptSegmenter(tok)(messages)
    fixed, question = _texts(tok, prompt)
    assert question == "What is 1+1?"
    assert fixed.count("What is 1+1?") == 1  # the first turn's copy stays in the fixed part
    # the question tokens are the last user turn's: the run ends right before <|im_end|>\n<|im_start|>assistant\n
    tail = len(tok("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    last = len(prompt) - 1 - prompt.segment_ids[::-1].index(QUESTION_SEGMENT)
    assert last == len(prompt) - 1 - tail


@pytest.mark.parametrize("template", ["chatml", "smollm2", "llama3", "qwen2.5"])
def test_token_diff_fallback_agrees_with_offsets(template):
    tok = _tokenizer(template)
    segmenter = PromptSegmenter(tok)
    prompt = segmenter(FEW_SHOT)
    sentinel = [dict(m) for m in FEW_SHOT]
    sentinel[-1]["content"] = "GAINQUESTIONSENTINEL"
    assert segmenter._by_token_diff(sentinel, prompt.input_ids) == prompt.segment_ids


def test_left_truncation_keeps_the_end_like_rollout():
    tok = _tokenizer("chatml")
    prompt = PromptSegmenter(tok)([{"role": "user", "content": QUESTION}])
    cut = prompt.left_truncated(20)
    assert cut.input_ids == prompt.input_ids[-20:] and cut.segment_ids == prompt.segment_ids[-20:]
    assert prompt.left_truncated(10_000) is prompt


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("just a string", "row 3: prompt is a str, not a list of chat messages"),
        ([], "row 3: prompt is an empty list"),
        ([{"content": "no role"}], "row 3: message 0 is .* not a dict with 'role' and 'content'"),
        ([{"role": "system", "content": "only a system prompt"}], "row 3: the prompt has no user message"),
        ([{"role": "user", "content": "   "}], r"row 3: the question \(last user message\) is empty"),
        ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], "row 3: .* content is a list, not text"),
    ],
)
def test_bad_prompts_are_refused_naming_the_row(prompt, message):
    with pytest.raises(PromptError, match=message):
        PromptSegmenter(_tokenizer("chatml"))(prompt, row=3)


def test_a_tokenizer_without_chat_template_is_refused():
    tok = make_tokenizer("chatml")
    tok.chat_template = None
    with pytest.raises(PromptError, match="has no chat template"):
        PromptSegmenter(tok)


def test_many_prompts_segment_on_forked_processes_exactly_as_one_by_one():
    """``segment_prompts`` (the pre-pass on the driver) on 2 forked processes equals the segmenter called in order,
    left truncation included."""
    from verl_gain.scoring.segments import segment_prompts

    segmenter = PromptSegmenter(make_tokenizer("qwen2.5"))
    prompts = [[{"role": "user", "content": f"What is {i} + {i * 7 % 13}?" + " Think." * (i % 5)}] for i in range(60)]
    serial = [segmenter(p, row=i).left_truncated(48) for i, p in enumerate(prompts)]
    forked = segment_prompts(segmenter, prompts, max_length=48, workers=2, min_prompts_per_worker=1, progress=False)
    assert [(p.input_ids, p.segment_ids) for p in forked] == [(p.input_ids, p.segment_ids) for p in serial]
    with pytest.raises(PromptError, match="row 3"):
        broken = [*prompts[:3], [{"role": "user", "content": ""}], *prompts[4:]]
        segment_prompts(segmenter, broken, workers=2, min_prompts_per_worker=1, progress=False)
