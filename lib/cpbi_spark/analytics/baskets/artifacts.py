"""Run artifacts for MLflow: the top rules as CSV and a lift / support scatter plot.

Example:
    >>> paths = write_artifacts(rules, folder, top=200)    # doctest: +SKIP
    >>> sorted(p.name for p in paths)                      # doctest: +SKIP
    ['lift_support.png', 'top_rules.csv']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CSV_COLUMNS = ["level", "segment_key", "segment_value", "rule_rank", "antecedent_key", "consequent_key",
               "antecedent_names", "consequent_names", "support_count", "support", "confidence", "lift", "leverage",
               "conviction", "zhang", "jaccard", "p_value", "p_adjusted", "is_significant", "low_expected_count",
               "consequent_return_rate", "expected_net_value", "kept_lift", "high_return_flag"]


def top_rules(rules: pd.DataFrame, top: int) -> pd.DataFrame:
    """The ``top`` best-ranked rules of every scope (by ``rule_rank``)."""
    if rules.empty:
        return rules.reindex(columns=[c for c in CSV_COLUMNS if c in rules.columns])
    best = rules[rules["rule_rank"] <= top].sort_values(["level", "segment_key", "segment_value", "rule_rank"])
    return best[[c for c in CSV_COLUMNS if c in best.columns]]


def lift_support_plot(rules: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Scatter of lift against support (log x), coloured by significance, high-return consequents marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    if not rules.empty:
        sig = rules["is_significant"].astype(bool).to_numpy()
        high = rules["high_return_flag"].astype(bool).to_numpy()
        x, y = rules["support"].to_numpy(), rules["lift"].to_numpy()
        ax.scatter(x[~sig], y[~sig], s=10, alpha=0.45, c="#9e9e9e", label="not significant")
        ax.scatter(x[sig & ~high], y[sig & ~high], s=12, alpha=0.75, c="#1f77b4", label="significant")
        ax.scatter(x[sig & high], y[sig & high], s=22, alpha=0.9, c="#d62728", marker="x",
                   label="significant, consequent often returned")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        if np.isfinite(y).any():
            ax.set_ylim(0, max(1.5, float(np.nanmax(y[np.isfinite(y)])) * 1.05))
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("support (share of baskets holding antecedent and consequent)")
    ax.set_ylabel("lift")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_artifacts(rules: pd.DataFrame, folder: Path, *, top: int, plot_scope: str | None = None) -> list[Path]:
    """Write ``top_rules.csv`` and ``lift_support.png`` (rules of ``plot_scope``, default all) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "top_rules.csv"
    top_rules(rules, top).to_csv(csv, index=False)
    shown = rules if plot_scope is None or rules.empty else rules[rules["scope"] == plot_scope]
    png = lift_support_plot(shown, folder / "lift_support.png",
                            title=f"Rules: lift vs support ({plot_scope or 'all scopes'}, n={len(shown):,})")
    return [csv, png]
