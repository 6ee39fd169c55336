"""Shared test fixtures: an isolated environment, synthetic data, a trained and a served router.

Every test runs with its own MLflow store under a temp folder, no Kaggle credentials and pickle
deserialization switched off. The real data set is used only where a test asks for
``real_frame`` (from ``MUSHROOM_DATA``, which ``.ci/run`` sets); elsewhere the package's synthetic
sample stands in, so the suite passes on a machine with neither the data nor a network.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent
#: Captured before the isolation fixture clears it from the environment.
REAL_DATA = os.environ.get("MUSHROOM_DATA", "")

_CLEARED = (
    "MUSHROOM_DATA",
    "MUSHROOM_MODEL_URI",
    "MUSHROOM_ARTIFACT_ROOT",
    "MUSHROOM_DATA_DIR",
    "MUSHROOM_EXPERIMENT",
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
)


def services_required() -> bool:
    """Whether missing services must fail tests instead of skipping them (CI sets it)."""
    return os.environ.get("MUSHROOM_REQUIRE_SERVICES", "") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip on a user's machine; fail where services are required."""
    if services_required():
        pytest.fail(f"{reason} (MUSHROOM_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Terminate a process group started with ``start_new_session=True``; kill if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=timeout)


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private project home and MLflow store for the whole session; no credentials."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for name in _CLEARED:
            mp.delenv(name, raising=False)
        mp.setenv("MUSHROOM_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv("KAGGLE_CONFIG_DIR", str(tmp_path_factory.mktemp("kaggle-config")))
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        mp.setenv("GIT_PYTHON_REFRESH", "quiet")
        yield home


@pytest.fixture
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project home and MLflow registry for one test."""
    monkeypatch.setenv("MUSHROOM_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_frame():
    """A validated synthetic training frame (deterministic)."""
    from router_model.data import make_synthetic, validate_training_frame

    return validate_training_frame(make_synthetic(4000))


@pytest.fixture(scope="session")
def trained(synthetic_frame):
    """A :class:`router_model.train.TrainResult` on the synthetic frame."""
    from router_model.train import train

    return train(synthetic_frame)


@pytest.fixture(scope="session")
def router(trained):
    """The in-memory :class:`router_model.router.Router`."""
    return trained.router


@pytest.fixture(scope="session")
def real_frame():
    """The real data set from ``MUSHROOM_DATA`` (skips when it is not there)."""
    if not REAL_DATA or not Path(REAL_DATA).is_file():
        pytest.skip("the real data set is not here (set MUSHROOM_DATA to mushroom_cleaned.csv)")
    from router_model.data import load_training_frame

    return load_training_frame(REAL_DATA)


@pytest.fixture(scope="session")
def registered(isolated_env: Path) -> dict:
    """The router trained on synthetic data and registered as champion in the session store."""
    from router_model import pipeline

    outcome = pipeline.retrain(source="synthetic")
    assert outcome["alias"] == "champion"
    return outcome


@pytest.fixture(scope="session")
def server(registered: dict, isolated_env: Path) -> Iterator[str]:
    """A real ``mlflow models serve`` of ``models:/mushroom-router@champion`` on loopback."""
    from router_model import serving

    port = free_port()
    log = open(isolated_env / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = serving.start_server(port=port, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", proc)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def run_cli(isolated_env: Path):
    """Run ``python -m router_model`` in a subprocess; returns the CompletedProcess."""

    def run(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "router_model", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, **kwargs.pop("env", {})},
            **kwargs,
        )

    return run
