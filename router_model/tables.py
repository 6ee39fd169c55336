"""Read tables of rows from CSV, Parquet or JSON files, whole or in chunks.

One reader for every file the project reads: training data (:mod:`router_model.data`) and files
to score (:mod:`router_model.scoring`). The format comes from the extension (``.parquet``,
``.json``, anything else is CSV). CSV and Parquet are streamed in chunks; JSON is read whole and
may be a list of records or an MLflow-style ``{"dataframe_records": [...]}`` or
``{"dataframe_split": {"columns": [...], "data": [...]}}`` object, the bodies the model server
takes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

_logger = logging.getLogger(__name__)

CSV, PARQUET, JSON = ".csv", ".parquet", ".json"
FORMATS = (CSV, PARQUET, JSON)
_NAMES = {CSV: "CSV", PARQUET: "Parquet", JSON: "JSON"}
CHUNK_ROWS = 100_000


class TableError(ValueError):
    """A file cannot be read as a table; the message names the file and the reason."""


def table_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` by its extension: one of :data:`FORMATS` (CSV when unknown)."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in FORMATS else CSV


def _json_frame(path: Path) -> pd.DataFrame:
    try:
        payload = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise TableError(f"{path} is not valid JSON: {err}") from None
    try:
        if isinstance(payload, dict) and isinstance(payload.get("dataframe_split"), dict):
            split = payload["dataframe_split"]
            return pd.DataFrame(split.get("data", []), columns=split.get("columns"))
        if isinstance(payload, dict) and "dataframe_records" in payload:
            payload = payload["dataframe_records"]
        if isinstance(payload, list) and all(isinstance(row, dict) for row in payload):
            return pd.DataFrame(payload)
    except (ValueError, TypeError) as err:
        raise TableError(f"{path}: {err}") from None
    raise TableError(f"{path}: expected a list of records, or a dataframe_records or dataframe_split object")


def _existing(path: str | os.PathLike[str]) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_file():
        raise TableError(f"file not found: {path}")
    return path, table_format(path)


@contextlib.contextmanager
def _parsing(path: Path, kind: str) -> Iterator[None]:
    """Turn a parser's failure into a :class:`TableError` naming the file and its format."""
    try:
        yield
    # pyarrow's errors subclass these (ArrowInvalid: ValueError, ArrowIOError: OSError, ...).
    except (ValueError, TypeError, NotImplementedError, UnicodeDecodeError, OSError) as err:
        raise TableError(f"cannot read {path} as {_NAMES[kind]}: {err}") from None


def iter_table(path: str | os.PathLike[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the rows of a file in chunks of at most ``chunk_rows`` (JSON: one chunk).

    Args:
        path: A CSV, Parquet or JSON file.
        chunk_rows: Rows per chunk for CSV and Parquet.

    Raises:
        TableError: If the file is missing or cannot be parsed in its format.
    """
    path, kind = _existing(path)
    if kind == JSON:
        yield _json_frame(path)
        return
    with _parsing(path, kind):
        if kind == PARQUET:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(path, chunksize=chunk_rows)


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a whole file (formats as :func:`iter_table`) into one frame, in one parser call.

    Raises:
        TableError: If the file is missing or cannot be parsed in its format.
    """
    path, kind = _existing(path)
    if kind == JSON:
        return _json_frame(path)
    with _parsing(path, kind):
        return pd.read_parquet(path) if kind == PARQUET else pd.read_csv(path)


def count_rows(path: str | os.PathLike[str]) -> int | None:
    """Rows in a Parquet file from its metadata (``None`` for other formats)."""
    if table_format(path) != PARQUET:
        return None
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
