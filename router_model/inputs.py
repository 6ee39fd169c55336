"""Input shapes: whatever MLflow hands to ``predict`` (frames, records, columns), as one table.

One row per input row, always: records become rows, columns of one length become rows, one record
of scalars is one row; anything else is refused naming what was given. The scoring server's guard
uses the same rules for the request forms it reads itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from router_model.validation import InvalidInputError


def _scalar(value: Any) -> Any:
    """Turn a NumPy array cell into Python values: a 0-d array (MLflow's parsers wrap single
    values in them) into its value, a row of a 2-d column into a list (which the router refuses).
    """
    return value.tolist() if isinstance(value, np.ndarray) else value


def _hashable(label: object) -> bool:
    try:
        hash(label)
    except TypeError:
        return False
    return True


def hashable_labels(model_input: Any) -> None:
    """Replace column labels pandas cannot hash by their ``repr``, in place.

    A JSON object among ``dataframe_split`` columns becomes a dict label; pandas (and MLflow's
    own error message, which prints the input) fail on it with a ``TypeError``.
    """
    if isinstance(model_input, pd.DataFrame) and not all(_hashable(c) for c in model_input.columns):
        model_input.columns = pd.Index(
            [c if _hashable(c) else repr(c) for c in model_input.columns], dtype=object
        )


def _is_column(value: object) -> bool:
    """Whether a value of a mapping of columns holds one entry per row (a list or an array)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, (list, tuple, pd.Series, pd.Index))


def column_rows(columns: Mapping[Any, Any]) -> int | None:
    """The number of rows in a mapping of columns, or ``None`` when it is a single record.

    A mapping whose values are all lists (or arrays) holds one row per entry; one whose values
    are all single values is one record. Anything between has no one reading, so it is refused
    rather than broadcast or flattened into more or fewer rows than the client meant.

    Raises:
        InvalidInputError: Naming the columns when some hold lists and others single values, or
            when the lists differ in length.
    """
    lengths = {label: len(value) for label, value in columns.items() if _is_column(value)}
    if not lengths:
        return None
    singles = [label for label in columns if label not in lengths]
    if singles:
        raise InvalidInputError(
            f"columns {few_labels(list(lengths))} hold lists but {few_labels(singles)} hold single "
            "values; give every column as a list with one entry per row, or every column as a "
            "single value (one record)"
        )
    if len(set(lengths.values())) > 1:
        shown = few_labels([f"{label!r}: {n}" for label, n in lengths.items()], show=str)
        raise InvalidInputError(
            f"columns of different lengths ({shown}); every column needs one entry per row"
        )
    return next(iter(lengths.values()))


def few_labels(labels: list[Any], limit: int = 8, show: Callable[[Any], str] = repr) -> str:
    """Name the first ``limit`` labels of a list for an error message, and count the rest."""
    shown = ", ".join(show(label) for label in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def as_frame(model_input: Any) -> pd.DataFrame:
    """Accept the shapes MLflow hands to ``predict`` and return a DataFrame, one row per input row.

    Records (a list of mappings) give one row each; a mapping of columns gives one row per entry
    (see :func:`column_rows`); a mapping of single values is one record.

    Raises:
        InvalidInputError: For input without column names (a bare array or list of lists), or a
            mapping that is neither columns of one length nor one record.
    """
    if isinstance(model_input, pd.DataFrame):
        return model_input
    # ValueError covers the UnicodeEncodeError of a lone surrogate (invalid UTF-8 that MLflow's
    # JSON parser lets through) in a key or value.
    if isinstance(model_input, Mapping):
        values = dict(model_input)
        rows = column_rows(values)
        try:
            if rows is None:  # one record
                return pd.DataFrame([{k: _scalar(v) for k, v in values.items()}])
            return pd.DataFrame(
                {k: [_scalar(x) for x in v] for k, v in values.items()}, index=pd.RangeIndex(rows)
            )
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"columns that do not form a table: {err}") from None
    if isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        try:
            return pd.DataFrame([{k: _scalar(v) for k, v in r.items()} for r in model_input])
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"records that do not form a table: {err}") from None
    raise InvalidInputError(
        f"expected rows with named feature columns, got {type(model_input).__name__}; send "
        "dataframe_split, dataframe_records, or instances/inputs as records or columns"
    )
