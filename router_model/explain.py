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
from collections.abc import Callable
from dataclasses import dataclass, field
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
        return self.coded_entries(self.codes.base_codes(X))

    def coded_entries(self, codes: np.ndarray) -> np.ndarray:
        """:meth:`entries` of rows already coded (``codes.base_codes``)."""
        return codes @ self._strides + self._offsets

    def ranked(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, its terms by absolute contribution, largest first (ties in column order).

        Returns:
            The terms' order, and their contributions in it.
        """
        contributions = self._flat[entries]
        order = np.argsort(-np.abs(contributions), axis=1, kind="stable")
        return order, np.take_along_axis(contributions, order, axis=1)

    def json_pieces(self) -> JsonPieces:
        """The route's explanation JSON in pieces that are the same for every row (made once)."""
        pieces = self.__dict__.get("_json_pieces")
        if pieces is None:
            pieces = JsonPieces.of(self)
            object.__setattr__(self, "_json_pieces", pieces)
        return pieces


#: Up to this many rows, :func:`explanations` gathers each term's values by plain indexing, which
#: costs less than setting up the iterators that gather them for many rows.
FEW_ROWS = 4

#: At most this many templates (:class:`JsonPieces`) a route keeps; one more and it starts over.
#: A template serves every row with the same codes, so this holds every combination the real
#: data has (docs/benchmarks.md has the count and the memory), and a server's memory stays
#: bounded whatever rows it is sent.
TEMPLATES = 16_384

#: Where a template leaves a row's value out. orjson escapes control characters inside strings
#: and writes none elsewhere, so this byte cannot occur in the text around it.
_PLACEHOLDER = b"\x01"

#: A row's template: the text between its values, and how to interleave them with the values.
Template = tuple[tuple[bytes, ...], Callable[[tuple[bytes, ...]], tuple[bytes, ...]]]


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
    lookup): both are made once (:func:`_as_json` joins them).

    Rows with the same codes (bins, categories, seasons) have the same terms, order and
    contributions, and differ only in their measured values (and a season's last digits). So a
    row's explanation is made once per codes as a template, the text between those values
    (:meth:`template`), kept in :attr:`templates`; a request then only writes its rows' values
    and joins each row's (:func:`_fragments`).

    Attributes:
        heads: Per term ``t``, at ``2 * t`` its head after the opening and at ``2 * t + 1``
            after a comma; then, at :attr:`empty`, an empty piece.
        tails: The tail of every table entry, in the order of the tables laid end to end.
        slots: Per term, where its head (after a comma) and then its values are in a row's
            table of pieces, :attr:`heads` followed by the row's value texts: column ``j``'s
            at ``len(heads) + 2 * j``, and followed by a comma one further; :attr:`empty` pads
            a term with fewer values than the most.
        empty: Where the empty piece is in :attr:`heads`.
        free: The columns whose values a template may leave open (:meth:`inlined`).
        open_columns: Per term, its columns' positions in :attr:`free` plus one, 0 for a
            category and for padding (where a term's values may be left open).
        key_strides: A row's codes times these is its template's key (the codes as one number,
            times two for whether the season is inlined, times the number of terms plus one for
            how many are listed).
        season_stride: What an inlined season adds to the key (0 for a route without one).
        templates: Per key, a row's template (:data:`TEMPLATES` at most).
        shared: The texts of :attr:`templates`, one object each, shared by all the templates
            that have them.
        pickers: The pickers of :attr:`templates` by their slots, likewise.
    """

    heads: np.ndarray
    tails: np.ndarray
    slots: np.ndarray
    empty: int
    free: tuple[int, ...]
    open_columns: np.ndarray
    key_strides: np.ndarray
    season_stride: int
    templates: dict[int, Template] = field(default_factory=dict, compare=False, repr=False)
    shared: dict[bytes, bytes] = field(default_factory=dict, compare=False, repr=False)
    pickers: dict[bytes, Callable[[tuple[bytes, ...]], tuple[bytes, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

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
        columns = terms.codes.columns
        free = tuple(j for j, name in enumerate(columns) if name not in F.CATEGORY_CARDINALITY)
        open_columns = np.zeros((len(terms.positions), slots.shape[1] - 1), dtype=np.int64)
        for t, where in enumerate(terms.positions):
            open_columns[t, : len(where)] = [free.index(j) + 1 if j in free else 0 for j in where]
        sizes = terms.codes.base_cardinalities_
        season_stride = len(terms.positions) + 1 if F.SEASON in columns else 0
        key_strides = np.array(
            [int(np.prod(sizes[j + 1 :])) * 2 * (len(terms.positions) + 1) for j in range(len(columns))],
            dtype=np.int64,
        )
        return cls(
            _objects([*heads, b""]),
            _objects(tails),
            slots,
            empty,
            free,
            open_columns,
            key_strides,
            season_stride,
        )

    def inlined(self, X: np.ndarray, codes: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
        """Per row and column, whether the row's codes say the value's text, so that a template holds it.

        A category's value is its code. A season's value is the season's when it is that float
        exactly (within :data:`~router_model.features.SEASON_TOLERANCE` it has the same code but
        its own text). A measured value is never inlined.
        """
        out = np.zeros(X.shape, dtype=bool)
        for j, name in enumerate(columns):
            if name in F.CATEGORY_CARDINALITY:
                out[:, j] = True
            elif name == F.SEASON:
                out[:, j] = X[:, j] == np.asarray(F.SEASON_VALUES)[codes[:, j]]
        return out

    def template(self, text: bytes, slots: bytes) -> Template:
        """A row's template from its explanation written with :data:`_PLACEHOLDER` for its open values.

        Args:
            text: The explanation with placeholders.
            slots: Per placeholder, in order, a byte: one plus its column's position in :attr:`free`.

        Returns:
            The text between the values, and a picker that, given that text followed by the
            row's :attr:`free` values, returns them interleaved in the explanation's order.
        """
        parts = text.split(_PLACEHOLDER)
        between = tuple(map(self.shared.setdefault, parts, parts))
        pick = self.pickers.get(slots)
        if pick is None:
            # Text k at 2k, the value of the k-th placeholder at 2k + 1: indexes into the text
            # followed by the row's values (the text's n + 1 pieces, then value f at n + 1 + f).
            n = len(slots)
            order = bytearray(2 * n + 1)
            order[0::2] = range(n + 1)
            order[1::2] = map(n.__add__, slots)
            pick = self.pickers.setdefault(
                slots, operator.itemgetter(*order) if n else operator.itemgetter(slice(0, 1))
            )
        return between, pick

    def keep(self, made: dict[int, Template]) -> None:
        """Add templates to :attr:`templates`, starting over first if they would not fit."""
        if len(self.templates) + len(made) > TEMPLATES:
            self.forget()
        if len(made) <= TEMPLATES:
            self.templates.update(made)

    def forget(self) -> None:
        """Drop every template (and what they share): rows get theirs made anew."""
        self.templates.clear()
        self.shared.clear()
        self.pickers.clear()


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
            for the dict (joined from templates: :func:`_fragments`).

    Returns:
        Per row ``{"base": float, "contributions": [{"features": [...], "values": [...],
        "contribution": float}, ...]}``, terms sorted by absolute contribution, largest first
        (ties in column order), the ``"other"`` term last.
    """
    if not len(X):
        return []
    if for_json:
        return _fragments(terms, X, top)
    order, ranked = terms.ranked(terms.entries(X))
    n_terms = ranked.shape[1]
    keep = _listed(n_terms, top)
    columns = _raw_values(X, terms.codes.columns)
    names, base = terms.features, terms.base
    with paused_gc():
        # Per term, every row's values of its features: for many rows built by zip and map, in
        # C; for a few, by plain indexing, which costs less than setting up the iterators.
        if len(X) <= FEW_ROWS:
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


def _listed(n_terms: int, top: int) -> int:
    """How many terms an explanation lists by name (the rest make the "other" term)."""
    return n_terms if top <= 0 or top >= n_terms else top


def _fragments(terms: RouteTerms, X: np.ndarray, top: int) -> list[orjson.Fragment]:
    """Every row's explanation as the bytes ``orjson.dumps`` writes for its dict, from templates.

    Building 14 small dicts a row for orjson to write costs far more than the writing, and so
    does joining each row's 70 pieces. A row's template (:meth:`JsonPieces.template`), made
    once per codes, holds all of it but the row's measured values; a request writes those, each
    once by orjson (so every number is exactly its text in the dict's JSON), and joins them into
    each row's template. Rows whose codes have no template yet get theirs first
    (:func:`_new_templates`).
    """
    pieces = terms.json_pieces()
    codes = terms.codes.base_codes(X)
    inlined = pieces.inlined(X, codes, terms.codes.columns)
    keys = codes @ pieces.key_strides + _listed(len(terms.positions), top)
    if pieces.season_stride:
        keys += inlined[:, terms.codes.columns.index(F.SEASON)] * pieces.season_stride
    found = list(map(pieces.templates.get, keys.tolist()))
    if None in found:
        found = _new_templates(terms, X, codes, inlined, keys, found, top)
    # A column no row's template leaves open (a season every row has exactly) is not written.
    values = [_texts(X[:, j].tolist()) if not inlined[:, j].all() else [b""] * len(X) for j in pieces.free]
    rows = zip(*values, strict=True) if values else [()] * len(found)
    with paused_gc():
        return [
            orjson.Fragment(b"".join(pick(between + row)))
            for (between, pick), row in zip(found, rows, strict=True)
        ]


def _new_templates(
    terms: RouteTerms,
    X: np.ndarray,
    codes: np.ndarray,
    inlined: np.ndarray,
    keys: np.ndarray,
    found: list[Template | None],
    top: int,
) -> list[Template]:
    """Make the templates ``found`` lacks (one per new key), keep them, and return every row's.

    A template is the row's explanation written by :func:`_as_json` with :data:`_PLACEHOLDER`
    for each value its codes do not say (:meth:`JsonPieces.inlined`), cut there.
    """
    pieces = terms.json_pieces()
    missing = np.flatnonzero(np.fromiter(map(operator.not_, found), dtype=bool, count=len(found)))
    new_keys, first = np.unique(keys[missing], return_index=True)
    rows = missing[first]  # the first row with each new key
    entries = terms.coded_entries(codes[rows])
    order, ranked = terms.ranked(entries)
    order = order[:, : _listed(ranked.shape[1], top)]
    shown = inlined[rows]
    texts = [
        _or_placeholders(column, shown[:, j])
        for j, column in enumerate(_raw_values(X[rows], terms.codes.columns))
    ]
    slots = _slots(terms, order, shown)
    made = dict(
        zip(
            new_keys.tolist(),
            map(pieces.template, _as_json(terms, entries, texts, order, ranked), slots),
            strict=True,
        )
    )
    pieces.keep(made)
    return [
        made[key] if template is None else template
        for key, template in zip(keys.tolist(), found, strict=True)
    ]


def _or_placeholders(values: list[Any], shown: np.ndarray) -> list[bytes]:
    """The text of ``values`` where ``shown``, :data:`_PLACEHOLDER` elsewhere (a measured column: no text written)."""
    if not shown.any():
        return [_PLACEHOLDER] * len(values)
    texts = _texts(values)
    if shown.all():
        return texts
    return [text if here else _PLACEHOLDER for text, here in zip(texts, shown.tolist(), strict=True)]


def _slots(terms: RouteTerms, order: np.ndarray, shown: np.ndarray) -> list[bytes]:
    """Per row, the free column of each of its placeholders, in the order its listed terms put them.

    Returns:
        Per row, a byte ``1 + f`` per placeholder, ``f`` its column's position in
        :attr:`JsonPieces.free` (bytes: NumPy makes them for all rows at once).
    """
    pieces = terms.json_pieces()
    placed = pieces.open_columns[order].reshape(len(order), -1)
    # A season inlined in the row's template has no placeholder either.
    for f, j in enumerate(pieces.free):
        placed[np.logical_and(placed == f + 1, shown[:, [j]])] = 0
    # The placeholders first, in order (a stable sort), then NumPy's bytes drop the trailing zeros.
    placed = np.take_along_axis(placed, np.argsort(placed == 0, axis=1, kind="stable"), axis=1)
    return np.ascontiguousarray(placed, dtype=np.uint8).view(f"S{placed.shape[1]}").ravel().tolist()


def _as_json(
    terms: RouteTerms,
    entries: np.ndarray,
    texts: list[list[bytes]],
    order: np.ndarray,
    ranked: np.ndarray,
) -> list[bytes]:
    """Rows' explanations as the bytes ``orjson.dumps`` writes for their dicts, built in bulk.

    A row's JSON is joined from pieces (:class:`JsonPieces`): those that are the same for every
    row, made once, and the text of the row's values. Which pieces a row takes, in its terms'
    order, is worked out for all rows at once with integer arrays.

    Args:
        texts: Per column, every row's value text (or a template's placeholder).
        order: Per row, the listed terms (the ``keep`` largest), in order.
        ranked: Per row, every term's contribution, largest first (the rest make "other").
    """
    pieces = terms.json_pieces()
    n_rows, n_terms = ranked.shape
    keep = order.shape[1]
    n_columns = len(texts)
    # Per row, the pieces its terms' heads and values are taken from: the heads, then the
    # row's value texts (2 * j: column j's; 2 * j + 1: the same followed by a comma).
    table = np.empty((n_rows, len(pieces.heads) + 2 * n_columns), dtype=object)
    table[:, : len(pieces.heads)] = pieces.heads
    for j, column in enumerate(texts):
        table[:, len(pieces.heads) + 2 * j] = _objects(column)
        table[:, len(pieces.heads) + 2 * j + 1] = _objects(
            list(map(operator.add, column, repeat(b",", n_rows)))
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
    return list(map(b"".join, parts.tolist()))
