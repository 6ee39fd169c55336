"""The retrain DAG when the MLflow tracking server goes away: retries, a clean failure, a clean recovery.

A real ``mlflow server`` (SQLite store and artifact folder in a temporary directory) on loopback
holds the registry, and real ``dag.test()`` runs retrain against it. The server is stopped before
one run (``fetch_data``, which shares the file through it, fails first) and, in another, right when
``promote`` starts (after the gate decided to promote); each
time the failing task is retried and the run fails, ``champion`` stays on the version it had, and
the next run after a restart on the same store succeeds.

The only changes to the parsed DAG are test speed-ups: a one-second retry delay instead of two
minutes (``dag.test()`` waits for it like the scheduler does) and, for the second outage, an
``on_execute_callback`` that stops the server. MLflow's own HTTP retries are cut to one, without
back-off, so an outage costs seconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import TrackingServer

pytestmark = pytest.mark.airflow

DAG_ID = "mushroom_router_retrain"
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
MODEL_NAME = "mushroom-router"
RETRIES = 2
#: A fixed logical date per run, so each run id (and retrain key) is known before it starts.
DATES = {
    name: datetime(2026, 2, day, tzinfo=UTC) for day, name in enumerate(("first", "down", "dies", "next"), 1)
}
#: Keeps MLflow's client from retrying a refused connection for minutes (its default: 7 retries with
#: exponential back-off, 120 s timeout).
FAST_MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


# --- helpers -----------------------------------------------------------------------------------


def task_states(dag_run: Any) -> dict[str, str | None]:
    return {ti.task_id: (str(ti.state) if ti.state else None) for ti in dag_run.get_task_instances()}


def task_instance(dag_run: Any, task_id: str) -> Any:
    return next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)


def run(dag: Any, name: str) -> Any:
    """One ``dag.test()`` run at ``DATES[name]`` on the synthetic sample; returns the DagRun.

    Forced: every run trains on the champion's data with its code and params, which would otherwise
    end each run after ``check_changes`` (nothing new to train).
    """
    date = DATES[name]
    conf = {"data_source": "synthetic", "force": True}
    return dag.test(run_conf=conf, logical_date=date, run_after=date)


def registry_state() -> dict[str, Any]:
    """Every version with its ``retrain_key`` and ``gate`` tags, and the aliases."""
    from router_model import registry

    client = registry.client()
    found = client.search_model_versions(f"name='{MODEL_NAME}'")
    aliases = {name: registry.alias_version(name) for name in ("champion", "challenger")}
    return {
        "versions": {
            int(v.version): {"retrain_key": v.tags.get("retrain_key"), "gate": v.tags.get("gate")}
            for v in found
        },
        **{name: int(v.version) if v is not None else None for name, v in aliases.items()},
    }


def retrain_key(dag_run: Any) -> str:
    return f"{DAG_ID}/{dag_run.run_id}"


def champion_events(dag_runs: list[Any]) -> dict[str, list[int]]:
    """``{run_id: [version, ...]}`` of the champion asset events these runs emitted."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run_ids = [r.run_id for r in dag_runs]
    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id.in_(run_ids))).all()
        found: dict[str, list[int]] = {}
        for event in events:
            found.setdefault(event.source_run_id, []).append(event.extra["version"])
    return found


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_server(mlflow_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A running tracking server that ``MLFLOW_TRACKING_URI`` points at, with fast client retries."""
    server = TrackingServer(tmp_path_factory.mktemp("tracking_server"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server.url)
        for name, value in FAST_MLFLOW_HTTP.items():
            mp.setenv(name, value)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def fast_retry_dag(airflow_db: str, tracking_server: TrackingServer) -> Any:
    """The DAG parsed from the DAGs folder, with a one-second retry delay (the file is unchanged)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[DAG_ID]
    for task in dag.tasks:
        assert task.retries == RETRIES, task.task_id
        assert task.retry_delay >= timedelta(minutes=1), task.task_id
        task.retry_delay = timedelta(seconds=1)
        task.max_retry_delay = timedelta(seconds=2)
    return dag


# --- the test ----------------------------------------------------------------------------------


def test_tracking_server_outage_retries_fails_cleanly_and_the_next_run_succeeds(
    fast_retry_dag: Any, tracking_server: TrackingServer, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = fast_retry_dag
    api = f"API request to {tracking_server.url}/api/2.0/mlflow"

    # A champion to protect.
    first = run(dag, "first")
    assert first.state == "success", task_states(first)
    assert registry_state() == {
        "versions": {1: {"retrain_key": retrain_key(first), "gate": "promoted"}},
        "champion": 1,
        "challenger": None,
    }
    before = registry_state()

    # 1. The server is down for the whole run: fetch_data fails on its first call (the experiment
    #    lookup, to share the file through the artifact store), is retried twice, and the run fails.
    tracking_server.stop()
    capfd.readouterr()
    down = run(dag, "down")
    out = capfd.readouterr().out  # dag.test() logs each task's traceback to stdout
    assert out.count("Task failed with exception") == 1 + RETRIES, out[-5000:]
    assert f"{api}/experiments/get-by-name failed" in out, out[-5000:]
    assert "Connection refused" in out
    assert down.state == "failed"
    states = task_states(down)
    assert states == {
        "fetch_data": "failed",
        "validate_data": "upstream_failed",
        "check_changes": "upstream_failed",
        "train_and_register": "upstream_failed",
        "evaluate_against_champion": "upstream_failed",
        "gate": "upstream_failed",
        "promote": "upstream_failed",
        "keep_challenger": "upstream_failed",
    }
    assert task_instance(down, "fetch_data").try_number == 1 + RETRIES
    tracking_server.start()
    assert registry_state() == before  # nothing registered, no alias moved

    # 2. The server dies right when promote starts: the version is registered and the gate said
    #    promote, but promote fails after its retries and champion stays where it was.
    promote = dag.task_dict["promote"]
    saved_callbacks = promote.on_execute_callback
    promote.on_execute_callback = [lambda context: tracking_server.stop()]
    capfd.readouterr()
    try:
        dies = run(dag, "dies")
    finally:
        promote.on_execute_callback = saved_callbacks
    out = capfd.readouterr().out
    assert out.count("Task failed with exception") == 1 + RETRIES, out[-5000:]
    # Its first registry call: taking the promotion lock (a registered model, see registry_lock).
    assert f"{api}/registered-models/create failed" in out, out[-5000:]
    assert "does not take champion" not in out  # an unreachable registry is not "no champion"
    assert not tracking_server.running
    assert dies.state == "failed"
    states = task_states(dies)
    assert {t: states[t] for t in ("train_and_register", "evaluate_against_champion", "gate")} == {
        "train_and_register": "success",
        "evaluate_against_champion": "success",
        "gate": "success",
    }
    assert (states["promote"], states["keep_challenger"]) == ("failed", "skipped")
    assert task_instance(dies, "promote").try_number == 1 + RETRIES
    decision = task_instance(dies, "gate").xcom_pull(task_ids="gate")
    assert decision["promote"] is True
    assert (decision["version"], decision["champion_version"]) == (2, 1)
    tracking_server.start()
    assert registry_state() == {
        "versions": {**before["versions"], 2: {"retrain_key": retrain_key(dies), "gate": None}},
        "champion": 1,
        "challenger": None,
    }

    # 3. The server is back: the next run succeeds and its own version, not a failed run's, takes
    #    champion.
    after = run(dag, "next")
    assert after.state == "success", task_states(after)
    assert task_states(after)["promote"] == "success"
    assert all(ti.try_number == 1 for ti in after.get_task_instances() if ti.state == "success")
    assert registry_state() == {
        "versions": {
            **before["versions"],
            2: {"retrain_key": retrain_key(dies), "gate": None},
            3: {"retrain_key": retrain_key(after), "gate": "promoted"},
        },
        "champion": 3,
        "challenger": None,
    }
    assert not any(v["retrain_key"] == retrain_key(down) for v in registry_state()["versions"].values())
    assert champion_events([first, down, dies, after]) == {first.run_id: [1], after.run_id: [3]}
