"""What a scores file says: a short text summary and PNG plots (``verl-gain inspect``).

The checks a user should make before training on an order (docs/method.md, "Failure modes"): the key must not be
mostly a function of prompt length (the authors' released rankings: Spearman 0.96 with question length on GSM8K),
it must vary between prompts, it must contain no NaN, and it should relate sensibly to difficulty when a difficulty
column exists (e.g. MATH ``level``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verl_gain.scoring.constants import TOP_PROMPTS
from verl_gain.scoring.errors import ScoringInputError
from verl_gain.scoring.scores_file import degenerate_rows

DIFFICULTY_COLUMNS = ("level", "difficulty")
"""Columns looked for (in this order) when no ``--by`` column is named."""
QUESTION_PREVIEW_CHARS = 110
HISTOGRAM_BINS = 60
SCATTER_MAX_POINTS = 20_000
"""Plots at most this many points (a fixed random subset beyond it) so that a huge dataset still plots quickly."""


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (average ranks for ties) of the pairs where both values are finite; NaN if < 3."""
    frame = pd.DataFrame({"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.float64)})
    frame = frame[np.isfinite(frame["x"]) & np.isfinite(frame["y"])]
    if len(frame) < 3 or frame["x"].nunique() < 2 or frame["y"].nunique() < 2:
        return float("nan")
    return float(np.corrcoef(frame["x"].rank().to_numpy(), frame["y"].rank().to_numpy())[0, 1])


def difficulty_values(column: pd.Series) -> pd.Series:
    """A difficulty column as numbers: numeric as is; strings by their first number (``"Level 5"`` -> 5)."""
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64)

    def parse(value: Any) -> float:
        match = re.search(r"-?\d+(\.\d+)?", str(value)) if value is not None else None
        return float(match.group()) if match else float("nan")

    return column.map(parse).astype(np.float64)


def question_text(prompt: Any) -> str:
    """The last user message of a chat prompt, on one line."""
    from verl_gain.scoring.segments import to_plain

    messages = to_plain(prompt)
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return " ".join(str(message.get("content", "")).split())
    return " ".join(str(messages).split())


def _preview(text: str) -> str:
    return text if len(text) <= QUESTION_PREVIEW_CHARS else text[: QUESTION_PREVIEW_CHARS - 3] + "..."


def summarize(
    scores: pd.DataFrame,
    fingerprint: dict[str, Any],
    info: dict[str, Any],
    data: pd.DataFrame | None = None,
    prompt_key: str = "prompt",
    by: str | None = None,
    top: int = TOP_PROMPTS,
) -> tuple[str, dict[str, float]]:
    """The text summary and the figures in it (``rho_*``, ``nan``) as a dict."""
    key = scores["key"].to_numpy(np.float64)
    finite = np.isfinite(scores[["intra", "inter", "key"]].to_numpy()).all(axis=1)
    figures: dict[str, float] = {
        "rows": float(len(scores)),
        "nan": float((~finite).sum()),
        "rho_key_question_tokens": spearman(key, scores["n_question"]),
        "rho_key_prompt_tokens": spearman(key, scores["n_tokens"]),
        "rho_intra_question_tokens": spearman(scores["intra"], scores["n_question"]),
        "rho_inter_question_tokens": spearman(scores["inter"], scores["n_question"]),
    }
    model = fingerprint.get("model", {}).get("name", "?")
    capture = fingerprint.get("capture", {})
    lines = [
        f"scores: {len(scores)} prompts of {fingerprint.get('dataset', {}).get('rows', '?')} dataset rows "
        f"(skipped as too long: {len(info.get('skipped_long', []))}); model {model}; capture "
        f"{capture.get('spec', '?')} ({capture.get('module', '?')}); "
        f"inter weight {fingerprint.get('config', {}).get('inter_weight', '?')}",
        f"NaN or infinite scores: {int(figures['nan'])}",
    ]
    for name in ("key", "intra", "inter"):
        values = scores[name].to_numpy(np.float64)[finite]
        if values.size:
            q = np.percentile(values, [0, 25, 50, 75, 100])
            lines.append(
                f"{name:>6}: mean {values.mean():.4f} sd {values.std():.4f} | min {q[0]:.4f} q25 {q[1]:.4f} "
                f"median {q[2]:.4f} q75 {q[3]:.4f} max {q[4]:.4f}"
            )
    lines.append(
        f"tokens: question {scores['n_question'].mean():.1f} mean ({scores['n_question'].min()}-"
        f"{scores['n_question'].max()}), fixed part {scores['n_fixed'].mean():.1f} mean"
    )
    lines.append(
        "Spearman rho with question length: key {:+.3f}, intra {:+.3f}, inter {:+.3f}; key vs whole prompt length "
        "{:+.3f}".format(
            figures["rho_key_question_tokens"],
            figures["rho_intra_question_tokens"],
            figures["rho_inter_question_tokens"],
            figures["rho_key_prompt_tokens"],
        )
    )
    if abs(figures["rho_key_question_tokens"]) > 0.9:
        lines.append("WARNING: the key is almost a function of question length; check the capture point and segments")
    degenerate = degenerate_rows(scores)
    figures["degenerate"] = float(len(degenerate))
    if len(degenerate):
        lines.append(
            f"prompts ranked with an imputed term ({len(degenerate)}: a question of fewer than 2 tokens has no "
            "C_intra, no fixed part no C_inter; the dataset's mean term stands in):"
        )
        for _, row in degenerate.head(top).iterrows():
            text = ""
            if data is not None and prompt_key in data.columns:
                text = " " + _preview(question_text(data[prompt_key].iloc[int(row["position"])]))
            lines.append(
                f"  row {int(row['position']):>6} key {row['key']:.4f} q_tokens {int(row['n_question']):>4} "
                f"fixed_tokens {int(row['n_fixed']):>4}{text}"
            )
        if len(degenerate) > top:
            lines.append(f"  ... and {len(degenerate) - top} more")

    if data is not None:
        column = by or next((c for c in DIFFICULTY_COLUMNS if c in data.columns), None)
        if column is not None:
            if column not in data.columns:
                raise KeyError(f"column {column!r} not in the data (columns: {', '.join(map(str, data.columns))})")
            level = difficulty_values(data[column].iloc[scores["position"].to_numpy()]).to_numpy()
            figures[f"rho_key_{column}"] = spearman(key, level)
            lines.append(f"Spearman rho of key with {column}: {figures[f'rho_key_{column}']:+.3f}")
            per_level = pd.DataFrame({"level": level, "key": key}).dropna().groupby("level")["key"]
            lines.append(
                f"mean key by {column}: "
                + ", ".join(f"{lvl:g}: {m:.4f} (n={n})" for lvl, m, n in zip(*_group_stats(per_level)))
            )

    order = np.argsort(-key, kind="stable")
    for title, picks in (("highest key (drawn first)", order[:top]), ("lowest key (drawn last)", order[::-1][:top])):
        lines.append(f"{title}:")
        for i in picks:
            row = scores.iloc[int(i)]
            text = ""
            if data is not None and prompt_key in data.columns:
                text = " " + _preview(question_text(data[prompt_key].iloc[int(row["position"])]))
            lines.append(
                f"  row {int(row['position']):>6} key {row['key']:.4f} q_tokens {int(row['n_question']):>4}{text}"
            )
    return "\n".join(lines), figures


def _group_stats(groups: Any) -> tuple[list[float], list[float], list[int]]:
    means = groups.mean()
    counts = groups.size()
    return list(means.index), list(means.to_numpy()), list(counts.to_numpy())


def plot(
    scores: pd.DataFrame,
    out_dir: str | Path,
    data: pd.DataFrame | None = None,
    by: str | None = None,
    title: str = "",
) -> list[Path]:
    """Write ``key_histogram.png``, ``key_vs_length.png`` and (with a difficulty column) ``key_by_<col>.png``."""
    try:
        import matplotlib
    except ImportError:
        raise ScoringInputError(
            "the plots need matplotlib: pip install 'verl-gain[demo]' torch==<your torch> (make setup does this)"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    key = scores["key"].to_numpy(np.float64)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, name in zip(axes, ("key", "intra", "inter")):
        values = scores[name].to_numpy(np.float64)
        ax.hist(values[np.isfinite(values)], bins=HISTOGRAM_BINS, color="#4477aa")
        ax.set_xlabel(name)
        ax.set_ylabel("prompts")
    fig.suptitle(f"{title} angle concentration (n = {len(scores)})".strip())
    fig.tight_layout()
    written.append(out_dir / "key_histogram.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    shown = np.arange(len(scores))
    if len(shown) > SCATTER_MAX_POINTS:
        shown = np.sort(np.random.default_rng(0).choice(shown, SCATTER_MAX_POINTS, replace=False))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column, label in (
        (axes[0], "n_question", "question tokens"),
        (axes[1], "n_tokens", "prompt tokens"),
    ):
        ax.scatter(scores[column].to_numpy()[shown], key[shown], s=4, alpha=0.4, color="#4477aa")
        ax.set_xlabel(label)
        ax.set_ylabel("key")
        ax.set_title(f"Spearman rho = {spearman(key, scores[column]):+.3f}")
    fig.suptitle(f"{title} key vs length".strip())
    fig.tight_layout()
    written.append(out_dir / "key_vs_length.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    if data is not None:
        column = by or next((c for c in DIFFICULTY_COLUMNS if c in data.columns), None)
        if column is not None and column in data.columns:
            level = difficulty_values(data[column].iloc[scores["position"].to_numpy()]).to_numpy()
            frame = pd.DataFrame({"level": level, "key": key}).dropna()
            levels = sorted(frame["level"].unique())
            if levels:
                fig, ax = plt.subplots(figsize=(6.5, 4))
                ax.boxplot([frame.loc[frame["level"] == lvl, "key"] for lvl in levels], showfliers=False)
                ax.set_xticks(range(1, len(levels) + 1), [f"{lvl:g}" for lvl in levels])
                ax.set_xlabel(column)
                ax.set_ylabel("key")
                ax.set_title(f"key by {column}: Spearman rho = {spearman(frame['key'], frame['level']):+.3f}")
                fig.tight_layout()
                written.append(out_dir / f"key_by_{column}.png")
                fig.savefig(written[-1], dpi=110)
                plt.close(fig)
    return written
