"""The supervisor behind the compose model server: waits for a champion, follows it, survives crashes."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support import REPO, free_port

from router_model import features as F
from router_model import pipeline, registry, settings
from router_model.supervisor import ChampionSupervisor

pytestmark = pytest.mark.serving

WEAK = {"nb_bins": 2, "nb_orders": "1", "lr_bins": 2, "lr_orders": "1"}


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def score(port):
    response = requests.post(
        f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": F.example_rows()}, timeout=30
    )
    assert response.status_code == 200, response.text
    return pd.DataFrame(response.json()["predictions"])


def served(port):
    """The served version and the switch count, as the server's /metrics reports them."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    return found["mushroom_router_model_info"].labels["version"], found[
        "mushroom_router_switches_total"
    ].value


def expected_for(version):
    router = registry.load_router(registry.version_uri(version))
    return router.predict(pd.DataFrame(F.example_rows()))["poisonous_probability"].to_numpy()


@pytest.fixture
def supervisor(fresh_store):
    sup = ChampionSupervisor(port=free_port(), poll_seconds=0.5, cache_dir=fresh_store / "cache")
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    yield sup
    sup.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert sup.served is None


def test_waits_for_a_champion_then_serves_it_and_follows_the_alias(supervisor, fresh_store, caplog):
    caplog.set_level(logging.INFO, logger="router_model.supervisor")
    wait_until(
        lambda: "Waiting: mushroom-router@champion does not exist yet" in caplog.text, 10, "the wait message"
    )
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{supervisor.port}/ping", timeout=2)

    path = fresh_store / "train.csv"
    from router_model.data import make_synthetic

    make_synthetic(2000).to_csv(path, index=False)
    first = pipeline.retrain(path=str(path))
    assert first["alias"] == settings.CHAMPION
    wait_until(lambda: supervisor.served is not None and supervisor._ping(), 60, "version 1 to be served")
    pd.testing.assert_series_equal(
        score(supervisor.port)["poisonous_probability"],
        pd.Series(expected_for(1), name="poisonous_probability"),
    )
    assert served(supervisor.port) == ("1", 0)

    weak = pipeline.train_and_register(str(path), train_params=WEAK)
    moved = time.monotonic()
    registry.set_alias(settings.CHAMPION, weak["version"])
    wait_until(
        lambda: supervisor.served is not None and supervisor.served.version == 2 and supervisor._ping(),
        60,
        "the server to follow champion to version 2",
    )
    assert time.monotonic() - moved < 60
    pd.testing.assert_series_equal(
        score(supervisor.port)["poisonous_probability"],
        pd.Series(expected_for(2), name="poisonous_probability"),
    )
    assert "switch took" in caplog.text
    assert served(supervisor.port) == ("2", 1)


def test_restarts_a_crashed_server(supervisor, fresh_store, caplog):
    caplog.set_level(logging.INFO, logger="router_model.supervisor")
    pipeline.retrain(source="synthetic")
    # "switch took" is logged once the supervisor itself saw /ping answer; a kill before that is a
    # failed start (also retried, but logged differently), not the crash this test is about.
    wait_until(lambda: "switch took" in caplog.text, 60, "version 1 to be served")
    first_pid = supervisor.served.process.pid
    os.kill(first_pid, signal.SIGKILL)
    wait_until(
        lambda: (
            supervisor.served is not None
            and supervisor.served.process.pid != first_pid
            and supervisor._ping()
        ),
        60,
        "a restarted server",
    )
    assert "exited with -9; restarting" in caplog.text
    assert score(supervisor.port)["model"].tolist() == [F.NAIVE_BAYES, F.LOGISTIC_REGRESSION]
    assert served(supervisor.port) == ("1", 0)  # a restart is not a switch


def test_keeps_serving_when_the_registry_is_unreachable(supervisor, fresh_store, monkeypatch, caplog):
    pipeline.retrain(source="synthetic")
    wait_until(lambda: supervisor.served is not None and supervisor._ping(), 60, "version 1 to be served")

    def unreachable(alias):
        raise ConnectionError("tracking server down")

    monkeypatch.setattr(registry, "alias_version", unreachable)
    caplog.set_level(logging.WARNING, logger="router_model.supervisor")
    wait_until(lambda: "keeping the current server" in caplog.text, 10, "the warning")
    assert supervisor._ping()
    assert score(supervisor.port)["model"].tolist() == [F.NAIVE_BAYES, F.LOGISTIC_REGRESSION]


def test_cli_supervise_waits_and_stops_on_sigterm(fresh_store):
    env = {**os.environ, "MUSHROOM_HOME": str(fresh_store)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router_model",
            "supervise",
            "--port",
            str(free_port()),
            "--poll-seconds",
            "1",
        ],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "Waiting" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "Waiting: mushroom-router@champion does not exist yet" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_refuses_to_switch_when_another_process_answers_on_its_port(fresh_store, tmp_path):
    """A /ping answer that is not from our server must not count as 'serving version N'."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Pong(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    pipeline.retrain(source="synthetic")
    squatter = ThreadingHTTPServer(("127.0.0.1", free_port()), Pong)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    try:
        sup = ChampionSupervisor(port=squatter.server_address[1], cache_dir=tmp_path / "cache")
        with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:\d+ still answers /ping .*another process"):
            sup.switch_to(1)
        assert sup.served is None
    finally:
        squatter.shutdown()
