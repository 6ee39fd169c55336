"""``mushroom-router monitor``: logged rows against the champion's reference, one MLflow run a window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest

from router_model import features as F
from router_model import monitoring, pipeline, registry, settings
from router_model.inference_log import Batch, InferenceLog, ParquetSink
from router_model.synthetic import make_synthetic

NOW = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def champion(fresh_store, monkeypatch):
    """A champion trained on the synthetic sample, and an inference log folder for this test."""
    monkeypatch.setenv("MUSHROOM_INFERENCE_LOG", str(fresh_store / "inference"))
    return pipeline.retrain(source="synthetic")


def log_rows(folder, frame: pd.DataFrame, when: datetime, route: str = F.NAIVE_BAYES) -> None:
    """Score ``frame`` with the champion on ``route`` and log it as the model server would (one batch)."""
    router = registry.load_router(settings.model_uri())
    matrix = frame[list(F.ALL_FEATURES)].to_numpy(np.float64)
    routes = np.full(len(frame), F.ROUTES.index(route))
    poisonous = router.predict(frame, {"model": route})["poisonous_probability"].to_numpy()
    log = InferenceLog(ParquetSink(folder), flush_seconds=60)
    log.submit(Batch(when.timestamp(), "req", "run", 0.5, matrix, routes, poisonous))
    log.close()


def monitoring_runs():
    found = mlflow.get_experiment_by_name(settings.MONITORING_EXPERIMENT)
    return mlflow.search_runs([found.experiment_id]) if found else pd.DataFrame()


def test_too_few_rows_logs_nothing_and_the_window_waits(champion, fresh_store):
    log_rows(fresh_store / "inference", make_synthetic(100), NOW)
    outcome = monitoring.run_monitor()
    assert (outcome["status"], outcome["rows"], outcome["run_id"]) == (monitoring.STATUS_TOO_FEW, 100, None)
    assert len(monitoring_runs()) == 0


def test_stable_rows_then_drifted_rows_each_get_a_run(champion, fresh_store):
    folder = fresh_store / "inference"
    log_rows(folder, make_synthetic(1500), NOW)
    stable = monitoring.run_monitor(until=NOW + timedelta(minutes=1))
    assert stable["status"] == monitoring.STATUS_STABLE and not stable["drift_detected"]

    drifted = make_synthetic(1500)
    drifted["stem-width"] *= 2.0
    log_rows(folder, drifted, NOW + timedelta(minutes=5), route=F.LOGISTIC_REGRESSION)
    found = monitoring.run_monitor(until=NOW + timedelta(minutes=10))
    assert found["status"] == monitoring.STATUS_DRIFT
    assert found["rows"] == 1500  # only the new window: it starts where the last one ended
    assert "stem-width" in found["drifted"] and found["psi"]["stem-width"] > settings.drift_psi_threshold()

    runs = monitoring_runs().sort_values("start_time")
    assert runs["tags.drift_detected"].tolist() == ["false", "true"]
    run = runs.iloc[-1]
    assert run["metrics.psi_stem-width"] == pytest.approx(found["psi"]["stem-width"])
    assert run["tags.window_start"] == stable["window_end"]
    assert run["metrics.route_share_logistic_regression"] == 1.0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"], "drift")}
    assert artifacts == {"drift/report.html", "drift/distributions.png", "drift/summary.json"}
    html = mlflow.artifacts.load_text(f"runs:/{run['run_id']}/drift/report.html")
    assert "drift in stem-width" in html and "data:image/png;base64," in html
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{run['run_id']}/drift/summary.json"))[
        "drift_detected"
    ]


def test_since_overrides_the_previous_window(champion, fresh_store):
    log_rows(fresh_store / "inference", make_synthetic(800), NOW)
    assert monitoring.run_monitor(until=NOW + timedelta(minutes=1))["rows"] == 800
    again = monitoring.run_monitor(since=NOW - timedelta(minutes=1), until=NOW + timedelta(minutes=1))
    assert again["rows"] == 800


def test_no_champion_is_a_one_line_error(fresh_store, run_cli):
    with pytest.raises(monitoring.MonitorError, match="no mushroom-router@champion to compare with"):
        monitoring.run_monitor()
    env = {"MUSHROOM_HOME": str(fresh_store), "MLFLOW_TRACKING_URI": f"sqlite:///{fresh_store / 'mlflow.db'}"}
    out = run_cli("monitor", env=env)
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("mushroom-router monitor: error: no mushroom-router@champion")
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MUSHROOM_DRIFT_PSI", "0", "MUSHROOM_DRIFT_PSI is '0'; expected a positive number"),
        ("MUSHROOM_DRIFT_PSI", "nan", "expected a positive number"),
        (
            "MUSHROOM_DRIFT_MIN_ROWS",
            "2.5",
            "MUSHROOM_DRIFT_MIN_ROWS is '2.5'; expected a positive whole number",
        ),
    ],
)
def test_bad_drift_settings_are_named(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        settings.drift_psi_threshold() if name.endswith("PSI") else settings.drift_min_rows()
