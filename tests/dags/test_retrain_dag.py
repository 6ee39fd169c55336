"""The ``mushroom_router_retrain`` DAG: structure, cheap parsing, and real runs with ``dag.test()``.

The runs share one fresh MLflow registry per module: a synthetic run makes version 1 champion, a
deliberately weak model becomes challenger, re-running that same DAG run registers nothing new, and
bad data or missing Kaggle credentials fail before anything is registered or moved.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from router_model.settings import WEAK_TRAIN_PARAMS

pytestmark = pytest.mark.airflow

DAG_ID = "mushroom_router_retrain"
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
DAG_FILE = DAGS_FOLDER / f"{DAG_ID}.py"
MODEL_NAME = "mushroom-router"
ASSET_URI = "mlflow://models/mushroom-router"

TASK_IDS = {
    "fetch_data",
    "validate_data",
    "check_changes",
    "train_and_register",
    "evaluate_against_champion",
    "gate",
    "promote",
    "keep_challenger",
}
UPSTREAM = {
    "fetch_data": set(),
    "validate_data": {"fetch_data"},
    "check_changes": {"fetch_data", "validate_data"},
    "train_and_register": {"fetch_data", "check_changes"},
    "evaluate_against_champion": {"fetch_data", "train_and_register"},
    "gate": {"evaluate_against_champion"},
    "promote": {"gate"},
    "keep_challenger": {"gate"},
}
#: A fixed logical date, so the weak run can be re-run as the same DAG run (same run id).
WEAK_LOGICAL_DATE = datetime(2026, 1, 2, tzinfo=UTC)


# --- helpers -----------------------------------------------------------------------------------


def task_states(dag_run: Any) -> dict[str, str | None]:
    """``{task_id: state}`` of a finished DAG run."""
    return {ti.task_id: (str(ti.state) if ti.state else None) for ti in dag_run.get_task_instances()}


def task_instance(dag_run: Any, task_id: str) -> Any:
    return next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)


def versions() -> list[int]:
    """Registered version numbers of the router (empty before the first registration).

    Through ``registry.client()``, which names the store for runs and registry alike: a client
    given only a tracking URI takes the registry URI an earlier test may have left set.
    """
    from router_model import registry

    client = registry.client()
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))


def version_tags(version: int) -> dict[str, str]:
    from router_model import registry

    client = registry.client()
    return dict(client.get_model_version(MODEL_NAME, str(version)).tags)


def run_inputs(run_id: str) -> list[Any]:
    """The dataset inputs MLflow recorded on a training run."""
    from router_model import registry

    client = registry.client()
    return list(client.get_run(run_id).inputs.dataset_inputs)


def alias(name: str) -> int | None:
    """The version holding an alias, read through ``router_model.registry``."""
    from router_model import registry

    found = registry.alias_version(name)
    return int(found.version) if found is not None else None


def registry_snapshot() -> dict[str, Any]:
    return {"versions": versions(), "champion": alias("champion"), "challenger": alias("challenger")}


def run(dag: Any, conf: dict[str, Any], logical_date: datetime | None = None) -> Any:
    """One ``dag.test()`` run, tasks in this process; returns the DagRun.

    With a ``logical_date`` the run id is fixed (``dag.test`` derives it from ``run_after``), so
    calling this again re-runs the same DAG run: Airflow replaces the run and runs every task again.
    """
    if logical_date is None:
        return dag.test(run_conf=conf)
    return dag.test(run_conf=conf, logical_date=logical_date, run_after=logical_date)


def load_dag_module() -> Any:
    """Import the DAG file as a plain module (to reach its helpers)."""
    spec = importlib.util.spec_from_file_location("mushroom_router_retrain_dagfile", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- module fixtures: the runs the registry tests build on ---------------------------------------


@pytest.fixture(scope="module")
def champion_run(retrain_dag: Any) -> Any:
    """First run, on synthetic data: version 1 becomes champion."""
    assert versions() == []
    return run(retrain_dag, {"data_source": "synthetic"})


@pytest.fixture(scope="module")
def challenger_run(retrain_dag: Any, champion_run: Any) -> Any:
    """A deliberately weak model, with the default ``auto`` source: it must not take champion."""
    return run(retrain_dag, {"train_params": WEAK_TRAIN_PARAMS}, WEAK_LOGICAL_DATE)


# --- structure and parsing ---------------------------------------------------------------------


def test_dagbag_parses_with_expected_tasks_and_order(airflow_db: str) -> None:
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    expected_backend = "postgresql" if os.environ.get("MUSHROOM_REQUIRE_SERVICES") == "1" else "sqlite"
    assert settings.engine.url.get_backend_name() == expected_backend
    assert airflow_db.startswith(expected_backend)

    bag = DagBag(dag_folder=str(DAGS_FOLDER))

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["mushroom_router_monitor", DAG_ID]
    dag = bag.dags[DAG_ID]
    assert set(dag.task_ids) == TASK_IDS
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == UPSTREAM
    [stat] = [s for s in bag.dagbag_stats if s.file.endswith(DAG_FILE.name)]
    assert stat.duration < timedelta(seconds=1), stat.duration

    # Daily, and whenever the drift monitor updates its asset.
    assert type(dag.schedule).__name__ == "AssetOrTimeSchedule"
    assert dag.schedule.timetable.expression in ("@daily", "0 0 * * *")
    assert dag.schedule.asset_condition.uri == "mushroom-router://monitoring/drift"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.start_date.utcoffset() == timedelta(0)
    assert dag.tags
    assert "quality gate" in dag.doc_md
    assert dag.params.dump() == {
        "data_source": "auto",
        "data_path": None,
        "min_improvement": 0.0,
        "allow_synthetic": False,
        "force": False,
        "train_params": {},
    }
    for task in dag.tasks:
        assert task.retries == 2, task.task_id
        assert task.retry_delay > timedelta(0), task.task_id
        assert task.execution_timeout is not None, task.task_id
    # The gate returns its decision; promote and keep_challenger each skip when it is not theirs.
    assert not type(dag.task_dict["gate"]).__name__.startswith("_Branch")
    assert [o.uri for o in dag.task_dict["promote"].outlets] == [ASSET_URI]
    assert dag.task_dict["keep_challenger"].outlets == []


@pytest.mark.parametrize("dag_file", sorted(DAGS_FOLDER.glob("*.py")), ids=lambda p: p.name)
def test_importing_the_dag_file_is_light_and_touches_no_db(
    airflow_db: str, tmp_path: Path, dag_file: Path
) -> None:
    """Parsing imports no MLflow/scikit-learn/pandas/NumPy, of router_model only settings, and opens no DB."""
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "heavy = ('mlflow', 'sklearn', 'pandas', 'numpy', 'router_model')\n"
        "print(json.dumps(sorted({m for m in sys.modules if m.split('.')[0] in heavy})))\n"
    )
    missing_dir = tmp_path / "does-not-exist"
    env = {
        **os.environ,
        # A database that cannot be opened: any query at import time would fail the probe.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{missing_dir / 'airflow.db'}",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        "router_model",
        "router_model.airflow_tasks",
        "router_model.errors",
        "router_model.settings",
    ]
    assert not missing_dir.exists()


def test_fail_fast_turns_permanent_errors_into_no_retry_failures(airflow_db: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from sklearn.utils._param_validation import InvalidParameterError

    from router_model.data import DataError
    from router_model.errors import ConfigError
    from router_model.pipeline import PipelineError

    fail_fast = load_dag_module().fail_fast

    def raising(err: Exception):
        @fail_fast
        def step() -> None:
            raise err

        return step

    for permanent in (
        DataError("no Kaggle credentials"),
        PipelineError("file changed"),
        ConfigError("training param lr_c=-1 is not valid"),
    ):
        with pytest.raises(AirflowFailException, match=str(permanent)):
            raising(permanent)()

    transient = DataError("Kaggle download failed: connection reset")
    transient.transient = True
    # A plain ValueError (an sklearn one included) is not a named user error: a bug or an outage
    # this package did not name keeps its retries (and its traceback in the log).
    for retried in (
        RuntimeError("tracking server unreachable"),
        ConnectionError("refused"),
        ValueError("bad key"),
        InvalidParameterError("The 'C' parameter must be a float in (0, inf)"),
        transient,
    ):
        with pytest.raises(type(retried)) as caught:
            raising(retried)()
        assert caught.value is retried

    @fail_fast
    def ok(a: int, *, b: int = 2) -> int:
        return a + b

    assert ok(1) == 3
    assert ok.__name__ == "ok"


def test_invalid_conf_is_rejected_before_the_run_starts(retrain_dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    before = registry_snapshot()
    with pytest.raises(ParamValidationError, match="data_source"):
        run(retrain_dag, {"data_source": "s3"})
    for margin in (-0.1, 0.5):  # outside settings.MIN_IMPROVEMENT_RANGE
        with pytest.raises(ParamValidationError, match="min_improvement"):
            run(retrain_dag, {"min_improvement": margin})
    assert registry_snapshot() == before


# --- runs --------------------------------------------------------------------------------------


def test_first_synthetic_run_makes_version_1_champion(champion_run: Any, airflow_db: str) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    assert champion_run.state == "success"
    assert task_states(champion_run) == {
        "fetch_data": "success",
        "validate_data": "success",
        "check_changes": "success",
        "train_and_register": "success",
        "evaluate_against_champion": "success",
        "gate": "success",
        "promote": "success",
        "keep_challenger": "skipped",
    }
    assert registry_snapshot() == {"versions": [1], "champion": 1, "challenger": None}
    tags = version_tags(1)
    assert tags["data_source"] == "synthetic"
    assert tags["retrain_key"] == f"{DAG_ID}/{champion_run.run_id}"
    assert tags["gate"] == "promoted"
    assert tags["gate_reason"] == "first version: no champion yet"

    # fetch_data hands over a URI in the artifact store, content-addressed, not a worker's path;
    # the training run records it as its dataset input with the digest.
    fetched = task_instance(champion_run, "fetch_data").xcom_pull(task_ids="fetch_data")
    assert set(fetched) == {"uri", "source", "sha256"}
    assert fetched["uri"].startswith("file://")
    assert f"/datasets/{fetched['sha256']}/" in fetched["uri"]
    assert tags["data_path"] == fetched["uri"]
    assert tags["data_sha256"] == fetched["sha256"]
    [dataset_input] = run_inputs(tags["run_id"])
    assert dataset_input.dataset.digest == fetched["sha256"][:32]
    assert fetched["uri"] in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["sha256"] == fetched["sha256"]

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_run_id == champion_run.run_id)
        ).all()
        assert [(e.uri, e.source_task_id, e.extra["version"]) for e in events] == [(ASSET_URI, "promote", 1)]


def test_weak_model_becomes_challenger_and_champion_stays(challenger_run: Any) -> None:
    assert challenger_run.state == "success"
    states = task_states(challenger_run)
    assert states["keep_challenger"] == "success"
    assert states["promote"] == "skipped"
    assert registry_snapshot() == {"versions": [1, 2], "champion": 1, "challenger": 2}
    tags = version_tags(2)
    assert tags["data_source"] == "synthetic"  # "auto" with no path and no Kaggle credentials
    assert tags["gate"] == "rejected"
    assert "is worse than champion version 1" in tags["gate_reason"]
    decision = task_instance(challenger_run, "gate").xcom_pull(task_ids="gate")
    assert decision == {"promote": False, "reason": tags["gate_reason"], "version": 2, "champion_version": 1}


def test_rerunning_the_same_run_registers_no_duplicate(
    retrain_dag: Any, challenger_run: Any, mlflow_env: Path
) -> None:
    from router_model import pipeline

    before = registry_snapshot()
    rerun = run(retrain_dag, {"train_params": WEAK_TRAIN_PARAMS}, WEAK_LOGICAL_DATE)

    assert rerun.run_id == challenger_run.run_id
    assert rerun.state == "success"
    assert task_states(rerun)["keep_challenger"] == "success"
    registered = task_instance(rerun, "train_and_register").xcom_pull(task_ids="train_and_register")
    assert registered["version"] == 2  # the task ran again and found its version by retrain key
    assert registry_snapshot() == before == {"versions": [1, 2], "champion": 1, "challenger": 2}

    # The same through the pipeline function: the key short-cuts training and registration.
    data = pipeline.fetch_data(source="synthetic")
    again = pipeline.train_and_register(
        data["path"], data["source"], WEAK_TRAIN_PARAMS, retrain_key=f"{DAG_ID}/{challenger_run.run_id}"
    )
    assert again["version"] == 2
    assert versions() == [1, 2]


def test_broken_data_file_fails_at_validate_data(
    retrain_dag: Any, champion_run: Any, mlflow_env: Path, tmp_path: Path
) -> None:
    from router_model.synthetic import make_synthetic

    frame = make_synthetic(200).astype({"cap-shape": "object"})
    frame.loc[7, "cap-shape"] = "convex"
    broken = tmp_path / "broken.csv"
    frame.to_csv(broken, index=False)
    before = registry_snapshot()

    dag_run = run(retrain_dag, {"data_source": "path", "data_path": str(broken)})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["fetch_data"] == "success"
    assert states["validate_data"] == "failed"
    assert {states[t] for t in TASK_IDS - {"fetch_data", "validate_data"}} == {"upstream_failed"}
    assert task_instance(dag_run, "validate_data").try_number == 1  # failed at once, no retries
    assert registry_snapshot() == before
    assert before["champion"] == 1


@pytest.mark.parametrize(
    ("day", "train_params", "message"),
    [
        (1, {"lr_c": -1}, "ConfigError: training param lr_c=-1 is not valid"),
        (2, {"nb_alpha": 0}, "ConfigError: training param nb_alpha=0 is not valid"),
        (
            3,
            {"nb_bins": 2.7},
            "ConfigError: training param nb_bins=2.7 is not valid; expected a whole number",
        ),
    ],
)
def test_train_params_out_of_range_fail_at_once_and_register_nothing(
    retrain_dag: Any, champion_run: Any, day: int, train_params: dict, message: str, capfd: Any
) -> None:
    """sklearn's InvalidParameterError (a ValueError) used to be retried for minutes; 2.7 became 2."""
    before = registry_snapshot()

    conf = {"data_source": "synthetic", "data_path": None, "train_params": train_params}
    dag_run = run(retrain_dag, conf, datetime(2025, 3, day, tzinfo=UTC))

    assert dag_run.state == "failed"
    # The first task that reads the params (to compare them with the champion's) refuses them.
    assert task_states(dag_run)["check_changes"] == "failed"
    assert task_instance(dag_run, "check_changes").try_number == 1  # failed at once, no retries
    assert message in "".join(capfd.readouterr())
    assert registry_snapshot() == before


def test_kaggle_without_credentials_fails_at_fetch_data(
    retrain_dag: Any, champion_run: Any, mlflow_env: Path
) -> None:
    before = registry_snapshot()

    dag_run = run(retrain_dag, {"data_source": "kaggle"})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["fetch_data"] == "failed"
    assert {states[t] for t in TASK_IDS - {"fetch_data"}} == {"upstream_failed"}
    assert task_instance(dag_run, "fetch_data").try_number == 1  # failed at once, no retries
    assert registry_snapshot() == before
    assert not (mlflow_env / "data" / "kaggle").exists()


#: Every param given explicitly: dag.test() keeps the params of the previous run otherwise.
SAME_AS_CHAMPION = {
    "data_source": "synthetic",
    "data_path": None,
    "min_improvement": 0.0,
    "allow_synthetic": False,
    "train_params": {},
    "force": False,
}
AFTER_TRAINING = {"train_and_register", "evaluate_against_champion", "gate", "promote", "keep_challenger"}


def test_a_run_on_the_champions_data_code_and_params_ends_early_and_force_trains(
    retrain_dag: Any, champion_run: Any, challenger_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The champion (version 1) was trained on the synthetic sample with default params, by this code."""
    before = registry_snapshot()
    assert before["champion"] == 1
    caplog.clear()

    same = run(retrain_dag, SAME_AS_CHAMPION, datetime(2025, 4, 1, tzinfo=UTC))

    assert same.state == "success"
    states = task_states(same)
    assert {t: states[t] for t in ("fetch_data", "validate_data", "check_changes")} == dict.fromkeys(
        ("fetch_data", "validate_data", "check_changes"), "success"
    )
    assert {states[t] for t in AFTER_TRAINING} == {"skipped"}
    assert not task_instance(same, "check_changes").xcom_pull(task_ids="check_changes")  # nothing to hand on
    log = caplog.text  # the task's log records
    assert "Stopping: nothing to train: data (sha256 " in log
    assert "equal champion version 1's; nothing registered, champion unchanged" in log
    assert registry_snapshot() == before

    forced = run(retrain_dag, {**SAME_AS_CHAMPION, "force": True}, datetime(2025, 4, 2, tzinfo=UTC))

    assert forced.state == "success"
    states = task_states(forced)
    assert states["train_and_register"] == states["promote"] == "success"
    check = task_instance(forced, "check_changes").xcom_pull(task_ids="check_changes")
    assert check["train"] is True
    assert check["reason"].endswith("equal champion version 1's, but force is set: training anyway")
    assert registry_snapshot() == {"versions": [1, 2, 3], "champion": 3, "challenger": 2}
