"""The inference log: every answered row, written off the request path.

:meth:`InferenceLog.submit` only puts a copy of an answered batch on a bounded queue; a writer
thread turns batches into rows and writes them in batches, to Parquet files under
``<data dir>/inference/`` (the default) or to a PostgreSQL table when ``MUSHROOM_INFERENCE_LOG``
is a ``postgresql://`` URL (``off`` disables the log). When the queue is full the batch is
dropped and counted (:attr:`InferenceLog.dropped`, and ``/metrics`` through
:attr:`InferenceLog.on_drop`), never blocking a request. :meth:`InferenceLog.close` writes what
is queued. The model server keeps no such thread of its own: its requests hand their batches
through shared memory to a writer process, which runs an :class:`InferenceLog`
(:mod:`router_model.log_process`).

One row per answered input row: ``time`` (UTC), ``request_id``, ``model_run_id`` (the MLflow run
that logged the served model: the registry maps it to a version), ``route``, ``threshold``, the
eight features as the model read them (canonical names; NaN where a row did not give one),
``poisonous_probability`` and ``prediction``. Refused requests are not logged.

:func:`read_rows` reads the log back for the drift monitor (:mod:`router_model.monitoring`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from router_model import features as F
from router_model import settings

_logger = logging.getLogger(__name__)

#: ``MUSHROOM_INFERENCE_LOG`` value that disables the log.
OFF = "off"
#: Table the PostgreSQL sink writes (created on first use).
TABLE = "mushroom_router_inference"
#: Batches and rows waiting for the writer; beyond either a batch is dropped, not waited for. Both,
#: so that the memory the queue holds is bounded for single rows (a batch's objects) and for big
#: batches (their arrays, about 80 bytes a row) alike, while a stalled sink (a database that does
#: not answer) holds up the writer.
QUEUE_BATCHES = 10_000
QUEUE_ROWS = 1_000_000
#: The writer writes at least this often while rows arrive, and when this many rows are waiting
#: (a file costs the writer about a millisecond whatever its size, so not many small ones).
FLUSH_SECONDS = 5.0
FLUSH_ROWS = 200_000
#: Rows the Parquet writer hands its encoders at a time (fewer, longer runs cost it less).
WRITE_BATCH_ROWS = 65_536
#: How often the writer takes the queued batches (and looks at the two limits above).
POLL_SECONDS = 0.25

#: Columns of a logged row, in order; the features are float64 (NaN = not given).
COLUMNS: tuple[str, ...] = (
    "time",
    "request_id",
    "model_run_id",
    "route",
    "threshold",
    *F.ALL_FEATURES,
    "poisonous_probability",
    "prediction",
)

#: Columns with a few distinct values each, dictionary-encoded in the Parquet files.
FEW_VALUES: tuple[str, ...] = (
    "time",
    "request_id",
    "model_run_id",
    "route",
    "threshold",
    *(name for name in F.ALL_FEATURES if name in F.CATEGORY_CARDINALITY or name == F.SEASON),
    "prediction",
)
#: The other float columns (measured values and the probability): many distinct values, written
#: byte-stream-split (each value's bytes apart, by place), which LZ4 then compresses at a fraction
#: of its cost on the values as they are; some columns come out smaller, some larger
#: (docs/benchmarks.md).
SPLIT_FLOATS: tuple[str, ...] = tuple(name for name in COLUMNS if name not in FEW_VALUES)


@dataclass(slots=True)
class Batch:
    """One answered request, as the router saw it (arrays, no per-row Python objects).

    Made on the request path, so cheap to make: slots, not frozen (a frozen dataclass sets each
    field through ``object.__setattr__``). Nothing changes a batch once it is submitted.
    """

    time: float
    request_id: str
    model_run_id: str
    threshold: float | np.ndarray  # per row for "threshold": "safe"
    matrix: np.ndarray
    routes: np.ndarray
    poisonous: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The batch as log rows (:data:`COLUMNS`)."""
        return frame_of([self])

    def copied(self) -> Batch:
        """The batch holding copies of its arrays: a queued batch outlives the request's own."""
        threshold = self.threshold.copy() if isinstance(self.threshold, np.ndarray) else self.threshold
        return Batch(
            self.time,
            self.request_id,
            self.model_run_id,
            threshold,
            self.matrix.copy(),
            self.routes.copy(),
            self.poisonous.copy(),
        )


def _sizes(batches: Sequence[Batch]) -> np.ndarray:
    return np.fromiter((len(b.poisonous) for b in batches), dtype=np.int64, count=len(batches))


def _times_ns(batches: Sequence[Batch], sizes: np.ndarray) -> np.ndarray:
    """Each row's answer time as UTC nanoseconds (converted once per batch, then repeated per row)."""
    stamps = np.fromiter((b.time for b in batches), dtype=np.float64, count=len(batches))
    return np.repeat(pd.to_datetime(stamps, unit="s").as_unit("ns").asi8, sizes)


def _thresholds(batches: Sequence[Batch], sizes: np.ndarray) -> np.ndarray:
    """Each row's threshold: one per batch, repeated per row (or a batch's own array, for "safe")."""
    if not any(isinstance(b.threshold, np.ndarray) for b in batches):
        # The common case, one number a request: no array per batch, which for single-row
        # requests was most of the writer's work.
        values = np.fromiter((b.threshold for b in batches), dtype=np.float64, count=len(batches))
        return np.repeat(values, sizes)
    return np.concatenate(
        [
            np.broadcast_to(np.asarray(b.threshold, dtype=np.float64), n)
            for b, n in zip(batches, sizes, strict=True)
        ]
    )


class _Joined(NamedTuple):
    """The batches' per-row arrays, each joined once (what both sinks' tables are built from)."""

    sizes: np.ndarray
    routes: np.ndarray
    poisonous: np.ndarray
    threshold: np.ndarray
    features: np.ndarray  # one row per feature (F.ALL_FEATURES), each contiguous


def _joined(batches: Sequence[Batch]) -> _Joined:
    sizes = _sizes(batches)
    # Joined feature by feature in one pass: a row of the result is one feature's column, which
    # Arrow takes as it is; a column of a row-major matrix it would copy again.
    features = np.empty((len(F.ALL_FEATURES), int(sizes.sum())))
    np.concatenate([b.matrix.T for b in batches], axis=1, out=features)
    return _Joined(
        sizes,
        np.concatenate([b.routes for b in batches]),
        np.concatenate([b.poisonous for b in batches]).astype(np.float64, copy=False),
        _thresholds(batches, sizes),
        features,
    )


def frame_of(batches: Sequence[Batch]) -> pd.DataFrame:
    """Queued batches as one table of log rows (:data:`COLUMNS`), in order (what the PostgreSQL sink writes).

    Built column by column from the batches' arrays joined once, not table by table: a pandas
    table per single-row request cost the writer more than answering the request cost the server.
    """
    sizes, routes, poisonous, threshold, features = _joined(batches)

    def per_row(values: list[Any]) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=object), sizes)

    labels = np.asarray([F.LABELS[F.LABEL_EDIBLE], F.LABELS[F.LABEL_POISONOUS]], dtype=object)
    columns: dict[str, Any] = {
        "time": pd.to_datetime(_times_ns(batches, sizes), unit="ns", utc=True),
        "request_id": per_row([b.request_id for b in batches]),
        "model_run_id": per_row([b.model_run_id for b in batches]),
        "route": np.asarray(F.ROUTES, dtype=object)[routes],
        "threshold": threshold,
        **dict(zip(F.ALL_FEATURES, features, strict=True)),
        "poisonous_probability": poisonous,
        "prediction": labels[(poisonous >= threshold).astype(np.intp)],
    }
    return pd.DataFrame(columns, columns=list(COLUMNS))


def table_of(batches: Sequence[Batch]) -> pa.Table:
    """Queued batches as one Arrow table of log rows (:data:`COLUMNS`), in order (what the Parquet sink writes).

    No per-row Python object is made: text columns are dictionary arrays (indices into each
    column's few distinct values), the rest NumPy arrays handed to Arrow as they are. A feature a
    row did not give is a null, not a NaN: the file then holds no value for it, only its absence,
    which costs the writer less (each row lacks the other route's features); every other column
    is declared not null, so the file stores no presence for its values. Read back with pandas,
    the rows equal :func:`frame_of`'s (NaN where a row did not give a feature).
    """
    sizes, routes, poisonous, threshold, features = _joined(batches)
    which = pa.array(np.repeat(np.arange(len(batches), dtype=np.int32), sizes))

    def text(indices: pa.Array | np.ndarray, values: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string()))

    # One entry per served model, not per batch: the Parquet writer stores an Arrow dictionary as
    # it is only when its values are distinct, and otherwise encodes every row's text again.
    run_ids: dict[str, int] = {}
    run_of_batch = [run_ids.setdefault(b.model_run_id, len(run_ids)) for b in batches]
    is_poisonous = (poisonous >= threshold).astype(np.int32)
    columns = {
        "time": pa.array(_times_ns(batches, sizes), type=pa.timestamp("ns", tz="UTC")),
        "request_id": text(which, [b.request_id for b in batches]),
        "model_run_id": text(np.repeat(np.asarray(run_of_batch, dtype=np.int32), sizes), list(run_ids)),
        "route": text(routes.astype(np.int32), list(F.ROUTES)),
        "threshold": pa.array(threshold),
        **{
            name: pa.array(column, mask=np.isnan(column))
            for name, column in zip(F.ALL_FEATURES, features, strict=True)
        },
        "poisonous_probability": pa.array(poisonous),
        "prediction": text(is_poisonous, [F.LABELS[F.LABEL_EDIBLE], F.LABELS[F.LABEL_POISONOUS]]),
    }
    return pa.Table.from_arrays(list(columns.values()), schema=_arrow_schema())


def _arrow_schema() -> pa.Schema:
    """:func:`table_of`'s columns: only the features may be null (a row gives one route's)."""
    text = pa.dictionary(pa.int32(), pa.string())
    types = {
        "time": pa.timestamp("ns", tz="UTC"),
        "request_id": text,
        "model_run_id": text,
        "route": text,
        "prediction": text,
    }
    return pa.schema(
        pa.field(name, types.get(name, pa.float64()), nullable=name in F.ALL_FEATURES) for name in COLUMNS
    )


class Sink(Protocol):
    """Where log rows go."""

    def write(self, batches: Sequence[Batch]) -> None:
        """Write the rows of queued batches (:data:`COLUMNS`), in order."""


class ParquetSink:
    """One Parquet file per flush, ``part-<utc time>-<pid>-<n>.parquet``, renamed into place whole.

    Args:
        folder: Where the files go (created on first write).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._count = 0

    def write(self, batches: Sequence[Batch]) -> None:
        """Write the batches' rows as a new file (:func:`table_of`); readers never see a partial one.

        Dictionary-encoded where a column has a few values (:data:`FEW_VALUES`: the text
        columns, the category codes, the season, the threshold, the answer time of a batch),
        which makes the files several times smaller for little more time; the measured columns
        and the probability are written without one, since trying a dictionary on them costs the
        writer more than it saves, and byte-stream-split (:data:`SPLIT_FLOATS`). LZ4, statistics
        for ``time`` only (what a reader filters on), no Arrow schema stored, so readers get plain
        text columns, and values handed to the encoders in runs of :data:`WRITE_BATCH_ROWS`, not
        Arrow's default 1,024.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.folder / f"part-{stamp}-{os.getpid()}-{self._count}.parquet"
        partial = target.with_suffix(".partial")
        pq.write_table(
            table_of(batches),
            partial,
            compression="lz4",
            use_dictionary=list(FEW_VALUES),
            use_byte_stream_split=list(SPLIT_FLOATS),
            write_statistics=["time"],
            store_schema=False,
            write_batch_size=WRITE_BATCH_ROWS,
        )
        partial.replace(target)


class PostgresSink:
    """Rows appended to :data:`TABLE` in the database of a ``postgresql://`` URL.

    Args:
        url: ``postgresql://<user>:<password>@<host>:<port>/<database>``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._ready = False

    def _connect(self) -> Any:
        import psycopg2

        return psycopg2.connect(
            self.url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=10
        )

    def write(self, batches: Sequence[Batch]) -> None:
        """Append the batches' rows (:func:`frame_of`), creating the table on first use."""
        from psycopg2.extras import execute_values

        frame = frame_of(batches)
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        rows = [
            tuple(None if isinstance(v, float) and np.isnan(v) else v for v in row)
            for row in frame[list(COLUMNS)].astype(object).itertuples(index=False, name=None)
        ]
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                if not self._ready:
                    cur.execute(_create_table_sql())
                    self._ready = True
                execute_values(cur, f"INSERT INTO {TABLE} ({columns}) VALUES %s", rows, page_size=1000)
        finally:
            conn.close()


def _create_table_sql() -> str:
    features = ", ".join(f'"{c}" double precision' for c in F.ALL_FEATURES)
    return (
        f"CREATE TABLE IF NOT EXISTS {TABLE} (time timestamptz NOT NULL, request_id text NOT NULL, "
        f"model_run_id text, route text NOT NULL, threshold double precision NOT NULL, {features}, "
        "poisonous_probability double precision NOT NULL, prediction text NOT NULL)"
    )


def destination() -> str:
    """Where the log goes: ``off``, a ``postgresql://`` URL, or a folder (``MUSHROOM_INFERENCE_LOG``).

    Returns:
        The setting, defaulting to ``<data dir>/inference``.
    """
    return settings.env("MUSHROOM_INFERENCE_LOG") or str(settings.data_dir() / "inference")


def _is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://"))


def sink_for(target: str) -> Sink:
    """The sink for a :func:`destination` value (not ``off``)."""
    return PostgresSink(target) if _is_postgres(target) else ParquetSink(Path(target))


class InferenceLog:
    """A bounded queue of answered batches and the thread that writes them.

    Args:
        sink: Where rows go.
        max_batches: Queue bound in batches; a full queue drops the batch (counted), never blocks.
        max_rows: Queue bound in rows, likewise (a batch of more rows is taken into an empty queue).
        flush_seconds: Longest time rows wait before they are written.
    """

    def __init__(
        self,
        sink: Sink,
        max_batches: int = QUEUE_BATCHES,
        max_rows: int = QUEUE_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.sink = sink
        self.flush_seconds = flush_seconds
        self.dropped = 0
        #: Called with the number of rows each time rows are dropped (the server's ``/metrics``).
        self.on_drop: Callable[[int], None] | None = None
        self.written = 0
        # A deque and a plain lock, not a queue.Queue: the request path takes one uncontended
        # lock (the queued rows are counted under it, by request threads and the writer) and no
        # condition variable.
        self.max_batches = max_batches
        self.max_rows = max_rows
        self._queue: deque[Batch | None] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._closed = False
        self._wake = threading.Event()
        self._thread.start()

    def submit(self, batch: Batch) -> bool:
        """Queue a copy of an answered batch; ``False`` (and counted as dropped) when the queue is full.

        A copy: the batch waits for the writer up to a flush, and a request's own arrays kept that
        long cost a busy server far more than copying them (its next requests then work in fresh
        memory; docs/benchmarks.md has the figures).
        """
        rows = len(batch.poisonous)
        batch = batch.copied()
        with self._lock:
            # A batch bigger than max_rows still goes into an empty queue: refusing it would
            # drop every request of that size for good.
            full = len(self._queue) >= self.max_batches or (
                self._queued_rows > 0 and self._queued_rows + rows > self.max_rows
            )
            if not full:
                self._queued_rows += rows
                self._queue.append(batch)
        if full:
            self._dropped(rows)
            return False
        return True

    def _run(self) -> None:
        pending: list[Batch] = []
        rows = 0
        deadline = time.monotonic() + self.flush_seconds
        stop = False
        while not stop:
            # Not woken per request: every wake-up would hand the interpreter from the request's
            # thread to this one and back. It takes what is queued a few times a second instead.
            self._wake.wait(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            taken = 0
            while self._queue:
                item = self._queue.popleft()
                if item is None:  # close(): after every batch queued before it
                    stop = True
                    break
                pending.append(item)
                taken += len(item.poisonous)
            with self._lock:
                self._queued_rows -= taken
            rows += taken
            now = time.monotonic()
            if pending and (stop or rows >= FLUSH_ROWS or now >= deadline):
                self._write(pending)
                pending, rows = [], 0
            if now >= deadline:
                deadline = now + self.flush_seconds

    def _write(self, batches: list[Batch]) -> None:
        rows = int(_sizes(batches).sum())
        try:
            self.sink.write(batches)
        except Exception:  # a log outage must not take the server down: count and say so
            self._dropped(rows)
            _logger.exception("Inference log: could not write %d rows; dropped", rows)
            return
        self.written += rows

    def _dropped(self, rows: int) -> None:
        self.dropped += rows
        if self.on_drop is not None:
            self.on_drop(rows)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.append(None)  # after every queued batch
        self._wake.set()
        self._thread.join(timeout)


#: This process's random half of request ids and its count of them; made on first use, and anew
#: in a forked child (which would otherwise repeat its parent's ids).
_ids: tuple[str, Iterator[int]] | None = None


def _forget_ids() -> None:
    global _ids
    _ids = None


os.register_at_fork(after_in_child=_forget_ids)


def new_request_id() -> str:
    """A request id for a batch (the scoring server gives the model none): 32 hex digits, unique.

    A random half per process and a count, not ``uuid4`` per request, which reads the system's
    random source on every request.
    """
    global _ids
    if _ids is None:
        _ids = (uuid.uuid4().hex[:16], itertools.count())
    prefix, counter = _ids
    return f"{prefix}{next(counter):016x}"


def read_rows(since: datetime | None = None, target: str | None = None) -> pd.DataFrame:
    """Logged rows with ``time > since`` (all when ``None``), oldest first.

    Args:
        since: Exclusive lower bound (timezone-aware).
        target: A :func:`destination` value (default: the setting).

    Returns:
        A frame with :data:`COLUMNS` (empty when nothing is logged).
    """
    target = target or destination()
    if _is_postgres(target):
        frame = _read_postgres(target, since)
    else:
        parts = sorted(Path(target).glob("part-*.parquet")) if Path(target).is_dir() else []
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else _empty()
        if since is not None and len(frame):
            frame = frame[frame["time"] > pd.Timestamp(since)]
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS}).astype(
        {
            "time": "datetime64[us, UTC]",
            "request_id": object,
            "model_run_id": object,
            "route": object,
            "prediction": object,
        }
    )


def _read_postgres(url: str, since: datetime | None) -> pd.DataFrame:
    sink = PostgresSink(url)
    with contextlib.closing(sink._connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (TABLE,))
        if cur.fetchone()[0] is None:
            return _empty()
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        where, args = ("WHERE time > %s", (since,)) if since is not None else ("", ())
        cur.execute(f"SELECT {columns} FROM {TABLE} {where} ORDER BY time", args)
        frame = pd.DataFrame(cur.fetchall(), columns=list(COLUMNS))
    if frame.empty:
        return _empty()
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame.astype({c: float for c in (*F.ALL_FEATURES, "threshold", "poisonous_probability")})
