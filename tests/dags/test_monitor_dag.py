"""The ``mushroom_router_monitor`` DAG: real runs that find drift, or not, and what they trigger.

A drifted window makes the monitor task succeed and update the drift asset, which queues a run of
``mushroom_router_retrain`` (it schedules on that asset besides its daily run); a stable window
skips the task, and nothing is queued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.airflow

MONITOR = "mushroom_router_monitor"
RETRAIN = "mushroom_router_retrain"
DRIFT_URI = "mushroom-router://monitoring/drift"


@pytest.fixture(scope="module")
def champion(mlflow_env: Path) -> dict:
    from router_model import pipeline

    return pipeline.retrain(source="synthetic")


def log_window(mlflow_env: Path, when: datetime, stem_width_factor: float) -> None:
    """1,500 rows as the model server logs them, with stem-width scaled by a factor."""
    from router_model import features as F
    from router_model import registry, settings
    from router_model.inference_log import Batch, InferenceLog, ParquetSink
    from router_model.synthetic import make_synthetic

    frame = make_synthetic(1500)
    frame["stem-width"] *= stem_width_factor
    router = registry.load_router(settings.model_uri())
    route = F.LOGISTIC_REGRESSION
    scored = router.predict(frame, {"model": route})["poisonous_probability"].to_numpy()
    log = InferenceLog(ParquetSink(mlflow_env / "data" / "inference"), flush_seconds=60)
    matrix = frame[list(F.ALL_FEATURES)].to_numpy(np.float64)
    routes = np.full(len(frame), F.ROUTES.index(route))
    log.submit(Batch(when.timestamp(), "req", "run", 0.5, matrix, routes, scored))
    log.close()


def drift_events() -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(
            session.scalars(
                select(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.uri == DRIFT_URI)
            )
        )


def queued_retrains() -> list[str]:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [q.target_dag_id for q in session.scalars(select(AssetDagRunQueue))]


def unpause(dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))


def test_monitor_dag_is_hourly_with_one_task_updating_the_drift_asset(dag_bag: Any) -> None:
    dag = dag_bag.dags[MONITOR]
    assert dag.schedule == "@hourly" and dag.catchup is False
    assert dag.task_ids == ["monitor"]
    assert [o.uri for o in dag.task_dict["monitor"].outlets] == [DRIFT_URI]


def test_stable_window_skips_then_drift_triggers_the_retrain(
    dag_bag: Any, champion: dict, mlflow_env: Path
) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    from router_model.monitoring import previous_window_end

    # What the DAG processor does: the retrain DAG must be in the metadata DB to be queued.
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(dag_bag, "dags-folder", None)
    unpause(RETRAIN)  # a paused DAG is not queued by asset events
    now = datetime.now(UTC)

    log_window(mlflow_env, now - timedelta(minutes=5), 1.0)
    stable = dag_bag.dags[MONITOR].test(
        logical_date=now - timedelta(hours=1), run_after=now - timedelta(hours=1)
    )
    [ti] = stable.get_task_instances()
    assert (stable.state, str(ti.state)) == ("success", "skipped")
    assert drift_events() == [] and RETRAIN not in queued_retrains()

    # Rows after the window the stable run judged (each run reads on from the previous one's end).
    log_window(mlflow_env, previous_window_end() + timedelta(seconds=1), 2.0)
    drifted = dag_bag.dags[MONITOR].test(logical_date=now, run_after=now)
    [ti] = drifted.get_task_instances()
    assert (drifted.state, str(ti.state)) == ("success", "success")
    [event] = drift_events()
    assert "stem-width" in event.extra["drifted"]
    assert RETRAIN in queued_retrains()  # the scheduler starts it from this queue
