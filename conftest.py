"""Shared test fixtures: an isolated environment, synthetic data, a trained and a served router.

Every test runs with its own MLflow store under a temp folder, no Kaggle credentials and pickle
deserialization switched off. The real data set is used only where a test asks for
``real_frame`` (from ``MUSHROOM_DATA``, which ``.ci/run`` sets); elsewhere the package's synthetic
sample stands in, so the suite passes on a machine with neither the data nor a network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import GOLDEN_ROWS, REPO, free_port, skip_or_fail, use_fresh_store, wait_for_http

#: Captured before the isolation fixture clears it from the environment.
REAL_DATA = os.environ.get("MUSHROOM_DATA", "")


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private project home and MLflow store for the whole session; no credentials."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        use_fresh_store(mp, home, tmp_path_factory.mktemp("kaggle-config"))
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        mp.setenv("GIT_PYTHON_REFRESH", "quiet")
        yield home


@pytest.fixture(autouse=True)
def mlflow_follows_the_environment() -> Iterator[None]:
    """Undo a test's MLflow URI changes: MLflow keeps them process-wide and copies them to the env."""
    saved = {"MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI")}
    yield
    import mlflow

    if saved["MLFLOW_TRACKING_URI"] is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(saved["MLFLOW_TRACKING_URI"] or "")
    # The registry follows the tracking store everywhere here (registry.client sets both); an
    # inherited MLFLOW_REGISTRY_URI would point clients and subprocesses at another test's store.
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project home and MLflow registry for one test."""
    monkeypatch.setenv("MUSHROOM_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_frame():
    """A validated synthetic training frame (deterministic)."""
    from router_model.data import validate_training_frame
    from router_model.synthetic import make_synthetic

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
    """The real data set from ``MUSHROOM_DATA`` (skips when it is not there; fails instead with
    ``MUSHROOM_REQUIRE_SERVICES=1``, as in CI)."""
    if not REAL_DATA or not Path(REAL_DATA).is_file():
        skip_or_fail("the real data set is not here (set MUSHROOM_DATA to mushroom_cleaned.csv)")
    from router_model.data import load_training_frame

    return load_training_frame(REAL_DATA)


@pytest.fixture
def golden_rows():
    """The golden rows (:data:`support.GOLDEN_ROWS`) as a frame of every feature, NaN = not given."""
    import pandas as pd

    from router_model import features as F

    return pd.DataFrame(GOLDEN_ROWS, columns=list(F.ALL_FEATURES), dtype=float)


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
        serving.stop_server(proc)
        log.close()


@pytest.fixture(scope="session")
def served_router(registered: dict):
    """The :class:`router_model.router.Router` that ``server`` serves, loaded in this process."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(registered["model_uri"]).unwrap_python_model().router


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
