"""Prometheus metrics of the model server, answered on ``GET /metrics`` of its own port.

What is counted (README "Monitoring"):

* ``mushroom_router_rows_total{route, version}``: rows scored, by the route they took;
* ``mushroom_router_poisonous_rows_total{route}``: rows answered "poisonous" at their request's
  threshold;
* ``mushroom_router_requests_total{code}`` and the histogram ``mushroom_router_request_seconds``:
  ``/invocations`` requests by HTTP status, and their latency from the first byte of the request
  to the last of the answer (health checks and scrapes are not counted);
* ``mushroom_router_inference_log_dropped_rows_total``: rows the inference log dropped (a full
  queue or a failed write, :attr:`router_model.inference_log.InferenceLog.dropped`);
* ``mushroom_router_model_info{run_id, version}`` (always 1): the MLflow run that logged the
  served model and its registry version; ``mushroom_router_served_version`` the version as a
  number; ``mushroom_router_switches_total`` the supervisor's version switches.

The version and the switch count come from the process that started the server
(:func:`served_env`, set by :mod:`router_model.supervisor` and by ``mushroom-router serve``); a
server started otherwise (``mlflow models serve`` by hand) says ``version="unknown"``, and one not
supervised has no switch counter. The supervisor, not the server, knows about
switches: it hands its running count to each server it starts, and with each version it switches
in place (:mod:`router_model.hot_swap`, :meth:`ServerMetrics.now_serving`), so the counter goes
up by one with every switch.

``mlflow models serve --workers N`` runs N uvicorn processes and a scrape reaches one of them, so
the counters live in prometheus_client's multiprocess mode: each worker writes its own memory-mapped
files under one directory shared by the server's workers, and ``/metrics`` sums them all
(:func:`multiprocess_dir`). ``MUSHROOM_METRICS=off`` turns all of it off.

A request is counted in plain integers in its own process, and those are added to the value files
(:meth:`ServerMetrics.publish`) :data:`PUBLISH_SECONDS` after the first request counted since they
last were, when that process answers a scrape, and when it shuts down. Writing the files on every
request (a lock and a write into the memory map per value, several values a request) cost a
single-row server a few per cent of its throughput (``docs/benchmarks.md``). The publishing is a
timer on the server's own event loop (:meth:`ServerMetrics.publish_soon`), so the metrics add no
thread to the server (nothing to start, to stop or to join at shutdown). So with
``--workers`` > 1 a scrape answered by one worker sees the others' latest second a second late,
a worker gone quiet included. Adding a batch of counts to a histogram
has no public call in prometheus_client: :meth:`ServerMetrics.publish` adds to the histogram's
buckets and sum (``Histogram._buckets``, ``Histogram._sum``); tests/monitoring/test_metrics.py pins
them against prometheus_client's own ``observe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from router_model import features as F
from router_model import settings

_logger = logging.getLogger(__name__)

# The settings below are read with their literal names, which tests/code/test_compose.py scans for.
#: ``MUSHROOM_METRICS=off`` disables ``/metrics`` and the counting behind it.
METRICS_ENV = "MUSHROOM_METRICS"
OFF = "off"
#: prometheus_client reads it when it is first imported: a folder for the workers' value files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Set by the process that starts the server (:func:`served_env`).
VERSION_ENV = "MUSHROOM_SERVED_VERSION"
SWITCHES_ENV = "MUSHROOM_SERVED_SWITCHES"
UNKNOWN_VERSION = "unknown"
#: The path ``/metrics`` answers on, and the only path whose requests are counted.
METRICS_PATH = "/metrics"
INVOCATIONS_PATH = "/invocations"
PREFIX = "mushroom_router"
#: Latency buckets (seconds): single rows take milliseconds, 10,000-row batches about a second.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: How often a busy server process adds the counts it holds to the shared value files (seconds).
PUBLISH_SECONDS = 1.0
_DIR_PREFIX = "mushroom-router-metrics-"
_DIR_NAME = re.compile(rf"{_DIR_PREFIX}(\d+)-(\d+)$")

#: An ASGI application: ``await app(scope, receive, send)``.
ASGIApp = Callable[..., Awaitable[None]]


def enabled() -> bool:
    """Whether the model server counts and answers ``/metrics`` (``MUSHROOM_METRICS``)."""
    return (settings.env("MUSHROOM_METRICS") or "").lower() != OFF


def served_env(version: int | str | None, switches: int | None = None) -> dict[str, str]:
    """Variables telling a model server what it serves, for the process that starts it.

    Args:
        version: The registry version being served.
        switches: How many times the starter has switched versions so far.
    """
    env = {VERSION_ENV: str(version)} if version is not None else {}
    if switches is not None:
        env[SWITCHES_ENV] = str(switches)
    return env


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), ``None`` when it does not run.

    With the pid, it names one process for good: a pid can be reused, a start time with it not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no /proc: the pid alone, alive or not
            with contextlib.suppress(OSError):
                os.kill(pid, 0)
                return 0
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def server_pid() -> int:
    """The uvicorn process that owns this server: the workers' parent, or this process alone.

    ``uvicorn --workers N`` (N > 1) spawns its workers with :mod:`multiprocessing`; with one
    worker uvicorn serves in its own process.
    """
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getpid()


def multiprocess_dir(root: Path | None = None) -> Path:
    """The value-file folder shared by this server's workers, created; stale ones removed.

    ``PROMETHEUS_MULTIPROC_DIR`` when set (then clearing it between runs is the caller's job, as
    prometheus_client documents). Otherwise ``<tmp>/mushroom-router-metrics-<pid>-<start>``, named
    after the uvicorn process that owns the workers (:func:`server_pid`) and its start time, so a
    new server never adds to an old one's counts even when it gets the same pid; folders of
    servers that no longer run are removed here.

    Args:
        root: Where the folders go (default: the system's temporary folder).
    """
    configured = settings.env("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(root or tempfile.gettempdir())
    pid = server_pid()
    path = root / f"{_DIR_PREFIX}{pid}-{_start_ticks(pid) or 0}"
    for old in root.glob(f"{_DIR_PREFIX}*"):
        match = _DIR_NAME.match(old.name)
        if old != path and match and _start_ticks(int(match[1])) != int(match[2]):
            shutil.rmtree(old, ignore_errors=True)  # another worker may be removing it too
    path.mkdir(parents=True, exist_ok=True)
    return path


class ServerMetrics:
    """The model server's counters, and its ``/metrics`` answer.

    Args:
        run_id: The MLflow run that logged the served model.
        version: The registry version (default: ``MUSHROOM_SERVED_VERSION``, else "unknown").
        switches: The supervisor's switch count (default: ``MUSHROOM_SERVED_SWITCHES``, if set).
        multiprocess_path: The folder of the workers' value files; ``None`` keeps the values in
            this process (prometheus_client must then not run in multiprocess mode).
        publish_seconds: How long after the first request counted the counts held are published
            (:meth:`publish_soon`).
    """

    def __init__(
        self,
        run_id: str = "",
        version: str | None = None,
        switches: int | None = None,
        multiprocess_path: Path | None = None,
        publish_seconds: float = PUBLISH_SECONDS,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.run_id = run_id
        self.version = version or settings.env("MUSHROOM_SERVED_VERSION") or UNKNOWN_VERSION
        if switches is None and settings.env("MUSHROOM_SERVED_SWITCHES") is not None:
            switches = int(settings.env("MUSHROOM_SERVED_SWITCHES"))
        self.switches = switches
        self.multiprocess_path = multiprocess_path
        own = CollectorRegistry()
        rows = Counter(
            f"{PREFIX}_rows", "Rows scored, by route and served version.", ["route", "version"], registry=own
        )
        poisonous = Counter(
            f"{PREFIX}_poisonous_rows",
            'Rows answered "poisonous" at their threshold, by route.',
            ["route"],
            registry=own,
        )
        self.requests = Counter(
            f"{PREFIX}_requests", "/invocations requests by HTTP status.", ["code"], registry=own
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "/invocations latency: request received to answer sent.",
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.dropped = Counter(
            f"{PREFIX}_inference_log_dropped_rows",
            "Rows the inference log dropped (full queue or failed write).",
            registry=own,
        )
        # Children bound once per version; requests add to the plain counts below, published later.
        self._rows_family = rows
        self._rows = [rows.labels(route=route, version=self.version) for route in F.ROUTES]
        self._poisonous = [poisonous.labels(route=route) for route in F.ROUTES]
        self._codes: dict[int, Any] = {}
        self._exposed = self._exposition_registry(own)
        self._lock = threading.Lock()
        self._tally = _Tally()
        self.publish_seconds = publish_seconds
        self._publishing: tuple[Any, Any] | None = None  # (event loop, its timer) while one is set

    def _exposition_registry(self, own: Any) -> Any:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.multiprocess_path is None:
            own.register(_ServedCollector(self))
            return own
        exposed = CollectorRegistry()
        MultiProcessCollector(exposed, path=str(self.multiprocess_path))
        exposed.register(_ServedCollector(self))
        return exposed

    def now_serving(self, run_id: str, version: str, switches: int | None) -> None:
        """A version switched in inside this server process: count under its version from now on.

        Args:
            run_id: The MLflow run that logged the new version.
            version: Its registry version.
            switches: The supervisor's switch count including this switch.
        """
        self.publish()  # the rows counted so far were the previous version's
        self.run_id, self.version = run_id, version
        if switches is not None:
            self.switches = switches
        self._rows = [self._rows_family.labels(route=route, version=version) for route in F.ROUTES]

    def observe(self, routes: np.ndarray, poisonous: np.ndarray, threshold: float | np.ndarray) -> None:
        """Count a scored batch: rows per route and rows at or above their threshold per route.

        Args:
            routes: Route index per row (into ``features.ROUTES``; -1 for a row without one).
            poisonous: P(poisonous) per row.
            threshold: The request's threshold, or one per row (the ``safe`` threshold).
        """
        n = len(routes)
        if not n:  # an empty batch: nothing to count, and no first row to look at
            return
        route = int(routes[0])
        if n == 1:  # the most common request: no array counting
            if route >= 0:
                cut = threshold if np.isscalar(threshold) else threshold[0]
                self._add(route, 1, int(poisonous[0] >= cut))
            return
        if route >= 0 and (routes == route).all():  # a batch of one kind, the usual: no bincount
            self._add(route, n, int(np.count_nonzero(poisonous >= threshold)))
            return
        scored = routes[routes >= 0] if (routes < 0).any() else routes
        counts = np.bincount(scored, minlength=len(F.ROUTES)).tolist()
        flagged = np.bincount(routes[poisonous >= threshold], minlength=len(F.ROUTES)).tolist()
        for index in range(len(F.ROUTES)):
            if counts[index]:
                self._add(index, counts[index], flagged[index])

    def _add(self, route: int, rows: int, flagged: int) -> None:
        with self._lock:  # the tally is taken under the lock: publish() swaps it
            tally = self._tally
            tally.rows[route] += rows
            tally.poisonous[route] += flagged

    def record_request(self, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        bucket = bisect_left(LATENCY_BUCKETS, seconds)  # the first bucket whose bound is >= seconds
        with self._lock:
            tally = self._tally
            tally.codes[status] = tally.codes.get(status, 0) + 1
            tally.latency[bucket] += 1
            tally.latency_sum += seconds

    def publish_soon(self) -> None:
        """Publish :attr:`publish_seconds` from now, unless that is already due (from the event loop).

        Called after each request is counted, in the thread running the server's event loop: a
        busy server publishes once every :attr:`publish_seconds`, and a quiet one the counts of
        its last requests that long after them, without a thread.
        """
        loop = asyncio.get_running_loop()
        if self._publishing is None or self._publishing[0] is not loop:  # none set on this loop
            self._publishing = (loop, loop.call_later(self.publish_seconds, self._publish_due))

    def _publish_due(self) -> None:
        self._publishing = None
        self.publish()

    def dropped_rows(self, rows: int) -> None:
        """Count rows the inference log dropped (its ``on_drop`` callback)."""
        self.dropped.inc(rows)

    def publish(self) -> None:
        """Add the counts held in this process to the shared values, and start afresh.

        Safe to call from any thread at any time; every count is added exactly once. The
        server's shutdown calls it for the counts of its last second.
        """
        with self._lock:
            tally, self._tally = self._tally, _Tally()
        for index, rows in enumerate(tally.rows):
            if rows:
                self._rows[index].inc(rows)
        for index, flagged in enumerate(tally.poisonous):
            if flagged:
                self._poisonous[index].inc(flagged)
        for status, requests in tally.codes.items():
            child = self._codes.get(status)
            if child is None:
                child = self._codes[status] = self.requests.labels(code=str(status))
            child.inc(requests)
        if any(tally.latency):
            # prometheus_client's Histogram can only observe one value at a time: add to its
            # buckets (one per bound, the last +Inf) and its sum directly.
            for bucket, observed in zip(self.latency._buckets, tally.latency, strict=True):
                if observed:
                    bucket.inc(observed)
            self.latency._sum.inc(tally.latency_sum)

    def exposition(self) -> tuple[bytes, str]:
        """The ``/metrics`` answer: the body and its content type (Prometheus text format).

        This process's counts are published first, so they are in it up to the scrape.
        """
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.publish()
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST


class _Tally:
    """Counts not yet published: plain integers, cheap to add to under a lock."""

    __slots__ = ("codes", "latency", "latency_sum", "poisonous", "rows")

    def __init__(self) -> None:
        self.rows = [0] * len(F.ROUTES)
        self.poisonous = [0] * len(F.ROUTES)
        self.codes: dict[int, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0


class _ServedCollector:
    """What is served, from this process's settings (the same in every worker, so not summed)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        m = self.metrics
        yield InfoMetricFamily(
            f"{PREFIX}_model",
            "The served model: the MLflow run that logged it and its registry version.",
            value={"run_id": m.run_id, "version": m.version},
        )
        if m.version.isdigit():
            yield GaugeMetricFamily(
                f"{PREFIX}_served_version", "The registry version being served.", value=int(m.version)
            )
        if m.switches is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_switches",
                "Version switches of the supervisor that started this server.",
                value=m.switches,
            )


class RequestCounter:
    """ASGI middleware: status and latency of every ``/invocations`` request.

    It sees the status the client gets, whoever set it (the model, the guard, MLflow's error
    handler or its timeout), and an exception that escapes the app as the 500 it becomes.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != INVOCATIONS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        def send_status(message: MutableMapping[str, Any]) -> Awaitable[None]:
            # A plain function handing back send's awaitable: no coroutine of its own per message.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.record_request(status, time.perf_counter() - started)
            self.metrics.publish_soon()


def start(run_id: str = "") -> ServerMetrics | None:
    """The model server's metrics, in multiprocess mode; ``None`` when off.

    ``MUSHROOM_METRICS=off`` turns them off. The caller publishes what is held at shutdown
    (:meth:`ServerMetrics.publish`).

    Sets ``PROMETHEUS_MULTIPROC_DIR`` for this worker before prometheus_client is imported (it
    chooses its value storage on import); if something imported it earlier, its storage is
    switched here, before any metric of ours exists.
    """
    if not enabled():
        return None
    path = multiprocess_dir()
    os.environ[MULTIPROC_ENV] = str(path)
    if "prometheus_client.values" in sys.modules:
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.get_value_class()
    metrics = ServerMetrics(run_id, multiprocess_path=path)
    _logger.info("Metrics on /metrics (values in %s, version %s)", path, metrics.version)
    return metrics
