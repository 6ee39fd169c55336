"""Batch scoring of files with the registered router, in constant memory.

``mushroom-router predict INPUT [OUTPUT]`` reads CSV or Parquet in chunks (JSON whole), routes
every chunk (rows of both kinds may be mixed), and writes the input columns with the predictions
beside them: CSV, Parquet or JSON by the output's extension (CSV and JSON may be compressed:
``scored.csv.gz``). Memory stays flat as the file grows; only one chunk is in memory at a time.

The input columns come out exactly as they went in, whatever the chunk size: they are read as
the file gives them (:func:`router_model.tables.iter_table` with ``as_given``), so a CSV's ``007``
stays ``007`` and ``1520`` never becomes ``1520.0``, and a Parquet file's column types are kept.
A Parquet output's schema is fixed before its first chunk is written.

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
from typing import IO, Any

import numpy as np
import pandas as pd

from router_model import features as F
from router_model import settings, tables
from router_model.errors import RouterError
from router_model.validation import InvalidInputError

_logger = logging.getLogger(__name__)

_MISSING_TEXT = sorted(tables.MISSING_TEXT)


class ScoringError(RouterError):
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


def read_chunks(
    path: str | os.PathLike[str], chunk_rows: int = settings.DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Yield the input in chunks, each value as the file gives it (see :mod:`router_model.tables`).

    Raises:
        ScoringError: If the file is missing or cannot be parsed.
    """
    if not Path(path).is_file():
        raise ScoringError(f"input file not found: {path}")
    try:
        yield from tables.iter_table(path, chunk_rows, as_given=True)
    except tables.TableError as err:
        raise ScoringError(str(err)) from None


def check_output(path: str | os.PathLike[str]) -> Path:
    """Refuse an output path that cannot be written, before any scoring starts.

    Raises:
        ScoringError: If ``path`` is a folder, its folder does not exist, or its name asks for a
            format that cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise ScoringError(
            f"output {path} is a folder; expected a file name ending {', '.join(tables.FORMATS)}"
        )
    if not path.parent.is_dir():
        raise ScoringError(f"output folder not found: {path.parent}")
    try:
        tables.table_format(path)
    except tables.TableError as err:
        raise ScoringError(str(err)) from None
    return path


def for_router(chunk: pd.DataFrame) -> pd.DataFrame:
    """The chunk as the router reads it: text feature columns parsed to numbers, when they all are.

    A CSV read as given is text. The router would parse numeric text itself, but value by value
    (about 50x slower than the rest of scoring); a text feature column whose every given cell is
    a plain number goes to it as float64 instead, parsed by Arrow (correctly rounded, as
    ``float()``). Any other column goes as text, so that the router names its bad cell. Missing
    value markers (:data:`tables.MISSING_TEXT`) are missing either way, as in ``pd.read_csv``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    converted: dict[object, pd.Series] = {}
    groups = F.canonical_columns(chunk.columns)
    for name in F.ALL_FEATURES:
        for label in groups.get(name, ()):
            column = chunk[label]
            if not isinstance(column.dtype, pd.StringDtype):
                continue
            cells = pa.array(column, from_pandas=True)
            given = pc.if_else(pc.is_in(cells, value_set=pa.array(_MISSING_TEXT, cells.type)), None, cells)
            try:
                numbers = pc.cast(given, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a bad cell: the router names it
                converted[label] = pd.Series(given.to_pandas(), index=column.index, dtype=object)
            else:
                converted[label] = pd.Series(numbers.to_numpy(zero_copy_only=False), index=column.index)
    if not converted:
        return chunk
    frame = chunk.copy(deep=False)
    for label, values in converted.items():
        frame[label] = values
    return frame


def explanations_as_json(predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions with each ``explanation`` as a JSON string (CSV and Parquet output).

    orjson writes every float in its shortest round-trip form, so the string parses back to the
    same doubles as in process. Rows without an explanation (marked errors) stay empty.
    """
    if F.EXPLANATION not in predictions.columns:
        return predictions
    import orjson

    text = [None if e is None else orjson.dumps(e).decode() for e in predictions[F.EXPLANATION].tolist()]
    return predictions.assign(**{F.EXPLANATION: pd.Series(text, index=predictions.index, dtype=object)})


def _json_value(value: Any) -> Any:
    """``orjson`` fallback for values it does not know (pandas' missing markers, timestamps)."""
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _arrow_predictions(predictions: pd.DataFrame) -> Any:
    """The prediction columns as an Arrow table whose types depend on their dtypes only.

    A chunk whose every row is good has an all-null ``error`` column (and one whose every row is
    bad all-null probabilities); inferred from the values, their type would be ``null`` and the
    next chunk could not be written.
    """
    import pyarrow as pa

    arrays, fields = [], []
    for name, column in predictions.items():
        kind = getattr(column.dtype, "kind", "O")
        if kind == "f":
            array = pa.array(column.to_numpy(dtype=np.float64), type=pa.float64(), from_pandas=True)
        elif kind in "iu" and not column.hasnans:
            array = pa.array(column.to_numpy(dtype=np.int64), type=pa.int64())
        elif isinstance(column.dtype, pd.CategoricalDtype):
            array = pa.array(column.array).cast(pa.string())
        else:
            array = pa.array(column.to_numpy(dtype=object, na_value=None), type=pa.string())
        arrays.append(array)
        fields.append(pa.field(str(name), array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class _Writer:
    """Appends scored chunks to a temporary file, renamed into place only when all went well."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = tables.table_format(path)
        self.tmp = path.with_name(path.name + ".partial")
        self.rows = 0
        self._text: IO[str] | None = None
        self._parquet: Any = None
        self._inputs: Any = None

    def write(self, chunk: pd.DataFrame, predictions: pd.DataFrame) -> None:
        if self.kind != tables.JSON:
            predictions = explanations_as_json(predictions)
        try:
            if self.kind == tables.PARQUET:
                self._write_parquet(chunk, predictions)
            elif self.kind == tables.JSON:
                self._write_json(pd.concat([chunk, predictions], axis=1))
            else:
                first = self._text is None
                scored = pd.concat([chunk, predictions], axis=1)
                scored.to_csv(self._open(), header=first, index=False)
        except OSError as err:
            raise ScoringError(f"cannot write {self.path}: {err}") from None
        self.rows += len(chunk)

    def _open(self) -> IO[str]:
        if self._text is None:
            self._text = tables.open_text(self.tmp, "w", like=self.path)
            if self.kind == tables.JSON:
                self._text.write("[")
        return self._text

    def _write_json(self, scored: pd.DataFrame) -> None:
        """Append the chunk's records; orjson writes the shortest text that reads back as the same float."""
        import orjson

        handle = self._open()
        if not len(scored):
            return
        names = list(scored.columns)
        columns = [scored.iloc[:, j].tolist() for j in range(len(names))]
        records = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
        text = orjson.dumps(records, default=_json_value, option=option).decode()
        # "[\n  {...},\n  {...}\n]": the records without the list's brackets, continuing the file's list.
        handle.write(("," if self.rows else "") + text[1:-2])

    def _write_parquet(self, chunk: pd.DataFrame, predictions: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            inputs = pa.Table.from_pandas(chunk, preserve_index=False)
            outputs = _arrow_predictions(predictions)
            if self._parquet is None:
                # The input columns' types are the file's own (read as given, they are the same
                # in every chunk); the predictions' come from their dtypes, not their values.
                self._inputs = inputs.schema.remove_metadata()
                self._parquet = pq.ParquetWriter(self.tmp, pa.schema([*self._inputs, *outputs.schema]))
            elif not inputs.schema.equals(self._inputs, check_metadata=False):
                inputs = inputs.cast(self._inputs)
            table = pa.Table.from_arrays([*inputs.columns, *outputs.columns], schema=self._parquet.schema)
            self._parquet.write_table(table)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise ScoringError(f"cannot write {self.path} as Parquet: {err}") from None

    def commit(self) -> None:
        try:
            if self.kind == tables.PARQUET:
                if self._parquet is None:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    pq.write_table(pa.table({}), self.tmp)
                else:
                    self._parquet.close()
            else:
                handle = self._open()
                if self.kind == tables.JSON:
                    handle.write("\n]\n")
                handle.close()
            self.tmp.replace(self.path)
        except OSError as err:
            raise ScoringError(f"cannot write {self.path}: {err}") from None

    def discard(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._text is not None:
            self._text.close()
        self.tmp.unlink(missing_ok=True)


def _progress(total: int | None, quiet: bool | None) -> Any:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if quiet is None else quiet
    return tqdm(
        total=total, unit="rows", unit_scale=True, dynamic_ncols=True, disable=disable, file=sys.stderr
    )


def _scored_chunks(
    input_path: str | os.PathLike[str],
    model_uri: str | None,
    params: dict[str, Any] | None,
    chunk_rows: int,
    on_error: str,
    quiet: bool | None,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Yield ``(input chunk as given, its predictions)`` for every chunk of the file."""
    if on_error not in F.ON_ERROR_MODES:
        raise ScoringError(f"on_error must be one of {list(F.ON_ERROR_MODES)}, got {on_error!r}")
    model = load_model(model_uri)
    router = getattr(model.unwrap_python_model(), "router", None)
    if router is None:
        raise ScoringError(f"{model_uri or settings.model_uri()} is not a mushroom router")
    offset = 0
    progress = _progress(tables.count_rows(input_path), quiet)
    try:
        for chunk in read_chunks(input_path, chunk_rows):
            chunk = chunk.reset_index(drop=True)
            try:
                predictions = router.predict(for_router(chunk), params, on_error=on_error)
            except InvalidInputError as err:
                row = f"data row {offset + err.row}" if err.row is not None else f"chunk at data row {offset}"
                message = str(err).replace(f"row {err.row}", row, 1) if err.row is not None else str(err)
                raise ScoringError(f"{input_path}: {message}") from None
            offset += len(chunk)
            progress.update(len(chunk))
            yield chunk, predictions
    finally:
        progress.close()


def score_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model_uri: str | None = None,
    params: dict[str, Any] | None = None,
    chunk_rows: int = settings.DEFAULT_CHUNK_ROWS,
    on_error: str = F.ON_ERROR_FAIL,
    quiet: bool | None = None,
) -> int:
    """Score a CSV, Parquet or JSON file chunk by chunk into an output file.

    Args:
        input_path: Rows to score.
        output_path: Where to write (format by extension: ``.csv``, ``.parquet``, ``.json``, CSV
            and JSON optionally compressed: ``.csv.gz``).
        model_uri: Router to use (default ``models:/mushroom-router@champion``).
        params: ``model`` / ``threshold`` / ``explain``. An ``explanation`` is written as a JSON
            string in CSV and Parquet, as a nested object in JSON.
        chunk_rows: Rows per chunk.
        on_error: ``"fail"`` stops at the first bad row; ``"mark"`` writes it with an ``error``.
        quiet: Hide the progress bar; by default it shows only when stderr is a terminal.

    Returns:
        The number of rows written.

    Raises:
        ScoringError: On unreadable input, an output that cannot be written, or (``"fail"``) a
            bad row, named by its 0-based data row number in the file; no output file is left
            behind.
    """
    writer = _Writer(check_output(output_path))
    rows = 0
    try:
        for chunk, predictions in _scored_chunks(input_path, model_uri, params, chunk_rows, on_error, quiet):
            writer.write(chunk, predictions)
            rows += len(chunk)
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    _logger.info("Scored %d rows from %s into %s", rows, input_path, output_path)
    return rows


def score_table(
    input_path: str | os.PathLike[str],
    model_uri: str | None = None,
    params: dict[str, Any] | None = None,
    chunk_rows: int = settings.DEFAULT_CHUNK_ROWS,
    on_error: str = F.ON_ERROR_FAIL,
    quiet: bool | None = None,
) -> pd.DataFrame:
    """Score a file into one frame in memory (for small inputs; arguments as :func:`score_file`).

    Returns:
        The input columns as the file gives them (CSV cells as text), then the predictions.

    Raises:
        ScoringError: As :func:`score_file`.
    """
    scored = [
        pd.concat([chunk, predictions], axis=1)
        for chunk, predictions in _scored_chunks(input_path, model_uri, params, chunk_rows, on_error, quiet)
    ]
    return pd.concat(scored, ignore_index=True) if scored else pd.DataFrame()
