"""Does angle concentration predict the size of a GRPO update? ``verl-gain check-signal``.

The paper's argument (docs/method.md, "The signal"): for a linear layer, ``||dL/dW||_F^2 = sum_ij <x_i, x_j>
<g_i, g_j>``, so prompts whose token representations point the same way give larger updates and are learned first.
This measures it on a real model: for a sample of prompts, the ranking key (the pre-pass the trainer runs) and the
gradient norm of one GRPO update on the model's own sampled responses:

    responses  y_1..y_k ~ pi(. | x) at the rollout temperature
    advantages A_i = (r_i - mean_j r_j) / (std_j r_j + eps)                  (verl's GRPO outcome advantage)
    loss       L(x) = -sum_i A_i sum_t log pi(y_i,t | x, y_i,<t) / sum_i |y_i|   (verl's token-mean)

and its gradient's L2 norm over all parameters and over the last decoder layer's. A prompt whose k rewards agree
has A = 0 and no update at all (GRPO's zero-variance groups); those are counted and left out of the GRPO figures.
Because a small model on hard data can have almost no prompt with reward variance, the same is measured for the
likelihood update (``A_i = 1``: the gradient of the responses' mean log-probability), which every prompt has.

Reported: Spearman rho(key, gradient norm), and the same with prompt and response length partialled out (a key that
only tracked length would show here as a correlation that vanishes), and a scatter plot.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: `verl-gain --help` builds this module's defaults
    import torch

GRPO_EPS = 1e-6
"""verl's ``compute_grpo_outcome_advantage`` epsilon (trainer/ppo/core_algos.py)."""
DEFAULT_SAMPLE = 200
DEFAULT_RESPONSES = 4
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_NEW_TOKENS = 64
MIN_CORRELATED_PAIRS = 3
"""Fewest pairs a rank correlation is computed from (below it ``spearman`` is undefined)."""


class SignalCheckError(ValueError):
    """Bad input to the signal check (one line, with the fix)."""


@dataclass
class SignalCheckConfig:
    """What to measure.

    Attributes:
        sample: prompts drawn (without replacement, seeded) from the data.
        responses: sampled responses per prompt (k, GRPO's group).
        temperature: sampling temperature (> 0).
        max_new_tokens: response length limit.
        capture: capture point of the key (``verl_gain.scoring.capture`` specs).
        inter_weight: w in the key ``intra + w inter``.
        seed: prompt sample and sampling seed.
        device, dtype: as ``verl-gain score`` takes them.
    """

    sample: int = DEFAULT_SAMPLE
    responses: int = DEFAULT_RESPONSES
    temperature: float = DEFAULT_TEMPERATURE
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    capture: str = "mlp_input"
    inter_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.sample, int) or self.sample < MIN_CORRELATED_PAIRS:
            raise SignalCheckError(
                f"--sample must be an integer >= {MIN_CORRELATED_PAIRS} (a rank correlation needs that many), "
                f"got {self.sample}"
            )
        if not isinstance(self.responses, int) or self.responses < 2:
            raise SignalCheckError(f"--responses must be >= 2 (GRPO compares a group), got {self.responses}")
        if not self.temperature > 0:
            raise SignalCheckError(f"--temperature must be > 0 (responses are sampled), got {self.temperature}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise SignalCheckError(f"--max-new-tokens must be a positive integer, got {self.max_new_tokens}")


@dataclass
class PromptSignal:
    """One prompt's key and the gradient norms of its updates."""

    position: int
    key: float
    prompt_tokens: int
    response_tokens: float
    rewards: list[float]
    grpo_norm: float | None
    grpo_last_layer_norm: float | None
    likelihood_norm: float
    likelihood_last_layer_norm: float


@dataclass
class SignalReport:
    """What the check found: per-prompt measurements and the correlations (NaN where undefined)."""

    prompts: list[PromptSignal] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        f = self.figures
        grpo = int(f["grpo_prompts"])
        lines = [f"prompts: {len(self.prompts)}; with reward variance (a GRPO update): {grpo}"]
        if grpo < MIN_CORRELATED_PAIRS:
            # Every response of (nearly) every prompt scored the same: GRPO's group-normalised advantages are zero,
            # so there is no update whose size the key could predict. Say so instead of printing NaN.
            lines.append(
                f"Spearman rho(key, GRPO gradient norm): undefined: {grpo} prompt(s) had responses with different "
                f"rewards (at least {MIN_CORRELATED_PAIRS} needed); the model solves none or all of these prompts "
                "at this --max-new-tokens and --temperature"
            )
        else:
            lines.append(
                "Spearman rho(key, GRPO gradient norm): all parameters {}, last layer {}; with prompt and "
                "response length partialled out: {}, {}".format(
                    *map(
                        signed,
                        (f["rho_grpo"], f["rho_grpo_last"], f["partial_rho_grpo"], f["partial_rho_grpo_last"]),
                    )
                )
            )
        lines.append(
            "Spearman rho(key, likelihood gradient norm): all parameters {}, last layer {}; with prompt "
            "and response length partialled out: {}, {}".format(
                *map(
                    signed,
                    (
                        f["rho_likelihood"],
                        f["rho_likelihood_last"],
                        f["partial_rho_likelihood"],
                        f["partial_rho_likelihood_last"],
                    ),
                )
            )
        )
        lines.append(
            "Spearman rho(key, prompt length) {}, rho(key, response length) {}".format(
                signed(f["rho_key_prompt_tokens"]), signed(f["rho_key_response_tokens"])
            )
        )
        return lines


def signed(value: float) -> str:
    """A correlation as +0.123, or 'undefined' (a constant side or too few pairs) instead of NaN."""
    return "undefined" if math.isnan(value) else f"{value:+.3f}"


def ranks(values: Sequence[float]) -> np.ndarray:
    """Average ranks (ties share the mean rank), 0-based."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            out[tied] = out[tied].mean()
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; NaN with fewer than 3 pairs or a constant side."""
    if len(x) < MIN_CORRELATED_PAIRS:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def partial_spearman(x: Sequence[float], y: Sequence[float], covariates: Sequence[Sequence[float]]) -> float:
    """Spearman correlation of x and y with the covariates partialled out: the correlation of the ranks' residuals
    after a least-squares fit of each on the covariates' ranks (and an intercept)."""
    if len(x) < len(covariates) + 3:
        return math.nan
    design = np.column_stack([np.ones(len(x)), *(ranks(c) for c in covariates)])

    def residual(values: Sequence[float]) -> np.ndarray:
        r = ranks(values)
        coefficients, *_ = np.linalg.lstsq(design, r, rcond=None)
        return r - design @ coefficients

    rx, ry = residual(x), residual(y)
    if rx.std() < 1e-12 or ry.std() < 1e-12:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def grpo_advantages(rewards: Sequence[float]) -> np.ndarray:
    """``(r - mean) / (std + eps)`` over one group (unbiased std, as torch.std in verl)."""
    r = np.asarray(rewards, dtype=np.float64)
    return (r - r.mean()) / (r.std(ddof=1) + GRPO_EPS)


def last_layer_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of the last decoder layer (the stack ``resolve_capture_point`` finds)."""
    from verl_gain.scoring.capture import resolve_capture_point

    point = resolve_capture_point(model, "mlp_input")
    layer_name = point.module_name.rsplit(".", 1)[0]  # <stack>.<i>.mlp -> <stack>.<i>
    return list(model.get_submodule(layer_name).parameters())


def update_gradient_norms(
    model: torch.nn.Module, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]], weights: np.ndarray
) -> tuple[float, float]:
    """Gradient L2 norms (all parameters, last layer) of ``-sum_i w_i sum_t log pi(y_i,t) / sum_i |y_i|``."""
    import torch

    from verl_gain.inference import pad_rows

    device = next(model.parameters()).device
    sequences = [list(prompt_ids) + list(r) for r in responses]
    input_ids = pad_rows(sequences, 0, left=False).to(device)  # [k, P + T]
    mask = pad_rows([[1] * len(s) for s in sequences], 0, left=False).to(device)  # [k, P + T]
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=input_ids, attention_mask=mask).logits.float()  # [k, L, V]
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [k, L-1]
    start = len(prompt_ids) - 1  # position t predicts token t + 1: the first response token is predicted at P - 1
    response_mask = torch.zeros_like(log_probs)
    for i, response in enumerate(responses):
        response_mask[i, start : start + len(response)] = 1.0
    w = torch.as_tensor(weights, dtype=log_probs.dtype, device=device)[:, None]  # [k, 1]
    loss = -(w * log_probs * response_mask).sum() / response_mask.sum().clamp(min=1)
    loss.backward()
    last = {id(p) for p in last_layer_parameters(model)}
    total_sq = last_sq = 0.0
    for parameter in model.parameters():
        if parameter.grad is not None:
            sq = float(parameter.grad.double().pow(2).sum())
            total_sq += sq
            if id(parameter) in last:
                last_sq += sq
    model.zero_grad(set_to_none=True)
    return math.sqrt(total_sq), math.sqrt(last_sq)


def check_signal(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[dict],
    reward: Callable[..., Any],
    config: SignalCheckConfig,
    model_type: str | None = None,
    progress: bool = True,
) -> SignalReport:
    """Measure the key and the update gradient norms of ``config.sample`` rows (verl-format dicts).

    Args:
        model: the causal LM (its device and dtype are used; trained nothing: gradients are zeroed after each prompt).
        tokenizer: its tokenizer (with a chat template).
        rows: verl-format rows: ``prompt`` (chat messages), ``data_source``, ``reward_model.ground_truth``.
        reward: ``compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict``.
        config: sizes and sampling.
        model_type: ``config.model_type`` (for verl's tokenisation, as the trainer's pre-pass).
    """
    import torch
    from tqdm.auto import tqdm

    from verl_gain.inference import cut_at_end, left_padded
    from verl_gain.scoring.scorer import score_prompts
    from verl_gain.scoring.segments import PromptSegmenter

    if not rows:
        raise SignalCheckError("the data has no prompts")
    if config.sample > len(rows):
        raise SignalCheckError(f"--sample {config.sample} is larger than the data ({len(rows)} prompts): lower it")
    picks = sorted(random.Random(config.seed).sample(range(len(rows)), config.sample))
    segmenter = PromptSegmenter(tokenizer, {}, model_type=model_type)
    prompts = [segmenter(rows[i]["prompt"], row=i) for i in picks]
    stats = score_prompts(model, prompts, capture=config.capture, inter_weight=config.inter_weight)
    end_ids = sorted(
        {i for i in (tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)) if i is not None}
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_ids[0]
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    report = SignalReport()
    for j, (position, prompt) in enumerate(tqdm(list(zip(picks, prompts)), desc="check-signal", disable=not progress)):
        input_ids, attention_mask = left_padded([prompt.input_ids] * config.responses, pad_id)  # [k, P]
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=True,
                temperature=config.temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=config.max_new_tokens,
                eos_token_id=end_ids,
                pad_token_id=pad_id,
            )
        responses = [cut_at_end(seq, end_ids)[0] for seq in out[:, input_ids.shape[1] :].tolist()]
        responses = [r if r else [end_ids[0]] for r in responses]
        row = rows[position]
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        rewards = [
            _score(reward(row["data_source"], t, row["reward_model"]["ground_truth"], row.get("extra_info")))
            for t in texts
        ]
        model.train(False)
        likelihood = update_gradient_norms(model, prompt.input_ids, responses, np.ones(len(responses)))
        grpo: tuple[float | None, float | None] = (None, None)
        if np.std(rewards) > 0:
            grpo = update_gradient_norms(model, prompt.input_ids, responses, grpo_advantages(rewards))
        report.prompts.append(
            PromptSignal(
                position=position,
                key=float(stats["key"][j]),
                prompt_tokens=len(prompt),
                response_tokens=float(np.mean([len(r) for r in responses])),
                rewards=[float(r) for r in rewards],
                grpo_norm=grpo[0],
                grpo_last_layer_norm=grpo[1],
                likelihood_norm=likelihood[0],
                likelihood_last_layer_norm=likelihood[1],
            )
        )
    report.figures = signal_figures(report.prompts)
    return report


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _score(result: Any) -> float:
    return float(result["score"] if isinstance(result, dict) else result)


def signal_figures(prompts: Sequence[PromptSignal]) -> dict[str, float]:
    """The correlations of a check (NaN where a figure is undefined, e.g. fewer than 3 GRPO prompts)."""
    key = [p.key for p in prompts]
    lengths = ([p.prompt_tokens for p in prompts], [p.response_tokens for p in prompts])
    grpo = [p for p in prompts if p.grpo_norm is not None]
    grpo_key = [p.key for p in grpo]
    grpo_lengths = ([p.prompt_tokens for p in grpo], [p.response_tokens for p in grpo])
    figures = {
        "prompts": float(len(prompts)),
        "grpo_prompts": float(len(grpo)),
        "rho_likelihood": spearman(key, [p.likelihood_norm for p in prompts]),
        "rho_likelihood_last": spearman(key, [p.likelihood_last_layer_norm for p in prompts]),
        "partial_rho_likelihood": partial_spearman(key, [p.likelihood_norm for p in prompts], lengths),
        "partial_rho_likelihood_last": partial_spearman(key, [p.likelihood_last_layer_norm for p in prompts], lengths),
        "rho_grpo": spearman(grpo_key, [p.grpo_norm for p in grpo]),
        "rho_grpo_last": spearman(grpo_key, [p.grpo_last_layer_norm for p in grpo]),
        "partial_rho_grpo": partial_spearman(grpo_key, [p.grpo_norm for p in grpo], grpo_lengths),
        "partial_rho_grpo_last": partial_spearman(grpo_key, [p.grpo_last_layer_norm for p in grpo], grpo_lengths),
        "rho_key_prompt_tokens": spearman(key, lengths[0]),
        "rho_key_response_tokens": spearman(key, lengths[1]),
    }
    return figures


def write_report(report: SignalReport, out_dir: Path, title: str) -> list[Path]:
    """``signal.json`` (every prompt and figure) and ``signal.png`` (key vs gradient norm, both updates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "signal.json"
    json_path.write_text(
        json.dumps({"figures": report.figures, "prompts": [asdict(p) for p in report.prompts]}, indent=1)
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (
        ("likelihood update (every prompt)", [(p.key, p.likelihood_norm) for p in report.prompts], "rho_likelihood"),
        (
            "GRPO update (prompts with reward variance)",
            [(p.key, p.grpo_norm) for p in report.prompts if p.grpo_norm is not None],
            "rho_grpo",
        ),
    )
    for ax, (name, points, figure) in zip(axes, panels):
        if points:
            x, y = zip(*points)
            ax.scatter(x, y, s=10, alpha=0.7)
            ax.set_yscale("log")
        ax.set_xlabel("ranking key (C_intra + w C_inter)")
        ax.set_ylabel("gradient norm, all parameters")
        ax.set_title(f"{name}\nSpearman rho {report.figures[figure]:+.3f}", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    png = out_dir / "signal.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [json_path, png]
