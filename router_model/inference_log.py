"""The inference log: every answered row, written off the request path.

The model server hands each answered batch to :meth:`InferenceLog.submit`, which only puts it on a
bounded queue; a writer thread turns batches into rows and writes them in batches, to Parquet
files under ``<data dir>/inference/`` (the default) or to a PostgreSQL table when
``MUSHROOM_INFERENCE_LOG`` is a ``postgresql://`` URL (``off`` disables the log). When the queue is
full the batch is dropped and counted (:attr:`InferenceLog.dropped`, and ``/metrics`` through
:attr:`InferenceLog.on_drop`), never blocking a request.
:meth:`InferenceLog.close` writes what is queued: the model server runs it when it shuts down
(a SIGTERM included, see :func:`router_model.server_guard.on_shutdown`), and any other process at
interpreter exit.

One row per answered input row: ``time`` (UTC), ``request_id``, ``model_run_id`` (the MLflow run
that logged the served model: the registry maps it to a version), ``route``, ``threshold``, the
eight features as the model read them (canonical names; NaN where a row did not give one),
``poisonous_probability`` and ``prediction``. Refused requests are not logged.

:func:`read_rows` reads the log back for the drift monitor (:mod:`router_model.monitoring`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from router_model import features as F
from router_model import settings

_logger = logging.getLogger(__name__)

#: ``MUSHROOM_INFERENCE_LOG`` value that disables the log.
OFF = "off"
#: Table the PostgreSQL sink writes (created on first use).
TABLE = "mushroom_router_inference"
#: Batches waiting for the writer; beyond this a batch is dropped, not waited for.
QUEUE_BATCHES = 10_000
#: The writer writes at least this often while rows arrive, and when this many rows are waiting.
FLUSH_SECONDS = 5.0
FLUSH_ROWS = 50_000

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


@dataclass(frozen=True)
class Batch:
    """One answered request, as the router saw it (arrays, no per-row Python objects)."""

    time: float
    request_id: str
    model_run_id: str
    threshold: float | np.ndarray  # per row for "threshold": "safe"
    matrix: np.ndarray
    routes: np.ndarray
    poisonous: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The batch as log rows (:data:`COLUMNS`)."""
        frame = pd.DataFrame(self.matrix, columns=list(F.ALL_FEATURES))
        frame.insert(0, "time", pd.Timestamp(self.time, unit="s", tz="UTC"))
        frame.insert(1, "request_id", self.request_id)
        frame.insert(2, "model_run_id", self.model_run_id)
        frame.insert(3, "route", np.asarray(F.ROUTES, dtype=object)[self.routes])
        frame.insert(4, "threshold", self.threshold)
        frame["poisonous_probability"] = self.poisonous
        poisonous = self.poisonous >= self.threshold
        frame["prediction"] = np.where(poisonous, F.LABELS[F.LABEL_POISONOUS], F.LABELS[F.LABEL_EDIBLE])
        return frame


class Sink(Protocol):
    """Where log rows go."""

    def write(self, frame: pd.DataFrame) -> None:
        """Write rows (:data:`COLUMNS`)."""


class ParquetSink:
    """One Parquet file per flush, ``part-<utc time>-<pid>-<n>.parquet``, renamed into place whole.

    Args:
        folder: Where the files go (created on first write).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._count = 0

    def write(self, frame: pd.DataFrame) -> None:
        """Write ``frame`` as a new file; readers never see a partial one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.folder / f"part-{stamp}-{os.getpid()}-{self._count}.parquet"
        partial = target.with_suffix(".partial")
        frame.to_parquet(partial, index=False)
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

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``, creating the table on first use."""
        from psycopg2.extras import execute_values

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
        max_batches: Queue bound; a full queue drops the batch (counted), never blocks.
        flush_seconds: Longest time rows wait before they are written.
    """

    def __init__(
        self, sink: Sink, max_batches: int = QUEUE_BATCHES, flush_seconds: float = FLUSH_SECONDS
    ) -> None:
        self.sink = sink
        self.flush_seconds = flush_seconds
        self.dropped = 0
        #: Called with the number of rows each time rows are dropped (the server's ``/metrics``).
        self.on_drop: Callable[[int], None] | None = None
        self.written = 0
        self._queue: queue.Queue[Batch | None] = queue.Queue(max_batches)
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, batch: Batch) -> bool:
        """Queue an answered batch; ``False`` (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self._dropped(len(batch.poisonous))
            return False
        return True

    def _run(self) -> None:
        pending: list[Batch] = []
        rows = 0
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = ...
            if isinstance(item, Batch):
                pending.append(item)
                rows += len(item.poisonous)
            stop = item is None
            if pending and (stop or rows >= FLUSH_ROWS or time.monotonic() >= deadline):
                self._write(pending)
                pending, rows = [], 0
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + self.flush_seconds
            if stop:
                return

    def _write(self, batches: list[Batch]) -> None:
        frame = pd.concat([b.frame() for b in batches], ignore_index=True)
        try:
            self.sink.write(frame)
        except Exception:  # a log outage must not take the server down: count and say so
            self._dropped(len(frame))
            _logger.exception("Inference log: could not write %d rows; dropped", len(frame))
            return
        self.written += len(frame)

    def _dropped(self, rows: int) -> None:
        self.dropped += rows
        if self.on_drop is not None:
            self.on_drop(rows)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)  # after every queued batch
        self._thread.join(timeout)


_active: InferenceLog | None = None
_lock = threading.Lock()


def active() -> InferenceLog | None:
    """The process's inference log, started on first use from the settings; ``None`` when off."""
    global _active
    target = destination()
    if target.lower() == OFF:
        return None
    with _lock:
        if _active is None:
            _active = InferenceLog(sink_for(target))
            atexit.register(_active.close)
            _logger.info("Inference log: %s", settings.redacted(target))
    return _active


def new_request_id() -> str:
    """A request id for a batch (the scoring server gives the model none)."""
    return uuid.uuid4().hex


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
