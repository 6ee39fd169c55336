"""Turn user input into a clean feature matrix, or fail with a message that names the bad value.

The router, batch scoring and training-data validation all go through :func:`feature_matrix`:
columns may be spelled with hyphens or underscores, a missing value (absent column, ``None``,
``NaN``) means "not given", and anything else that is not a finite, in-domain number is refused
with an :class:`InvalidInputError` naming the row, the column, the value and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from router_model import features as F
from router_model.errors import RouterError

_REAL_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)


class InvalidInputError(RouterError, ValueError):
    """Input that the router cannot score; the message says where and why.

    Also a ``ValueError``, for callers (notebooks, Spark jobs) that catch the builtin.

    Attributes:
        row: 0-based position of the first offending row, when one row is to blame.
        column: The offending column as the user spelled it, when one column is to blame.
    """

    def __init__(self, message: str, *, row: int | None = None, column: object = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


def _describe(value: object) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, _BOOL_TYPES):
        return f"the boolean {bool(value)!r}"
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__}"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class RowProblems:
    """Collects one message per bad row instead of raising (batch scoring's ``--on-error mark``).

    Args:
        n_rows: Rows in the batch.
    """

    def __init__(self, n_rows: int) -> None:
        self.messages = np.full(n_rows, None, dtype=object)

    def add(self, rows: np.ndarray, message: Callable[[int], str]) -> None:
        """Record ``message(row)`` for each of ``rows`` that has no message yet."""
        for row in rows:
            if self.messages[row] is None:
                self.messages[row] = message(int(row))

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask of the rows with a problem."""
        return self.messages != None  # noqa: E711 - elementwise on an object array


def refuse_rows(
    rows: np.ndarray,
    describe: Callable[[int], str],
    problems: RowProblems | None,
    *,
    joiner: str = ": ",
    more: str = "too",
    column: object = None,
) -> None:
    """Record ``rows`` in ``problems``, or raise naming the first of them (and how many more).

    Args:
        rows: Indices of the bad rows (nothing happens when empty).
        describe: The problem of one row, without the row number.
        problems: Where to record; ``None`` raises instead.
        joiner: Between ``row N`` and the description in the raised message.
        more: How the raised message counts the other rows: ``(N more row(s) <more>)``.
        column: The column at fault, if one is, for :class:`InvalidInputError`.

    Raises:
        InvalidInputError: When ``problems`` is ``None`` and ``rows`` is not empty.
    """
    if not len(rows):
        return
    if problems is not None:
        problems.add(rows, describe)
        return
    first = int(rows[0])
    extra = f" ({len(rows) - 1} more row(s) {more})" if len(rows) > 1 else ""
    raise InvalidInputError(f"row {first}{joiner}{describe(first)}{extra}", row=first, column=column)


def _fail(
    rows: np.ndarray, column: object, values: Sequence[object], why: str, problems: RowProblems | None = None
) -> None:
    refuse_rows(
        rows,
        lambda r: f"column {column!r}: got {_describe(values[r])}; {why}",
        problems,
        joiner=", ",
        more="have the same problem",
        column=column,
    )


def _reject(
    rows: np.ndarray,
    column: object,
    shown: Sequence[object],
    why: str,
    problems: RowProblems | None,
    values: np.ndarray,
) -> None:
    """Refuse ``rows`` (raise, or record them and blank their ``values`` when collecting)."""
    if len(rows):
        _fail(rows, column, shown, why, problems)
        values[rows] = np.nan


def column_values(
    series: pd.Series, column: object, expected: str, problems: RowProblems | None = None
) -> np.ndarray:
    """Convert one input column to float64 with NaN for "not given".

    Args:
        series: The column as the user gave it.
        column: Its label, for error messages.
        expected: What the column accepts, for error messages.
        problems: Collect bad values per row (and leave them NaN) instead of raising.

    Returns:
        A float64 array.

    Raises:
        InvalidInputError: On a boolean, string or other non-numeric value, or on +/-inf.
    """
    kind = getattr(series.dtype, "kind", "O")  # NumPy and pandas extension dtypes alike
    if kind == "b":
        given = series.notna().to_numpy()
        _fail(np.flatnonzero(given), column, series.to_numpy(dtype=object), f"expected {expected}", problems)
        return np.full(len(series), np.nan)
    if kind in "iuf":
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if problems is not None and not values.flags.writeable:  # a copy-on-write view
            values = values.copy()
    else:
        values = _object_values(series.to_numpy(dtype=object), column, expected, problems)
    inf = np.flatnonzero(np.isinf(values))
    _reject(inf, column, values, f"expected {expected}, not an infinite value", problems, values)
    return values


def _object_values(
    raw: np.ndarray, column: object, expected: str, problems: RowProblems | None = None
) -> np.ndarray:
    """Numbers from a column of mixed Python objects (JSON input, or CSV text columns).

    Numeric strings are numbers (a CSV column with one bad cell arrives as text, and its good
    cells must not be blamed); booleans, other strings, lists and dicts are refused.
    """
    missing = pd.isna(raw)
    values = np.full(len(raw), np.nan)
    real = np.fromiter(
        (isinstance(v, _REAL_TYPES) and not isinstance(v, _BOOL_TYPES) for v in raw),
        dtype=bool,
        count=len(raw),
    )
    text = np.fromiter((isinstance(v, str) for v in raw), dtype=bool, count=len(raw)) & ~missing
    bad = ~real & ~text & ~missing
    try:
        values[real] = np.asarray([float(v) for v in raw[real]], dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        limit = int(np.finfo(np.float64).max)
        too_big = np.asarray(
            [i for i in np.flatnonzero(real) if isinstance(raw[i], int) and abs(raw[i]) > limit]
        )
        _fail(too_big, column, raw, f"expected {expected}, not a number beyond float range", problems)
        real[too_big] = False
        values[real] = np.asarray([float(v) for v in raw[real]], dtype=np.float64)
    if text.any():
        parsed = pd.to_numeric(pd.Series(raw[text], dtype=object).str.strip(), errors="coerce").to_numpy(
            float
        )
        values[text] = parsed
        unparsed = (
            np.isnan(parsed) & ~pd.Series(raw[text]).str.strip().str.lower().isin(["nan", ""]).to_numpy()
        )
        bad[np.flatnonzero(text)[unparsed]] = True
    _reject(np.flatnonzero(bad), column, raw, f"expected {expected}", problems, values)
    return values


def _check_domain(
    values: np.ndarray, column: str, label: object, problems: RowProblems | None = None
) -> None:
    given = ~np.isnan(values)
    expected = F.expected_values(column)
    if column in F.CATEGORY_CARDINALITY:
        n = F.CATEGORY_CARDINALITY[column]
        bad = given & ((values != np.round(values)) | (values < 0) | (values > n - 1))
    elif column == F.SEASON:
        bad = given & (F.season_codes(values) < 0)
    else:
        bad = given & (values < 0)
    _reject(np.flatnonzero(bad), label, values, f"expected {expected}", problems, values)


def feature_matrix(frame: pd.DataFrame, problems: RowProblems | None = None) -> np.ndarray:
    """Validate input and return its features as a float64 matrix in ``ALL_FEATURES`` order.

    Columns are matched by canonical name (``stem_height`` is ``stem-height``); unknown columns
    are ignored. When both spellings of a feature are present (a JSON batch whose records spell
    it differently), each row takes the one it gives; a row that gives both with different
    values is refused.

    Args:
        frame: Input rows.
        problems: Collect per-row problems (bad values become NaN) instead of raising.

    Returns:
        An ``(n_rows, len(ALL_FEATURES))`` float64 array, NaN where a value is not given.

    Raises:
        InvalidInputError: If any given value is non-numeric, boolean, infinite or out of its
            column's domain.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(f"expected a table of rows with named columns, got {type(frame).__name__}")
    if frame.columns.has_duplicates:
        dup = frame.columns[frame.columns.duplicated()][0]
        raise InvalidInputError(f"column {dup!r} is given twice", column=dup)
    matrix = np.full((len(frame), len(F.ALL_FEATURES)), np.nan)
    groups = F.canonical_columns(frame.columns)
    for j, name in enumerate(F.ALL_FEATURES):
        expected = F.expected_values(name)
        merged: np.ndarray | None = None
        for label in groups.get(name, ()):
            values = column_values(frame[label], label, expected, problems)
            _check_domain(values, name, label, problems)
            if merged is None:
                merged = values
                continue
            clash = np.flatnonzero(~np.isnan(merged) & ~np.isnan(values) & (merged != values))
            if len(clash) and problems is not None:
                problems.add(clash, lambda r, name=name: f"two spellings of {name!r} give different values")
                values[clash] = np.nan
                merged[clash] = np.nan
            elif len(clash):
                spellings = " and ".join(repr(s) for s in groups[name])
                raise InvalidInputError(
                    f"row {int(clash[0])}: {spellings} spell the same feature but give "
                    f"different values ({_describe(merged[clash[0]])} and {_describe(values[clash[0]])})",
                    row=int(clash[0]),
                    column=name,
                )
            merged = np.where(np.isnan(merged), values, merged)
        if merged is not None:
            matrix[:, j] = merged
    return matrix


def missing_features(matrix: np.ndarray, row: int, route: str) -> list[str]:
    """Name the features of ``route`` that ``row`` of ``matrix`` does not give.

    Args:
        matrix: Output of :func:`feature_matrix`.
        row: Row position.
        route: A route name from ``features.ROUTES``.

    Returns:
        The missing canonical feature names, in route order.
    """
    return [name for name in F.ROUTE_FEATURES[route] if np.isnan(matrix[row, F.ALL_FEATURES.index(name)])]


def _domain_bounds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature of ``ALL_FEATURES``: lowest and highest valid value, and whether it is a code."""
    low = np.zeros(len(F.ALL_FEATURES))
    high = np.full(len(F.ALL_FEATURES), np.finfo(np.float64).max)
    code = np.zeros(len(F.ALL_FEATURES), dtype=bool)
    for j, name in enumerate(F.ALL_FEATURES):
        if name in F.CATEGORY_CARDINALITY:
            high[j] = F.CATEGORY_CARDINALITY[name] - 1
            code[j] = True
        elif name == F.SEASON:  # F.season_codes decides
            low[j], high[j] = -np.inf, np.inf
    return low, high, code


_LOW, _HIGH, _CODE = _domain_bounds()
_SEASON_COLUMN = F.ALL_FEATURES.index(F.SEASON)


def rows_in_domain(matrix: np.ndarray) -> np.ndarray:
    """Which rows of a feature matrix :func:`feature_matrix` would accept, in one vectorised pass.

    For a matrix built without a DataFrame (the scoring server's fast path): float64 in
    ``ALL_FEATURES`` order, NaN for "not given". A row is refused when a given value is infinite
    or outside its column's domain, exactly the values :func:`feature_matrix` refuses.

    Args:
        matrix: An ``(n_rows, len(ALL_FEATURES))`` float64 array.

    Returns:
        A boolean array, one entry per row.
    """
    given = ~np.isnan(matrix)
    with np.errstate(invalid="ignore"):
        bad = (matrix < _LOW) | (matrix > _HIGH) | (_CODE & (matrix != np.round(matrix)))
    bad[:, _SEASON_COLUMN] |= F.season_codes(matrix[:, _SEASON_COLUMN]) < 0
    return ~(bad & given).any(axis=1)
