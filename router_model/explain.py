"""Exact explanations: each answer's log-odds as a base plus one term per (crossed) feature column.

Both sub-models are additive in the log-odds (see :mod:`router_model.scorers`): the calibrated
log-odds of a row is ``bias + sum over BinCross output columns of table[column][code]``, and
:func:`router_model.scorers.log_odds_tables` reads those tables from the fitted models with the
calibration map folded in (a version carries them as :class:`router_model.additive.AdditiveModel`
files). So the explanation is not an approximation (no sampling, no surrogate): it is the
scorer's own sum, written out term by term.

* Logistic regression: a term is the coefficient of the row's one-hot column in one block (a
  single, pair or triple of binned features), scaled by the calibration slope; ``base`` is the
  intercept (scaled, plus the map's intercept).
* Naive Bayes: a term is the log-likelihood ratio (poisonous minus edible) of the row's bin in one
  crossed feature column, scaled likewise; ``base`` is the log prior ratio.

A term names the raw features its column is built from (``BinCross.combinations_``) and the row's
raw values of them, so ``base + sum(contribution) == logit(poisonous_probability)``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from router_model import features as F
from router_model.additive import AdditiveModel, Codes
from router_model.collector import paused_gc

#: Keys of one explanation and of one of its terms (the answer's JSON shape).
BASE, CONTRIBUTIONS = "base", "contributions"
FEATURES, VALUES, CONTRIBUTION, COUNT = "features", "values", "contribution", "count"


@dataclass(frozen=True)
class RouteTerms:
    """A route's log-odds as ``base`` plus one term per output column of its :class:`BinCross`.

    Attributes:
        base: The log-odds before any feature (bias, calibration folded in).
        codes: How a row is coded (a fitted ``BinCross``'s :class:`~router_model.additive.Codes`).
        tables: Per term, its contribution for every code.
        features: Per term, the raw feature names its column is built from.
        positions: Per term, those features' positions among the route's columns.
    """

    base: float
    codes: Codes
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

    def entries(self, X: np.ndarray) -> np.ndarray:
        """Where every term of every row is in the tables laid end to end, shape ``(n_rows, n_terms)``."""
        return self.codes.base_codes(X) @ self._strides + self._offsets

    def json_pieces(self) -> JsonPieces:
        """The route's explanation JSON in pieces that are the same for every row (made once)."""
        pieces = self.__dict__.get("_json_pieces")
        if pieces is None:
            pieces = JsonPieces.of(self)
            object.__setattr__(self, "_json_pieces", pieces)
        return pieces


#: Up to this many rows, an answer orjson writes gets each explanation as its dict, not as text
#: joined in bulk (:func:`_as_json`): for a few rows, the bulk writer's NumPy set-up costs more
#: than orjson writing the dicts (the same bytes; docs/benchmarks.md has the figures).
FEW_ROWS = 4


def _texts(values: list[Any]) -> list[bytes]:
    """The JSON text orjson writes for each of ``values`` (numbers: no commas inside)."""
    return orjson.dumps(values)[1:-1].split(b",")


_TO_CONTRIBUTION = b'],"' + CONTRIBUTION.encode() + b'":'
_OTHER_HEAD = b',{"%s":%s,"%s":[],"%s":' % (
    FEATURES.encode(),
    orjson.dumps([F.OTHER_TERM]),
    VALUES.encode(),
    CONTRIBUTION.encode(),
)


@dataclass(frozen=True)
class JsonPieces:
    """A route's explanations as JSON text, cut where a row's own numbers go in.

    A term's JSON is its head ``{"features":[...],"values":[`` (after a comma, or after the
    explanation's opening ``{"base":b,"contributions":[`` for the first term), its values (each
    followed by a comma but the last), and its tail ``],"contribution":c}``. The heads are the
    same for every row, and so is the tail of each table entry (a contribution is a table
    lookup): both are made once, and only the values are written per request (:func:`_as_json`).

    Attributes:
        heads: Per term ``t``, at ``2 * t`` its head after the opening and at ``2 * t + 1``
            after a comma; then, at :attr:`empty`, an empty piece.
        tails: The tail of every table entry, in the order of the tables laid end to end.
        slots: Per term, where its head (after a comma) and then its values are in a row's
            table of pieces, :attr:`heads` followed by the row's value texts: column ``j``'s
            at ``len(heads) + 2 * j``, and followed by a comma one further; :attr:`empty` pads
            a term with fewer values than the most.
        empty: Where the empty piece is in :attr:`heads`.
    """

    heads: np.ndarray
    tails: np.ndarray
    slots: np.ndarray
    empty: int

    @classmethod
    def of(cls, terms: RouteTerms) -> JsonPieces:
        """Cut the JSON of ``terms``' explanations into pieces."""
        opening = b'{"%s":%s,"%s":[' % (BASE.encode(), orjson.dumps(terms.base), CONTRIBUTIONS.encode())
        heads: list[bytes] = []
        for names in terms.features:
            head = b'{"%s":%s,"%s":[' % (FEATURES.encode(), orjson.dumps(list(names)), VALUES.encode())
            heads += [opening + head, b"," + head]
        empty = len(heads)
        tails = [_TO_CONTRIBUTION + text + b"}" for text in _texts(terms._flat.tolist())]
        slots = np.full((len(terms.positions), 1 + max(map(len, terms.positions))), empty, dtype=np.int64)
        for t, where in enumerate(terms.positions):
            slots[t, 0] = 2 * t + 1
            for k, j in enumerate(where):
                slots[t, 1 + k] = len(heads) + 1 + 2 * j + (k < len(where) - 1)
        return cls(_objects([*heads, b""]), _objects(tails), slots, empty)


def _objects(items: list[bytes]) -> np.ndarray:
    """A 1-D object array holding ``items`` themselves."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def column_features(codes: Any, column: int) -> tuple[str, ...]:
    """The raw features an output column crosses, in input order (``codes``: a fitted ``BinCross`` or its ``Codes``)."""
    return tuple(codes.columns[j] for j in codes.combinations_[column])


def route_terms(estimator: Any, columns: tuple[str, ...]) -> RouteTerms | None:
    """The additive terms of a fitted sub-model, or ``None`` when it is not one this module knows.

    Args:
        estimator: A sub-model (:func:`router_model.scorers.additive_model` knows the project's two).
        columns: The route's feature names, in the order the sub-model sees them.
    """
    from router_model.scorers import additive_model  # scikit-learn: only for fitted estimators

    model = additive_model(estimator)
    return None if model is None else terms_of(model, columns)


def terms_of(model: AdditiveModel, columns: tuple[str, ...]) -> RouteTerms | None:
    """The additive terms of a route's :class:`~router_model.additive.AdditiveModel`.

    Returns:
        ``None`` when the model codes other columns than ``columns`` or has a non-finite term.
    """
    codes = model.codes
    if tuple(codes.columns) != tuple(columns) or not all(np.isfinite(table).all() for table in model.tables):
        return None
    positions = tuple(tuple(int(j) for j in combo) for combo in codes.combinations_)
    return RouteTerms(
        base=float(model.bias),
        codes=codes,
        tables=tuple(np.asarray(table, dtype=np.float64) for table in model.tables),
        features=tuple(column_features(codes, t) for t in range(len(positions))),
        positions=positions,
    )


def _raw_values(X: np.ndarray, columns: tuple[str, ...]) -> list[list[Any]]:
    """Each column's raw values as Python numbers: category codes as ints, the rest as floats."""
    return [
        X[:, j].astype(np.int64).tolist() if name in F.CATEGORY_CARDINALITY else X[:, j].tolist()
        for j, name in enumerate(columns)
    ]


def explanations(
    terms: RouteTerms, X: np.ndarray, top: int = 0, for_json: bool = False
) -> list[dict[str, Any]] | list[orjson.Fragment]:
    """The explanation of every row of one route, built in one pass.

    Args:
        terms: The route's terms (:func:`route_terms`).
        X: The route's feature columns of the rows, validated.
        top: 0 for every term; k >= 1 for the k largest by absolute contribution plus, when any
            are left, one ``"other"`` term holding their sum and their ``count``.
        for_json: For an answer that orjson writes (the model server's fast path): each row's
            explanation as its JSON text, an ``orjson.Fragment`` holding the bytes orjson writes
            for the dict (built in bulk: :func:`_as_json`). Up to :data:`FEW_ROWS` rows, the
            dicts themselves, which orjson writes as the same bytes.

    Returns:
        Per row ``{"base": float, "contributions": [{"features": [...], "values": [...],
        "contribution": float}, ...]}``, terms sorted by absolute contribution, largest first
        (ties in column order), the ``"other"`` term last.
    """
    if not len(X):
        return []
    entries = terms.entries(X)
    contributions = terms._flat[entries]
    n_terms = contributions.shape[1]
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")
    ranked = np.take_along_axis(contributions, order, axis=1)
    keep = n_terms if top <= 0 or top >= n_terms else top
    columns = _raw_values(X, terms.codes.columns)
    few = len(X) <= FEW_ROWS
    if for_json and not few:
        return _as_json(terms, entries, columns, order[:, :keep], ranked)
    names, base = terms.features, terms.base
    with paused_gc():
        # Per term, every row's values of its features: for many rows built by zip and map, in
        # C; for a few, by plain indexing, which costs less than setting up the iterators.
        if few:
            rows = list(zip(*columns, strict=True))
            values = [[[row[j] for j in where] for row in rows] for where in terms.positions]
        else:
            values = [
                list(map(list, zip(*(columns[j] for j in where), strict=True))) for where in terms.positions
            ]
        rest = ranked[:, keep:].sum(axis=1).tolist() if keep < n_terms else None
        out = []
        for i, (row_order, row_terms) in enumerate(
            zip(order[:, :keep].tolist(), ranked[:, :keep].tolist(), strict=True)
        ):
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


def _as_json(
    terms: RouteTerms,
    entries: np.ndarray,
    columns: list[list[Any]],
    order: np.ndarray,
    ranked: np.ndarray,
) -> list[orjson.Fragment]:
    """Every row's explanation as the bytes ``orjson.dumps`` writes for its dict, built in bulk.

    Building 14 small dicts a row for orjson to write costs far more than the writing. Instead
    a row's JSON is joined from pieces (:class:`JsonPieces`): those that are the same for every
    row, made once, and the text of the row's values, each written once by orjson (so every
    number is exactly its text in the dict's JSON). Which pieces a row takes, in its terms'
    order, is worked out for all rows at once with integer arrays.

    Args:
        order: Per row, the listed terms (the ``keep`` largest), in order.
        ranked: Per row, every term's contribution, largest first (the rest make "other").
    """
    pieces = terms.json_pieces()
    n_rows, n_terms = ranked.shape
    keep = order.shape[1]
    n_columns = len(columns)
    # Per row, the pieces its terms' heads and values are taken from: the heads, then the
    # row's value texts (2 * j: column j's; 2 * j + 1: the same followed by a comma).
    table = np.empty((n_rows, len(pieces.heads) + 2 * n_columns), dtype=object)
    table[:, : len(pieces.heads)] = pieces.heads
    for j, column in enumerate(columns):
        texts = _texts(column)
        table[:, len(pieces.heads) + 2 * j] = _objects(texts)
        table[:, len(pieces.heads) + 2 * j + 1] = _objects(
            list(map(operator.add, texts, repeat(b",", n_rows)))
        )
    slots = pieces.slots[order]
    slots[:, 0, 0] -= 1  # the first term's head comes after the opening
    # A row: per listed term its head, values and tail, then the end of the explanation.
    width = slots.shape[2] + 1
    parts = np.empty((n_rows, keep * width + 1), dtype=object)
    listed = parts[:, :-1].reshape(n_rows, keep, width)  # a view: splits a contiguous axis
    listed[:, :, :-1] = table[np.arange(n_rows)[:, None, None], slots]
    listed[:, :, -1] = pieces.tails[np.take_along_axis(entries, order, axis=1)]
    if keep < n_terms:
        count = b',"%s":%d}]}' % (COUNT.encode(), n_terms - keep)
        rest = _texts(ranked[:, keep:].sum(axis=1).tolist())
        parts[:, -1] = _objects([_OTHER_HEAD + text + count for text in rest])
    else:
        parts[:, -1] = b"]}"
    return list(map(orjson.Fragment, map(b"".join, parts.tolist())))
