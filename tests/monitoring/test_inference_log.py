"""The inference log: every answered row written off the request path, to Parquet or PostgreSQL."""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
from support import create_database, drop_database, free_port, pg_url, postgres_or_skip, wait_for_http

from router_model import features as F
from router_model import inference_log, serving
from router_model.inference_log import Batch, InferenceLog, ParquetSink, PostgresSink, read_rows

NB, LR = F.ROUTES.index(F.NAIVE_BAYES), F.ROUTES.index(F.LOGISTIC_REGRESSION)


def batch(n: int, t: float | None = None, threshold: float = 0.5) -> Batch:
    matrix = np.full((n, len(F.ALL_FEATURES)), np.nan)
    matrix[:, : len(F.NB_FEATURES)] = [[30.0, 2.0, 1.0, 5.0]]
    routes = np.array([NB, LR] * (n // 2) + [NB] * (n % 2))
    poisonous = np.linspace(0.0, 1.0, n)
    return Batch(
        time.time() if t is None else t,
        inference_log.new_request_id(),
        "run-1",
        threshold,
        matrix,
        routes,
        poisonous,
    )


def test_rows_are_written_as_answered_and_read_back(tmp_path):
    log = InferenceLog(ParquetSink(tmp_path), flush_seconds=60)
    sent = [batch(3), batch(4, threshold=0.2)]
    for b in sent:
        assert log.submit(b)
    log.close()  # flushes what is queued
    rows = read_rows(target=str(tmp_path))
    assert list(rows.columns) == list(inference_log.COLUMNS)
    assert len(rows) == 7 and log.written == 7 and log.dropped == 0
    assert rows["request_id"].tolist() == [sent[0].request_id] * 3 + [sent[1].request_id] * 4
    assert rows["route"].tolist()[:3] == ["naive_bayes", "logistic_regression", "naive_bayes"]
    assert rows["poisonous_probability"].tolist() == [*sent[0].poisonous, *sent[1].poisonous]
    # prediction at each request's own threshold
    assert rows["prediction"].tolist() == [
        "edible",
        "poisonous",
        "poisonous",
        "edible",
        "poisonous",
        "poisonous",
        "poisonous",
    ]
    assert rows["cap-diameter"].eq(30.0).all() and rows["stem-height"].isna().all()


def expected_rows(batches: list[Batch]) -> list[dict]:
    """The log's rows written out one by one from the batches, as COLUMNS defines them."""
    rows = []
    for b in batches:
        thresholds = np.broadcast_to(np.asarray(b.threshold, dtype=float), len(b.poisonous))
        for i, p in enumerate(b.poisonous):
            rows.append(
                {
                    "time": pd.Timestamp(b.time, unit="s", tz="UTC"),
                    "request_id": b.request_id,
                    "model_run_id": b.model_run_id,
                    "route": F.ROUTES[b.routes[i]],
                    "threshold": thresholds[i],
                    **dict(zip(F.ALL_FEATURES, b.matrix[i], strict=True)),
                    "poisonous_probability": p,
                    "prediction": "poisonous" if p >= thresholds[i] else "edible",
                }
            )
    return rows


@pytest.mark.parametrize(
    "sizes",
    [[1], [1] * 50, [1000], [3, 1, 1000, 2, 1]],
    ids=["one row", "50 single rows", "1,000 rows", "mixed"],
)
def test_queued_batches_become_one_table_row_by_row_as_answered(sizes, tmp_path):
    """The writer joins a flush's batches column by column; the rows are those of each batch, in order.

    Both tables: the one the PostgreSQL sink inserts, and the Arrow one the Parquet sink writes,
    read back from its file.
    """
    batches = [batch(n, t=1_700_000_000.123456 + i, threshold=0.3) for i, n in enumerate(sizes)]
    # A per-row threshold (the "safe" param: each route's own) and one boundary value.
    per_row = batch(4, t=1_700_000_100.0)
    batches.append(dataclasses.replace(per_row, threshold=np.array([0.0, 0.4, 1.0, 2 / 3])))
    table = inference_log.frame_of(batches)
    assert list(table.columns) == list(inference_log.COLUMNS)
    assert len(table) == sum(sizes) + 4
    expected = pd.DataFrame(expected_rows(batches), columns=list(inference_log.COLUMNS))
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert table["prediction"].tolist()[-4:] == ["poisonous", "edible", "edible", "poisonous"]

    ParquetSink(tmp_path).write(batches)
    [part] = tmp_path.glob("part-*.parquet")
    written = pd.read_parquet(part)
    pd.testing.assert_frame_equal(written, table)  # dtypes included: plain text, UTC nanoseconds
    assert written["time"].dt.tz is not None and written["stem-height"].isna().all()


def test_read_rows_since_is_exclusive_and_sorted(tmp_path):
    log = InferenceLog(ParquetSink(tmp_path), flush_seconds=60)
    for t in (300.0, 100.0, 200.0):
        log.submit(batch(1, t=t))
    log.close()
    since = datetime.fromtimestamp(100.0, UTC)
    assert [ts.timestamp() for ts in read_rows(since, target=str(tmp_path))["time"]] == [200.0, 300.0]


class BlockedSink:
    """A sink that holds the writer until released (a slow disk or database)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.frames: list[pd.DataFrame] = []

    def write(self, batches: list[Batch]) -> None:
        self.release.wait(30)
        self.frames.append(inference_log.frame_of(batches))


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    sink = BlockedSink()
    log = InferenceLog(sink, max_batches=2, flush_seconds=0.01)
    log.submit(batch(1))
    time.sleep(0.2)  # the writer has taken that one and is stuck writing it
    started = time.monotonic()
    accepted = [log.submit(batch(5)) for _ in range(4)]
    assert time.monotonic() - started < 1.0  # never waits for the writer
    assert accepted == [True, True, False, False]
    assert log.dropped == 10
    sink.release.set()
    log.close()
    assert sum(len(f) for f in sink.frames) == 1 + 10


@pytest.mark.parametrize(
    ("max_rows", "sizes", "accepted"),
    [
        (2500, [1000, 1000, 1000, 500], [True, True, False, True]),  # full in rows, not in batches
        (2500, [3000, 1], [True, False]),  # a batch bigger than the bound goes into an empty queue
    ],
)
def test_the_queue_is_bounded_in_rows_too(max_rows, sizes, accepted):
    sink = BlockedSink()
    log = InferenceLog(sink, max_batches=100, max_rows=max_rows, flush_seconds=0.01)
    log.submit(batch(1))
    time.sleep(0.2)  # the writer has taken that one and is stuck writing it
    assert [log.submit(batch(n)) for n in sizes] == accepted
    assert log.dropped == sum(n for n, ok in zip(sizes, accepted, strict=True) if not ok)
    sink.release.set()
    log.close()
    assert sum(len(f) for f in sink.frames) == 1 + sum(n for n, ok in zip(sizes, accepted, strict=True) if ok)
    assert log._queued_rows == 0  # the writer took every queued row off the count


def test_the_server_hands_the_log_a_requests_arrays_and_the_log_keeps_copies():
    """The observer passes the request's own arrays (a second copy would cost every request); the
    log keeps copies, since a batch waits for the writer up to a flush while the request's buffers
    go on."""
    from router_model.router import MushroomRouterModel

    queued: list[Batch] = []
    model = MushroomRouterModel()
    model._log, model._metrics, model._run_id = SimpleNamespace(submit=queued.append), None, "run-1"
    given = batch(3)
    model._observe(given.matrix, given.routes, given.poisonous, given.threshold)
    (handed,) = queued
    assert handed.model_run_id == "run-1" and handed.matrix is given.matrix


@pytest.mark.parametrize("threshold", [0.5, np.array([0.3, 0.7, 0.3])])
def test_the_log_keeps_copies_of_a_requests_arrays(threshold):
    sink = BlockedSink()
    sink.release.set()
    log = InferenceLog(sink, flush_seconds=60)
    given = batch(3, threshold=threshold)
    expected = given.frame()
    log.submit(given)
    for name in ("matrix", "poisonous", "threshold"):
        value = getattr(given, name)
        if isinstance(value, np.ndarray):
            value[...] = -1.0  # the request's buffers are reused once it is answered
    log.close()
    (written,) = sink.frames
    pd.testing.assert_frame_equal(written, expected)


class FailingSink:
    def write(self, batches: list[Batch]) -> None:
        raise OSError("disk full")


def test_a_failing_sink_counts_rows_as_dropped_and_keeps_the_writer_alive(caplog):
    log = InferenceLog(FailingSink(), flush_seconds=0.01)
    log.submit(batch(3))
    time.sleep(0.3)
    log.submit(batch(2))
    log.close()
    assert (log.written, log.dropped) == (0, 5)
    assert "could not write" in caplog.text


@pytest.mark.services
def test_postgres_sink_appends_to_a_table_and_reads_back():
    postgres_or_skip()
    database = create_database("inference_log")
    try:
        url = pg_url(database).replace("postgresql+psycopg2://", "postgresql://")
        assert len(read_rows(target=url)) == 0  # no table yet: nothing logged
        log = InferenceLog(PostgresSink(url), flush_seconds=60)
        sent = batch(5)
        log.submit(sent)
        log.submit(batch(2, t=sent.time + 1))
        log.close()
        rows = read_rows(target=url)
        assert len(rows) == 7 and log.written == 7
        assert rows["poisonous_probability"].tolist()[:5] == sent.poisonous.tolist()
        assert rows["stem-width"].isna().all() and rows["gill-color"].eq(5.0).all()
        assert len(read_rows(datetime.fromtimestamp(sent.time, UTC), target=url)) == 2
    finally:
        drop_database(database)


@pytest.mark.serving
def test_a_real_server_logs_every_answered_row_and_flushes_on_sigterm(
    registered, isolated_env, tmp_path, monkeypatch
):
    folder = tmp_path / "inference"
    monkeypatch.setenv("MUSHROOM_INFERENCE_LOG", str(folder))
    port = free_port()
    proc = serving.start_server(port=port)
    url = f"http://127.0.0.1:{port}"
    rows = [*F.example_rows(), F.example_rows()[1], F.example_rows()[0]]
    try:
        wait_for_http(f"{url}/ping", proc)
        for threshold in (0.5, 0.1):
            answer = requests.post(
                f"{url}/invocations",
                json={"dataframe_records": rows, "params": {"threshold": threshold}},
                timeout=30,
            )
            assert answer.status_code == 200
        refused = requests.post(
            f"{url}/invocations", json={"dataframe_records": [{"cap-shape": 99}]}, timeout=30
        )
        assert refused.status_code == 400
    finally:
        assert serving.stop_server(proc) is not None  # SIGTERM: the log must flush before exit
    logged = read_rows(target=str(folder))
    assert len(logged) == 8  # every answered row, none of the refused request
    assert (
        logged["route"].tolist()
        == ["naive_bayes", "logistic_regression", "logistic_regression", "naive_bayes"] * 2
    )
    assert logged["threshold"].tolist() == [0.5] * 4 + [0.1] * 4
    assert logged["model_run_id"].eq(registered["run_id"]).all()
    assert logged["request_id"].nunique() == 2


def test_parquet_files_use_a_dictionary_only_for_columns_of_few_values(tmp_path):
    """Measured columns go without a dictionary (trying one on every float costs the writer more
    than it saves), byte-stream-split (LZ4 then costs far less)."""
    ParquetSink(tmp_path).write([batch(1000)])
    [part] = tmp_path.glob("part-*.parquet")
    chunks = pq.ParquetFile(part).metadata.row_group(0)
    encodings = {
        chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)
    }
    assert {name: "RLE_DICTIONARY" in encodings[name] for name in inference_log.COLUMNS} == {
        name: name in inference_log.FEW_VALUES for name in inference_log.COLUMNS
    }
    assert {name: "BYTE_STREAM_SPLIT" in encodings[name] for name in inference_log.COLUMNS} == {
        name: name in inference_log.SPLIT_FLOATS for name in inference_log.COLUMNS
    }
    assert set(inference_log.SPLIT_FLOATS) == {
        "cap-diameter",
        "stem-height",
        "stem-width",
        "poisonous_probability",
    }
    assert {"request_id", "route", "stem-color", "season", "prediction"} <= set(inference_log.FEW_VALUES)


def test_rows_of_several_served_models_in_one_file_keep_their_own_run_id(tmp_path):
    """A switch mid-flush: each row names the model that answered it (one dictionary entry per model)."""
    sent = [batch(3), batch(2), batch(4), batch(1)]
    for b, run_id in zip(sent, ["run-1", "run-1", "run-2", "run-1"], strict=True):
        b.model_run_id = run_id
    ParquetSink(tmp_path).write(sent)
    [part] = tmp_path.glob("part-*.parquet")
    assert pd.read_parquet(part)["model_run_id"].tolist() == ["run-1"] * 5 + ["run-2"] * 4 + ["run-1"]
    assert pq.read_table(part, read_dictionary=["model_run_id"]).column("model_run_id").chunk(
        0
    ).dictionary.to_pylist() == ["run-1", "run-2"]


def test_a_feature_a_row_did_not_give_is_stored_as_absent_and_read_back_as_nan(tmp_path):
    """The files hold no value for the other route's features (cheaper to write); readers see NaN."""
    sent = batch(6)
    ParquetSink(tmp_path).write([sent])
    [part] = tmp_path.glob("part-*.parquet")
    table = pq.read_table(part)
    assert {name: table.column(name).null_count for name in F.ALL_FEATURES} == {
        name: 0 if name in F.NB_FEATURES else 6 for name in F.ALL_FEATURES
    }
    # Only a feature may be absent; every other column is stored as never null.
    assert {f.name for f in table.schema if f.nullable} == set(F.ALL_FEATURES)
    rows = pd.read_parquet(part)
    assert rows["stem-color"].isna().all() and rows["cap-diameter"].eq(30.0).all()


def _child_request_id(ids: multiprocessing.Queue) -> None:
    ids.put(inference_log.new_request_id())


def test_request_ids_are_unique_in_a_process_and_across_forked_workers():
    ids = [inference_log.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # A worker forked after this process made ids makes its own, not its parent's next ones.
    context = multiprocessing.get_context("fork")
    found = context.Queue()
    children = [context.Process(target=_child_request_id, args=(found,)) for _ in range(2)]
    for child in children:
        child.start()
    from_children = {found.get(timeout=30) for _ in children}
    for child in children:
        child.join(30)
    assert len(from_children) == 2 and from_children.isdisjoint(ids)
    assert {i[:16] for i in from_children}.isdisjoint({ids[0][:16]})
