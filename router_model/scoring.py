"""Batch scoring of files with the registered router, in constant memory.

``mushroom-router predict INPUT [OUTPUT]`` reads CSV or Parquet in chunks (JSON whole), routes
every chunk (rows of both kinds may be mixed), and writes the input columns with the predictions
beside them: CSV, Parquet or JSON by the output's extension. Memory stays flat as the file grows;
only one chunk is in memory at a time.

Bad rows: by default (``on_error="fail"``) the first bad row stops the job with a message naming
its row number in the file, and no output file is left behind. With ``on_error="mark"`` bad rows
are written with empty predictions and the reason in an ``error`` column, and every other row is
scored.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from router_model import settings, tables
from router_model.validation import InvalidInputError

_logger = logging.getLogger(__name__)

CHUNK_ROWS = tables.CHUNK_ROWS
ON_ERROR = ("fail", "mark")


class ScoringError(RuntimeError):
    """A file cannot be scored; the message says which and why."""


def load_model(model_uri: str | None = None) -> Any:
    """Load the router pyfunc (default ``models:/mushroom-router@champion``)."""
    import mlflow

    from router_model.registry import client

    client()
    uri = model_uri or settings.model_uri()
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as err:
        raise ScoringError(f"cannot load {uri}: {str(err).splitlines()[0]}") from None


def read_chunks(path: str | os.PathLike[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the input in chunks: CSV and Parquet streamed, JSON whole (see :mod:`router_model.tables`).

    Raises:
        ScoringError: If the file is missing or cannot be parsed.
    """
    if not Path(path).is_file():
        raise ScoringError(f"input file not found: {path}")
    try:
        yield from tables.iter_table(path, chunk_rows)
    except tables.TableError as err:
        raise ScoringError(str(err)) from None


class _Writer:
    """Appends scored chunks to a temporary file, renamed into place only when all went well."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = tables.table_format(path)
        self.tmp = path.with_name(path.name + ".partial")
        self.rows = 0
        self._parquet: Any = None
        self._json: list[pd.DataFrame] = []

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == ".csv":
            frame.to_csv(self.tmp, mode="a" if self.rows else "w", header=not self.rows, index=False)
        elif self.kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(_plain(frame), preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            self._json.append(frame)
        self.rows += len(frame)

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.kind == ".json":
            frame = pd.concat(self._json, ignore_index=True) if self._json else pd.DataFrame()
            frame.to_json(self.tmp, orient="records", indent=1, double_precision=15)
        elif not self.tmp.exists():
            pd.DataFrame().to_csv(self.tmp, index=False)
        self.tmp.replace(self.path)

    def discard(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical and string columns as plain strings, so every chunk has the same Parquet schema."""
    converted = {
        c: frame[c].astype(object).where(frame[c].notna(), None)
        for c in frame.columns
        if isinstance(frame[c].dtype, pd.CategoricalDtype) or frame[c].dtype == object or c == "error"
    }
    return frame.assign(**converted) if converted else frame


def _progress(total: int | None, quiet: bool | None) -> Any:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if quiet is None else quiet
    return tqdm(
        total=total, unit="rows", unit_scale=True, dynamic_ncols=True, disable=disable, file=sys.stderr
    )


def score_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None = None,
    model_uri: str | None = None,
    params: dict[str, Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    on_error: str = "fail",
    quiet: bool | None = None,
) -> pd.DataFrame | int:
    """Score a CSV, Parquet or JSON file chunk by chunk.

    Args:
        input_path: Rows to score.
        output_path: Where to write (format by extension: ``.csv``, ``.parquet``, ``.json``);
            ``None`` returns the scored frame instead (for small inputs).
        model_uri: Router to use (default ``models:/mushroom-router@champion``).
        params: ``model`` / ``threshold``.
        chunk_rows: Rows per chunk.
        on_error: ``"fail"`` stops at the first bad row; ``"mark"`` writes it with an ``error``.
        quiet: Hide the progress bar; by default it shows only when stderr is a terminal.

    Returns:
        The scored frame when ``output_path`` is ``None``, else the number of rows written.

    Raises:
        ScoringError: On unreadable input, or (``"fail"``) a bad row, named by its 0-based data
            row number in the file; no output file is left behind.
    """
    if on_error not in ON_ERROR:
        raise ScoringError(f"on_error must be one of {list(ON_ERROR)}, got {on_error!r}")
    model = load_model(model_uri)
    router = getattr(model.unwrap_python_model(), "router", None)
    writer = _Writer(Path(output_path)) if output_path else None
    collected: list[pd.DataFrame] = []
    offset = 0
    progress = _progress(tables.count_rows(input_path), quiet)
    try:
        for chunk in read_chunks(input_path, chunk_rows):
            chunk = chunk.reset_index(drop=True)
            try:
                if router is not None:
                    predictions = router.predict(
                        chunk, params, on_error="mark" if on_error == "mark" else "raise"
                    )
                else:
                    predictions = model.predict(chunk, params=params)
            except InvalidInputError as err:
                row = f"data row {offset + err.row}" if err.row is not None else f"chunk at data row {offset}"
                message = str(err).replace(f"row {err.row}", row, 1) if err.row is not None else str(err)
                raise ScoringError(f"{input_path}: {message}") from None
            scored = pd.concat([chunk, predictions], axis=1)
            offset += len(chunk)
            progress.update(len(chunk))
            if writer is None:
                collected.append(scored)
            else:
                writer.write(scored)
        if writer is None:
            return pd.concat(collected, ignore_index=True) if collected else pd.DataFrame()
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        progress.close()
    _logger.info("Scored %d rows from %s into %s", offset, input_path, output_path)
    return offset
