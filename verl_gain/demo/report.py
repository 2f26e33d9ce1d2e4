"""The report of a demo run (``python -m verl_gain.demo``): PNG plots and ``report.md`` in ``<run>/report/``.

Needs matplotlib (the ``demo`` extra).

Reads only what the run left behind: verl's metrics (``metrics.jsonl``, verl's file logger), the GAIN trace and
pre-pass scores next to the checkpoints (``gain_trace.jsonl``, ``gain_scores.parquet``; absent for uniform runs) and
the task files (for each prompt's difficulty level).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from verl_gain.core.controller import order_by_score
from verl_gain.demo.launcher import read_metrics
from verl_gain.demo.run_folder import CHECKPOINTS_DIR, DATA_DIR, METRICS_FILE, REPORT_DIR, SETTINGS_FILE
from verl_gain.scoring.report import spearman
from verl_gain.trainer.curriculum import SCORES_FILE, TRACE_FILE, read_trace
from verl_gain.trainer.settings import GainSettings

VAL_ACC = re.compile(r"^val-core/(?P<source>.+)/acc/mean@1$")
"""verl's validation metric of a data source's mean accuracy (one greedy answer per prompt)."""
TRAIN_REWARD = "critic/score/mean"
PLOT_DPI = 120


def validation_accuracy(steps: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """``{step: {data_source: accuracy}}`` from verl's validation metrics (step 0 = before training)."""
    out: dict[int, dict[str, float]] = {}
    for entry in steps:
        for name, value in entry["data"].items():
            match = VAL_ACC.match(name)
            if match:
                out.setdefault(int(entry["step"]), {})[match["source"]] = float(value)
    return out


def overall_accuracy(per_source: dict[str, float], sizes: dict[str, int]) -> float:
    """Accuracy over all held-out prompts (data sources weighted by their prompt counts)."""
    total = sum(sizes.get(s, 0) for s in per_source)
    return sum(acc * sizes.get(s, 0) for s, acc in per_source.items()) / max(total, 1)


def _level_of_source(source: str) -> int | None:
    match = re.search(r"level(\d+)$", source)
    return int(match.group(1)) if match else None


def load_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report plots, from a run folder."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / CHECKPOINTS_DIR
    train = pd.read_parquet(run_dir / DATA_DIR / "train.parquet")
    test = pd.read_parquet(run_dir / DATA_DIR / "test.parquet")
    steps = read_metrics(run_dir / METRICS_FILE)
    run: dict[str, Any] = {
        "settings": json.loads((run_dir / SETTINGS_FILE).read_text()),
        "steps": steps,
        "train_levels": train["level"].to_numpy(),
        "val": validation_accuracy(steps),
        "val_sizes": test["data_source"].value_counts().to_dict(),
        "trace": read_trace(checkpoints / TRACE_FILE) if (checkpoints / TRACE_FILE).is_file() else None,
        "scores": pd.read_parquet(checkpoints / SCORES_FILE) if (checkpoints / SCORES_FILE).is_file() else None,
    }
    return run


def _save(fig: plt.Figure, path: Path) -> None:
    """Write a finished figure as a PNG and release it."""
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _by_level(sources: Any) -> list[str]:
    """Data sources ordered by their difficulty level (``.../level<k>``), others first, by name."""
    return sorted(sources, key=lambda s: (_level_of_source(s) or 0, s))


def _metric(steps: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted((e["step"], e["data"][name]) for e in steps if name in e["data"] and e["step"] > 0)
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=float)


def plot_curriculum(run: dict[str, Any], path: Path) -> None:
    """mu and its one-sigma band over steps, with the rank of every prompt drawn."""
    trace, scores = run["trace"], run["scores"]
    rank_of = np.empty(len(scores), dtype=int)
    rank_of[order_by_score(scores["key"].to_numpy())] = np.arange(len(scores))  # the controller's own order
    steps = np.array([r["step"] for r in trace])
    mu_before = np.array([r["mu_before"] for r in trace])
    fig, ax = plt.subplots(figsize=(7, 4))
    for record in trace:
        ranks = rank_of[record["positions"]]
        ax.scatter([record["step"]] * len(ranks), ranks, s=12, color="tab:blue", alpha=0.6)
    sigma = np.array([r["sigma"] for r in trace])
    ax.plot(steps, mu_before, color="tab:red", label="mu when the batch was drawn")
    ax.fill_between(
        steps,
        np.clip(mu_before - sigma, 0, len(scores) - 1),
        np.clip(mu_before + sigma, 0, len(scores) - 1),
        alpha=0.15,
        color="tab:red",
        label="mu ± sigma",
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("rank in the GAIN order\n(0 = highest angle concentration)")
    ax.set_title("GAIN curriculum: the window and the prompts drawn")
    ax.legend(loc="upper left")
    _save(fig, path)


SIGNALS = ("key_change", "standardized_key", "mean_cosine")
"""The angle signals every step logs (``gain/signal/<name>``): the one in use drives the window."""


def plot_window_update(run: dict[str, Any], path: Path) -> None:
    """The update per step, term by term, and every angle signal the step measured."""
    trace = run["trace"]
    steps = np.array([r["step"] for r in trace])
    used = _angle_signal_of(run)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    width = 0.35
    top.bar(steps - width / 2, [r.get("delta_acc") or 0.0 for r in trace], width, label="n tanh(alpha (acc - beta))")
    top.bar(steps + width / 2, [r.get("delta_angle") or 0.0 for r in trace], width, label="n tanh(alpha a)")
    top.plot(steps, [r["delta"] for r in trace], color="black", marker="o", label="delta (clamped)")
    top.axhline(0, color="0.6", linewidth=0.8)
    top.set_ylabel("ranks")
    top.set_title("The window update, term by term")
    top.legend(fontsize=8)
    alpha = float(run["settings"].get("gain", {}).get("alpha", GainSettings().alpha))
    for name in SIGNALS:
        values = np.array([np.nan if r.get(f"signal/{name}") is None else r[f"signal/{name}"] for r in trace])
        bold = name == used
        label = f"{name}: a {np.nanmin(values):.3g} to {np.nanmax(values):.3g}" + (" (in use)" if bold else "")
        bottom.plot(steps, np.tanh(alpha * values), marker="o", linewidth=2.5 if bold else 1, label=label)
    bottom.axhline(0, color="0.6", linewidth=0.8)
    bottom.set_ylim(-1.05, 1.05)
    bottom.set_xlabel("training step")
    bottom.set_ylabel(f"tanh(alpha a), alpha = {alpha:g}\n(the angle term / n)")
    bottom.set_title("Every angle signal measured (near +-1: saturated, a constant push)")
    bottom.legend(fontsize=8)
    _save(fig, path)


def _angle_signal_of(run: dict[str, Any]) -> str | None:
    """The signal in use: the one equal to the logged ``angle_signal`` on the first step."""
    first = run["trace"][0]
    for name in SIGNALS:
        value = first.get(f"signal/{name}")
        if value is not None and first.get("angle_signal") is not None and abs(value - first["angle_signal"]) < 1e-12:
            return name
    return None


def window_motion(trace: list[dict[str, Any]]) -> dict[str, float]:
    """What moved the window: the sums over steps of each term and of the clamped delta (ranks)."""
    return {
        "acc_term": float(sum(r.get("delta_acc") or 0.0 for r in trace)),
        "angle_term": float(sum(r.get("delta_angle") or 0.0 for r in trace)),
        "delta": float(sum(r["delta"] for r in trace)),
        "clamped_steps": float(
            sum(1 for r in trace if r["delta"] != (r.get("delta_acc") or 0.0) + (r.get("delta_angle") or 0.0))
        ),
    }


def level_shares(run: dict[str, Any]) -> tuple[list[int], np.ndarray]:
    """(levels, ``[steps, levels]`` share of each step's prompts per level)."""
    levels = sorted(set(run["train_levels"].tolist()))
    shares = np.zeros((len(run["trace"]), len(levels)))
    for i, record in enumerate(run["trace"]):
        drawn = run["train_levels"][record["positions"]]
        for j, level in enumerate(levels):
            shares[i, j] = np.mean(drawn == level)
    return levels, shares


def plot_levels(run: dict[str, Any], path: Path) -> None:
    levels, shares = level_shares(run)
    steps = [r["step"] for r in run["trace"]]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bottom = np.zeros(len(steps))
    colors = plt.cm.viridis(np.linspace(0, 1, len(levels)))
    for j, level in enumerate(levels):
        ax.bar(steps, shares[:, j], bottom=bottom, color=colors[j], label=f"level {level}")
        bottom += shares[:, j]
    ax.set_xlabel("training step")
    ax.set_ylabel("share of the step's prompts")
    ax.set_title("Difficulty levels drawn per step")
    ax.legend(ncol=min(len(levels), 6), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    _save(fig, path)


def plot_scores(run: dict[str, Any], path: Path) -> None:
    """The ranking key of the prompts drawn at each step, against the whole training set's range."""
    key = run["scores"]["key"].to_numpy()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.axhspan(key.min(), key.max(), color="0.9", label="training set range")
    for record in run["trace"]:
        ax.scatter([record["step"]] * len(record["positions"]), key[record["positions"]], s=12, color="tab:purple")
    ax.set_xlabel("training step")
    ax.set_ylabel("key = C_intra + w C_inter")
    ax.set_title("Angle-concentration scores drawn per step")
    ax.legend(loc="lower left")
    _save(fig, path)


def plot_reward(run: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    steps, reward = _metric(run["steps"], TRAIN_REWARD)
    ax.plot(steps, reward, marker="o", label="mean rollout reward (training batch)")
    if run["trace"]:
        steps_acc, acc = _metric(run["steps"], "gain/step_acc")
        ax.plot(steps_acc, acc, marker=".", linestyle="--", label="step accuracy (per prompt mean)")
    sizes = run["val_sizes"]
    held_out = sorted((step, overall_accuracy(acc, sizes)) for step, acc in run["val"].items())
    if held_out:
        ax.plot(*zip(*held_out), marker="s", color="tab:green", label="held-out accuracy (greedy, all levels)")
    ax.set_xlabel("training step")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Reward during training, held-out accuracy")
    ax.legend()
    _save(fig, path)


def before_after(run: dict[str, Any]) -> tuple[dict[str, float], dict[str, float], int]:
    """(accuracy per data source before training, after the last step, that step)."""
    val = run["val"]
    if 0 not in val or len(val) < 2:
        raise ValueError("the run has no held-out accuracy before and after training (verl validation metrics)")
    last = max(val)
    return val[0], val[last], last


def plot_accuracy(run: dict[str, Any], path: Path) -> None:
    before, after, last = before_after(run)
    sources = _by_level(before)
    labels = [f"level {_level_of_source(s)}" if _level_of_source(s) else s for s in sources] + ["all"]
    sizes = run["val_sizes"]
    b = [before[s] for s in sources] + [overall_accuracy(before, sizes)]
    a = [after.get(s, np.nan) for s in sources] + [overall_accuracy(after, sizes)]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(x - 0.2, b, width=0.4, label="before training")
    ax.bar(x + 0.2, a, width=0.4, label=f"after step {last}")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title("Held-out accuracy before and after")
    ax.legend()
    _save(fig, path)


def summary_markdown(run: dict[str, Any], plots: list[str]) -> str:
    settings = run["settings"]
    lines = [
        f"# verl-gain demo: {settings['sampling']} sampling",
        "",
        f"verl's V1 GRPO trainer on the CPU backend, model `{settings['model']}`, {settings['steps']} steps of "
        f"{settings['prompts_per_step']} prompts x {settings['rollouts']} rollouts (temperature "
        f"{settings['temperature']}, {settings['response_length']} new tokens), learning rate "
        f"{settings['learning_rate']}, {settings['train_size']} training / {settings['test_size']} held-out problems.",
        "",
    ]
    before, after, last = before_after(run)
    sizes = run["val_sizes"]
    lines += [
        "## Held-out accuracy (greedy, verl's validation)",
        "",
        f"| | before | after step {last} |",
        "|---|---|---|",
    ]
    for source in _by_level(before):
        level = _level_of_source(source)
        label = f"level {level}" if level else source
        lines.append(f"| {label} | {before[source]:.3f} | {after.get(source, float('nan')):.3f} |")
    lines.append(f"| **all** | **{overall_accuracy(before, sizes):.3f}** | **{overall_accuracy(after, sizes):.3f}** |")
    _, reward = _metric(run["steps"], TRAIN_REWARD)
    if reward.size:
        half = max(1, reward.size // 2)
        lines += [
            "",
            f"Mean training reward: first half of the steps {reward[:half].mean():.3f}, second half "
            f"{reward[half:].mean() if reward.size > 1 else reward[0]:.3f}.",
        ]
    if run["trace"]:
        trace, scores = run["trace"], run["scores"]
        levels, shares = level_shares(run)
        third = max(1, len(trace) // 3)
        early, late = shares[:third].mean(0), shares[-third:].mean(0)
        rho = spearman(scores["key"].to_numpy(), run["train_levels"])
        motion = window_motion(trace)
        lines += [
            "",
            "## The curriculum",
            "",
            f"- mu: {trace[0]['mu_before']:.1f} -> {trace[-1]['mu']:.1f} ranks over {len(trace)} steps "
            f"(sigma {trace[0]['sigma']:.1f} ranks, {len(scores)} prompts); "
            f"{trace[-1]['coverage']:.0%} of the training set drawn at least once"
            + (", the end of the order reached" if any(r.get("at_end") for r in trace) else "")
            + ".",
            f"- What moved the window (sums over the steps, ranks): accuracy term {motion['acc_term']:+.1f}, angle "
            f"term {motion['angle_term']:+.1f}, delta after the clamps {motion['delta']:+.1f} "
            f"({motion['clamped_steps']:.0f} of {len(trace)} steps clamped).",
            f"- Spearman rho between the ranking key and the difficulty level over the training set: {rho:+.3f} "
            f"({'higher' if rho > 0 else 'lower'} angle concentration on harder levels: the window, which starts at "
            f"the highest concentration, visits the {'harder' if rho > 0 else 'easier'} levels first).",
            "- Mean ranking key per level: "
            + ", ".join(f"level {lv} {scores['key'].to_numpy()[run['train_levels'] == lv].mean():.4f}" for lv in levels)
            + ".",
            "- Share of each level among the prompts drawn, first vs last third of the steps: "
            + ", ".join(
                f"level {lv} {first:.0%} -> {last_share:.0%}" for lv, first, last_share in zip(levels, early, late)
            )
            + ".",
        ]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Write the plots and ``report.md`` of a run into ``<run_dir>/report``; returns the markdown path."""
    run_dir = Path(run_dir)
    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    plots = []
    if run["trace"]:
        for name, plot in (
            ("curriculum.png", plot_curriculum),
            ("window_update.png", plot_window_update),
            ("levels.png", plot_levels),
            ("scores.png", plot_scores),
        ):
            plot(run, out / name)
            plots.append(name)
    plot_reward(run, out / "reward.png")
    plot_accuracy(run, out / "accuracy.png")
    plots += ["reward.png", "accuracy.png"]
    markdown = out / "report.md"
    markdown.write_text(summary_markdown(run, plots))
    return markdown
