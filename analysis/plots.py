"""Report figures from prepared DataFrames (matplotlib, Agg backend, PNG files).

Every function draws what it is given: the numbers (means, intervals, fronts, importances,
best-so-far values) are computed in ``analysis.report`` / ``analysis.stats``; here rows are only
grouped by variant or branch and drawn. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 120
BASELINE_COLOR = "#7f7f7f"
COLORS = plt.get_cmap("tab10").colors


def _color(i: int) -> tuple:
    return COLORS[i % len(COLORS)]


def _palette(order: Sequence[str], present: Sequence[str]) -> dict[str, tuple]:
    """One colour per variant, by its place in ``order`` (the table's), so a variant keeps its
    colour in every figure; variants missing from ``order`` follow."""
    names = list(dict.fromkeys([*order, *present]))
    return {name: _color(i) for i, name in enumerate(names)}


def _save(fig: plt.Figure, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def ablation_bars(summary: pd.DataFrame, seeds: pd.DataFrame, *, ylabel: str, title: str,
                  path: str, references: Optional[dict[str, float]] = None) -> str:
    """One bar per variant (mean over seeds) with its 95% CI as error bars and each seed as a
    dot; the baseline bar is hatched. Colours follow ``summary``'s order, as in the other
    figures of the table.

    ``summary``: columns variant, mean, low, high (NaN: no interval), baseline (bool), in the
    order to draw. ``seeds``: columns variant, value (one row per trial). ``references``: name
    -> value, drawn as labelled dashed lines (e.g. the teacher, a blind baseline).
    """
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(summary) + 3), 4.2))
    x = np.arange(len(summary))
    colors = _palette(list(summary["variant"]), [])
    bars = ax.bar(x, summary["mean"], color=[colors[v] for v in summary["variant"]],
                  alpha=0.85, width=0.6, zorder=2)
    for bar, base in zip(bars, summary["baseline"]):
        if base:
            bar.set_hatch("//")
            bar.set_edgecolor("black")
    has_ci = summary["low"].notna() & summary["high"].notna()
    if has_ci.any():
        lower = (summary["mean"] - summary["low"]).where(has_ci, 0.0)
        upper = (summary["high"] - summary["mean"]).where(has_ci, 0.0)
        ax.errorbar(x[has_ci.to_numpy()], summary["mean"][has_ci],
                    yerr=[lower[has_ci], upper[has_ci]], fmt="none", ecolor="black",
                    capsize=4, lw=1.2, zorder=3, label="95% CI (seeds)")
    for i, variant in enumerate(summary["variant"]):
        values = seeds.loc[seeds["variant"] == variant, "value"].to_numpy()
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + jitter[:len(values)], values, color="black", s=14, zorder=4,
                   label="seeds" if i == 0 else None)
    for j, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="black" if j == 0 else BASELINE_COLOR, ls="--", lw=1,
                   zorder=1, label=f"{name} ({value:.1f})")
    rotate = len(summary) > 3
    ax.set_xticks(x, summary["variant"], rotation=30 if rotate else 0,
                  ha="right" if rotate else "center")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("variant (hatched: baseline)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def optimisation_history(history: pd.DataFrame, *, ylabel: str, title: str, path: str) -> str:
    """Each trial's metric in trial order, and the best value so far as a step line.

    ``history``: columns order (1-based trial number), value, best (best so far), status.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for status, marker in (("completed", "o"), ("stopped_early", "x")):
        rows = history[history["status"] == status]
        if len(rows):
            ax.scatter(rows["order"], rows["value"], marker=marker, s=28, color=_color(0),
                       label=f"trial ({status.replace('_', ' ')})", zorder=3)
    ax.step(history["order"], history["best"], where="post", color=_color(1), lw=1.8,
            label="best so far", zorder=2)
    ax.set_xlabel("trial (in order of creation)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def importances(table: pd.DataFrame, *, title: str, path: str) -> str:
    """Horizontal bars of ``table`` (columns param, importance, kind), largest on top."""
    table = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(table) + 1.6))
    colors = [_color(0) if kind == "spearman" else _color(2) for kind in table["kind"]]
    bars = ax.barh(table["param"], table["importance"], color=colors)
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("importance: |Spearman rho| (blue) or eta of ranks (green)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def pareto(panels: Sequence[tuple[str, pd.DataFrame]], *, ylabel: str, title: str,
           path: str, order: Sequence[str] = ()) -> str:
    """Metric against cost, one panel per cost; points coloured by variant, the Pareto-front
    points ringed and joined by a dashed line.

    ``panels``: (x label, frame with columns variant, cost, value, front (bool)).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    variants = list(dict.fromkeys(v for _, f in panels for v in f["variant"]))
    colors = _palette(order, variants)
    for ax, (xlabel, frame) in zip(axes[0], panels):
        for variant in variants:
            rows = frame[frame["variant"] == variant]
            ax.scatter(rows["cost"], rows["value"], color=colors[variant], s=30, label=variant,
                       zorder=3)
        front = frame[frame["front"]].sort_values("cost")
        ax.plot(front["cost"], front["value"], color="black", lw=1, ls="--", zorder=2)
        ax.scatter(front["cost"], front["value"], s=110, facecolors="none", edgecolors="black",
                   lw=1.2, zorder=4, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def kneedle_k(frame: pd.DataFrame, *, title: str, path: str, order: Sequence[str] = ()) -> str:
    """Kneedle k over training on both DBiLD branches: one panel per branch, a line per
    variant (mean k over answer tokens, averaged over seeds) with a band of ± the mean
    per-token standard deviation.

    ``frame``: columns branch (teacher | student), variant, step, mean, std.
    """
    branches = [b for b in ("teacher", "student") if b in set(frame["branch"])]
    fig, axes = plt.subplots(1, len(branches), figsize=(5.2 * len(branches), 4),
                             squeeze=False, sharey=True)
    variants = list(dict.fromkeys(frame["variant"]))
    colors = _palette(order, variants)
    for ax, branch in zip(axes[0], branches):
        for variant in variants:
            rows = frame[(frame["branch"] == branch) & (frame["variant"] == variant)]
            rows = rows.sort_values("step")
            ax.plot(rows["step"], rows["mean"], marker="o", ms=3, color=colors[variant],
                    label=variant)
            ax.fill_between(rows["step"], rows["mean"] - rows["std"], rows["mean"] + rows["std"],
                            color=colors[variant], alpha=0.2)
        ax.set_title(f"{branch}-led branch (k of the {branch}'s logits)")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Kneedle k (mean ± std over tokens)")
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def training_curves(frame: pd.DataFrame, *, title: str, path: str, order: Sequence[str] = (),
                    legend_title: str = "variant (bold: mean over seeds)") -> str:
    """Training metrics against step, one panel per metric: a line per variant (mean over
    seeds), each seed faint. A sweep passes its trials as variants and ``legend_title="trial"``.

    ``frame``: columns metric (panel), variant, seed, step, value and kind (seed | mean).
    """
    metrics = list(dict.fromkeys(frame["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.2), squeeze=False)
    variants = list(dict.fromkeys(frame["variant"]))
    colors = _palette(order, variants)
    for ax, metric in zip(axes[0], metrics):
        for variant in variants:
            rows = frame[(frame["metric"] == metric) & (frame["variant"] == variant)]
            for _, seed_rows in rows[rows["kind"] == "seed"].groupby("seed"):
                seed_rows = seed_rows.sort_values("step")
                ax.plot(seed_rows["step"], seed_rows["value"], color=colors[variant], alpha=0.3,
                        lw=0.8)
            mean = rows[rows["kind"] == "mean"].sort_values("step")
            ax.plot(mean["step"], mean["value"], color=colors[variant], lw=2, marker="o", ms=3,
                    label=variant)
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="best", fontsize=8, title=legend_title, title_fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
