"""Fit and evaluate the two sub-models.

* Naive Bayes route: :class:`~router_model.transformers.BinCross` codes (binned and pairwise
  crossed) into ``CategoricalNB``.
* Logistic Regression route: the same codes, one-hot encoded, into ``LogisticRegression``.

Each pipeline is assembled from steps fitted in order, so the encoder and the naive Bayes know the
full code space up front (codes never seen in training get a smoothed, not a failing, score).

Each route then gets Platt's map on its log-odds (:class:`~router_model.calibration.LogOddsCalibrated`),
fitted on cross-fitted (out-of-fold) log-odds of the training rows, never on the held-out rows;
the same out-of-fold scores pick the preferred route and the published safe threshold.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import CategoricalNB
from sklearn.pipeline import Pipeline

from router_model import features as F
from router_model import settings
from router_model.calibration import (
    CALIBRATION_METRICS,
    IDENTITY_MAP,
    LogOddsCalibrated,
    SafeThreshold,
    calibration_metrics,
    fit_log_odds_map,
    log_odds,
    safe_threshold,
)
from router_model.errors import ConfigError
from router_model.router import Router
from router_model.transformers import BinCross, OneHotCodes

_logger = logging.getLogger(__name__)

METRICS = ("roc_auc", "accuracy", "log_loss", "brier", *CALIBRATION_METRICS)


#: Largest number of quantile bins per continuous feature: crossed in triples, more bins than this
#: make millions of codes that the training rows cannot fill.
MAX_BINS = 256

#: What each training param accepts: ``(kind, low, high, low_inclusive, what it is)``.
_PARAM_RANGES: dict[str, tuple[type, float, float, bool, str]] = {
    "nb_bins": (int, 2, MAX_BINS, True, "quantile bins per continuous naive Bayes feature"),
    "nb_alpha": (float, 0, 1_000_000, False, "Laplace smoothing of CategoricalNB"),
    "lr_bins": (int, 2, MAX_BINS, True, "quantile bins per continuous logistic regression feature"),
    "lr_c": (float, 0, 1_000_000, False, "inverse regularisation strength of LogisticRegression"),
    "lr_max_iter": (int, 1, 1_000_000, True, "iteration cap of the liblinear solver"),
}
_ORDER_PARAMS = ("nb_orders", "lr_orders")


def _expected(key: str) -> str:
    if key in _ORDER_PARAMS:
        return "comma-separated cross orders from 1 to 4, like '1,2' (1 singles, 2 pairs, 3 triples)"
    kind, low, high, inclusive, what = _PARAM_RANGES[key]
    noun = "a whole number" if kind is int else "a number"
    bounds = f"from {low:,} to {high:,}" if inclusive else f"above {low:,} and up to {high:,}"
    return f"{noun} {bounds} ({what})"


def _parse_param(key: str, raw: Any) -> Any:
    """One training param from a CLI string or a JSON value, or ``ConfigError`` naming it."""

    def refuse() -> ConfigError:
        return ConfigError(f"training param {key}={raw!r} is not valid; expected {_expected(key)}")

    if isinstance(raw, bool):  # a JSON true is no number, and no order list
        raise refuse()
    if key in _ORDER_PARAMS:
        if isinstance(raw, int) or (isinstance(raw, float) and raw.is_integer()):
            raw = str(int(raw))
        if not isinstance(raw, str):
            raise refuse()
        try:
            orders = parse_orders(raw)
        except ValueError:
            raise refuse() from None
        if not orders or not all(1 <= k <= 4 for k in orders):
            raise refuse()
        return ",".join(str(k) for k in orders)
    kind, low, high, inclusive, _ = _PARAM_RANGES[key]
    try:
        number = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise refuse() from None
    above_low = number >= low if inclusive else number > low
    if not (above_low and number <= high) or (kind is int and not number.is_integer()):
        raise refuse()  # NaN fails the range, 2.7 is no whole number
    return kind(number)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of both sub-models (logged as MLflow params).

    Every value is checked against its meaningful range when the config is built, so a bad
    param fails before anything is trained or registered (``ConfigError`` naming it).

    Attributes:
        nb_bins: Quantile bins per continuous NB feature.
        nb_orders: Crosses the NB sees, comma-separated (1 singles, 2 pairs, 3 triples). Triples
            alone work best: adding lower orders makes naive Bayes count the same evidence twice.
        nb_alpha: Laplace smoothing of ``CategoricalNB`` (> 0: 0 gives unseen codes no
            probability at all).
        lr_bins: Quantile bins per continuous LR feature.
        lr_orders: Crosses the LR sees, one-hot encoded.
        lr_c: Inverse regularisation strength of ``LogisticRegression``.
        lr_max_iter: Solver iteration cap; a fit that does not converge within it fails.
    """

    nb_bins: int = 32
    nb_orders: str = "3"
    nb_alpha: float = 1.0
    lr_bins: int = 32
    lr_orders: str = "1,2,3"
    lr_c: float = 1.0
    lr_max_iter: int = 3000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _parse_param(field.name, getattr(self, field.name)))

    def effective(self) -> dict[str, Any]:
        """Every setting that decides what training produces from a file: these params and the seeds.

        Besides the hyperparameters, the held-out split and the calibration folds
        (:data:`router_model.settings.TEST_SIZE`, :data:`router_model.settings.SPLIT_SEED`,
        :data:`CALIBRATION_FOLDS`), which no param overrides today but a change of which changes
        the model.
        """
        return {
            **dataclasses.asdict(self),
            "test_size": settings.TEST_SIZE,
            "split_seed": settings.SPLIT_SEED,
            "calibration_folds": CALIBRATION_FOLDS,
        }

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> TrainConfig:
        """Build a config from CLI strings or JSON values, naming any unknown or invalid key.

        Raises:
            ConfigError: On an unknown key or a value outside its range.
        """
        values = dict(values or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown training param(s) {unknown}; expected some of {sorted(known)}")
        return cls(**values)


@dataclass
class TrainResult:
    """What training produced.

    Attributes:
        router: The fitted :class:`Router`.
        metrics: Held-out metrics, ``{route}_{metric}`` plus ``auto_{metric}``.
        validation_auc: Out-of-fold ROC-AUC per route on the training rows (decides the
            preferred route).
        calibration: Per route, the ``(slope, intercept)`` of its log-odds map.
        safe_thresholds: Per route, the largest threshold keeping poisonous rows at or below 1%
            of the "edible" calls on the out-of-fold scores, and its false-alarm rate.
        test: The held-out rows.
        config: The hyperparameters used.
        train_rows: Number of rows the final sub-models were fitted on.
        seconds: Wall time of fitting.
    """

    router: Router
    metrics: dict[str, float]
    validation_auc: dict[str, float]
    test: pd.DataFrame
    config: TrainConfig
    train_rows: int = 0
    seconds: float = 0.0
    calibration: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    safe_thresholds: dict[str, SafeThreshold] = dataclasses.field(default_factory=dict)


def parse_orders(text: str) -> tuple[int, ...]:
    """Parse ``"1,2,3"`` into ``(1, 2, 3)``.

    Raises:
        ValueError: On anything but comma-separated integers.
    """
    try:
        return tuple(sorted({int(part) for part in str(text).split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"cross orders must be comma-separated integers like '1,2', got {text!r}") from None


def fit_naive_bayes(X: np.ndarray, y: np.ndarray, config: TrainConfig) -> Pipeline:
    """Fit the NB route: binned/crossed codes into ``CategoricalNB``."""
    codes = BinCross(F.NB_FEATURES, config.nb_bins, parse_orders(config.nb_orders)).fit(X)
    nb = CategoricalNB(alpha=config.nb_alpha, min_categories=codes.cardinalities_)
    nb.fit(codes.transform(X), y)
    return Pipeline([("codes", codes), ("naive_bayes", nb)])


def fit_logistic_regression(X: np.ndarray, y: np.ndarray, config: TrainConfig) -> Pipeline:
    """Fit the LR route: one-hot of binned/crossed codes into ``LogisticRegression``."""
    codes = BinCross(F.LR_FEATURES, config.lr_bins, parse_orders(config.lr_orders)).fit(X)
    onehot = OneHotCodes(tuple(codes.cardinalities_))
    encoded = onehot.fit_transform(codes.transform(X))
    lr = LogisticRegression(C=config.lr_c, solver="liblinear", max_iter=config.lr_max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            lr.fit(encoded, y)
        except ConvergenceWarning:
            raise ConfigError(
                f"logistic regression did not converge within lr_max_iter={config.lr_max_iter} "
                f"iterations; raise it (default {TrainConfig.lr_max_iter})"
            ) from None
    return Pipeline([("codes", codes), ("onehot", onehot), ("logistic_regression", lr)])


_FITTERS = {F.NAIVE_BAYES: fit_naive_bayes, F.LOGISTIC_REGRESSION: fit_logistic_regression}


def fit_submodels(frame: pd.DataFrame, config: TrainConfig) -> dict[str, Pipeline]:
    """Fit both routes on a validated frame."""
    y = frame[F.TARGET].to_numpy()
    return {
        route: fit(frame[list(F.ROUTE_FEATURES[route])].to_numpy(np.float64), y, config)
        for route, fit in _FITTERS.items()
    }


def binary_metrics(
    y: np.ndarray, poisonous: np.ndarray, threshold: float = F.DEFAULT_THRESHOLD
) -> dict[str, float]:
    """ROC-AUC, accuracy (at ``threshold``), log-loss, Brier score and calibration of P(poisonous).

    Calibration: expected calibration error and the poisonous share below each of
    :data:`router_model.calibration.TAIL_THRESHOLDS` (see
    :func:`router_model.calibration.calibration_metrics`).
    """
    return {
        "roc_auc": float(roc_auc_score(y, poisonous)),
        "accuracy": float(accuracy_score(y, poisonous >= threshold)),
        "log_loss": float(log_loss(y, np.clip(poisonous, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(y, poisonous)),
        **calibration_metrics(y, poisonous),
    }


#: Folds of the cross-fitting that gives every training row an out-of-fold log-odds per route:
#: the rows each calibration map, the preferred route and the safe thresholds are fitted on. Ten
#: folds train each fold model on 90% of the rows: the final model (all rows) is a little more sure
#: of itself than models fitted on less, and the map learnt from the fold models carries over
#: better the closer they are to it (measured in docs/benchmarks.md, "Quality on the real data").
CALIBRATION_FOLDS = 10


def calibrate(
    submodels: dict[str, Pipeline], maps: dict[str, tuple[float, float]]
) -> dict[str, LogOddsCalibrated]:
    """Wrap each fitted route in its log-odds map."""
    return {route: LogOddsCalibrated(model, *maps[route]) for route, model in submodels.items()}


def _folds(y: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds, as many as the rarer class allows (none below two)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    k = min(folds, int(counts.min()))
    if k < 2:
        return []
    return list(StratifiedKFold(k, shuffle=True, random_state=settings.SPLIT_SEED).split(y, y))


def out_of_fold_log_odds(
    rows: pd.DataFrame, config: TrainConfig, folds: int = CALIBRATION_FOLDS
) -> dict[str, np.ndarray] | None:
    """Each route's log-odds of every row from a model fitted on the other folds.

    Returns:
        Per route, one log-odds per row of ``rows`` (in order); ``None`` when the rarer class has
        fewer than two rows (no stratified folds).
    """
    y = rows[F.TARGET].to_numpy()
    splits = _folds(y, folds)
    if not splits:
        return None
    z = {route: np.empty(len(rows)) for route in F.ROUTES}
    for fit_index, score_index in splits:
        scored = rows.iloc[score_index]
        for route, model in fit_submodels(rows.iloc[fit_index], config).items():
            z[route][score_index] = log_odds(
                model, scored[list(F.ROUTE_FEATURES[route])].to_numpy(np.float64)
            )
    return z


def fit_calibrated(
    rows: pd.DataFrame, config: TrainConfig, folds: int = CALIBRATION_FOLDS
) -> tuple[dict[str, LogOddsCalibrated], dict[str, tuple[float, float]], dict[str, np.ndarray]]:
    """Fit both routes on ``rows`` and each route's log-odds map on their out-of-fold log-odds.

    Cross-fitting uses every training row for the maps (and for the callers' choices) while each
    row's log-odds comes from a model that did not see it; the held-out rows stay untouched.

    Args:
        rows: The training rows (with ``class``).
        config: Hyperparameters.
        folds: Cross-fitting folds.

    Returns:
        The calibrated models (fitted on all ``rows``), the ``(slope, intercept)`` per route
        (:data:`~router_model.calibration.IDENTITY_MAP`, with a warning, when the rows cannot fit
        one: a single class, or a model that ranks them no better than chance),
        and the calibrated out-of-fold P(poisonous) of every row per route (the model's own
        in-sample probabilities when there are too few rows for folds).
    """
    y = rows[F.TARGET].to_numpy()
    final = fit_submodels(rows, config)
    z = out_of_fold_log_odds(rows, config, folds)
    maps: dict[str, tuple[float, float]] = {}
    scores: dict[str, np.ndarray] = {}
    for route, model in final.items():
        if z is None:
            _logger.warning("No calibration map for %s (too few rows of a class for folds)", route)
            maps[route] = IDENTITY_MAP
            scores[route] = expit(log_odds(model, rows[list(F.ROUTE_FEATURES[route])].to_numpy(np.float64)))
            continue
        try:
            maps[route] = fit_log_odds_map(z[route], y)
        except ValueError as err:
            # A handful of rows (a tiny file) cannot fit a map; the gate refuses such versions
            # anyway ("too few to judge"), so training goes on with the model's own probabilities.
            _logger.warning("No calibration map for %s (%s); keeping its own probabilities", route, err)
            maps[route] = IDENTITY_MAP
        slope, intercept = maps[route]
        scores[route] = expit(slope * z[route] + intercept)
    return calibrate(final, maps), maps, scores


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC, 0.5 when ``y`` holds one class (a tiny file: the gate refuses it anyway)."""
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else 0.5


def evaluate(router: Router, frame: pd.DataFrame) -> dict[str, float]:
    """Held-out metrics of each route (forced with the ``model`` param) and of ``auto``.

    Args:
        router: A router (fitted here or loaded from the registry).
        frame: Validated rows with every feature and ``class``.

    Returns:
        ``{"naive_bayes_roc_auc": ..., ..., "auto_brier": ...}``.
    """
    y = frame[F.TARGET].to_numpy()
    features = frame[list(F.ALL_FEATURES)]
    metrics: dict[str, float] = {}
    for model in F.ROUTES + (F.AUTO,):
        scored = router.predict(features, {"model": model})
        for name, value in binary_metrics(y, scored["poisonous_probability"].to_numpy()).items():
            metrics[f"{model}_{name}"] = value
    return metrics


def train(frame: pd.DataFrame, config: TrainConfig | None = None) -> TrainResult:
    """Split, fit, pick the preferred route on a validation split, and evaluate on held-out rows.

    The preferred route (for rows that carry both feature sets) is the one with the higher
    out-of-fold ROC-AUC on the training rows (cross-fitted, :func:`fit_calibrated`); the same
    out-of-fold scores fit each route's calibration map and give its safe threshold, so the
    held-out rows stay untouched by every choice.

    Args:
        frame: A validated training frame (see :func:`router_model.data.validate_training_frame`).
        config: Hyperparameters (defaults when ``None``).

    Returns:
        A :class:`TrainResult`.
    """
    from router_model.data import split

    config = config or TrainConfig()
    started = time.perf_counter()
    train_rows, test_rows = split(frame)
    y_train = train_rows[F.TARGET].to_numpy()
    submodels, maps, oof_scores = fit_calibrated(train_rows, config)
    validation_auc = {route: _roc_auc(y_train, p) for route, p in oof_scores.items()}
    safe = {route: safe_threshold(y_train, p) for route, p in oof_scores.items()}
    preferred = max(F.ROUTES, key=lambda r: validation_auc[r])
    router = Router(submodels, preferred=preferred, safe_thresholds={r: s.threshold for r, s in safe.items()})
    seconds = time.perf_counter() - started
    metrics = evaluate(router, test_rows)
    _logger.info(
        "Trained in %.1fs; held-out ROC-AUC naive_bayes=%.4f logistic_regression=%.4f, "
        "ECE %.4f / %.4f; preferred %s",
        seconds,
        metrics[f"{F.NAIVE_BAYES}_roc_auc"],
        metrics[f"{F.LOGISTIC_REGRESSION}_roc_auc"],
        metrics[f"{F.NAIVE_BAYES}_ece"],
        metrics[f"{F.LOGISTIC_REGRESSION}_ece"],
        preferred,
    )
    return TrainResult(
        router, metrics, validation_auc, test_rows, config, len(train_rows), seconds, maps, safe
    )
