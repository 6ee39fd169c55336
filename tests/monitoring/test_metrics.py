"""The model server's GET /metrics: counts in process, across uvicorn workers, and through Prometheus."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from support import free_port, samples, skip_or_fail, wait_for_http

from router_model import features as F
from router_model import metrics, serving
from router_model.inference_log import InferenceLog
from router_model.metrics import RequestCounter, ServerMetrics

NB, LR = F.ROUTES.index(F.NAIVE_BAYES), F.ROUTES.index(F.LOGISTIC_REGRESSION)


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def scrape(m: ServerMetrics) -> str:
    body, content_type = m.exposition()
    assert content_type.startswith("text/plain")
    return body.decode()


# ------------------------------------------------------------------------------------------- in process


@pytest.mark.parametrize(
    ("routes", "poisonous", "threshold", "rows", "flagged"),
    [
        ([NB], [0.7], 0.5, (1, 0), (1, 0)),
        ([LR], [0.5], 0.5, (0, 1), (0, 1)),  # at the threshold is poisonous
        ([LR], [0.49], 0.5, (0, 1), (0, 0)),
        ([NB, LR, LR, NB, LR], [0.1, 0.2, 0.9, 0.95, 0.3], 0.25, (2, 3), (1, 2)),
        ([NB, LR], [0.1, 0.2], 0.0, (1, 1), (1, 1)),
        ([NB, LR], [0.9, 0.99], 1.0, (1, 1), (0, 0)),
        ([NB, LR, LR], [0.3, 0.3, 0.5], np.array([0.2, 0.4, 0.5]), (1, 2), (1, 1)),  # per row ("safe")
        ([LR], [0.3], np.array([0.4]), (0, 1), (0, 0)),
        ([NB], [0.3], np.array([0.2]), (1, 0), (1, 0)),
        # Batches of one route, which are counted without bincount; and an empty one.
        ([LR, LR, LR], [0.2, 0.9, 0.25], 0.25, (0, 3), (0, 2)),
        ([NB, NB], [0.3, 0.5], np.array([0.4, 0.5]), (2, 0), (1, 0)),
        ([LR] * 1000, [0.6] * 400 + [0.1] * 600, 0.5, (0, 1000), (0, 400)),
        ([NB] * 999 + [LR], [0.6] * 1000, 0.5, (999, 1), (999, 1)),  # one route but the last row
        ([], [], 0.5, (0, 0), (0, 0)),
    ],
)
def test_rows_and_poisonous_rows_are_counted_per_route_at_the_request_threshold(
    routes, poisonous, threshold, rows, flagged
):
    m = ServerMetrics("run-1", version="3")
    m.observe(np.array(routes), np.array(poisonous), threshold)
    text = scrape(m)
    for index, route in enumerate(F.ROUTES):
        assert value(text, "mushroom_router_rows_total", route=route, version="3") == rows[index]
        assert value(text, "mushroom_router_poisonous_rows_total", route=route) == flagged[index]


def test_unrouted_rows_are_not_counted():
    m = ServerMetrics()
    m.observe(np.array([NB, -1, LR]), np.array([0.8, np.nan, 0.1]), 0.5)
    m.observe(np.array([-1]), np.array([np.nan]), 0.5)
    m.observe(np.array([-1, -1]), np.array([np.nan, np.nan]), 0.5)
    m.observe(np.array([-1, LR, LR]), np.array([np.nan, 0.9, 0.9]), 0.5)  # unrouted first
    text = scrape(m)
    assert value(text, "mushroom_router_rows_total", route=F.NAIVE_BAYES, version="unknown") == 1
    assert value(text, "mushroom_router_rows_total", route=F.LOGISTIC_REGRESSION, version="unknown") == 3
    assert value(text, "mushroom_router_poisonous_rows_total", route=F.NAIVE_BAYES) == 1
    assert value(text, "mushroom_router_poisonous_rows_total", route=F.LOGISTIC_REGRESSION) == 2


@pytest.mark.parametrize(
    ("env", "version", "served_version", "switches"),
    [
        ({}, "unknown", None, None),
        ({"MUSHROOM_SERVED_VERSION": "7"}, "7", 7.0, None),
        ({"MUSHROOM_SERVED_VERSION": "7", "MUSHROOM_SERVED_SWITCHES": "2"}, "7", 7.0, 2.0),
    ],
)
def test_what_is_served_comes_from_the_starter(monkeypatch, env, version, served_version, switches):
    for name in ("MUSHROOM_SERVED_VERSION", "MUSHROOM_SERVED_SWITCHES"):
        monkeypatch.delenv(name, raising=False)
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    found = samples(scrape(ServerMetrics("abc123")))
    assert found[("mushroom_router_model_info", (("run_id", "abc123"), ("version", version)))] == 1
    assert found.get(("mushroom_router_served_version", ())) == served_version
    assert found.get(("mushroom_router_switches_total", ())) == switches


def test_served_env_is_what_server_metrics_read(monkeypatch):
    for name, setting in metrics.served_env(4, 1).items():
        monkeypatch.setenv(name, setting)
    m = ServerMetrics()
    assert (m.version, m.switches) == ("4", 1)


def run_asgi(app, path: str) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "method": "POST"}, receive, send))
    return sent


def answering(status: int):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def failing(scope, receive, send):
    raise RuntimeError("boom")


def test_requests_are_counted_by_status_with_their_latency():
    m = ServerMetrics()
    for status in (200, 200, 400, 413):
        sent = run_asgi(RequestCounter(answering(status), m), "/invocations")
        assert sent[0]["status"] == status  # passed through unchanged
    with pytest.raises(RuntimeError, match="boom"):  # the server's error handler answers 500
        run_asgi(RequestCounter(failing, m), "/invocations")
    run_asgi(RequestCounter(answering(200), m), "/ping")  # health checks and scrapes: not counted
    text = scrape(m)
    counted = {
        code: value(text, "mushroom_router_requests_total", code=code) for code in ("200", "400", "413")
    }
    assert counted == {"200": 2, "400": 1, "413": 1}
    assert value(text, "mushroom_router_requests_total", code="500") == 1
    assert value(text, "mushroom_router_request_seconds_count") == 5
    assert value(text, "mushroom_router_request_seconds_bucket", le="+Inf") == 5


#: Latencies at, between and beyond the bucket bounds (the last two above the largest: +Inf).
LATENCIES = [0.0, 0.0009, 0.001, 0.0012, 0.005, 0.0051, 0.3, 1.0, 10.0, 12.5]


def histogram_samples(text: str) -> dict:
    return {
        key: found
        for key, found in samples(text).items()
        if key[0].startswith("mushroom_router_request_seconds") and not key[0].endswith("_created")
    }


def test_published_latencies_are_what_prometheus_clients_histogram_observes():
    """Publishing adds to the histogram's private ``_buckets`` and ``_sum``: this pins them."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    m = ServerMetrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "mushroom_router_request_seconds", "-", buckets=metrics.LATENCY_BUCKETS, registry=reference_registry
    )
    for seconds in LATENCIES:
        m.record_request(200, seconds)
        reference.observe(seconds)
    ours = histogram_samples(scrape(m))
    assert ours == histogram_samples(generate_latest(reference_registry).decode())
    assert ours[("mushroom_router_request_seconds_bucket", (("le", "0.001"),))] == 3
    assert ours[("mushroom_router_request_seconds_bucket", (("le", "+Inf"),))] == len(LATENCIES)


def test_counts_published_while_requests_are_counted_are_each_counted_once():
    m = ServerMetrics(version="1")
    threads, each = 3, 5_000

    def count() -> None:
        for _ in range(each):
            m.observe(np.array([LR]), np.array([0.9]), 0.5)
            m.observe(np.array([NB, LR]), np.array([0.1, 0.6]), 0.5)
            m.record_request(200, 0.001)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        m.publish()
    for worker in workers:
        worker.join()
    text = scrape(m)
    total = threads * each
    assert value(text, "mushroom_router_rows_total", route=F.LOGISTIC_REGRESSION, version="1") == 2 * total
    assert value(text, "mushroom_router_rows_total", route=F.NAIVE_BAYES, version="1") == total
    assert value(text, "mushroom_router_poisonous_rows_total", route=F.LOGISTIC_REGRESSION) == 2 * total
    assert value(text, "mushroom_router_poisonous_rows_total", route=F.NAIVE_BAYES) == 0
    assert value(text, "mushroom_router_requests_total", code="200") == total
    assert value(text, "mushroom_router_request_seconds_count") == total


@pytest.fixture
def shared_files(tmp_path, monkeypatch) -> tuple[Path, Callable[[], dict]]:
    """prometheus_client in multiprocess mode for this test, and what another worker's scrape reads."""
    from prometheus_client import CollectorRegistry, generate_latest, values

    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    others = CollectorRegistry()
    MultiProcessCollector(others, path=str(tmp_path))
    return tmp_path, lambda: samples(generate_latest(others).decode())


def count_one_request(m: ServerMetrics) -> None:
    m.observe(np.array([NB]), np.array([0.9]), 0.5)
    m.record_request(200, 0.002)


ROWS_NB = ("mushroom_router_rows_total", (("route", F.NAIVE_BAYES), ("version", "1")))
REQUESTS_200 = ("mushroom_router_requests_total", (("code", "200"),))


def test_counts_reach_the_shared_files_a_publishing_period_after_a_request(shared_files):
    path, shared = shared_files
    m = ServerMetrics(version="1", multiprocess_path=path, publish_seconds=0.2)

    async def serve() -> list[tuple[float, float]]:
        seen = []
        count_one_request(m)
        m.publish_soon()
        seen.append((shared()[ROWS_NB], shared().get(REQUESTS_200, 0)))  # held until published
        await asyncio.sleep(0.05)
        count_one_request(m)
        m.publish_soon()  # one publishing is already due: no second one
        await asyncio.sleep(0.3)  # no more requests: the server has gone quiet
        seen.append((shared()[ROWS_NB], shared()[REQUESTS_200]))
        count_one_request(m)
        m.publish_soon()  # the period starts afresh
        seen.append((shared()[ROWS_NB], shared()[REQUESTS_200]))
        await asyncio.sleep(0.3)
        seen.append((shared()[ROWS_NB], shared()[REQUESTS_200]))
        return seen

    assert asyncio.run(serve()) == [(0, 0), (2, 2), (2, 2), (3, 3)]
    assert shared()[("mushroom_router_request_seconds_count", ())] == 3
    count_one_request(m)  # a new event loop (a test's, or a restarted server's) gets its own timer
    asyncio.run(publish_later(m, 0.3))
    assert shared()[ROWS_NB] == 4


async def publish_later(m: ServerMetrics, wait: float) -> None:
    m.publish_soon()
    await asyncio.sleep(wait)


def test_the_metrics_start_no_thread_in_the_server(tmp_path, monkeypatch):
    from prometheus_client import values

    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(metrics, "multiprocess_dir", lambda: tmp_path)
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    before = set(threading.enumerate())
    m = metrics.start("run-1")
    assert m is not None
    count_one_request(m)
    m.exposition()
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize("how", ["publish", "exposition", "now_serving"])
def test_counts_held_are_published_at_shutdown_at_a_scrape_and_at_a_switch(shared_files, how):
    path, shared = shared_files
    m = ServerMetrics(version="1", multiprocess_path=path, publish_seconds=3600)  # no request publishes
    count_one_request(m)
    {
        "publish": m.publish,  # the server's shutdown hook
        "exposition": m.exposition,
        "now_serving": lambda: m.now_serving("run-2", "2", 1),
    }[how]()
    assert (shared()[ROWS_NB], shared()[REQUESTS_200]) == (1, 1)  # under the version that answered


class BlockedSink:
    def __init__(self) -> None:
        self.release = threading.Event()

    def write(self, batches: list) -> None:
        self.release.wait(30)


def test_rows_the_inference_log_drops_are_counted():
    from test_inference_log import batch

    m = ServerMetrics()
    sink = BlockedSink()
    log = InferenceLog(sink, max_batches=1, flush_seconds=0.01)
    log.on_drop = m.dropped_rows
    try:
        log.submit(batch(2))
        time.sleep(0.5)  # the writer takes the first batch and blocks in the sink
        assert log.submit(batch(3))
        assert not log.submit(batch(4))  # the queue holds one batch: this one is dropped
    finally:
        sink.release.set()
        log.close()
    assert log.dropped == 4
    assert value(scrape(m), "mushroom_router_inference_log_dropped_rows_total") == 4


@pytest.mark.parametrize("setting", ["off", "OFF"])
def test_off_disables_metrics(monkeypatch, setting):
    monkeypatch.setenv("MUSHROOM_METRICS", setting)
    assert metrics.start() is None


def test_each_server_gets_its_own_folder_and_folders_of_dead_servers_go(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"mushroom-router-metrics-{dead.pid}-1"
    reused = tmp_path / f"mushroom-router-metrics-{os.getpid()}-1"  # this pid, another start time
    alive = tmp_path / f"mushroom-router-metrics-{os.getppid()}-{metrics._start_ticks(os.getppid())}"
    unrelated = tmp_path / "mushroom-router-metrics-notes"
    for folder in (stale, reused, alive, unrelated):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    path = metrics.multiprocess_dir(tmp_path)
    assert path == tmp_path / f"mushroom-router-metrics-{os.getpid()}-{metrics._start_ticks(os.getpid())}"
    assert path.is_dir() and not list(path.iterdir())
    assert not stale.exists() and not reused.exists()
    assert alive.exists() and unrelated.exists()
    assert metrics.multiprocess_dir(tmp_path) == path  # the second worker of the server: the same folder


def test_a_configured_folder_is_used_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mine"))
    assert metrics.multiprocess_dir(tmp_path) == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()


# ------------------------------------------------------------------------------------ a real server

WORKERS = 2


@pytest.fixture(scope="module")
def two_workers(registered) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow models serve --workers 2`` of the champion, with its own metrics."""
    port = free_port()
    proc = serving.start_server(port=port, workers=WORKERS, extra_env=metrics.served_env(1, 0))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", proc)
        yield url, proc
    finally:
        serving.stop_server(proc)


def metrics_folder(proc: subprocess.Popen) -> Path:
    """The value-file folder of a server started by :func:`serving.start_server`."""
    root = Path(os.environ.get("TMPDIR", "/tmp"))
    found = [p for pid in serving.group_pids(proc.pid) for p in root.glob(f"mushroom-router-metrics-{pid}-*")]
    assert len(found) == 1, f"expected one metrics folder for the server, found {found}"
    return found[0]


def scrape_url(url: str) -> str:
    """GET /metrics on a new connection (so either worker may answer)."""
    return requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text


def per_worker_requests(folder: Path) -> dict[str, float]:
    """/invocations requests counted by each worker's own value file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        merged = MultiProcessCollector.merge([str(path)])
        counts[path.stem] = sum(
            s.value for metric in merged if metric.name == "mushroom_router_requests" for s in metric.samples
        )
    return counts


@pytest.mark.serving
def test_two_workers_answer_metrics_before_any_request_and_their_counts_add_up(
    two_workers, served_router, registered
):
    url, proc = two_workers
    first = requests.get(f"{url}/metrics", timeout=10)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
    before = samples(first.text)
    assert before[("mushroom_router_served_version", ())] == 1
    assert before[("mushroom_router_switches_total", ())] == 0
    assert before[("mushroom_router_rows_total", (("route", F.NAIVE_BAYES), ("version", "1")))] == 0

    rows = [*F.example_rows(), F.example_rows()[0]]  # NB, LR, NB
    expected = served_router.predict(pd.DataFrame(rows), {"threshold": 0.3})
    sent = 0
    folder = metrics_folder(proc)
    deadline = time.monotonic() + 120
    # Until both workers have answered some (the kernel picks the worker), at most 2,000 requests.
    while len(per_worker_requests(folder)) < WORKERS or min(per_worker_requests(folder).values()) == 0:
        assert sent < 2000 and time.monotonic() < deadline, (
            f"one worker answered all: {per_worker_requests(folder)}"
        )
        for _ in range(10):
            answer = requests.post(
                f"{url}/invocations",
                json={"dataframe_records": rows, "params": {"threshold": 0.3}},
                headers={"Connection": "close"},  # a new connection each time, for either worker
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            sent += 1
    refused = requests.post(f"{url}/invocations", json={"dataframe_records": [{"cap-shape": 99}]}, timeout=30)
    assert refused.status_code == 400

    # Whichever worker answers the scrape, it reports the sum over both. A request is counted just
    # after its answer is sent, so the last one may reach the files a moment after the client.
    deadline = time.monotonic() + 10
    while value(scrape_url(url), "mushroom_router_request_seconds_count") < sent + 1:
        assert time.monotonic() < deadline, "the last request was never counted"
        time.sleep(0.05)
    for _ in range(4):
        after = scrape_url(url)
        assert value(after, "mushroom_router_requests_total", code="200") == sent
        assert value(after, "mushroom_router_requests_total", code="400") == 1
        assert value(after, "mushroom_router_request_seconds_count") == sent + 1
        for route in F.ROUTES:
            ours = expected["model"] == route
            assert value(after, "mushroom_router_rows_total", route=route, version="1") == sent * ours.sum()
            assert (
                value(after, "mushroom_router_poisonous_rows_total", route=route)
                == sent * (ours & (expected["prediction"] == "poisonous")).sum()
            )
    info = [k for k in samples(after) if k[0] == "mushroom_router_model_info"]
    assert info == [("mushroom_router_model_info", (("run_id", registered["run_id"]), ("version", "1")))]


# ---------------------------------------------------------------------------------- a real Prometheus


@pytest.fixture
def prometheus(two_workers, tmp_path) -> Iterator[str]:
    """Debian's ``prometheus`` scraping the two-worker server every second, on loopback."""
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("prometheus is not installed (Debian: apt-get install prometheus)")
    url, _ = two_workers
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "model-server",
                        "static_configs": [{"targets": [url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115 - the process owns it
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/-/ready", proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(base: str, promql: str) -> list[dict]:
    answer = requests.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["result"]


def wait_for_value(base: str, promql: str, expected: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        result = query(base, promql)
        found = float(result[0]["value"][1]) if result else None
        if found == expected:
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus answered {promql} = {found}, expected {expected} within {timeout}s")


@pytest.mark.serving
def test_prometheus_scrapes_the_counters(prometheus, two_workers, registered):
    url, _ = two_workers
    wait_for_value(prometheus, 'up{job="model-server"}', 1)
    before = {
        r["metric"]["route"]: float(r["value"][1]) for r in query(prometheus, "mushroom_router_rows_total")
    }
    for _ in range(5):
        answer = requests.post(f"{url}/invocations", json={"dataframe_records": F.example_rows()}, timeout=30)
        assert answer.status_code == 200
    for route in F.ROUTES:  # one row of each feature set per request
        wait_for_value(
            prometheus, f'mushroom_router_rows_total{{route="{route}",version="1"}}', before[route] + 5
        )
    info = query(prometheus, "mushroom_router_model_info")
    assert [r["metric"]["run_id"] for r in info] == [registered["run_id"]]
    assert query(prometheus, "mushroom_router_request_seconds_count")


def test_the_route_and_the_counter_are_added_when_uvicorn_reads_the_app(monkeypatch):
    """As in ``mlflow models serve``: the model loads while the app module runs, before ``app`` exists."""
    import sys
    import types

    import httpx
    from fastapi import FastAPI

    from router_model import server_guard

    module = types.ModuleType(server_guard._APP_MODULE)
    monkeypatch.setitem(sys.modules, server_guard._APP_MODULE, module)
    m = ServerMetrics("run-9")
    assert server_guard.hook_app(m)  # called from load_context: no app yet
    app = FastAPI()

    @app.post("/invocations")
    def invocations() -> dict:
        return {"predictions": []}

    vars(module)["app"] = app  # what `app = scoring_server.init(...)` does in MLflow's app.py
    assert module.app is app  # uvicorn's import_from_string
    assert type(module) is types.ModuleType  # a plain module again

    async def talk() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.post("/invocations")).status_code == 200
            return (await client.get("/metrics")).text

    text = asyncio.run(talk())
    assert value(text, "mushroom_router_requests_total", code="200") == 1
    assert value(text, "mushroom_router_model_info", run_id="run-9", version="unknown") == 1


def test_without_mlflows_app_module_there_is_no_metrics_route(monkeypatch, caplog):
    import sys

    from router_model import server_guard

    monkeypatch.delitem(sys.modules, server_guard._APP_MODULE, raising=False)
    assert not server_guard.hook_app(ServerMetrics())
    assert "no /metrics" in caplog.text
