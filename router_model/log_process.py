"""The inference log's writer process, fed through shared memory by the model server's requests.

A writer thread inside the model server costs its requests throughput, though the writing itself
fits on another core: what costs is a second thread in the server, not the writer's work
(docs/benchmarks.md, "What the inference log costs the model server", has the figures). So the
server runs no thread for the log. The request path copies each answered batch into a ring buffer
in shared memory (:class:`Ring`: no lock shared with another process, no system call), and a
process of the log's own (:func:`start_writer`, started by the server's first logged request) reads
the ring a few times a second and hands the batches to an
:class:`~router_model.inference_log.InferenceLog`, whose thread writes them to the sink as in any
other process.

* A full ring drops the batch and counts it, never blocking a request (as a full queue does).
* The writer process ignores SIGINT and SIGTERM, which the server's process group gets: it writes
  what the ring holds and exits when the server closes the log (:meth:`ProcessLog.close`, run when
  the server shuts down), or when the server is gone.
* A writer process that died is started again by a later request; what the ring held is kept.
* Rows the writer process could not write (a failing sink, its own queue full) come back to the
  server's count of dropped rows, and so to ``/metrics``, through the ring's control words.

Memory order: the request path writes a record and then ``head``; the writer process reads
``head``, then the records, then writes ``tail``. x86-64 keeps stores in order and loads in order
and does not move a store before an earlier load, so each side sees the other's writes in that
order without a fence. Other processors need fences Python does not offer: there
(:func:`supported` is false) the server keeps the log's writer thread.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import math
import mmap
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from router_model import features as F
from router_model import inference_log, settings
from router_model.errors import RouterError
from router_model.inference_log import Batch, InferenceLog

_logger = logging.getLogger(__name__)

#: Bytes of the ring's records: about 380,000 rows in 1,000-row batches, 130,000 single-row batches.
RING_BYTES = 32 << 20
#: Rows of one record at most: a bigger batch goes into the ring as several, each a batch of the request.
RECORD_ROWS = 65_536
#: Seconds the server waits, when it closes the log, for the writer process to write what it holds.
CLOSE_SECONDS = 30.0
#: Seconds between two looks (a system call each, on the request path) at whether the writer runs.
CHECK_SECONDS = 1.0
#: Up to this many rows (and one threshold) a record is packed whole by one struct from the rows'
#: values; a bigger one is copied array by array, in place (no Python number a value).
SMALL_RECORD_ROWS = 8

# The control block: int64 words before the records.
_HEAD, _TAIL, _CLOSED, _WRITTEN, _DROPPED, _CAPACITY, _MAGIC = range(7)
_CONTROL_BYTES = 64
_MAGIC_VALUE = 0x3147_4F4C_4853_554D  # b"MUSHLOG1", little-endian
#: Records start on this many bytes, so the mark of a padded end always fits.
_ALIGN = 16
#: A record's length in bytes and its rows; rows -1 marks padding up to the end of the ring.
_MARK = struct.Struct("<qq")
#: What follows the mark in a record's header: the answer time, the threshold (NaN: one per row
#: follows), the lengths of the request id and the model's run id, and the two ids. The same for
#: every record of a batch, so packed once a batch.
_INFO = struct.Struct("<ddBB6x64s64s")
#: A record's header: the mark, then the info.
_HEADER = struct.Struct(_MARK.format + _INFO.format[1:])
_IDS = 64
_N_FEATURES = len(F.ALL_FEATURES)


def supported() -> bool:
    """Whether this machine keeps the order the ring relies on (x86-64, POSIX; see the module doc)."""
    return os.name == "posix" and platform.machine().lower() in {"x86_64", "amd64"}


@cache
def _small_record(rows: int) -> tuple[struct.Struct, int]:
    """A whole record of ``rows`` rows and one threshold as one struct, and the record's bytes.

    Header, features, probabilities, routes: the layout :meth:`Ring._put_arrays` writes.
    """
    record = struct.Struct(f"{_HEADER.format}{rows * (_N_FEATURES + 1)}d{rows}b")
    return record, _record_bytes(rows, False)


def _record_bytes(rows: int, per_row_threshold: bool) -> int:
    floats = rows * (_N_FEATURES + 1 + per_row_threshold)
    size = _HEADER.size + 8 * floats + rows  # the routes, one byte each
    return -(-size // _ALIGN) * _ALIGN


class RingFormatError(RouterError, ValueError):
    """A file descriptor that holds no inference-log ring, or a damaged one; the message names it."""


class Ring:
    """Answered batches in shared memory, from one writer (the request path) to one reader.

    Positions are byte counts since the ring was made, only ever growing: ``head`` (the end of
    what was written) and ``tail`` (the end of what was read); a record lies at ``position %
    capacity``, whole (the end of the ring is padded when it does not fit there).

    Args:
        fd: A file descriptor of a shared-memory file holding a ring (:meth:`create`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, os.fstat(fd).st_size)
        memory = np.frombuffer(self._map, dtype=np.uint8)
        # The control words as a memoryview, not a NumPy array: reading one gives a Python int
        # and writing one takes it, without a NumPy scalar each time (the request path does
        # several a request).
        self._control = memoryview(self._map)[:_CONTROL_BYTES].cast("q")
        self._records = memory[_CONTROL_BYTES:]
        # The same bytes as a memoryview: a struct packs into it, and an array copied in through
        # it is one memcpy, cheaper than NumPy's indexing.
        self._bytes = memoryview(self._map)[_CONTROL_BYTES:]
        self.capacity = len(self._records)
        self.record_rows = RECORD_ROWS
        self._run_id = ("", b"")  # the last run id a batch gave, and as a record holds it

    @classmethod
    def create(cls, capacity: int = RING_BYTES, record_rows: int = RECORD_ROWS) -> Ring:
        """A new, empty ring of ``capacity`` bytes of records, in memory only (a ``memfd``).

        Args:
            capacity: Bytes of records.
            record_rows: Rows of one record at most (:meth:`put` cuts bigger batches).

        Raises:
            ValueError: Naming ``capacity``, when it is not a multiple of 16 bytes or holds no
                record of ``record_rows`` rows.
        """
        least = _record_bytes(record_rows, True)
        if capacity % _ALIGN:
            raise ValueError(f"ring capacity {capacity} is not a multiple of {_ALIGN} bytes")
        if capacity < least:
            raise ValueError(
                f"ring capacity {capacity} holds no record of {record_rows} rows: it needs at least {least} bytes"
            )
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("mushroom-inference-log")
        else:  # macOS: an unlinked temporary file
            handle, name = tempfile.mkstemp(prefix="mushroom-inference-log-")
            os.unlink(name)
            fd = handle
        os.ftruncate(fd, _CONTROL_BYTES + capacity)
        ring = cls(fd)
        ring.record_rows = record_rows
        ring._control[_CAPACITY] = capacity
        ring._control[_MAGIC] = _MAGIC_VALUE
        return ring

    @classmethod
    def attach(cls, fd: int) -> Ring:
        """The ring another process made (:meth:`create`), from its inherited file descriptor.

        Raises:
            RingFormatError: Naming ``fd``, when it holds no ring.
        """
        try:
            ring = cls(fd)
        except (OSError, ValueError) as exc:
            raise RingFormatError(f"file descriptor {fd} holds no inference-log ring: {exc}") from exc
        if ring._control[_MAGIC] != _MAGIC_VALUE or ring._control[_CAPACITY] != ring.capacity:
            raise RingFormatError(f"file descriptor {fd} holds no inference-log ring (no ring header)")
        return ring

    def prefault(self) -> None:
        """Touch every page of an empty ring now, so that no later write faults one in.

        A server pays one page fault per page in its first ring's worth of rows, once in its life;
        a benchmark of the steady state pays them up front (bench/inference_log.py).

        Raises:
            RuntimeError: When the ring holds records: only an empty ring may be touched.
        """
        unread = self._control[_HEAD] - self._control[_TAIL]
        if unread:
            raise RuntimeError(
                f"prefault() on a ring holding records ({unread} bytes unread) would damage them"
            )
        self._records[:] = 0

    # The request path's side.

    def put(self, batch: Batch) -> int:
        """Copy ``batch`` into the ring, as one record per :attr:`record_rows` rows.

        Returns:
            The rows that did not fit (dropped): 0 when all of them went in.
        """
        n = len(batch.poisonous)
        if batch.model_run_id != self._run_id[0]:  # the same for every request until a switch
            self._run_id = batch.model_run_id, batch.model_run_id.encode()[:_IDS]
        request_id, run_id = batch.request_id.encode()[:_IDS], self._run_id[1]
        per_row = isinstance(batch.threshold, np.ndarray)  # "threshold": "safe", one a row
        if 0 < n <= SMALL_RECORD_ROWS and n <= self.record_rows and not per_row:
            # Most requests: the whole record packed by one struct from the rows' values. This
            # runs after the scoring, with the processor's caches full of it, where every step
            # costs several times what it costs alone, so it takes as few as it can
            # (docs/benchmarks.md).
            record, size = _small_record(n)
            place = self._reserve(size)
            if place is None:
                return n
            at, head = place
            record.pack_into(
                self._bytes,
                at,
                size,
                n,
                batch.time,
                float(batch.threshold),
                len(request_id),
                len(run_id),
                request_id,
                run_id,
                *batch.matrix.ravel().tolist(),
                *batch.poisonous.tolist(),
                *batch.routes.tolist(),
            )
            self._control[_HEAD] = head  # last: the record is whole before the reader sees it
            return 0
        thresholds = np.broadcast_to(np.asarray(batch.threshold, dtype=np.float64), (n,)) if per_row else None
        threshold = math.nan if per_row else float(batch.threshold)
        info = _INFO.pack(batch.time, threshold, len(request_id), len(run_id), request_id, run_id)
        lost = 0
        for start in range(0, n, self.record_rows):
            rows = slice(start, min(start + self.record_rows, n))
            arrays = [batch.matrix[rows], batch.poisonous[rows]]
            if thresholds is not None:
                arrays.append(thresholds[rows])
            if not self._put_arrays(info, rows.stop - start, arrays, batch.routes[rows]):
                lost += rows.stop - start
        return lost

    def _reserve(self, size: int) -> tuple[int, int] | None:
        """Where a record of ``size`` bytes goes (the ring's end padded when it does not fit there).

        Returns:
            The record's offset and the ``head`` to publish once it is written, or ``None`` when
            the ring is full.
        """
        head, tail = self._control[_HEAD], self._control[_TAIL]
        at = head % self.capacity
        pad = self.capacity - at if at + size > self.capacity else 0
        if head + pad + size - tail > self.capacity:
            return None
        if pad:
            _MARK.pack_into(self._bytes, at, pad, -1)
            at = 0
        return at, head + pad + size

    def _put_arrays(self, info: bytes, rows: int, floats: list[np.ndarray], routes: np.ndarray) -> bool:
        """One record of many rows: its header, then each array copied into place (no second copy)."""
        size = _record_bytes(rows, len(floats) == 3)
        place = self._reserve(size)
        if place is None:
            return False
        at, head = place
        self._bytes[at : at + _HEADER.size] = _MARK.pack(size, rows) + info
        at += _HEADER.size
        for values, dtype in [*((v, np.float64) for v in floats), (routes, np.int8)]:
            data = memoryview(np.ascontiguousarray(values, dtype=dtype)).cast("B")
            self._bytes[at : at + data.nbytes] = data
            at += data.nbytes
        self._control[_HEAD] = head  # last: the record is whole before the reader sees it
        return True

    def close_for_writer(self) -> None:
        """Tell the reader nothing more comes: it reads what is there and stops."""
        self._control[_CLOSED] = 1

    # The writer process's side.

    @property
    def closed(self) -> bool:
        """Whether the request path said nothing more comes (:meth:`close_for_writer`)."""
        return bool(self._control[_CLOSED])

    def take(self, consume: Callable[[Batch], object]) -> int:
        """Hand every record the ring holds to ``consume``, oldest first, then free their space.

        Args:
            consume: Called with each record as a batch whose arrays are views of the ring, valid
                only during the call (:meth:`InferenceLog.submit` keeps copies).

        Returns:
            The rows taken.
        """
        head, tail = self._control[_HEAD], self._control[_TAIL]
        taken = 0
        while tail < head:
            at = tail % self.capacity
            size, rows = _MARK.unpack_from(self._records, at)
            if size <= 0 or size % _ALIGN or size > self.capacity:
                raise RingFormatError(f"a record of {size} bytes at position {tail}: the ring is damaged")
            if rows >= 0:
                consume(self._batch(at))
                taken += rows
            tail += size
        self._control[_TAIL] = tail  # last: the space is reused only once its records were read
        return taken

    def _batch(self, at: int) -> Batch:
        _, rows, answered, threshold, id_len, run_len, request_id, run_id = _HEADER.unpack_from(
            self._records, at
        )
        at += _HEADER.size

        def floats(count: int) -> np.ndarray:
            nonlocal at
            out = self._records[at : at + 8 * count].view(np.float64)
            at += 8 * count
            return out

        matrix = floats(rows * _N_FEATURES).reshape(rows, _N_FEATURES)
        poisonous = floats(rows)
        thresholds = floats(rows) if math.isnan(threshold) else threshold
        routes = self._records[at : at + rows].view(np.int8)
        return Batch(
            answered,
            request_id[:id_len].decode(errors="replace"),  # cut at 64 bytes, maybe inside a character
            run_id[:run_len].decode(errors="replace"),
            thresholds,
            matrix,
            routes,
            poisonous,
        )

    @property
    def written(self) -> int:
        """Rows the writer process wrote (what it last said)."""
        return self._control[_WRITTEN]

    @property
    def dropped(self) -> int:
        """Rows the writer process dropped: it could not write them, or its queue was full."""
        return self._control[_DROPPED]

    def report(self, written: int, dropped: int) -> None:
        """The writer process's counts, for the request path's side (:attr:`written`, :attr:`dropped`)."""
        self._control[_WRITTEN] = written
        self._control[_DROPPED] = dropped

    def close(self) -> None:
        """Unmap the ring and close its file descriptor (no batch of :meth:`take` may be held)."""
        self._bytes.release()
        self._control.release()
        del self._records
        self._map.close()
        os.close(self.fd)


class ProcessLog:
    """The model server's inference log: the ring, and the writer process that empties it.

    What the server uses of :class:`~router_model.inference_log.InferenceLog`: :meth:`submit`,
    :meth:`close`, :attr:`dropped`, :attr:`written` and :attr:`on_drop`.

    Args:
        target: Where rows go (:func:`router_model.inference_log.destination`, not ``off``).
        capacity: Bytes of the ring's records.
    """

    def __init__(self, target: str, capacity: int = RING_BYTES) -> None:
        inference_log.sink_for(target)  # a bad target fails here, in the server, not in each writer
        self.target = target
        self.ring = Ring.create(capacity)
        self.dropped = 0
        #: Called with the number of rows each time rows are dropped (the server's ``/metrics``).
        self.on_drop: Callable[[int], None] | None = None
        # MLflow's own path answers on worker threads: one of them writes the ring at a time.
        self._lock = threading.Lock()
        self._writer: subprocess.Popen | None = None
        self._next_look = 0.0
        self._reported = 0
        self._closed = False
        _LOGS.add(self)

    def _forked(self) -> None:
        # A forked child must not write its parent's ring (one writer, no lock between processes):
        # it drops what it is given, and counts it.
        self._lock = threading.Lock()
        self._closed = True
        self._writer = None

    @property
    def written(self) -> int:
        """Rows the writer process wrote."""
        return self.ring.written

    def submit(self, batch: Batch) -> bool:
        """Copy an answered batch into the ring; ``False`` (and counted as dropped) when it is full."""
        with self._lock:
            if self._closed:
                lost = len(batch.poisonous)
            else:
                self._keep_writer()
                lost = self.ring.put(batch)
            lost += self._writer_dropped()
        if lost:
            self._dropped(lost)
        return not lost

    def _writer_dropped(self) -> int:
        """Rows the writer process dropped since the last look."""
        dropped = self.ring.dropped
        new, self._reported = dropped - self._reported, dropped
        return new

    def _keep_writer(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + CHECK_SECONDS
        if self._writer is not None:
            if self._writer.poll() is None:
                return
            _logger.error(
                "Inference log: the writer process exited with %s; starting another", self._writer.returncode
            )
        try:
            self._writer = start_writer(self.ring, self.target)
        except OSError:  # a request must not fail for the log: the ring holds its rows meanwhile
            self._writer = None
            _logger.exception(
                "Inference log: could not start the writer process; trying again in %.0fs", CHECK_SECONDS
            )

    def _dropped(self, rows: int) -> None:
        self.dropped += rows
        if self.on_drop is not None:
            self.on_drop(rows)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Have the writer process write what the ring holds and wait for it (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.ring.close_for_writer()
            writer = self._writer
            if writer is None:
                return  # nothing was ever submitted
            if writer.poll() is not None:  # died since the last look: one more empties the ring
                writer = start_writer(self.ring, self.target)
        try:
            writer.wait(timeout)
        except subprocess.TimeoutExpired:
            _logger.error("Inference log: the writer process did not finish in %.0fs; stopped", timeout)
            writer.kill()
            writer.wait()
        with self._lock:
            lost = self._writer_dropped()
        if lost:
            self._dropped(lost)


def start_writer(ring: Ring, target: str) -> subprocess.Popen:
    """Start a writer process (:func:`main`) on ``ring``, writing to ``target``.

    It runs this very package (the served model's copy of it), put first on its path: not
    ``python -m``, which would put the working directory first and run whatever package of the
    same name is there. The target goes in its environment, not its command line, where a
    database password would show.
    """
    package_root = str(Path(__file__).resolve().parents[1])
    code = f"import sys; sys.path[0] = {package_root!r}; from {__name__} import main; sys.exit(main())"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--fd", str(ring.fd), "--parent", str(os.getpid())],
        pass_fds=(ring.fd,),
        env={**os.environ, "MUSHROOM_INFERENCE_LOG": target},
        stdin=subprocess.DEVNULL,
    )


def run_writer(ring: Ring, log: InferenceLog, parent: int, poll_seconds: float) -> None:
    """Move batches from ``ring`` to ``log`` until the ring is closed or ``parent`` is gone, then close ``log``."""
    while True:
        # Closed (or orphaned) first, then take: what was written before the close is in the ring.
        done = ring.closed or os.getppid() != parent
        ring.take(log.submit)
        ring.report(log.written, log.dropped)
        if done:
            break
        time.sleep(poll_seconds)
    log.close()
    ring.report(log.written, log.dropped)


def main(argv: list[str] | None = None) -> int:
    """The writer process, reading the ring at ``--fd`` for the server ``--parent`` (:func:`start_writer`)."""
    parser = argparse.ArgumentParser(
        description="The inference log's writer process (started by the model server)."
    )
    parser.add_argument("--fd", type=int, required=True, help="the ring's inherited file descriptor")
    parser.add_argument("--parent", type=int, required=True, help="the server's process id")
    args = parser.parse_args(argv)
    # The server's process group gets the signals that stop it; this process stops when the server
    # closes the log, after writing what the ring holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        ring = Ring.attach(args.fd)
    except RingFormatError as exc:
        _logger.error("%s", exc)
        return 2
    log = InferenceLog(inference_log.sink_for(inference_log.destination()))
    # The server's id from its command line: a server gone before this started is seen as gone.
    run_writer(ring, log, args.parent, inference_log.POLL_SECONDS)
    return 0


_active: ProcessLog | InferenceLog | None = None
_lock = threading.Lock()
#: Every ProcessLog of this process, for a forked child to stop them writing its parent's rings.
_LOGS: weakref.WeakSet[ProcessLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _active
    _active = None  # the child's own log is started on its first use
    for log in list(_LOGS):
        log._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def active() -> ProcessLog | InferenceLog | None:
    """The server process's inference log, started on first use from the settings; ``None`` when off.

    A :class:`ProcessLog` where the ring is :func:`supported`, else the in-process
    :class:`~router_model.inference_log.InferenceLog` and its writer thread.
    """
    global _active
    target = inference_log.destination()
    if target.lower() == inference_log.OFF:
        return None
    with _lock:
        if _active is None:
            _active = ProcessLog(target) if supported() else InferenceLog(inference_log.sink_for(target))
            atexit.register(_active.close)
            _logger.info("Inference log: %s (%s)", settings.redacted(target), type(_active).__name__)
    return _active
