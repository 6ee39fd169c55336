"""The retrain DAG under a real scheduler: CeleryExecutor with two workers that share no disk, and LocalExecutor.

A real scheduler, DAG processor and execution API server run the DAG with the CeleryExecutor: the
local Redis (127.0.0.1:6379) is the broker, fresh databases on the local PostgreSQL hold the
Airflow metadata (and Celery's results) and the MLflow store, and two ``airflow celery worker``
processes each have their own empty ``MUSHROOM_HOME``. A cluster policy on ``PYTHONPATH``
(``airflow_local_settings``, test-only) routes the tasks:

1. One run with ``fetch_data`` on worker A and every other task on worker B, so the training file
   can reach B only through the artifact store: the run succeeds and registers a champion whose
   run records the shared file as its dataset input.
2. Two runs at once, each wholly on one worker (the policy lifts ``max_active_runs`` for them).
   Each ``promote`` waits at a barrier (an ``on_execute_callback``) until the other has started,
   so both gates have decided "promote over version 1", and then both promotions run at the same
   moment on the two machines. Exactly one may take ``champion``; the other must end superseded.
   (With only the former file lock in each worker's data folder, both promoted over version 1.)

Queue names are unique per test, so other sessions using the same Redis cannot take its tasks.
The same DAG also runs once under the LocalExecutor (every task on the scheduler's machine), and
both tests record how long a run takes (``celery_run_seconds``, ``local_executor_run_seconds``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    REPO,
    create_database,
    drop_database,
    free_port,
    mlflow_server_command,
    pg_url,
    postgres_or_skip,
    skip_or_fail,
    wait_for_http,
)

from router_model import serving
from router_model.data import file_sha256 as data_sha256

pytestmark = [pytest.mark.services, pytest.mark.airflow]

_logger = logging.getLogger(__name__)
BIN = Path(sys.executable).parent
DAG_ID = "mushroom_router_retrain"
REDIS = ("127.0.0.1", 6379)

#: Test-only cluster policy: routes tasks to the two workers' queues and lines up the pair's promotions.
POLICY = """
import os
import time
from pathlib import Path

QUEUE_A, QUEUE_B = os.environ["MR_TEST_QUEUE_A"], os.environ["MR_TEST_QUEUE_B"]


def dag_policy(dag):
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    dag.timetable = NullTimetable()  # only the test's triggered runs: no scheduled or asset runs
    if dag.dag_id == "mushroom_router_retrain":
        dag.max_active_runs = 2  # the test races two runs; the DAG itself allows one


def promote_together(context):
    # A pair run's promote waits until the other pair run's promote has started too (so both
    # gates have decided), then both go at once: their read-compare-move of champion overlaps.
    run_id = context["run_id"]
    if not run_id.startswith("pair-"):
        return
    # Import first: importing the pipeline (MLflow, scikit-learn) takes seconds and would spread
    # the two promotions apart again after the barrier.
    import router_model.pipeline  # noqa: F401

    barrier = Path(os.environ["MR_TEST_BARRIER"])
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / run_id).touch()
    deadline = time.monotonic() + 300
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)


def task_policy(task):
    if task.task_id == "promote":
        task.on_execute_callback = [promote_together]


def task_instance_mutation_hook(task_instance, dag_run=None):
    run_id = task_instance.run_id or ""
    if run_id.startswith("pair-a"):
        task_instance.queue = QUEUE_A
    elif run_id.startswith("pair-b"):
        task_instance.queue = QUEUE_B
    else:
        task_instance.queue = QUEUE_A if task_instance.task_id == "fetch_data" else QUEUE_B
"""


def redis_or_skip() -> None:
    """Skip (or fail under ``MUSHROOM_REQUIRE_SERVICES=1``) without a Redis answering PING."""
    try:
        with socket.create_connection(REDIS, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as err:
        skip_or_fail(f"Redis at {REDIS[0]}:{REDIS[1]} is not reachable: {err}")
        return
    if not answer.startswith(b"+PONG"):
        skip_or_fail(f"Redis at {REDIS[0]}:{REDIS[1]} answered {answer!r} to PING")


def sql(database: str, statement: str, args: tuple = ()) -> list[tuple]:
    """Run one statement on a test database; returns the rows (none for an update)."""
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@dataclass
class Cluster:
    env: dict[str, str]
    tmp: Path
    airflow_db: str
    tracking_uri: str
    queues: tuple[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.log_file = log
        proc.name = name
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n" + (self.tmp / f"{p.name}.log").read_text(errors="replace")[-3000:]
            for p in self.procs
        )

    def airflow(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=300, cwd=REPO
        )
        assert done.returncode == 0, (
            f"airflow {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def trigger(self, run_id: str, conf: dict[str, Any]) -> None:
        self.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf))

    def task_states(self, run_id: str) -> dict[str, str | None]:
        rows = sql(
            self.airflow_db,
            "SELECT task_id, state FROM task_instance WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
        return dict(rows)

    def run_state(self, run_id: str) -> str | None:
        rows = sql(
            self.airflow_db, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id)
        )
        return rows[0][0] if rows else None

    def run_seconds(self, run_id: str) -> float:
        """How long the run took, from the scheduler's start to its end (not counting the trigger)."""
        [(seconds,)] = sql(
            self.airflow_db,
            "SELECT EXTRACT(EPOCH FROM end_date - start_date) FROM dag_run WHERE dag_id = %s AND run_id = %s",
            (DAG_ID, run_id),
        )
        return float(seconds)

    def wait(self, check, what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for proc in self.procs:
                assert proc.poll() is None, f"{proc.name} exited with {proc.returncode}\n{self.logs()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            time.sleep(1)

    def finish(self, *run_ids: str) -> None:
        """Wait until the runs end; fail with their task states unless every one succeeded."""
        self.wait(lambda: all(self.run_state(r) in ("success", "failed") for r in run_ids), f"runs {run_ids}")
        states = {r: (self.run_state(r), self.task_states(r)) for r in run_ids}
        assert all(s == "success" for s, _ in states.values()), f"{states}\n{self.logs()}"


@contextlib.contextmanager
def start_cluster(tmp_path: Path, executor: str) -> Iterator[Cluster]:
    """PostgreSQL databases, ``mlflow server``, the Airflow processes, and with Celery two workers."""
    celery = executor == "CeleryExecutor"
    postgres_or_skip()
    if celery:
        redis_or_skip()
    databases = [create_database("mr_celery_mlflow"), create_database("mr_celery_airflow")]
    mlflow_port, api_port = free_port(), free_port()
    suffix = uuid.uuid4().hex[:8]
    queues = (f"mushroom-a-{suffix}", f"mushroom-b-{suffix}")
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "airflow_local_settings.py").write_text(POLICY)
    prefixes = ("MUSHROOM_", "KAGGLE_", "AIRFLOW", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(policy_dir),
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
        KAGGLE_CONFIG_DIR=str(tmp_path / "kaggle"),
        # The scheduler's own home; each worker gets another below.
        MUSHROOM_HOME=str(tmp_path / "home-scheduler"),
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__EXECUTOR=executor,
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_url(databases[1]),
        AIRFLOW__CELERY__BROKER_URL=f"redis://{REDIS[0]}:{REDIS[1]}/0",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{databases[1]}",
        AIRFLOW__OPERATORS__DEFAULT_QUEUE=queues[1],
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        # The LocalExecutor's log server: not the default port, which another session may hold.
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        MR_TEST_QUEUE_A=queues[0],
        MR_TEST_QUEUE_B=queues[1],
        MR_TEST_BARRIER=str(tmp_path / "promote-barrier"),
    )
    # The scheduler, API server and workers sign and check task tokens with it: one per test.
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = uuid.uuid4().hex
    cluster = Cluster(env, tmp_path, databases[1], tracking_uri, queues)
    try:
        mlflow = cluster.start(
            "mlflow",
            mlflow_server_command(pg_url(databases[0]), tmp_path / "artifacts", mlflow_port, 2),
        )
        cluster.airflow("db", "migrate")
        wait_for_http(f"{tracking_uri}/health", mlflow, timeout=180)
        api = cluster.start(
            "api-server",
            [
                str(BIN / "airflow"),
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--apps",
                "execution",
            ],
        )
        cluster.start("dag-processor", [str(BIN / "airflow"), "dag-processor"])
        cluster.start("scheduler", [str(BIN / "airflow"), "scheduler"])
        for name, queue in zip(("a", "b"), queues if celery else (), strict=False):
            home = tmp_path / f"home-worker-{name}"
            home.mkdir()
            cluster.start(
                f"worker-{name}",
                [
                    str(BIN / "airflow"),
                    "celery",
                    "worker",
                    "--queues",
                    queue,
                    "--concurrency",
                    "1",
                    "--celery-hostname",
                    f"worker-{name}-{suffix}@%h",
                    "--skip-serve-logs",
                    "--without-gossip",
                    "--without-mingle",
                ],
                MUSHROOM_HOME=str(home),
            )
        wait_for_http(f"http://127.0.0.1:{api_port}/execution/health", api, timeout=180)
        cluster.wait(
            lambda: sql(databases[1], "SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,)),
            "the DAG processor to parse the DAG",
            timeout=300,
        )
        yield cluster
    finally:
        for proc in reversed(cluster.procs):
            serving.stop_server(proc)
            proc.log_file.close()
        for name in databases:
            drop_database(name)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with start_cluster(tmp_path, "CeleryExecutor") as started:
        yield started


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with start_cluster(tmp_path, "LocalExecutor") as started:
        yield started


def registry_state(cluster: Cluster) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=cluster.tracking_uri, registry_uri=cluster.tracking_uri)
    versions = {
        int(v.version): {k: v.tags.get(k) for k in ("gate", "gate_champion_version", "run_id", "data_path")}
        for v in client.search_model_versions("name='mushroom-router'")
    }
    try:
        champion = int(client.get_model_version_by_alias("mushroom-router", "champion").version)
    except MlflowException:
        champion = None
    return {"champion": champion, "versions": versions, "client": client}


def test_celery_workers_without_a_shared_disk_retrain_and_promote_one_at_a_time(
    cluster: Cluster, record_property
) -> None:
    tmp = cluster.tmp
    started = time.monotonic()
    cluster.trigger("single", {"data_source": "synthetic"})
    cluster.finish("single")
    single_seconds = cluster.run_seconds("single")
    record_property("celery_run_seconds", round(single_seconds, 1))

    state = registry_state(cluster)
    assert state["champion"] == 1, state
    v1 = state["versions"][1]
    assert v1["gate"] == "promoted"
    # The file went A -> artifact store -> B: A generated it, B only has the downloaded copy.
    worker_a, worker_b = tmp / "home-worker-a" / "data", tmp / "home-worker-b" / "data"
    assert [p.name for p in worker_a.glob("synthetic-*.csv")], list(worker_a.rglob("*"))
    assert not list(worker_b.glob("synthetic-*.csv"))
    [copy] = (worker_b / "shared").glob("*/synthetic-*.csv")
    sha256 = copy.parent.name
    assert v1["data_path"].startswith("mlflow-artifacts:/") and v1["data_path"].endswith(
        f"/datasets/{sha256}/{copy.name}"
    )
    # The version's lineage: its run's dataset input names the shared file and its digest.
    [dataset_input] = state["client"].get_run(v1["run_id"]).inputs.dataset_inputs
    assert dataset_input.dataset.digest == sha256[:32]
    assert f"/datasets/{sha256}/" in dataset_input.dataset.source

    # Two runs at once, one per worker; their promotions start together once both gates decided.
    # Forced: both retrain on the champion's data, code and params (else each ends at check_changes).
    cluster.trigger("pair-a", {"data_source": "synthetic", "force": True})
    cluster.trigger("pair-b", {"data_source": "synthetic", "force": True})
    cluster.finish("pair-a", "pair-b")

    state = registry_state(cluster)
    pair = {v: t for v, t in state["versions"].items() if v != 1}
    assert len(pair) == 2, state
    gates = sorted(t["gate"] for t in pair.values())
    over = {t["gate_champion_version"] for t in pair.values()}
    assert over == {"1"}, f"both must have been evaluated against version 1: {state}"
    assert gates == ["promoted", "superseded"], f"two retrains over one champion both promoted: {state}"
    [winner] = [v for v, t in pair.items() if t["gate"] == "promoted"]
    assert state["champion"] == winner
    promote_states = sorted(cluster.task_states(r)["promote"] for r in ("pair-a", "pair-b"))
    assert promote_states == ["skipped", "success"]
    record_property("celery_e2e_seconds", round(time.monotonic() - started, 1))
    _logger.warning(
        "celery e2e: one run took %.0fs; the whole test %.0fs", single_seconds, time.monotonic() - started
    )


def test_the_local_executor_runs_the_same_dag_on_one_machine(local_cluster: Cluster, record_property) -> None:
    """The LocalExecutor path: every task in the scheduler's machine, the data still handed over by URI."""
    local_cluster.trigger("single", {"data_source": "synthetic"})
    local_cluster.finish("single")
    record_property("local_executor_run_seconds", round(local_cluster.run_seconds("single"), 1))
    state = registry_state(local_cluster)
    assert state["champion"] == 1, state
    assert state["versions"][1]["data_path"].startswith("mlflow-artifacts:/"), state
    data = local_cluster.tmp / "home-scheduler" / "data"
    [copy] = (data / "shared").glob("*/synthetic-*.csv")
    assert data_sha256(copy) == copy.parent.name
    _logger.warning("LocalExecutor e2e: one run took %.0fs", local_cluster.run_seconds("single"))
