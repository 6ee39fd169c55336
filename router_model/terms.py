"""The global view of a trained version: each route's additive terms, named by the raw features in them.

Both routes answer with ``logit(P(poisonous)) = base + one term per crossed feature column``
(:func:`router_model.explain.route_terms`, the same tables the explanations sum, calibration map
folded in): a logistic regression coefficient of the one-hot code, or a naive Bayes log-likelihood
ratio of the code's bin. So the
terms *are* the model, and listing the largest ones, each named by the raw features its column
crosses and the bin of each, shows what its answers are made of, with nothing estimated.

Only terms that some of the given rows (the held-out rows, at training) fall in are ranked: a code
no row reaches carries only smoothing (naive Bayes) or a regularised zero (logistic regression), and
its size says nothing about any answer. Training logs the table and its figure
(:func:`router_model.plots.terms_figure`) next to the ROC curves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from router_model import explain
from router_model import features as F
from router_model.errors import RouterError
from router_model.transformers import BinCross

#: Terms per route in the logged table and figure.
TOP_TERMS = 20

#: The table's columns: one ``base`` row per route, then its terms, largest first.
TERM_COLUMNS: tuple[str, ...] = ("route", "kind", "features", "bins", "column", "code", "log_odds", "rows")
KIND_BASE = "base"
KIND_TERM = "term"
#: Joins the raw features of a crossed column, and their bins, in one table cell.
JOIN = " & "


class TermsError(RouterError):
    """A sub-model whose log-odds are not additive tables (no terms to show)."""


def bin_label(codes: BinCross, position: int, code: int) -> str:
    """What one raw feature's code means: a value interval, a category code or a season value.

    Args:
        codes: The route's fitted :class:`BinCross`.
        position: The feature's position in ``codes.columns``.
        code: Its code (``BinCross.base_codes``).

    Returns:
        For example ``"[3.1, 4.25)"``, ``"< 1.2"``, ``">= 80"``, ``"7"`` or ``"0.888"``.
    """
    name = codes.columns[position]
    cut = codes.edges_[position]
    if cut is not None:
        if code == 0:
            return f"< {cut[0]:.4g}"
        if code == len(cut):
            return f">= {cut[-1]:.4g}"
        return f"[{cut[code - 1]:.4g}, {cut[code]:.4g})"
    if name == F.SEASON:
        return f"{F.SEASON_VALUES[code]:.4g}"
    return str(code)


def bin_labels(codes: BinCross, column: int, code: int) -> tuple[str, ...]:
    """The bin of each raw feature behind one code of a crossed output column (:func:`bin_label`)."""
    combo = codes.combinations_[column]
    parts = np.unravel_index(code, [codes.base_cardinalities_[j] for j in combo])
    return tuple(bin_label(codes, j, int(k)) for j, k in zip(combo, parts, strict=True))


def route_terms(
    route: str, submodel: Any, X: np.ndarray | None = None, top: int | None = TOP_TERMS
) -> pd.DataFrame:
    """One route's base and its largest terms, as rows of :data:`TERM_COLUMNS`.

    Args:
        route: The route's name (a :data:`router_model.features.ROUTES` entry).
        submodel: Its fitted sub-model (calibrated or not).
        X: Rows of the route's features; only terms they fall in are ranked, and ``rows`` counts
            them (``None``: every term, ``rows`` 0).
        top: How many terms to keep (``None``: all).

    Returns:
        The ``base`` row, then the terms by absolute log-odds, largest first.

    Raises:
        TermsError: If the sub-model is not one whose log-odds are additive tables (finite, over the
            route's features).
    """
    additive = explain.route_terms(submodel, F.ROUTE_FEATURES[route])
    if additive is None:
        raise TermsError(
            f"route {route!r}: {type(submodel).__name__} has no additive log-odds tables; "
            f"expected a BinCross pipeline over {list(F.ROUTE_FEATURES[route])} into CategoricalNB or "
            "LogisticRegression"
        )
    codes, tables = additive.codes, additive.tables
    if X is None:
        counts = [np.zeros(len(table), dtype=np.int64) for table in tables]
    else:
        counts = [
            np.bincount(code, minlength=len(table))
            for code, table in zip(codes.iter_codes(X), tables, strict=True)
        ]
    column = np.concatenate([np.full(len(t), i) for i, t in enumerate(tables)])
    code = np.concatenate([np.arange(len(t)) for t in tables])
    log_odds = np.concatenate(tables)
    rows = np.concatenate(counts)
    keep = np.flatnonzero(rows > 0) if X is not None else np.arange(len(log_odds))
    order = keep[np.argsort(-np.abs(log_odds[keep]), kind="stable")][:top]
    records = [
        {
            "route": route,
            "kind": KIND_BASE,
            "features": "",
            "bins": "",
            "column": -1,
            "code": -1,
            "log_odds": additive.base,
            "rows": 0 if X is None else len(X),
        }
    ]
    for i in order:
        records.append(
            {
                "route": route,
                "kind": KIND_TERM,
                "features": JOIN.join(additive.features[int(column[i])]),
                "bins": JOIN.join(bin_labels(codes, int(column[i]), int(code[i]))),
                "column": int(column[i]),
                "code": int(code[i]),
                "log_odds": float(log_odds[i]),
                "rows": int(rows[i]),
            }
        )
    return pd.DataFrame.from_records(records, columns=list(TERM_COLUMNS))


def terms_table(
    submodels: Mapping[str, Any], frame: pd.DataFrame | None = None, top: int | None = TOP_TERMS
) -> pd.DataFrame:
    """Every route's base and largest terms in one table (what training logs).

    Args:
        submodels: Fitted sub-model per route.
        frame: Rows with the routes' features (the held-out rows at training), or ``None``.
        top: Terms per route (``None``: all).
    """
    return pd.concat(
        [
            route_terms(
                route,
                model,
                None if frame is None else frame[list(F.ROUTE_FEATURES[route])].to_numpy(np.float64),
                top,
            )
            for route, model in submodels.items()
        ],
        ignore_index=True,
    )
