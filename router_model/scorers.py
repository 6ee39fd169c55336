"""Score fitted sub-models fast: P(poisonous) straight from their fitted parameters.

scikit-learn's ``predict_proba`` re-validates its input on every call, which costs several
hundred microseconds for one row, more than the arithmetic. For the two pipelines this project
trains, the arithmetic is tiny and exact:

* ``BinCross -> OneHotCodes -> LogisticRegression``: the decision value of a one-hot row is the
  intercept plus one coefficient per code, so P(poisonous) = expit(intercept + sum(coef[offset +
  code])), what ``LogisticRegression.predict_proba`` computes for two classes.
* ``BinCross -> CategoricalNB``: the joint log-likelihood is the class log-prior plus one
  ``feature_log_prob_`` entry per code; P(poisonous) = expit(jll[1] - jll[0]), what
  ``CategoricalNB.predict_proba`` computes for two classes.

* :class:`~router_model.calibration.LogOddsCalibrated` around either: Platt's map is affine in the
  log-odds, so it folds into the same tables (each scaled by ``slope``, ``intercept`` added to the
  bias) and costs nothing per row.

The models stay the scikit-learn estimators they are (that is what is stored and what a notebook
gets); this module only reads their fitted parameters into an
:class:`~router_model.additive.AdditiveModel`, checks it against ``predict_proba``
(:func:`checked_additive`), and falls back to ``predict_proba`` for any other estimator. Each
version logs the checked tables, so a model server scores from them without this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import CategoricalNB
from sklearn.pipeline import Pipeline

from router_model import features as F
from router_model.additive import AdditiveModel, Codes
from router_model.calibration import LogOddsCalibrated
from router_model.transformers import BinCross, OneHotCodes

_logger = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray], np.ndarray]


def _positive_index(estimator: Any) -> int:
    return int(np.flatnonzero(np.asarray(estimator.classes_) == F.LABEL_POISONOUS)[0])


def proba_scorer(estimator: Any) -> Scorer:
    """P(poisonous) from the estimator's own ``predict_proba`` (any fitted classifier)."""
    positive = _positive_index(estimator)
    return lambda X: estimator.predict_proba(X)[:, positive]


#: A route's log-odds as ``bias + sum over output columns of table[column][code]``.
Additive = tuple[BinCross, list[np.ndarray], float]


def _logistic(codes: BinCross, onehot: OneHotCodes, lr: LogisticRegression) -> Additive | None:
    if list(lr.classes_) != [F.LABEL_EDIBLE, F.LABEL_POISONOUS] or lr.coef_.shape[0] != 1:
        return None
    coef = lr.coef_.ravel()
    tables = [
        coef[start : start + size] for start, size in zip(onehot.offsets_, onehot.cardinalities, strict=True)
    ]
    return codes, tables, float(lr.intercept_[0])


def _naive_bayes(codes: BinCross, nb: CategoricalNB) -> Additive | None:
    if list(nb.classes_) != [F.LABEL_EDIBLE, F.LABEL_POISONOUS]:
        return None
    # Log-likelihood ratio (poisonous minus edible) of every code of every output column.
    tables = [table[1] - table[0] for table in nb.feature_log_prob_]
    return codes, tables, float(nb.class_log_prior_[1] - nb.class_log_prior_[0])


def _pipeline_log_odds(estimator: Any) -> Additive | None:
    """The additive log-odds of a pipeline this module knows, else ``None``."""
    if not isinstance(estimator, Pipeline):
        return None
    steps = [step for _, step in estimator.steps]
    kinds = tuple(type(step) for step in steps)
    if kinds == (BinCross, OneHotCodes, LogisticRegression):
        return _logistic(*steps)
    if kinds == (BinCross, CategoricalNB):
        return _naive_bayes(*steps)
    return None


def log_odds_tables(estimator: Any) -> Additive | None:
    """A sub-model's log-odds as ``(codes, tables, bias)``, calibration map folded in.

    Args:
        estimator: A known pipeline, or :class:`LogOddsCalibrated` around one.

    Returns:
        ``None`` for any other estimator.
    """
    if isinstance(estimator, LogOddsCalibrated):
        inner = _pipeline_log_odds(estimator.estimator)
        if inner is None:
            return None
        codes, tables, bias = inner
        slope = float(estimator.slope)
        return codes, [slope * table for table in tables], slope * bias + float(estimator.intercept)
    return _pipeline_log_odds(estimator)


def additive_model(estimator: Any) -> AdditiveModel | None:
    """A sub-model's log-odds tables (:func:`log_odds_tables`) as an :class:`AdditiveModel`, unchecked."""
    additive = log_odds_tables(estimator)
    if additive is None:
        return None
    codes, tables, bias = additive
    return AdditiveModel(Codes.of(codes), tuple(np.asarray(t, dtype=np.float64) for t in tables), float(bias))


def probe_rows(columns: tuple[str, ...], n_rows: int = 256, seed: int = 0) -> np.ndarray:
    """Random in-domain rows for a route's columns (to check a fast scorer against the slow one)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_rows, len(columns)))
    for j, name in enumerate(columns):
        if name in F.CATEGORY_CARDINALITY:
            out[:, j] = rng.integers(0, F.CATEGORY_CARDINALITY[name], n_rows)
        elif name == F.SEASON:
            out[:, j] = rng.choice(F.SEASON_VALUES, n_rows)
        else:
            out[:, j] = rng.lognormal(4, 2, n_rows)
    return out


def checked_additive(estimator: Any) -> AdditiveModel | None:
    """A sub-model's :class:`AdditiveModel`, when it agrees with ``predict_proba`` to 1e-9 on probe rows.

    What training logs with each version (the model server scores from it without scikit-learn)
    and what :func:`compile_scorer` runs.

    Returns:
        ``None`` for an estimator this module does not know, or whose tables disagree (logged).
    """
    model = additive_model(estimator)
    if model is None:
        return None
    rows = probe_rows(model.codes.columns)
    if not np.allclose(model.poisonous_probability(rows), proba_scorer(estimator)(rows), rtol=0, atol=1e-9):
        _logger.warning("Fast scorer for %s disagrees with predict_proba; using predict_proba", estimator)
        return None
    return model


def compile_scorer(estimator: Any) -> Scorer:
    """Return a function mapping a route's feature matrix to P(poisonous).

    The fast path is used only after it agrees with ``predict_proba`` (:func:`checked_additive`);
    otherwise (or for an estimator it does not know) ``predict_proba`` itself is used.

    Args:
        estimator: A fitted sub-model with ``predict_proba`` (a known pipeline, optionally
            calibrated, gets the fast path).

    Returns:
        The scorer.
    """
    model = checked_additive(estimator)
    return proba_scorer(estimator) if model is None else model.poisonous_probability
