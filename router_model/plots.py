"""Evaluation figures logged with each training run: ROC, confusion, reliability and largest terms per route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from router_model import features as F
from router_model.calibration import ECE_BINS, expected_calibration_error, reliability
from router_model.terms import JOIN, KIND_BASE, KIND_TERM


def roc_figure(y: np.ndarray, poisonous_by_route: Mapping[str, np.ndarray]) -> Figure:
    """ROC curves of P(poisonous) for each route on the same rows."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for route, scores in poisonous_by_route.items():
        RocCurveDisplay.from_predictions(y, scores, pos_label=F.LABEL_POISONOUS, name=route, ax=ax)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_title("Held-out ROC (positive class: poisonous)")
    fig.tight_layout()
    return fig


def confusion_figure(
    y: np.ndarray, poisonous_by_route: Mapping[str, np.ndarray], threshold: float = F.DEFAULT_THRESHOLD
) -> Figure:
    """Confusion matrices at ``threshold``; the dangerous cell is true poisonous, predicted edible."""
    routes = list(poisonous_by_route)
    fig, axes = plt.subplots(1, len(routes), figsize=(5 * len(routes), 4.5))
    labels = [F.LABELS[F.LABEL_EDIBLE], F.LABELS[F.LABEL_POISONOUS]]
    for ax, route in zip(np.atleast_1d(axes), routes, strict=True):
        predicted = (poisonous_by_route[route] >= threshold).astype(int)
        ConfusionMatrixDisplay.from_predictions(
            y,
            predicted,
            labels=[F.LABEL_EDIBLE, F.LABEL_POISONOUS],
            display_labels=labels,
            ax=ax,
            colorbar=False,
        )
        ax.set_title(f"{route} (threshold {threshold:g})")
    fig.tight_layout()
    return fig


def reliability_figure(
    y: np.ndarray, poisonous_by_route: Mapping[str, np.ndarray], bins: int = ECE_BINS, title: str = "Held-out"
) -> Figure:
    """Reliability diagram: mean predicted vs observed poisonous share per bin, with row counts below.

    A calibrated route follows the diagonal; points below it mean the model over-states the risk,
    points above it (the dangerous side at low probabilities) that it under-states it.
    """
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    width = 1.0 / bins / (len(poisonous_by_route) + 1)
    for i, (route, scores) in enumerate(poisonous_by_route.items()):
        table = reliability(y, scores, bins)
        ece = expected_calibration_error(y, scores, bins)
        ax.plot(table.predicted, table.observed, marker="o", label=f"{route} (ECE {ece:.3f})")
        counts.bar(table.lower + (i + 0.5) * width, table.count, width=width, align="edge", label=route)
    ax.set_ylabel("observed poisonous share")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(f"{title} reliability ({bins} bins of P(poisonous))")
    counts.set_xlabel("predicted P(poisonous)")
    counts.set_ylabel("rows")
    counts.set_yscale("log")
    fig.tight_layout()
    return fig


def terms_figure(table: pd.DataFrame) -> Figure:
    """Each route's largest terms as bars (red: toward poisonous, blue: toward edible), base in the title.

    Args:
        table: :func:`router_model.terms.terms_table` output (a ``base`` row, then terms, per route).
    """
    routes = list(dict.fromkeys(table["route"]))
    most = max(1, int((table["kind"] == KIND_TERM).groupby(table["route"]).sum().max()))
    fig, axes = plt.subplots(
        len(routes), 1, figsize=(11, 1.2 + 0.32 * most * len(routes)), squeeze=False, layout="constrained"
    )
    for ax, route in zip(axes[:, 0], routes, strict=True):
        rows = table[table["route"] == route]
        base = rows[rows["kind"] == KIND_BASE]["log_odds"].iloc[0]
        terms = rows[rows["kind"] == KIND_TERM].iloc[::-1]
        labels = [
            JOIN.join(f"{name} {value}" for name, value in zip(f.split(JOIN), b.split(JOIN), strict=True))
            + f"  (n={n})"
            for f, b, n in zip(terms["features"], terms["bins"], terms["rows"], strict=True)
        ]
        colors = ["tab:red" if v > 0 else "tab:blue" for v in terms["log_odds"]]
        ax.barh(np.arange(len(terms)), terms["log_odds"], color=colors)
        ax.set_yticks(np.arange(len(terms)), labels, fontsize=7)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_title(f"{route}: the {len(terms)} largest terms (base {base:+.3f})", fontsize=9)
        ax.set_xlabel("log-odds of poisonous (calibrated); n = held-out rows in the bin", fontsize=8)
    return fig


def drift_figure(comparisons: list[Any], psi_threshold: float) -> Figure:
    """Reference against current shares per bin, one panel per judged comparison, PSI in the title.

    Args:
        comparisons: :class:`router_model.drift.Comparison` objects.
        psi_threshold: The alarm level (panels above it are titled in red).
    """
    shown = [c for c in comparisons if c.current]
    cols = 3
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    for ax, comparison in zip(axes.ravel(), shown, strict=False):
        x = np.arange(len(comparison.reference))
        ax.bar(x - 0.2, comparison.reference, width=0.4, label="reference (held out at training)")
        ax.bar(x + 0.2, comparison.current, width=0.4, label=f"served ({comparison.rows} rows)")
        ax.set_xticks(x, comparison.labels, rotation=60, fontsize=6)
        drifted = comparison.judged and comparison.psi > psi_threshold
        psi = f"PSI {comparison.psi:.3f}" if comparison.judged else "too few rows"
        ax.set_title(f"{comparison.name}: {psi}", fontsize=8, color="red" if drifted else "black")
        ax.set_ylabel("share", fontsize=7)
    axes.ravel()[0].legend(fontsize=6)
    fig.tight_layout()
    return fig
