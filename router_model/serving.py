"""Serve the registered router with ``mlflow models serve`` (no hand-written web app).

:func:`serve_command` builds the exact command line and :func:`serve_env` the environment it
needs: the virtual environment's ``bin/`` on ``PATH`` (MLflow starts ``uvicorn`` by name), the
tracking URI, and ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` so only the router's own trusted
skops types can ever be loaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from router_model import features as F
from router_model import settings

_logger = logging.getLogger(__name__)

#: How long :func:`stop_server` waits after SIGTERM, and then after SIGKILL (the compose file's
#: ``stop_grace_period`` for the model server is checked against these).
STOP_TIMEOUT_SECONDS = 20.0
KILL_WAIT_SECONDS = 10.0


def serve_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an ``mlflow models serve`` subprocess.

    Args:
        base: Starting environment (default: this process's).

    Returns:
        A copy with ``PATH``, ``MLFLOW_TRACKING_URI`` and the pickle switch set.
    """
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri()
    # The registry is the tracking store (as in registry.client); a stale inherited value would
    # resolve models:/ URIs against another store.
    env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    return env


def serve_command(
    model_uri: str | None = None,
    host: str = settings.DEFAULT_SERVE_HOST,
    port: int = settings.DEFAULT_SERVE_PORT,
    workers: int = 1,
) -> list[str]:
    """The ``mlflow models serve`` command line for the router.

    Args:
        model_uri: Default ``models:/mushroom-router@champion``.
        host: Interface to bind (loopback by default).
        port: TCP port.
        workers: Uvicorn worker processes.

    Returns:
        The argv list.
    """
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    if not Path(mlflow_cli).exists():
        mlflow_cli = "mlflow"
    return [
        mlflow_cli,
        "models",
        "serve",
        "-m",
        model_uri or settings.model_uri(),
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def start_server(
    model_uri: str | None = None,
    host: str = settings.DEFAULT_SERVE_HOST,
    port: int = settings.DEFAULT_SERVE_PORT,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
    **popen_kwargs: object,
) -> subprocess.Popen:
    """Start ``mlflow models serve`` as a subprocess in its own process group.

    ``mlflow models serve`` runs ``uvicorn`` as a child process, which is what holds the port.
    Stop the server with :func:`stop_server`, which waits for that child too; terminating only the
    returned process leaves ``uvicorn`` answering on the port for a while after it has exited.

    Args:
        model_uri: Default ``models:/mushroom-router@champion``.
        host: Interface to bind.
        port: TCP port.
        workers: Uvicorn worker processes.
        extra_env: Variables added to :func:`serve_env` (e.g. :func:`router_model.metrics.served_env`).
        **popen_kwargs: Passed to :class:`subprocess.Popen` (``stdout``, ``stderr``, ...).

    Returns:
        The ``mlflow models serve`` process, leader of its own process group.
    """
    cmd = serve_command(model_uri, host, port, workers)
    _logger.info("Starting: %s", " ".join(cmd))
    popen_kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(cmd, env={**serve_env(), **(extra_env or {})}, **popen_kwargs)


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies, already dead, do not count).

    Reads ``/proc``; where there is none, the group leader's id stands for a group that still
    has a process (``killpg`` probe).
    """
    proc_root = Path("/proc")
    if not (proc_root / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    pids = []
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def stop_server(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """Stop a process group started by :func:`start_server` and wait until none of it runs.

    Sends SIGTERM to the whole group (the ``mlflow`` process and the ``uvicorn`` it started), and
    SIGKILL to what is left after ``timeout`` seconds. When this returns, nothing of the old server
    holds its port, so a new server can bind it and a ``/ping`` answer comes from the new one.
    Safe to call on a server that already exited (its ``uvicorn`` child may not have).

    Args:
        proc: The process :func:`start_server` returned.
        timeout: Seconds to wait for a graceful stop before killing.

    Returns:
        The ``mlflow`` process's exit code.
    """
    pgid = proc.pid
    for sig, wait_for in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_WAIT_SECONDS)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_for
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
            if proc.returncode is not None:
                if not group_pids(pgid):
                    return proc.returncode
                time.sleep(0.05)
        _logger.warning("Model server process group %s still runs %.0fs after %s", pgid, wait_for, sig.name)
    raise RuntimeError(f"model server process group {pgid} survived SIGKILL")


def curl_example(host: str = settings.DEFAULT_SERVE_HOST, port: int = settings.DEFAULT_SERVE_PORT) -> str:
    """A ready-to-paste curl command that scores one row of each feature set."""
    body = json.dumps({"dataframe_records": F.example_rows(), "params": {"threshold": 0.5}})
    return f"curl -s http://{host}:{port}/invocations -H 'Content-Type: application/json' \\\n  -d '{body}'"
