"""The model server's process: what loading the model sets up in it, and stopping it stops all of
it (`mlflow models serve` and the uvicorn child it starts, or the project's server and its uvicorn
workers).

`mlflow models serve` runs uvicorn as a child process, and uvicorn holds the port. Terminating only
the mlflow process left uvicorn answering `/ping` for ~60 ms after it exited (measured), long enough
for the supervisor to take the old server's answer for the new one's and report a switch that had
not happened (a CI failure: version 2 "served" while version 1 answered).
"""

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from support import free_port, wait_for_http

from router_model import server_guard, serving

# A leader that, like `mlflow models serve`, exits at once on SIGTERM, and a child that, like
# uvicorn in its graceful shutdown, keeps its port open for a while after SIGTERM (or for good).
LEADER = textwrap.dedent(
    """
    import signal, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    child.wait()
    """
)
CHILD = textwrap.dedent(
    """
    import signal, socket, sys, time
    port, linger = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    def on_term(*_):
        if linger == "forever":
            return
        time.sleep(float(linger))
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("listening", flush=True)
    while True:
        conn, _ = sock.accept()
        conn.close()
    """
)


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def start_fake(port: int, linger: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LEADER, CHILD, str(port), linger], start_new_session=True)
    deadline = time.monotonic() + 30
    while refuses(port):
        assert time.monotonic() < deadline, "the fake server never listened"
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize(
    ("linger", "leader_killed_first"),
    [("1.0", False), ("1.0", True), ("forever", False)],
    ids=["child-lingers-after-sigterm", "leader-already-dead", "child-ignores-sigterm"],
)
def test_stop_server_returns_only_when_the_port_is_free(linger, leader_killed_first):
    port = free_port()
    proc = start_fake(port, linger)
    if leader_killed_first:  # a crashed `mlflow` process: its uvicorn child runs on
        proc.kill()
        proc.wait()
        assert not refuses(port)
    serving.stop_server(proc, timeout=3.0)
    assert refuses(port)
    assert serving.group_pids(proc.pid) == []
    assert proc.returncode is not None


@pytest.mark.serving
@pytest.mark.parametrize(
    "start",
    [
        pytest.param(lambda port: serving.start_server(port=port, workers=2), id="project-serve-2-workers"),
        pytest.param(
            lambda port: subprocess.Popen(
                serving.serve_command(port=port), env=serving.serve_env(), start_new_session=True
            ),
            id="mlflow-models-serve",
        ),
    ],
)
def test_a_stopped_server_no_longer_answers(registered, start):
    """Both have children that hold the port: uvicorn's workers, or the uvicorn mlflow starts."""
    port = free_port()
    proc = start(port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", proc)
        running = serving.group_pids(proc.pid)
        assert proc.pid in running and len(running) >= 2, f"expected the server and its children: {running}"
    finally:
        serving.stop_server(proc)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=2)
    assert serving.group_pids(proc.pid) == []


def test_stop_server_on_an_already_stopped_group_returns_its_exit_code():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    proc.wait()
    assert serving.stop_server(proc) == 3


#: Loads the model twice the way the scoring server's worker does (MLflow's scoring server
#: imported, its model-path variable set) and prints the frozen-object count before and after each.
LOAD_TWICE = textwrap.dedent(
    """
    import gc, sys
    import mlflow.pyfunc, mlflow.pyfunc.scoring_server
    counts = [gc.get_freeze_count()]
    for _ in range(2):
        mlflow.pyfunc.load_model(sys.argv[1])
        counts.append(gc.get_freeze_count())
    print(*counts)
    """
)


def test_the_server_process_freezes_what_it_loaded_once(registered):
    """What the server holds once loaded is out of the cyclic collector's way, frozen once per process."""
    env = {
        **os.environ,
        server_guard.SERVER_MODEL_PATH_ENV: registered["model_uri"],
        "MUSHROOM_INFERENCE_LOG": "off",
        "MUSHROOM_METRICS": "off",
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD_TWICE, registered["model_uri"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    before, first, second = map(int, done.stdout.split()[-3:])
    assert before == 0
    assert first > 50_000  # MLflow, NumPy, pandas and the model: hundreds of thousands
    assert second <= first  # the second load froze nothing more (frozen objects may be freed)


def test_check_port_free_passes_a_free_port_and_names_a_taken_one():
    from router_model import serving
    from router_model.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        with pytest.raises(
            ConfigError, match=rf"cannot serve on 127\.0\.0\.1:{port}: Address already in use"
        ):
            serving.check_port_free("127.0.0.1", port)
    serving.check_port_free("127.0.0.1", port)  # closed: free again
    with pytest.raises(ConfigError, match=r"cannot serve on no-such-host\.invalid:80: "):
        serving.check_port_free("no-such-host.invalid", 80)
