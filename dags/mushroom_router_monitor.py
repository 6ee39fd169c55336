"""Airflow 3 DAG: measure drift every hour, and ask for a retrain when the served world has moved.

One task, one call into :mod:`router_model.monitoring` (imported inside the task). When it finds
drift it updates the asset ``mushroom-router://monitoring/drift``, which the retrain DAG
``mushroom_router_retrain`` schedules on next to its daily run; otherwise the task is skipped and
the asset gets no event.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

# Names and the error policy only: these modules import nothing beyond the standard library.
from router_model.airflow_tasks import fail_fast
from router_model.settings import DRIFT_ASSET_NAME, DRIFT_ASSET_URI

DAG_ID = "mushroom_router_monitor"

#: Updated when the monitor finds drift; the retrain DAG schedules on it.
DRIFT_ASSET = Asset(uri=DRIFT_ASSET_URI, name=DRIFT_ASSET_NAME)

DOC_MD = f"""
# Drift monitor for the mushroom router

Every hour, **monitor** reads the rows the model server logged since the previous run
(`MUSHROOM_INFERENCE_LOG`: Parquet files or a PostgreSQL table), compares each feature, the route
mix and `poisonous_probability` with the champion's training reference (PSI and a chi-square test),
and logs a run in the MLflow experiment `mushroom-router-monitoring` with an HTML report.

When a feature's PSI is above `MUSHROOM_DRIFT_PSI` (default 0.2) it updates the asset
`{DRIFT_ASSET_URI}`, and `mushroom_router_retrain` runs (it schedules on that asset as well as
daily). Without drift, or with too few logged rows to judge, the task is **skipped** and nothing
is triggered.
"""


@dag(
    dag_id=DAG_ID,
    schedule="@hourly",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "mushroom-router", "retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["mushroom-router", "mlflow", "monitoring"],
    doc_md=DOC_MD,
)
def mushroom_router_monitor() -> None:
    @task(execution_timeout=timedelta(minutes=20), outlets=[DRIFT_ASSET])
    @fail_fast
    def monitor(outlet_events: Any = None) -> dict[str, Any]:
        """Compare the logged window with the champion's reference; skipped without drift."""
        from router_model import monitoring

        outcome = monitoring.run_monitor()
        if not outcome["drift_detected"]:
            raise AirflowSkipException(f"no drift ({outcome['status']}, {outcome['rows']} rows)")
        outlet_events[DRIFT_ASSET].extra = {"drifted": outcome["drifted"], "run_id": outcome["run_id"]}
        return outcome

    monitor()


mushroom_router_monitor()
