"""Evaluation figures logged with each training run: ROC curves and confusion matrices per route."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from router_model import features as F

_logger = logging.getLogger(__name__)


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
