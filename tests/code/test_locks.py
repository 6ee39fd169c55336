"""An exclusive file lock between the processes of one machine (router_model/locks.py), and the
promotion lock's fallback when its file cannot be opened."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time

import pytest

from router_model import pipeline, settings
from router_model.locks import FileLock

#: A second process: takes the lock, says when it got it.
TAKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from router_model.locks import FileLock
    print("started", flush=True)
    with FileLock(Path(sys.argv[1])):
        print(f"held {time.time()}", flush=True)
    """
)


def test_a_second_process_waits_until_the_first_lets_go(tmp_path):
    path = tmp_path / "a.lock"
    with FileLock(path):
        taker = subprocess.Popen([sys.executable, "-c", TAKER, str(path)], stdout=subprocess.PIPE, text=True)
        assert taker.stdout.readline() == "started\n"
        time.sleep(0.5)  # it is waiting on the lock now, not getting it
        assert taker.poll() is None
        released = time.time()
    out, _ = taker.communicate(timeout=30)
    assert taker.returncode == 0
    assert float(out.split()[-1]) >= released


def test_the_lock_is_let_go_and_its_file_closed_when_the_block_raises(tmp_path):
    path = tmp_path / "a.lock"
    lock = FileLock(path)
    with pytest.raises(RuntimeError, match="inside"), lock:
        raise RuntimeError("inside the block")
    assert lock._handle.closed
    with FileLock(path):  # free again (flock would wait forever for a held lock)
        pass


def test_a_lock_file_that_cannot_be_opened_fails_when_the_lock_is_made(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        FileLock(tmp_path / "missing" / "a.lock")


def test_the_promotion_lock_falls_back_to_the_registry_lock_without_its_file(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(settings, "data_dir", lambda: blocker / "data")  # under a file: no folder
    ran = []
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__), pipeline._local_lock():
        ran.append(True)
    assert ran == [True]
    assert "No local promotion lock" in caplog.text and "relying on the registry lock" in caplog.text
