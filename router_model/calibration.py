"""Honest probabilities: a monotone map affine in log-odds after each sub-model, and its yardsticks.

The naive Bayes route scores overlapping feature triples (each raw feature sits in three of them),
so it counts the same evidence several times and its log-odds come out roughly twice too large:
raw, it called 6.7% of rows it put below P(poisonous) = 0.1 poisonous. :class:`LogOddsCalibrated`
keeps each route what its name says, one fitted naive Bayes (or logistic regression) pipeline,
followed by Platt's map on its log-odds, ``P = expit(slope * z + intercept)``, fitted on rows the
pipeline did not see. Being affine in log-odds, the map keeps additive explanations exact: every
contribution is multiplied by ``slope`` and ``intercept`` joins the base value.

The metrics here (expected calibration error, the poisonous share below a threshold, the largest
threshold that keeps that share at or below 1%) are what training logs, the gate checks and
``bench/quality.py`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from router_model import features as F

#: Bins of the expected calibration error and of the reliability diagram.
ECE_BINS = 10
#: Thresholds t at which "among rows given P(poisonous) < t, the poisonous share is at most t" is
#: checked and logged.
TAIL_THRESHOLDS: tuple[float, ...] = (0.02, 0.05, 0.1)
#: The share of poisonous rows among those called "edible" that the published safe threshold keeps.
SAFE_POISONOUS_SHARE = 0.01
#: The map that leaves a model's probabilities as they are (slope 1, intercept 0).
IDENTITY_MAP = (1.0, 0.0)


class LogOddsCalibrated(ClassifierMixin, BaseEstimator):
    """A fitted binary classifier followed by Platt's map on its log-odds.

    ``predict_proba`` gives ``P(class 1) = expit(slope * z + intercept)``, where ``z`` is the
    estimator's log-odds: its ``decision_function`` if it has one (logistic regression), else
    ``log P(1) - log P(0)`` from ``predict_log_proba`` (naive Bayes, exact there: the joint
    log-likelihood difference). The estimator is not refitted here; the map's two numbers come
    from :func:`fit_log_odds_map` on rows it did not see.

    Args:
        estimator: A fitted binary classifier with classes ``[0, 1]``.
        slope: Multiplies the log-odds (< 1 tempers an over-confident model).
        intercept: Added to the scaled log-odds.
    """

    def __init__(self, estimator: Any = None, slope: float = 1.0, intercept: float = 0.0) -> None:
        self.estimator = estimator
        self.slope = slope
        self.intercept = intercept

    def __sklearn_is_fitted__(self) -> bool:
        return self.estimator is not None and hasattr(self.estimator, "classes_")

    @property
    def classes_(self) -> np.ndarray:
        """The wrapped estimator's classes."""
        return self.estimator.classes_

    def fit(self, X: Any, y: Any) -> LogOddsCalibrated:
        """Fit only the map, on held-out rows of the already fitted estimator.

        Returns:
            self
        """
        self.slope, self.intercept = fit_log_odds_map(log_odds(self.estimator, X), np.asarray(y))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Calibrated log-odds of class 1."""
        return self.slope * log_odds(self.estimator, X) + self.intercept

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated ``[P(0), P(1)]`` per row."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """The class with the higher calibrated probability."""
        return np.asarray(self.classes_)[(self.decision_function(X) > 0).astype(int)]


def log_odds(estimator: Any, X: Any) -> np.ndarray:
    """Log-odds of class 1 (poisonous) of a fitted binary classifier with classes ``[0, 1]``.

    Raises:
        ValueError: If the classes are not ``[0, 1]``.
    """
    classes = list(getattr(estimator, "classes_", []))
    if classes != [F.LABEL_EDIBLE, F.LABEL_POISONOUS]:
        raise ValueError(f"expected a classifier with classes [0, 1], got {classes}")
    if hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(X), dtype=np.float64)
    logp = estimator.predict_log_proba(X)
    return logp[:, 1] - logp[:, 0]


def fit_log_odds_map(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's map: the maximum-likelihood ``(slope, intercept)`` of ``y ~ expit(slope * z + intercept)``.

    Args:
        z: Log-odds on rows the model was not fitted on.
        y: Their labels (0/1).

    Returns:
        ``(slope, intercept)``.

    Raises:
        ValueError: If the rows hold only one class or the map would not be increasing.
    """
    y = np.asarray(y)
    if len(np.unique(y)) != 2:
        raise ValueError(f"calibration needs rows of both classes, got only {np.unique(y).tolist()}")
    lr = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)
    lr.fit(np.asarray(z, dtype=np.float64).reshape(-1, 1), y)
    slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if not slope > 0:
        raise ValueError(f"calibration slope {slope:.4g} is not positive: the model ranks worse than chance")
    return slope, intercept


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Row-weighted mean |observed share - mean predicted| over ``bins`` equal-width bins of ``p``."""
    table = reliability(y, p, bins)
    return float(np.sum(table.count * np.abs(table.observed - table.predicted)) / max(len(p), 1))


@dataclass(frozen=True)
class Reliability:
    """Predicted vs observed per probability bin (empty bins are dropped).

    Attributes:
        lower: Bin lower edges.
        predicted: Mean predicted P(poisonous) per bin.
        observed: Share of poisonous rows per bin.
        count: Rows per bin.
    """

    lower: np.ndarray
    predicted: np.ndarray
    observed: np.ndarray
    count: np.ndarray


def chance_ece(p: np.ndarray, bins: int = ECE_BINS) -> float:
    """The ECE a perfectly calibrated model with these predictions would show by chance, on average.

    In a bin, the observed count of a calibrated model varies with variance ``sum p(1-p)``, so
    the bin's |observed - predicted| share averages about ``sqrt(2/pi) * sqrt(sum p(1-p)) / n_bin``
    (normal approximation). Small held-out sets make this large: a limit on ECE that ignores it
    refuses honest models trained on little data.
    """
    p = np.asarray(p, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    variance = np.bincount(index, weights=p * (1.0 - p), minlength=bins)
    return float(np.sqrt(2.0 / np.pi) * np.sqrt(variance).sum() / len(p))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin rows by P(poisonous) into ``bins`` equal-width bins (the last one closed)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    kept = count > 0
    safe = np.maximum(count, 1)
    return Reliability(
        lower=(np.arange(bins) / bins)[kept],
        predicted=(np.bincount(index, weights=p, minlength=bins) / safe)[kept],
        observed=(np.bincount(index, weights=y, minlength=bins) / safe)[kept],
        count=count[kept],
    )


def poisonous_share_below(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    """Share of poisonous rows among those given P(poisonous) < ``threshold`` (0 when there are none)."""
    below = np.asarray(p) < threshold
    return float(np.asarray(y)[below].mean()) if below.any() else 0.0


def tail_metric_name(threshold: float) -> str:
    """The metric name of :func:`poisonous_share_below` at ``threshold`` (``poisonous_share_below_0.05``)."""
    return f"poisonous_share_below_{threshold:g}"


@dataclass(frozen=True)
class SafeThreshold:
    """The largest threshold whose "edible" calls hold at most the allowed poisonous share.

    Attributes:
        threshold: Rows with P(poisonous) < threshold are called "edible".
        poisonous_share: Share of poisonous rows among them, at most the allowed one.
        false_alarm_rate: Share of edible rows called "poisonous" at this threshold.
    """

    threshold: float
    poisonous_share: float
    false_alarm_rate: float


def safe_threshold(y: np.ndarray, p: np.ndarray, max_share: float = SAFE_POISONOUS_SHARE) -> SafeThreshold:
    """The largest threshold t at which, among rows with P(poisonous) < t, at most ``max_share`` are poisonous.

    Candidate thresholds are the distinct predicted values (a row equal to t is called
    "poisonous") and 1.0; when even the smallest one fails, nothing is called "edible" (t is the
    smallest prediction).

    Args:
        y: Labels (1 = poisonous) of rows the model was not fitted on.
        p: Their P(poisonous).
        max_share: Allowed share of poisonous rows among the "edible" calls.

    Returns:
        The :class:`SafeThreshold`.
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    candidates = np.unique(np.append(ps, 1.0))
    below = np.searchsorted(ps, candidates, side="left")  # rows with p < candidate
    poisonous_below = np.concatenate([[0], np.cumsum(ys)])[below]
    share = np.where(below > 0, poisonous_below / np.maximum(below, 1), 0.0)
    ok = np.flatnonzero(share <= max_share)
    best = int(ok[-1])
    threshold = float(candidates[best])
    edible = y == F.LABEL_EDIBLE
    false_alarms = float(np.mean(p[edible] >= threshold)) if edible.any() else 0.0
    return SafeThreshold(threshold, float(share[best]), false_alarms)


#: Names of :func:`calibration_metrics`, in order.
CALIBRATION_METRICS: tuple[str, ...] = ("ece", "ece_chance", *(tail_metric_name(t) for t in TAIL_THRESHOLDS))


def calibration_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: Sequence[float] = TAIL_THRESHOLDS
) -> dict[str, float]:
    """ECE, its chance level and the poisonous share below each of ``thresholds`` (names as logged)."""
    out = {"ece": expected_calibration_error(y, p), "ece_chance": chance_ece(p)}
    for t in thresholds:
        out[tail_metric_name(t)] = poisonous_share_below(y, p, t)
    return out
