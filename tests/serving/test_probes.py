"""Probes for orchestrators, on real servers: readiness (``/ready``) and liveness (``/ping``).

The paths are read from the Kubernetes example and the compose healthcheck, so a probe that the
manifests name and the server does not answer fails here. The server of the ``server`` fixture is
started the project's way (``mushroom-router serve``: MLflow's scoring server in the CLI's own
process); the documented ``mlflow models serve`` answers the same probes.
"""

from __future__ import annotations

import subprocess
import types
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support import REPO, free_port, model_server_container, wait_for_http

from router_model import features as F
from router_model import server_guard, serving

pytestmark = pytest.mark.serving


def probe_paths() -> dict[str, str]:
    """The paths the Kubernetes example probes, by probe."""
    container = model_server_container()
    return {probe: container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}


def compose_healthcheck_path() -> str:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]["model-server"]
    url = next(part for part in compose["healthcheck"]["test"] if "http://" in part)
    return urlsplit(url.split("'")[1]).path


def test_the_projects_server_answers_the_probes_the_manifests_name(server):
    paths = {**probe_paths(), "compose": compose_healthcheck_path()}
    for probe, path in paths.items():
        answer = requests.get(f"{server}{path}", timeout=30)
        assert answer.status_code == 200, (probe, path, answer.text)
    ready = requests.get(f"{server}{probe_paths()['readinessProbe']}", timeout=30)
    assert ready.json() == {"ready": True}


def test_the_projects_server_runs_the_guard_its_fast_path_and_metrics(server, isolated_env):
    """``mushroom-router serve`` starts MLflow's scoring server itself; the router still hardens it."""
    log = isolated_env / f"serve-{urlsplit(server).port}.log"
    text = log.read_text()
    assert "Scoring server guard installed" in text and "fast path on the event loop" in text
    assert "mlflow models serve" not in text
    refused = requests.post(f"{server}/invocations", data=b"{}", headers={"Content-Type": ""}, timeout=30)
    assert refused.status_code == 415 and refused.json()["error_code"] == "BAD_REQUEST"
    answer = requests.post(f"{server}/invocations", json={"dataframe_records": F.example_rows()}, timeout=30)
    assert [row["model"] for row in answer.json()["predictions"]] == list(F.ROUTES)
    scrape = requests.get(f"{server}/metrics", timeout=30).text
    assert 'mushroom_router_requests_total{code="200"}' in scrape


def test_mlflow_models_serve_answers_the_same_probes(registered, tmp_path):
    port = free_port()
    with (tmp_path / "mlflow-serve.log").open("wb") as log:
        proc = subprocess.Popen(
            serving.serve_command(port=port),
            env=serving.serve_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/ping", proc, timeout=180)
            for path in probe_paths().values():
                assert requests.get(f"http://127.0.0.1:{port}{path}", timeout=30).status_code == 200, path
        finally:
            serving.stop_server(proc)


# ------------------------------------------------------------------ readiness, in process


class _Counting:
    """A router stand-in that answers as ``answer`` says and counts its calls."""

    def __init__(self, answer) -> None:
        self.answer, self.calls = answer, 0

    def predict(self, rows: pd.DataFrame, params: object) -> pd.DataFrame:
        self.calls += 1
        return self.answer(rows)


def _app(router) -> TestClient:
    app = FastAPI()
    server_guard._add_readiness(app, types.SimpleNamespace(router=router))
    return TestClient(app)


def test_readiness_scores_the_example_rows_once_then_answers_from_memory(served_router):
    counting = _Counting(lambda rows: served_router.predict(rows, None))
    client = _app(counting)
    for _ in range(3):
        answer = client.get(server_guard.READY_PATH)
        assert answer.status_code == 200 and answer.json() == {"ready": True}
    assert counting.calls == 1


def _wrong_routes(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({F.OUT_MODEL: [F.NAIVE_BAYES] * len(rows), F.OUT_POISONOUS_PROBABILITY: 0.5})


def _nan(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({F.OUT_MODEL: list(F.ROUTES), F.OUT_POISONOUS_PROBABILITY: [0.2, float("nan")]})


def _raises(rows: pd.DataFrame) -> pd.DataFrame:
    raise ValueError("scorer tables do not match the features")


@pytest.mark.parametrize(
    ("router", "reason"),
    [
        (None, "RuntimeError: the model has not loaded its sub-models"),
        (_Counting(_wrong_routes), "expected routes ['naive_bayes', 'logistic_regression']"),
        (_Counting(_nan), "probabilities in [0, 1]"),
        (_Counting(_raises), "ValueError: scorer tables do not match the features"),
    ],
    ids=["not-loaded", "wrong-routes", "nan", "predict-fails"],
)
def test_a_model_that_cannot_answer_is_not_ready_and_is_asked_again(router, reason):
    client = _app(router)
    for expected_calls in (1, 2):
        answer = client.get(server_guard.READY_PATH)
        assert answer.status_code == 503
        assert answer.json()["ready"] is False and reason in answer.json()["reason"]
        if router is not None:
            assert router.calls == expected_calls  # not cached: the next probe tries again


def test_ready_check_passes_for_the_served_router(served_router):
    server_guard.ready_check(types.SimpleNamespace(router=served_router))


def test_the_probe_paths_are_the_servers():
    assert probe_paths() == {"livenessProbe": "/ping", "readinessProbe": server_guard.READY_PATH}
    assert Path(compose_healthcheck_path()) == Path(server_guard.READY_PATH)


def test_without_mlflows_app_module_there_is_no_readiness_route(monkeypatch, caplog):
    import sys

    monkeypatch.delitem(sys.modules, server_guard._APP_MODULE, raising=False)
    assert not server_guard.serve_readiness(types.SimpleNamespace(router=None))
    assert f"no {server_guard.READY_PATH}" in caplog.text
