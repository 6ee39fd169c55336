"""Serve the registered router with ``mlflow models serve`` (no hand-written web app).

:func:`serve_command` builds the exact command line and :func:`serve_env` the environment it
needs: the virtual environment's ``bin/`` on ``PATH`` (MLflow starts ``uvicorn`` by name), the
tracking URI, and ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` so only the router's own trusted
skops types can ever be loaded.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from router_model import features as F
from router_model import settings

_logger = logging.getLogger(__name__)


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
    **popen_kwargs: object,
) -> subprocess.Popen:
    """Start ``mlflow models serve`` as a subprocess (the caller stops it)."""
    cmd = serve_command(model_uri, host, port, workers)
    _logger.info("Starting: %s", " ".join(cmd))
    return subprocess.Popen(cmd, env=serve_env(), **popen_kwargs)


def curl_example(host: str = settings.DEFAULT_SERVE_HOST, port: int = settings.DEFAULT_SERVE_PORT) -> str:
    """A ready-to-paste curl command that scores one row of each feature set."""
    body = json.dumps({"dataframe_records": F.example_rows(), "params": {"threshold": 0.5}})
    return f"curl -s http://{host}:{port}/invocations -H 'Content-Type: application/json' \\\n  -d '{body}'"
