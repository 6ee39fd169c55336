"""The model server's inference log: batches through shared memory to a writer process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest
from support import REPO
from test_inference_log import batch

from router_model import log_process
from router_model.inference_log import Batch, InferenceLog, frame_of, read_rows
from router_model.log_process import ProcessLog, Ring, RingFormatError

pytestmark = pytest.mark.skipif(not log_process.supported(), reason="the ring runs on x86-64 only")


def per_row(n: int) -> Batch:
    """A batch with one threshold a row (``"threshold": "safe"``)."""
    b = batch(n)
    b.threshold = np.linspace(0.1, 0.9, n)
    return b


def taken(ring: Ring) -> list[Batch]:
    out: list[Batch] = []
    ring.take(lambda b: out.append(b.copied()))
    return out


def same_rows(got: list[Batch] | pd.DataFrame, sent: list[Batch]) -> None:
    frame = got if isinstance(got, pd.DataFrame) else frame_of(got)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), frame_of(sent), check_dtype=False)


@pytest.fixture(params=["packed", "in place"])
def ring(request, monkeypatch):
    """A small ring; a record goes in packed whole (a few rows) or array by array (more)."""
    if request.param == "in place":
        monkeypatch.setattr(log_process, "SMALL_RECORD_ROWS", 0)
    made = Ring.create(capacity=1 << 16, record_rows=64)
    yield made
    made.close()


def test_a_record_holds_the_same_bytes_packed_whole_or_copied_array_by_array(monkeypatch):
    rings, most = [], log_process.SMALL_RECORD_ROWS
    for small in (most, 0):
        monkeypatch.setattr(log_process, "SMALL_RECORD_ROWS", small)
        rings.append(Ring.create(capacity=1 << 16, record_rows=64))
        for b in (batch(1), batch(most), per_row(3), batch(64)):
            b.request_id, b.time = "the same id", 1.5
            b.routes[0] = -1  # a row the router recorded as bad: no route
            assert rings[-1].put(b) == 0
    packed, in_place = rings
    assert packed._control[0] == in_place._control[0] > 0  # head: as many bytes each
    assert bytes(packed._bytes[: packed._control[0]]) == bytes(in_place._bytes[: in_place._control[0]])
    for made in rings:
        made.close()


@pytest.mark.parametrize(
    "sizes",
    [
        [1],
        [3, 1, 64],  # a record of record_rows rows
        [50] * 40,  # round the ring several times: a padded end, records from its start again
        [65, 130, 1],  # bigger than a record: cut into several
    ],
)
@pytest.mark.parametrize("make", [batch, per_row])
def test_the_ring_gives_back_every_row_as_put(ring, sizes, make):
    sent, got = [], []
    for n in sizes:
        b = make(n)
        assert ring.put(b) == 0
        sent.append(b)
        got += taken(ring)  # the reader keeps up: the ring never fills
    same_rows(got, sent)
    assert {b.request_id for b in got} == {b.request_id for b in sent}


def test_an_empty_batch_puts_no_record(ring):
    assert ring.put(batch(0)) == 0
    assert ring._control[0] == 0  # head: nothing written
    assert taken(ring) == []


def test_a_batch_bigger_than_a_record_goes_in_as_records_of_the_same_request(ring):
    sent = batch(150)
    assert ring.put(sent) == 0
    got = taken(ring)
    assert [len(b.poisonous) for b in got] == [64, 64, 22]
    assert {b.request_id for b in got} == {sent.request_id}
    same_rows(got, [sent])


def test_an_empty_ring_can_be_prefaulted_and_one_holding_records_cannot(ring):
    ring.prefault()
    sent = batch(10)
    assert ring.put(sent) == 0
    with pytest.raises(RuntimeError, match="holding records"):
        ring.prefault()
    same_rows(taken(ring), [sent])  # untouched by the refused call
    ring.prefault()  # read, so empty again


def test_a_full_ring_drops_and_counts_and_never_waits(ring):
    kept, lost = [], 0
    started = time.monotonic()
    for _ in range(100):  # nobody reads: 100 x 50 rows is more than the ring holds
        b = batch(50)
        missing = ring.put(b)
        assert missing in (0, 50)
        lost += missing
        if not missing:
            kept.append(b)
    assert time.monotonic() - started < 1.0
    assert lost > 0 and kept
    same_rows(taken(ring), kept)  # what went in is whole
    assert ring.put(batch(50)) == 0  # read, so there is room again


def test_a_descriptor_without_a_ring_is_refused_by_name():
    fd = os.memfd_create("not-a-ring")
    try:
        os.ftruncate(fd, 4096)
        with pytest.raises(RingFormatError, match=rf"file descriptor {fd} holds no inference-log ring"):
            Ring.attach(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("capacity", "message"),
    [
        (1000, "ring capacity 1000 is not a multiple of 16 bytes"),
        (1 << 16, "ring capacity 65536 holds no record of 10000 rows: it needs at least"),
    ],
)
def test_a_ring_that_cannot_hold_a_record_is_refused(capacity, message):
    with pytest.raises(ValueError, match=message):
        Ring.create(capacity=capacity, record_rows=10_000)


def test_a_damaged_ring_is_refused_not_read_forever(ring):
    ring._control[0] = 16  # head: one record of 16 bytes, whose mark says 0
    with pytest.raises(RingFormatError, match="a record of 0 bytes at position 0: the ring is damaged"):
        taken(ring)


def writer_of(log: ProcessLog) -> psutil.Process:
    assert log._writer is not None
    return psutil.Process(log._writer.pid)


def wait_taken(log: ProcessLog, timeout: float = 60.0) -> None:
    """Until the writer process has read all the ring holds (so it runs, its signals set)."""
    deadline = time.monotonic() + timeout
    while log.ring._control[1] != log.ring._control[0]:  # tail, head
        assert time.monotonic() < deadline, "the writer process read nothing"
        time.sleep(0.05)


def test_the_writer_process_writes_every_row_and_the_server_keeps_no_thread(tmp_path):
    threads = threading.active_count()
    log = ProcessLog(str(tmp_path))
    sent = [batch(3), per_row(4), batch(1000)]
    assert all(log.submit(b) for b in sent)
    assert threading.active_count() == threads  # the writing is the writer process's
    assert any(log_process.__name__ in part for part in writer_of(log).cmdline())
    log.close()
    same_rows(read_rows(target=str(tmp_path)), sent)
    assert (log.written, log.dropped) == (1007, 0)
    assert log._writer.returncode == 0


def test_the_writer_process_runs_the_servers_own_code_whatever_the_working_directory(tmp_path, monkeypatch):
    """A server started in a checkout serves the model's copy of the package; so must its writer."""
    stranger = tmp_path / "cwd" / "router_model"
    stranger.mkdir(parents=True)
    (stranger / "__init__.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(stranger.parent)
    log = ProcessLog(str(tmp_path / "log"))
    log.submit(batch(2))
    log.close()
    assert log._writer.returncode == 0
    assert len(read_rows(target=str(tmp_path / "log"))) == 2


def test_the_log_keeps_its_own_copy_of_a_requests_arrays(tmp_path):
    log = ProcessLog(str(tmp_path))
    b = batch(5)
    expected = frame_of([b])
    log.submit(b)
    b.matrix[:] = -1.0  # the request's buffers are reused once it is answered
    b.poisonous[:] = -1.0
    log.close()
    pd.testing.assert_frame_equal(read_rows(target=str(tmp_path)), expected, check_dtype=False)


def test_the_writer_process_ignores_the_groups_signals_and_writes_on_close(tmp_path):
    log = ProcessLog(str(tmp_path))
    sent = [batch(4)]
    log.submit(sent[0])
    writer = writer_of(log)
    wait_taken(log)
    for sig in (signal.SIGINT, signal.SIGTERM):
        writer.send_signal(sig)
    time.sleep(0.5)
    assert writer.is_running()
    sent.append(batch(2))
    log.submit(sent[1])
    log.close()
    same_rows(read_rows(target=str(tmp_path)), sent)


def test_a_dead_writer_process_is_replaced_and_nothing_in_the_ring_is_lost(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(log_process, "CHECK_SECONDS", 0.0)
    log = ProcessLog(str(tmp_path))
    sent = [batch(3)]
    log.submit(sent[0])  # starts the writer, which is still starting when it is killed
    first = writer_of(log)
    first.kill()
    first.wait(10)
    sent.append(batch(2))
    log.submit(sent[1])  # sees the writer gone: starts another, which reads both batches
    assert writer_of(log).pid != first.pid
    log.close()
    same_rows(read_rows(target=str(tmp_path)), sent)
    assert "writer process exited" in caplog.text


def test_a_writer_process_whose_server_is_gone_writes_what_the_ring_holds_and_exits(tmp_path):
    server = textwrap.dedent(
        f"""
        import os, sys
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests" / "monitoring")!r}, {str(REPO / "tests")!r}]
        from test_inference_log import batch
        from router_model.log_process import ProcessLog
        log = ProcessLog({str(tmp_path)!r})
        for n in (3, 4):
            log.submit(batch(n))
        print(log._writer.pid, flush=True)
        os._exit(0)  # no close: killed, say
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", server], capture_output=True, text=True, timeout=60, check=True
    )
    writer = psutil.Process(int(done.stdout.split()[0]))
    deadline = time.monotonic() + 60
    while writer.is_running() and writer.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not writer.is_running() or writer.status() == psutil.STATUS_ZOMBIE
    assert len(read_rows(target=str(tmp_path))) == 7


def test_a_writer_process_that_cannot_start_fails_no_request(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(log_process, "CHECK_SECONDS", 0.0)
    start = log_process.start_writer

    def cannot(*args):
        raise OSError("no processes left")

    monkeypatch.setattr(log_process, "start_writer", cannot)
    log = ProcessLog(str(tmp_path))
    sent = [batch(3)]
    assert log.submit(sent[0])  # in the ring, waiting
    assert "could not start the writer process" in caplog.text
    monkeypatch.setattr(log_process, "start_writer", start)
    sent.append(batch(2))
    assert log.submit(sent[1])
    log.close()
    same_rows(read_rows(target=str(tmp_path)), sent)


def test_a_forked_child_drops_rather_than_write_its_parents_ring(tmp_path):
    log = ProcessLog(str(tmp_path))
    log.submit(batch(2))
    pid = os.fork()
    if pid == 0:  # the child: one writer a ring, so its rows are dropped and counted
        ok = log.submit(batch(3))
        os._exit(0 if (not ok and log.dropped == 3) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.close()
    assert len(read_rows(target=str(tmp_path))) == 2


def test_rows_the_writer_process_cannot_write_come_back_as_dropped():
    dropped: list[int] = []
    log = ProcessLog("postgresql://nobody@127.0.0.1:1/nothing")  # nothing listens there
    log.on_drop = dropped.append
    log.submit(batch(3))
    log.submit(batch(2))
    log.close()
    assert (log.written, log.dropped, sum(dropped)) == (0, 5, 5)


def test_after_close_batches_are_dropped_and_counted(tmp_path):
    log = ProcessLog(str(tmp_path))
    log.close()  # nothing submitted: no writer was ever started
    assert log._writer is None
    assert not log.submit(batch(2))
    assert log.dropped == 2


@pytest.mark.parametrize(("supported", "kind"), [(True, ProcessLog), (False, InferenceLog)])
def test_the_server_gets_the_writer_process_where_the_ring_runs(monkeypatch, tmp_path, supported, kind):
    monkeypatch.setenv("MUSHROOM_INFERENCE_LOG", str(tmp_path))
    monkeypatch.setattr(log_process, "supported", lambda: supported)
    monkeypatch.setattr(log_process, "_active", None)
    log = log_process.active()
    try:
        assert type(log) is kind
        assert log_process.active() is log  # one a process
    finally:
        log.close()


@pytest.mark.parametrize("value", ["off", "OFF"])
def test_off_disables_the_log(monkeypatch, value):
    monkeypatch.setenv("MUSHROOM_INFERENCE_LOG", value)
    assert log_process.active() is None
