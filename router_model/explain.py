"""Exact explanations: each answer's log-odds as a base plus one term per (crossed) feature column.

Both sub-models are additive in the log-odds (see :mod:`router_model.scorers`): the calibrated
log-odds of a row is ``bias + sum over BinCross output columns of table[column][code]``, and
:func:`router_model.scorers.log_odds_tables` reads those tables from the fitted models with the
calibration map folded in. So the explanation is not an approximation (no sampling, no
surrogate): it is the scorer's own sum, written out term by term.

* Logistic regression: a term is the coefficient of the row's one-hot column in one block (a
  single, pair or triple of binned features), scaled by the calibration slope; ``base`` is the
  intercept (scaled, plus the map's intercept).
* Naive Bayes: a term is the log-likelihood ratio (poisonous minus edible) of the row's bin in one
  crossed feature column, scaled likewise; ``base`` is the log prior ratio.

A term names the raw features its column is built from (``BinCross.combinations_``) and the row's
raw values of them, so ``base + sum(contribution) == logit(poisonous_probability)``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from router_model import features as F
from router_model.scorers import log_odds_tables
from router_model.transformers import BinCross

#: Keys of one explanation and of one of its terms (the answer's JSON shape).
BASE, CONTRIBUTIONS = "base", "contributions"
FEATURES, VALUES, CONTRIBUTION, COUNT = "features", "values", "contribution", "count"


@dataclass(frozen=True)
class RouteTerms:
    """A route's log-odds as ``base`` plus one term per output column of its :class:`BinCross`.

    Attributes:
        base: The log-odds before any feature (bias, calibration folded in).
        codes: The fitted ``BinCross`` that codes a row.
        tables: Per term, its contribution for every code.
        features: Per term, the raw feature names its column is built from.
        positions: Per term, those features' positions among the route's columns.
    """

    base: float
    codes: BinCross
    tables: tuple[np.ndarray, ...]
    features: tuple[tuple[str, ...], ...]
    positions: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        # BinCross crosses columns (j0, j1, j2) into ((c0 * n1) + c1) * n2 + c2: linear in the
        # columns' own codes. So every term's code is one integer matrix product, and every
        # contribution one lookup in the tables laid end to end (a few NumPy calls for all terms,
        # which matters for one row).
        sizes = self.codes.base_cardinalities_
        strides = np.zeros((len(self.codes.columns), len(self.positions)), dtype=np.int64)
        for t, where in enumerate(self.positions):
            stride = 1
            for j in reversed(where):
                strides[j, t] = stride
                stride *= sizes[j]
        offsets = np.cumsum([0, *(len(table) for table in self.tables[:-1])])
        object.__setattr__(self, "_strides", strides)
        object.__setattr__(self, "_offsets", offsets.astype(np.int64))
        object.__setattr__(self, "_flat", np.concatenate(self.tables))
        # Each term's feature names as ready-made JSON, shared by every row of an answer that
        # orjson writes at once (the model server's fast path).
        shared = tuple(orjson.Fragment(orjson.dumps(list(names))) for names in self.features)
        object.__setattr__(self, "_features_json", shared)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Every term of every row.

        Args:
            X: The route's feature columns, validated, shape ``(n_rows, 4)``.

        Returns:
            A float array of shape ``(n_rows, n_terms)``.
        """
        return self._flat[self.codes.base_codes(X) @ self._strides + self._offsets]


def route_terms(estimator: Any, columns: tuple[str, ...]) -> RouteTerms | None:
    """The additive terms of a fitted sub-model, or ``None`` when it is not one this module knows.

    Args:
        estimator: A sub-model (:func:`router_model.scorers.log_odds_tables` knows the project's two).
        columns: The route's feature names, in the order the sub-model sees them.
    """
    additive = log_odds_tables(estimator)
    if additive is None:
        return None
    codes, tables, bias = additive
    if tuple(codes.columns) != tuple(columns) or not all(np.isfinite(table).all() for table in tables):
        return None
    positions = tuple(tuple(int(j) for j in combo) for combo in codes.combinations_)
    return RouteTerms(
        base=float(bias),
        codes=codes,
        tables=tuple(np.asarray(table, dtype=np.float64) for table in tables),
        features=tuple(tuple(columns[j] for j in combo) for combo in positions),
        positions=positions,
    )


def _raw_values(X: np.ndarray, columns: tuple[str, ...]) -> list[list[Any]]:
    """Each column's raw values as Python numbers: category codes as ints, the rest as floats."""
    return [
        X[:, j].astype(np.int64).tolist() if name in F.CATEGORY_CARDINALITY else X[:, j].tolist()
        for j, name in enumerate(columns)
    ]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while many small containers are made.

    An explanation is a few dozen dicts and lists a row, none of them in a cycle; in a process
    holding MLflow, scikit-learn and pandas, the collections that so many new containers trigger
    cost several times the building itself, and in a server, where they trigger collections of
    the whole heap, more. Objects made meanwhile are freed by reference counting as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def explanations(
    terms: RouteTerms, X: np.ndarray, top: int = 0, for_json: bool = False
) -> list[dict[str, Any]]:
    """The explanation of every row of one route, built in one pass.

    Args:
        terms: The route's terms (:func:`route_terms`).
        X: The route's feature columns of the rows, validated.
        top: 0 for every term; k >= 1 for the k largest by absolute contribution plus, when any
            are left, one ``"other"`` term holding their sum and their ``count``.
        for_json: For an answer that orjson writes at once and nobody changes (the model
            server's fast path): each term's ``features`` is ready-made JSON shared by every row
            and its ``values`` a tuple; the bytes written are the same.

    Returns:
        Per row ``{"base": float, "contributions": [{"features": [...], "values": [...],
        "contribution": float}, ...]}``, terms sorted by absolute contribution, largest first
        (ties in column order), the ``"other"`` term last.
    """
    n_rows = len(X)
    if not n_rows:
        return []
    contributions = terms.contributions(X)
    n_terms = contributions.shape[1]
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")
    ranked = np.take_along_axis(contributions, order, axis=1)
    keep = n_terms if top <= 0 or top >= n_terms else top
    columns = _raw_values(X, terms.codes.columns)
    names, shared, base = terms.features, terms._features_json, terms.base
    with paused_gc():
        # Per term, every row's values of its features (built by zip and map, in C).
        values = [
            list(zip(*(columns[j] for j in where), strict=True))
            if for_json
            else list(map(list, zip(*(columns[j] for j in where), strict=True)))
            for where in terms.positions
        ]
        rest = ranked[:, keep:].sum(axis=1).tolist() if keep < n_terms else None
        out = []
        for i, (row_order, row_terms) in enumerate(
            zip(order[:, :keep].tolist(), ranked[:, :keep].tolist(), strict=True)
        ):
            if for_json:
                listed = [
                    {FEATURES: shared[t], VALUES: values[t][i], CONTRIBUTION: c}
                    for t, c in zip(row_order, row_terms, strict=True)
                ]
            else:  # a list of its own in every term: callers may change it
                listed = [
                    {FEATURES: list(names[t]), VALUES: values[t][i], CONTRIBUTION: c}
                    for t, c in zip(row_order, row_terms, strict=True)
                ]
            if rest is not None:
                listed.append(
                    {FEATURES: [F.OTHER_TERM], VALUES: [], CONTRIBUTION: rest[i], COUNT: n_terms - keep}
                )
            out.append({BASE: base, CONTRIBUTIONS: listed})
        return out
