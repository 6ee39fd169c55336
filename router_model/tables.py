"""Read tables of rows from CSV, Parquet or JSON files, whole or in chunks.

One reader for every file the project reads: training data (:mod:`router_model.data`) and files
to score (:mod:`router_model.scoring`). The format comes from the extension (``.parquet``,
``.json``, anything else is CSV); CSV and JSON may be compressed (``rows.csv.gz``, ``.bz2``,
``.xz``). CSV and Parquet are streamed in chunks; JSON is read whole and may be a list of records
or an MLflow-style ``{"dataframe_records": [...]}`` or
``{"dataframe_split": {"columns": [...], "data": [...]}}`` object, the bodies the model server
takes.

A column given twice (a repeated CSV header or Parquet field, a key repeated in one JSON object)
is refused: pandas would silently rename one copy (``cap-shape.1``) or keep the last.

``as_given=True`` reads the values exactly as the file has them, for writing them back
unchanged: CSV cells as text (``007`` stays ``007``, an empty cell stays empty), Parquet columns
with their own Arrow types (an integer column with nulls stays integer), JSON values as the Python
objects the JSON parser gives.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from router_model import settings
from router_model.errors import RouterError

CSV, PARQUET, JSON = ".csv", ".parquet", ".json"
FORMATS = (CSV, PARQUET, JSON)
_NAMES = {CSV: "CSV", PARQUET: "Parquet", JSON: "JSON"}
CHUNK_ROWS = settings.DEFAULT_CHUNK_ROWS

#: Compressions of CSV and JSON files, by the extension after the format's (``rows.csv.gz``).
COMPRESSIONS: Mapping[str, Callable[..., IO[Any]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

#: CSV cells that mean "not given" (pandas' default missing-value markers: ``""``, ``NA``,
#: ``null``, ``nan``, ...). A CSV read ``as_given`` keeps them as text; what scores them must
#: treat them as missing, as a plain ``pd.read_csv`` does.
MISSING_TEXT: frozenset[str] = frozenset(STR_NA_VALUES)

#: ``pd.read_csv`` options that keep every cell as the text in the file.
_AS_TEXT: Mapping[str, Any] = {"dtype": str, "keep_default_na": False}


class TableError(RouterError, ValueError):
    """A file cannot be read as a table; the message names the file and the reason."""


def _split_name(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    name = Path(path).name.lower()
    packed = next((suffix for suffix in COMPRESSIONS if name.endswith(suffix)), None)
    suffix = Path(name[: -len(packed)] if packed else name).suffix
    return (suffix if suffix in FORMATS else CSV), packed


def table_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` by its extension: one of :data:`FORMATS` (CSV when unknown).

    A compression extension after it is allowed for CSV and JSON (``rows.csv.gz`` is CSV).

    Raises:
        TableError: For a compressed Parquet name (``rows.parquet.gz``): Parquet compresses its
            own pages, and a compressed stream cannot be read in chunks.
    """
    kind, packed = _split_name(path)
    if kind == PARQUET and packed:
        raise TableError(f"{path}: Parquet files compress their own data; name it {Path(path).stem}")
    return kind


def open_text(
    path: str | os.PathLike[str], mode: str = "r", like: str | os.PathLike[str] | None = None
) -> IO[str]:
    """Open a CSV or JSON file as UTF-8 text, through the compression its name says.

    Args:
        path: The file.
        mode: ``"r"``, ``"w"`` or ``"a"``.
        like: Take the compression from this name instead (a temporary file written for it).
    """
    _, packed = _split_name(like if like is not None else path)
    encoding = "utf-8-sig" if mode.startswith("r") else "utf-8"
    if packed is None:
        return open(path, mode, encoding=encoding, newline="")
    return COMPRESSIONS[packed](path, mode + "t", encoding=encoding, newline="")


def _refuse_repeated(path: Path, columns: Iterable[object]) -> None:
    repeated = [column for column, n in Counter(columns).items() if n > 1]
    if repeated:
        raise TableError(f"{path}: column(s) {repeated} given more than once; give each column once")


class _RepeatedKeysError(ValueError):
    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys)
        self.keys = keys


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: a key given twice in one object is an error, not "the last wins"."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        raise _RepeatedKeysError([key for key, n in Counter(key for key, _ in pairs).items() if n > 1])
    return obj


def _json_frame(path: Path, as_given: bool = False) -> pd.DataFrame:
    with _parsing(path, JSON), open_text(path) as handle:
        text = handle.read()
    try:
        payload = json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKeysError as err:
        raise TableError(f"{path}: column(s) {err.keys} given more than once in one record") from None
    except ValueError as err:
        raise TableError(f"{path} is not valid JSON: {err}") from None
    # Object columns keep each value as parsed: an integer column with a null stays integers.
    dtype = object if as_given else None
    try:
        if isinstance(payload, dict) and isinstance(payload.get("dataframe_split"), dict):
            split = payload["dataframe_split"]
            if isinstance(split.get("columns"), list):
                _refuse_repeated(path, split["columns"])
            return pd.DataFrame(split.get("data", []), columns=split.get("columns"), dtype=dtype)
        if isinstance(payload, dict) and "dataframe_records" in payload:
            payload = payload["dataframe_records"]
        if isinstance(payload, list) and all(isinstance(row, dict) for row in payload):
            return pd.DataFrame(payload, dtype=dtype)
    except TableError:
        raise
    except (ValueError, TypeError) as err:
        raise TableError(f"{path}: {err}") from None
    raise TableError(f"{path}: expected a list of records, or a dataframe_records or dataframe_split object")


def _existing(path: str | os.PathLike[str]) -> tuple[Path, str]:
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise TableError(f"file not found: {path}")
    return path, kind


@contextlib.contextmanager
def _parsing(path: Path, kind: str) -> Iterator[None]:
    """Turn a parser's failure into a :class:`TableError` naming the file and its format."""
    try:
        yield
    except TableError:
        raise
    # pyarrow's errors subclass these (ArrowInvalid: ValueError, ArrowIOError: OSError, ...);
    # a truncated or foreign compressed stream raises EOFError, OSError or LZMAError.
    except (ValueError, TypeError, NotImplementedError, OSError, EOFError, lzma.LZMAError) as err:
        raise TableError(f"cannot read {path} as {_NAMES[kind]}: {err}") from None


def _csv_header(path: Path) -> list[object]:
    """The header as written: pandas' own parser, without its renaming of repeated names."""
    first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return first.iloc[0].tolist() if len(first) else []


def iter_table(
    path: str | os.PathLike[str], chunk_rows: int = CHUNK_ROWS, *, as_given: bool = False
) -> Iterator[pd.DataFrame]:
    """Yield the rows of a file in chunks of at most ``chunk_rows`` (JSON: one chunk).

    Args:
        path: A CSV, Parquet or JSON file.
        chunk_rows: Rows per chunk for CSV and Parquet.
        as_given: Keep the values as the file has them (see the module docstring); every chunk
            then has the same column types.

    Raises:
        TableError: If the file is missing, cannot be parsed in its format, or gives a column
            twice.
    """
    path, kind = _existing(path)
    if kind == JSON:
        yield _json_frame(path, as_given)
        return
    with _parsing(path, kind):
        if kind == PARQUET:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            _refuse_repeated(path, parquet.schema_arrow.names)
            mapper = pd.ArrowDtype if as_given else None
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas(types_mapper=mapper)
        else:
            _refuse_repeated(path, _csv_header(path))
            yield from pd.read_csv(path, chunksize=chunk_rows, **(_AS_TEXT if as_given else {}))


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a whole file (formats as :func:`iter_table`) into one frame, in one parser call.

    Raises:
        TableError: If the file is missing, cannot be parsed in its format, or gives a column
            twice.
    """
    path, kind = _existing(path)
    if kind == JSON:
        return _json_frame(path)
    with _parsing(path, kind):
        if kind == PARQUET:
            import pyarrow.parquet as pq

            _refuse_repeated(path, pq.ParquetFile(path).schema_arrow.names)
            return pd.read_parquet(path)
        _refuse_repeated(path, _csv_header(path))
        return pd.read_csv(path)


def count_rows(path: str | os.PathLike[str]) -> int | None:
    """Rows in a Parquet file from its metadata (``None`` for other formats)."""
    if table_format(path) != PARQUET:
        return None
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
