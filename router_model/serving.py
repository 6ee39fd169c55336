"""Serve the registered router with MLflow's scoring server (no hand-written web app).

Two ways to start the same server:

* ``mlflow models serve`` (the documented one, for any user and runtime): :func:`serve_command`
  builds the exact command line and :func:`serve_env` the environment it needs: the virtual
  environment's ``bin/`` on ``PATH`` (MLflow starts ``uvicorn`` by name), the tracking URI, and
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` so only the router's own trusted skops types can
  ever be loaded.
* The project's own ``mushroom-router serve`` and ``supervise`` (:func:`run`,
  :func:`start_server`): the ``mlflow`` command line spends seconds importing itself, then starts
  uvicorn, which imports MLflow again and loads the model, one after the other. They run the same
  uvicorn call on the same app with the same variables directly
  (:func:`router_model.server_guard.run_scoring_server`), in one process, so a server answers its
  first prediction in little more than the time Python takes to import MLflow's scoring server
  (figures in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from router_model import features as F
from router_model import settings
from router_model.errors import ConfigError

_logger = logging.getLogger(__name__)
#: This module, run as the server of a local folder (``python -m router_model.serving``).
_MODULE = "router_model.serving"

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


def server_command(
    model_uri: str | None = None,
    host: str = settings.DEFAULT_SERVE_HOST,
    port: int = settings.DEFAULT_SERVE_PORT,
    workers: int = 1,
) -> list[str]:
    """The command line that serves ``model_uri`` the project's way (see the module docstring).

    A local folder (a copy whose code was already checked, as the supervisor hands over) is served
    by ``python -m router_model.serving``; anything else (a ``models:/`` URI) by ``python -m
    router_model serve``, which downloads the version and checks its code first.
    """
    uri = model_uri or settings.model_uri()
    where = _where(host, port, workers)
    folder = _local_folder(uri)
    if folder is not None:
        return [sys.executable, "-m", _MODULE, *where, str(folder)]
    return [sys.executable, "-m", "router_model", "serve", "--model-uri", uri, *where]


def _local_folder(uri: str) -> Path | None:
    """``uri`` as an absolute folder when it is a local (already checked) copy, else ``None``."""
    return Path(uri).resolve() if Path(uri).is_dir() else None


def _where(host: str, port: int, workers: int) -> tuple[str, ...]:
    """The server options both start commands share (a prewarmed server is matched on them)."""
    return ("--host", host, "--port", str(port), "--workers", str(workers))


def start_server(
    model_uri: str | None = None,
    host: str = settings.DEFAULT_SERVE_HOST,
    port: int = settings.DEFAULT_SERVE_PORT,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
    **popen_kwargs: object,
) -> subprocess.Popen:
    """Start the model server (:func:`server_command`) as a subprocess in its own process group.

    With ``workers`` > 1, uvicorn runs the workers as child processes, which hold the port
    between them. Stop the server with :func:`stop_server`, which waits for every process of the
    group; terminating only the returned process could leave a worker answering for a moment.

    Args:
        model_uri: A served folder or a ``models:/`` URI; default ``models:/mushroom-router@champion``.
        host: Interface to bind.
        port: TCP port.
        workers: Uvicorn worker processes.
        extra_env: Variables added to :func:`serve_env` (e.g. :func:`router_model.metrics.served_env`).
        **popen_kwargs: Passed to :class:`subprocess.Popen` (``stdout``, ``stderr``, ...).

    Returns:
        The server process, leader of its own process group.
    """
    cmd = server_command(model_uri, host, port, workers)
    # Only a checked local folder is handed over: a models:/ URI needs `serve`'s own download and check.
    folder = _local_folder(model_uri or settings.model_uri())
    spare = None if popen_kwargs or folder is None else _take_spare(_where(host, port, workers))
    if spare is not None:
        _logger.info("Starting: %s (in prewarmed pid %s)", " ".join(cmd), spare.pid)
        handover = {"model_dir": str(folder), "env": {**serve_env(), **(extra_env or {})}}
        try:
            spare.stdin.write(json.dumps(handover).encode() + b"\n")
            spare.stdin.close()
            return spare
        except OSError as err:  # it died since: a new process instead
            _logger.warning("Prewarmed server %s is gone (%s); starting a new one", spare.pid, err)
            stop_server(spare)
    _logger.info("Starting: %s", " ".join(cmd))
    popen_kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(cmd, env={**serve_env(), **(extra_env or {})}, **popen_kwargs)


#: Prewarmed server processes waiting for their model folder (:func:`prewarm`), each with the
#: server options (:func:`_where`) it was started with.
_SPARE: list[tuple[tuple[str, ...], subprocess.Popen]] = []
_WAIT = "--wait"


def check_port_free(host: str, port: int) -> None:
    """Refuse to serve on an address another process already listens on, before anything loads.

    Otherwise ``mushroom-router serve`` downloads and checks the model and prints its ``curl``
    example, and only then does uvicorn fail to bind, while the example's requests reach the
    other process. Bound as uvicorn binds (``uvicorn.Config.bind_socket``: IPv6 only for a host
    with a colon, ``SO_REUSEADDR``), so an address that uvicorn can bind passes, a port a stopped
    server left in TIME_WAIT included.

    Raises:
        ConfigError: If ``host:port`` cannot be bound, naming it and why.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(
            f"cannot serve on {host}:{port}: {reason} (is another server running there? stop it, or "
            "choose another --port)"
        ) from None


def prewarm(
    host: str = settings.DEFAULT_SERVE_HOST, port: int = settings.DEFAULT_SERVE_PORT, workers: int = 1
) -> subprocess.Popen:
    """Start a server process for ``host:port`` now, before it is known what it will serve.

    It imports what serving needs (MLflow's scoring server, scikit-learn, the router) while the
    caller (``mushroom-router supervise``) reads the registry and checks the version, on another
    core; the next :func:`start_server` of a local folder on the same ``host``, ``port`` and
    ``workers`` hands it the folder and its environment on its stdin instead of starting a new
    process. It exits when its stdin closes, so it does not outlive the process that started it.
    """
    where = _where(host, port, workers)
    proc = subprocess.Popen(
        [sys.executable, "-m", _MODULE, *where, _WAIT],
        env=serve_env(),
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    _SPARE.append((where, proc))
    return proc


def _take_spare(where: Sequence[str]) -> subprocess.Popen | None:
    """The waiting prewarmed process started for ``where`` (host, port, workers), if it still runs."""
    for spare in list(_SPARE):
        started_for, proc = spare
        if proc.poll() is not None:
            _SPARE.remove(spare)
        elif started_for == tuple(where):
            _SPARE.remove(spare)
            return proc
    return None


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

    Sends SIGTERM to the whole group (the server and any worker or child it started), and
    SIGKILL to what is left after ``timeout`` seconds. When this returns, nothing of the old server
    holds its port, so a new server can bind it and a ``/ping`` answer comes from the new one.
    Safe to call on a server that already exited (its ``uvicorn`` child may not have).

    Args:
        proc: The process :func:`start_server` returned.
        timeout: Seconds to wait for a graceful stop before killing.

    Returns:
        The server process's exit code.
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


def prepare_process(model_dir: str | Path) -> None:
    """Import what loading the router from ``model_dir`` needs, in the order that costs least.

    A version that carries its log-odds tables loads without scikit-learn or skops
    (:mod:`router_model.additive`): nothing to do. For one logged before them, skops is imported
    here, before MLflow where the caller allows it (:func:`router_model.submodels.import_skops_for_serving`).
    """
    from router_model.additive import carries_tables

    if carries_tables(model_dir):
        return
    from router_model.submodels import import_skops_for_serving

    import_skops_for_serving()


class _StopSignalError(Exception):
    """SIGTERM or SIGHUP arrived: stop serving (exit 0, as for ``docker stop``)."""


def run(
    model_path: str | Path,
    host: str = settings.DEFAULT_SERVE_HOST,
    port: int = settings.DEFAULT_SERVE_PORT,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
) -> int:
    """Serve a local model folder in this process until stopped (``mushroom-router serve``).

    The caller has checked the folder's code (:func:`router_model.supervisor.trusted_copy`). The
    environment is :func:`serve_env`'s, then MLflow's scoring server runs here
    (:func:`router_model.server_guard.run_scoring_server`). SIGTERM stops it gracefully (uvicorn
    finishes the requests in flight and runs the shutdown hooks: the inference log is flushed), and
    so does SIGHUP (a closed terminal), which one uvicorn worker would otherwise ignore.

    Args:
        model_path: The checked model folder.
        host: Interface to bind.
        port: TCP port.
        workers: Uvicorn worker processes.
        extra_env: Variables added to :func:`serve_env` (e.g. :func:`router_model.metrics.served_env`).

    Returns:
        0 when stopped by SIGTERM or SIGHUP, 130 on Ctrl-C, else uvicorn's exit status.
    """
    from router_model import server_guard

    def stop(signum: int, _frame: object) -> None:
        # Before uvicorn runs (the model still loading) and again after its graceful shutdown,
        # which restores this handler and raises the signal once more.
        raise _StopSignalError(signal.Signals(signum).name)

    def hang_up(_signum: int, _frame: object) -> None:
        signal.raise_signal(signal.SIGTERM)  # uvicorn's graceful shutdown, as for SIGTERM

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, hang_up),
    }
    os.environ.update({**serve_env(), **(extra_env or {})})
    try:
        server_guard.run_scoring_server(model_path, host, port, workers)
    except _StopSignalError:
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m router_model.serving [--host H] [--port P] [--workers N] MODEL_DIR | --wait``.

    Serves a model folder whose code the caller has already checked (the supervisor's verified
    cache): what :func:`start_server` runs for a local folder. With ``--wait`` (:func:`prewarm`)
    it imports everything first and then reads ``{"model_dir", "env"}`` as one JSON line on stdin.
    """
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=main.__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.DEFAULT_SERVE_HOST)
    parser.add_argument("--port", type=int, default=settings.DEFAULT_SERVE_PORT)
    parser.add_argument("--workers", type=int, default=1)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("model_dir", nargs="?", help="a local MLflow model folder (MLmodel at its root)")
    where.add_argument(_WAIT, action="store_true", help="import everything, then read the folder from stdin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = args.model_dir
    if args.wait:
        import mlflow.pyfunc.scoring_server  # noqa: F401 - imported now, while the caller works
        import uvicorn  # noqa: F401

        from router_model import server_guard  # noqa: F401

        line = sys.stdin.readline()
        if not line:  # the starter exited without needing this server
            return 0
        handover = json.loads(line)
        os.environ.update(handover["env"])
        model_dir = handover["model_dir"]
    prepare_process(model_dir)
    return run(model_dir, args.host, args.port, args.workers)


def curl_example(host: str = settings.DEFAULT_SERVE_HOST, port: int = settings.DEFAULT_SERVE_PORT) -> str:
    """A ready-to-paste curl command that scores one row of each feature set."""
    body = json.dumps({"dataframe_records": F.example_rows(), "params": {"threshold": 0.5}})
    return f"curl -s http://{host}:{port}/invocations -H 'Content-Type: application/json' \\\n  -d '{body}'"


if __name__ == "__main__":
    sys.exit(main())
