"""Airflow 3 DAG: retrain the mushroom router and promote it only when it passes the quality gate.

Every task is one call into :mod:`router_model.pipeline`, imported inside the task, so parsing this
file imports neither MLflow, scikit-learn nor pandas and touches no database. Of ``router_model``
it imports only ``settings``, ``errors`` and ``airflow_tasks`` (standard library only), for the
params' ranges and the error policy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

# Names, ranges and the error policy only: these modules import nothing beyond the standard library.
from router_model.airflow_tasks import fail_fast, go_on
from router_model.settings import (
    DRIFT_ASSET_NAME,
    DRIFT_ASSET_URI,
    FORCE_RETRAIN,
    FORCE_RETRAIN_HELP,
    MIN_IMPROVEMENT_RANGE,
    WEAK_TRAIN_PARAMS,
)

DAG_ID = "mushroom_router_retrain"

#: Updated when a new version takes ``champion``; other DAGs can schedule on it.
CHAMPION_ASSET = Asset(uri="mlflow://models/mushroom-router", name="mushroom-router-champion")
#: Updated by ``mushroom_router_monitor`` when it finds drift: a retrain runs then, not only daily.
DRIFT_ASSET = Asset(uri=DRIFT_ASSET_URI, name=DRIFT_ASSET_NAME)
SCHEDULE = AssetOrTimeSchedule(timetable=CronTriggerTimetable("@daily", timezone="UTC"), assets=DRIFT_ASSET)


DOC_MD = f"""
# Retrain the mushroom router behind a quality gate

`fetch_data` → `validate_data` → `check_changes` → `train_and_register` → `evaluate_against_champion`
→ `gate` → `promote` **or** `keep_challenger`.

* **fetch_data** resolves the training CSV. `data_source=auto` uses `data_path` or `MUSHROOM_DATA`,
  else Kaggle (`prishasawhney/mushroom-dataset`) when Kaggle credentials are set, else a
  *synthetic* sample (logged with a loud warning; not for real decisions). It then shares the
  file through MLflow's artifact store at `<artifact root>/datasets/<sha256>/<file>` and passes on
  only that URI and the sha256.
* **validate_data** checks every column; a bad file fails here, before anything is registered.
* **check_changes** compares the data's sha256, the code's sha256 and the effective training params
  with the champion's (tags of each version). All equal: training would reproduce the champion, so
  the run ends here, its log says why, and every later task is skipped: nothing is registered and
  `champion` does not move. `{FORCE_RETRAIN}` trains anyway.
* **train_and_register** trains and registers a new version of `mushroom-router` with no alias,
  recording the file as the run's dataset input (source URI, digest, `sha256` tag).
  It is keyed by `<dag_id>/<run_id>`: clearing and re-running the same DAG run reuses that version.
* **evaluate_against_champion** scores the new version and the current `champion` on the same
  held-out rows.
* **gate** promotes only when, on the new held-out rows *and* on the champion's own held-out rows
  (stored with each version), the ROC-AUC of *each* route is at least the champion's plus
  `min_improvement`. Each set needs enough rows of both classes; a synthetic-data version never
  replaces a real-data champion unless `allow_synthetic` is set. It returns its decision.
* **promote** moves `champion` and updates the asset `{CHAMPION_ASSET.uri}`;
  **keep_challenger** gives the version the `challenger` alias. Each runs on its side of the
  decision and is skipped on the other. Both record the reason as the
  `gate_reason` tag on the version. Nothing before them touches `champion`. If another retrain
  (say `mushroom-router train`) promoted a version after this run's evaluation, **promote** leaves
  `champion` alone, gives the version `challenger` (tag `gate=superseded`, the reason says which
  version to compare against) and is skipped, so the asset gets no event. That read-compare-move
  holds a lock kept in the registry itself (the registered model `mushroom-router.promotion-lock`),
  so it is atomic across machines too. One run at a time (`max_active_runs=1`).

Bad data, missing Kaggle credentials and `train_params` outside their ranges fail at once with a
one-line reason; other errors (for example an unreachable tracking server) are retried.

**What runs where.** Any executor: LocalExecutor on one machine, or CeleryExecutor /
KubernetesExecutor with each task on any worker, disks not shared. Tasks hand each other small
values only (the data's URI and sha256, the version, the decision); every later task downloads the
file from the artifact store into its own data cache and checks the sha256. What every worker needs:
this package installed, the same `MLFLOW_TRACKING_URI` (a `mlflow server` with `--serve-artifacts`,
so the artifact store needs no credentials of its own), and, for `data_source=path`, the file on the
worker that runs **fetch_data** (only that one).

Try the gate with a weak model: trigger with `{{"train_params": {WEAK_TRAIN_PARAMS}}}`
(JSON: double quotes).
"""

default_args = {
    "owner": "mushroom-router",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
    "execution_timeout": timedelta(minutes=30),
}

params = {
    "data_source": Param(
        "auto",
        type="string",
        enum=["auto", "kaggle", "path", "synthetic"],
        description=(
            "auto: data_path or MUSHROOM_DATA, else Kaggle when credentials are set, else synthetic. "
            "kaggle/path/synthetic force one source."
        ),
    ),
    "data_path": Param(
        None,
        type=["null", "string"],
        description=(
            "Training file on the worker that runs fetch_data (CSV, Parquet or JSON); "
            "used by 'auto' and 'path'."
        ),
    ),
    "min_improvement": Param(
        MIN_IMPROVEMENT_RANGE[0],
        type="number",
        minimum=MIN_IMPROVEMENT_RANGE[0],
        maximum=MIN_IMPROVEMENT_RANGE[1],
        description="How much higher each route's ROC-AUC must be than the champion's to promote "
        f"({MIN_IMPROVEMENT_RANGE[0]} to {MIN_IMPROVEMENT_RANGE[1]}).",
    ),
    "allow_synthetic": Param(
        False,
        type="boolean",
        description="Let a version trained on synthetic data replace a champion trained on real data "
        "(it must still pass the gate).",
    ),
    FORCE_RETRAIN: Param(
        False, type="boolean", description=FORCE_RETRAIN_HELP[:1].upper() + FORCE_RETRAIN_HELP[1:] + "."
    ),
    "train_params": Param(
        {},
        type="object",
        additionalProperties={"type": ["string", "number", "integer", "boolean"]},
        description=(
            "Overrides of router_model.train.TrainConfig, e.g. "
            '{"nb_bins": 32, "nb_orders": "3", "lr_c": 1.0}; unknown keys fail the run.'
        ),
    ),
}


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args=default_args,
    params=params,
    tags=["mushroom-router", "mlflow", "retrain"],
    doc_md=DOC_MD,
)
def mushroom_router_retrain() -> None:
    @task(execution_timeout=timedelta(minutes=15))
    @fail_fast
    def fetch_data(params: dict[str, Any] | None = None) -> dict[str, str]:
        """Resolve the training file and share it; returns ``{"uri", "source", "sha256"}``."""
        from router_model import pipeline

        source = params["data_source"]
        return pipeline.share_data(
            source=None if source == "auto" else source, path=params["data_path"] or None
        )

    @task(execution_timeout=timedelta(minutes=10))
    @fail_fast
    def validate_data(fetched: dict[str, str]) -> dict[str, Any]:
        """Check the file; returns row count and class balance."""
        from router_model import pipeline

        return pipeline.validate_data(fetched["uri"], fetched["sha256"])

    @task.short_circuit(execution_timeout=timedelta(minutes=5))
    @fail_fast
    def check_changes(fetched: dict[str, str], params: dict[str, Any] | None = None) -> dict[str, Any] | bool:
        """Go on only when data, code or params differ from the champion's (or ``force``); the log says why.

        Returns the check (truthy) to go on, or ``False``: every later task is then skipped.
        """
        from router_model import pipeline

        return go_on(
            pipeline.training_needed(fetched["sha256"], params["train_params"], params[FORCE_RETRAIN])
        )

    @task(execution_timeout=timedelta(minutes=60))
    @fail_fast
    def train_and_register(
        fetched: dict[str, str], params: dict[str, Any] | None = None, ti: Any = None
    ) -> dict[str, Any]:
        """Train and register a version keyed by this DAG run; returns run id, model URI and version."""
        from router_model import pipeline

        return pipeline.train_and_register(
            fetched["uri"],
            fetched["source"],
            params["train_params"],
            retrain_key=f"{ti.dag_id}/{ti.run_id}",
            sha256=fetched["sha256"],
        )

    @task(execution_timeout=timedelta(minutes=20))
    @fail_fast
    def evaluate_against_champion(registered: dict[str, Any], fetched: dict[str, str]) -> dict[str, Any]:
        """Score the new version and the champion on the same held-out rows."""
        from router_model import pipeline

        return pipeline.evaluate_against_champion(registered["version"], fetched["uri"])

    @task(execution_timeout=timedelta(minutes=5))
    @fail_fast
    def gate(evaluation: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Decide; returns the decision, which ``promote`` or ``keep_challenger`` applies."""
        from router_model import pipeline

        return pipeline.decide(evaluation, params["min_improvement"], params["allow_synthetic"]).as_dict()

    @task(execution_timeout=timedelta(minutes=10), outlets=[CHAMPION_ASSET])
    @fail_fast
    def promote(decision: dict[str, Any], outlet_events: Any = None) -> str:
        """Move ``champion`` to the new version and record the reason.

        Skipped when the gate rejected the version (``keep_challenger`` runs instead), and when
        another retrain promoted a version after this one was evaluated: the new version is then
        ``challenger`` (see ``pipeline.apply_decision``). A skipped task gives the asset no event.
        """
        if not decision["promote"]:
            raise AirflowSkipException(
                f"the gate kept version {decision['version']} out: {decision['reason']}"
            )
        from router_model import pipeline

        applied = pipeline.apply_decision(decision)
        if not applied.promote:
            raise AirflowSkipException(f"version {applied.version} is {applied.alias}: {applied.reason}")
        outlet_events[CHAMPION_ASSET].extra = {"version": applied.version, "reason": applied.reason}
        return applied.alias

    @task(execution_timeout=timedelta(minutes=10))
    @fail_fast
    def keep_challenger(decision: dict[str, Any]) -> str:
        """Give the new version ``challenger`` (champion stays) and record the reason; skipped on a promotion."""
        if decision["promote"]:
            raise AirflowSkipException(f"the gate promoted version {decision['version']}")
        from router_model import pipeline

        return pipeline.apply_decision(decision).alias

    fetched = fetch_data()
    validated = validate_data(fetched)
    registered = train_and_register(fetched)
    validated >> check_changes(fetched) >> registered
    evaluation = evaluate_against_champion(registered, fetched)
    decision = gate(evaluation)
    promote(decision)
    keep_challenger(decision)


mushroom_router_retrain()
