"""The retrain DAG and other retrains: one DAG run at a time, and a CLI retrain racing a DAG run.

Two runs of the DAG cannot overlap (``max_active_runs=1``). A ``mushroom-router train`` can still
finish between this DAG run's evaluation and its ``promote``: the test makes that happen for real
(the CLI runs as a subprocess when ``promote`` starts, through an ``on_execute_callback`` set on the
parsed DAG only), and ``promote`` must then leave the CLI's champion alone, give the DAG's version
``challenger`` with the reason, skip (so the asset gets no event), and the run still succeeds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.airflow

DAG_ID = "mushroom_router_retrain"
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
MODEL_NAME = "mushroom-router"


def parsed_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


def task_states(dag_run: Any) -> dict[str, str | None]:
    return {ti.task_id: (str(ti.state) if ti.state else None) for ti in dag_run.get_task_instances()}


def alias(name: str) -> int | None:
    from router_model import registry

    found = registry.alias_version(name)
    return int(found.version) if found is not None else None


def version_tags(version: int) -> dict[str, str]:
    from router_model import registry

    return dict(registry.client().get_model_version(MODEL_NAME, str(version)).tags)


def asset_events(dag_run: Any) -> list[int]:
    """Versions in the champion asset events this run emitted."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == dag_run.run_id)).all()
        return [e.extra["version"] for e in events]


def test_only_one_run_at_a_time(airflow_db: str) -> None:
    dag = parsed_dag()
    assert dag.max_active_runs == 1
    assert "max_active_runs=1" in dag.doc_md


def test_cli_retrain_between_gate_and_promote_keeps_its_champion(
    airflow_db: str, mlflow_env: Path, run_cli: Any
) -> None:
    dag = parsed_dag()
    first = dag.test(run_conf={"data_source": "synthetic", "force": False})
    assert first.state == "success", task_states(first)
    assert (alias("champion"), alias("challenger")) == (1, None)

    cli: list[Any] = []
    dag.task_dict["promote"].on_execute_callback = [
        lambda context: cli.append(run_cli("train", "--synthetic", "--force", timeout=300))
    ]
    date = datetime(2026, 3, 1, tzinfo=UTC)
    # Forced, like the CLI: both retrain on the champion's data, code and params.
    raced = dag.test(run_conf={"data_source": "synthetic", "force": True}, logical_date=date, run_after=date)

    # The CLI ran while this run's version 2 waited in promote, and made its version 3 champion.
    [done] = cli
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Alias: champion - version 3 beats or matches champion version 1" in done.stdout
    decision = next(ti for ti in raced.get_task_instances() if ti.task_id == "gate").xcom_pull(
        task_ids="gate"
    )
    assert (decision["promote"], decision["version"], decision["champion_version"]) == (True, 2, 1)

    assert raced.state == "success", task_states(raced)
    states = task_states(raced)
    assert (states["gate"], states["promote"], states["keep_challenger"]) == ("success", "skipped", "skipped")
    assert (alias("champion"), alias("challenger")) == (3, 2)
    tags = version_tags(2)
    assert tags["gate"] == "superseded"
    assert tags["gate_champion_version"] == "1"
    assert re.match(
        r"champion moved from version 1 to version 3 during this retrain; re-run to compare against version 3 "
        r"\(the gate had said: version 2 beats or matches champion version 1: ",
        tags["gate_reason"],
    ), tags["gate_reason"]
    assert version_tags(3)["gate"] == "promoted"
    assert asset_events(first) == [1]
    assert asset_events(raced) == []
