"""Helpers shared by tests (importable as ``support``: pytest's ``pythonpath`` includes tests/)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]

PG_HOST = os.environ.get("MUSHROOM_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MUSHROOM_TEST_PGPORT", "5432"))
PG_USER = os.environ.get("MUSHROOM_TEST_PGUSER", "postgres")


#: The JSON request forms MLflow's scoring server takes (the serving tests' parametrize ids).
JSON_FORMS = (
    "dataframe_split",
    "dataframe_records",
    "instances_records",
    "instances_columns",
    "inputs_records",
    "inputs_columns",
)

#: Fixed rows of both routes (a golden set): every path that explains must give these rows the
#: same explanation. Absent key = not given; the last row carries both feature sets.
GOLDEN_ROWS: list[dict[str, float]] = [
    {"cap-diameter": 1372, "cap-shape": 2, "gill-attachment": 2, "gill-color": 10},
    {"cap-diameter": 55.5, "cap-shape": 0, "gill-attachment": 6, "gill-color": 0},
    {"cap-diameter": 0, "cap-shape": 6, "gill-attachment": 0, "gill-color": 11},
    {"stem-height": 3.81, "stem-width": 1545, "stem-color": 11, "season": 1.8042727086281731},
    {"stem-height": 0.42, "stem-width": 12.5, "stem-color": 0, "season": 0.027372133055605714},
    {"stem-height": 17, "stem-width": 3050, "stem-color": 12, "season": 0.9431945538974952},
    {
        "cap-diameter": 830,
        "cap-shape": 5,
        "gill-attachment": 1,
        "gill-color": 7,
        "stem-height": 0.9,
        "stem-width": 870,
        "stem-color": 6,
        "season": 0.8884502877862838,
    },
]


def explanation_sums(explanations: list[dict]) -> list[float]:
    """``base + sum(contribution)`` of each explanation (what must equal the answer's log-odds)."""
    return [e["base"] + sum(term["contribution"] for term in e["contributions"]) for e in explanations]


def services_required() -> bool:
    """Whether missing services must fail tests instead of skipping them (CI sets it)."""
    return os.environ.get("MUSHROOM_REQUIRE_SERVICES", "") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip on a user's machine; fail where services are required."""
    if services_required():
        pytest.fail(f"{reason} (MUSHROOM_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def pg_url(database: str, driver: str = "psycopg2") -> str:
    """SQLAlchemy URL of a database on the test PostgreSQL (trust auth, no password)."""
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def pg_admin_execute(statement: str) -> None:
    """Run one statement on the ``postgres`` database in autocommit mode."""
    import psycopg2

    # Not ``with conn:``: psycopg2 opens a transaction there even in autocommit mode, and
    # CREATE/DROP DATABASE cannot run inside one.
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def create_database(prefix: str) -> str:
    """Create a uniquely named database and return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    pg_admin_execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    """Drop a database, disconnecting its sessions."""
    pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_or_skip() -> None:
    """Skip (or fail under ``MUSHROOM_REQUIRE_SERVICES=1``) when the test PostgreSQL is unreachable."""
    try:
        pg_admin_execute("SELECT 1")
    except Exception as err:
        skip_or_fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {err}")


def postgres_cluster() -> tuple[str, str] | None:
    """The ``(version, name)`` of the local cluster on :data:`PG_PORT` that this user may restart."""
    if os.geteuid() != 0 or not shutil.which("pg_lsclusters") or not shutil.which("pg_ctlcluster"):
        return None
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        version, name, port, *_ = line.split()
        if port == str(PG_PORT):
            return version, name
    return None


def restart_postgres(cluster: tuple[str, str], timeout: float = 60.0) -> float:
    """Restart the local PostgreSQL (fast shutdown: every open connection is cut).

    Returns:
        Seconds from the restart command until the server accepts connections again.
    """
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart", "--mode", "fast"],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    while True:
        try:
            pg_admin_execute("SELECT 1")
            return time.monotonic() - started
        except Exception:
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.2)


#: Environment that would leak a developer's data, credentials or registry into the tests.
ENV_TO_CLEAR = (
    "MUSHROOM_DATA",
    "MUSHROOM_MODEL_URI",
    "MUSHROOM_ARTIFACT_ROOT",
    "MUSHROOM_DATA_DIR",
    "MUSHROOM_EXPERIMENT",
    "MUSHROOM_INFERENCE_LOG",
    "MUSHROOM_DRIFT_PSI",
    "MUSHROOM_DRIFT_MIN_ROWS",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
)


def use_fresh_store(mp: pytest.MonkeyPatch, home: Path, kaggle_dir: Path) -> None:
    """Point the package at an empty project home and MLflow store, with no data path or credentials."""
    for name in ENV_TO_CLEAR:
        mp.delenv(name, raising=False)
    mp.setenv("MUSHROOM_HOME", str(home))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.setenv("KAGGLE_CONFIG_DIR", str(kaggle_dir))


#: Names that hold credentials: ``KAGGLE_KEY``, ``AIRFLOW_DB_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``...
#: (not any ``..._KEY``: ``TAG_RETRAIN_KEY`` is a tag name; and a ``..._FILE`` holds a path).
SECRET_NAME = (
    r"(?:[A-Z][A-Z0-9_]*)?(?:PASSWORD|PASSWD|SECRET|TOKEN|FERNET"
    r"|(?:API|SECRET|ACCESS|PRIVATE|KAGGLE|SIGNING|ENCRYPTION|FERNET)_KEY)(?:[A-Z0-9_]*(?<!_FILE))?\b"
)

#: Credentials a training process may find in its environment (the values are generated per test).
#: Not ``MLFLOW_TRACKING_USERNAME``: MLflow records it as the run's user (``mlflow.user``) by design.
CREDENTIAL_ENV = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def mlflow_server_command(
    backend_store_uri: str, artifacts: Path, port: int, workers: int = 1, *extra: str
) -> list[str]:
    """The ``mlflow server`` command line every test server uses (artifacts served by the server).

    Args:
        backend_store_uri: The tracking store (SQLite file or PostgreSQL URL).
        artifacts: Where the server keeps artifacts.
        port: Loopback port.
        workers: Server workers.
        *extra: More options, e.g. ``--app-name basic-auth``.
    """
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        *extra,
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


class TrackingServer:
    """``mlflow server`` on a fixed loopback port and store, which can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the server on the same port and store as before; wait until ``/health`` answers."""
        assert not self.running
        self.starts += 1
        log = open(self.root / f"mlflow-{self.starts}.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MUSHROOM_"))}
        self.proc = subprocess.Popen(
            mlflow_server_command(f"sqlite:///{self.root / 'mlflow.db'}", self.root / "artifacts", self.port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.proc.log_file = log
        wait_for_http(f"{self.url}/health", self.proc, timeout=120)

    def stop(self) -> None:
        """Stop the server (its store stays); nothing answers on the port afterwards."""
        if self.proc is None:
            return
        from router_model import serving

        serving.stop_server(self.proc)
        self.proc.log_file.close()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("mlflow-*.log")))


#: The Kubernetes example of the model server (README, "Probes for orchestrators").
KUBERNETES_MANIFEST = REPO / "docker" / "kubernetes" / "model-server.yaml"


def kubernetes_documents() -> list[dict]:
    """The documents of :data:`KUBERNETES_MANIFEST`, parsed."""
    import yaml

    return [doc for doc in yaml.safe_load_all(KUBERNETES_MANIFEST.read_text()) if doc]


def model_server_container() -> dict:
    """The model server's container in the Kubernetes example's Deployment."""
    (deployment,) = [doc for doc in kubernetes_documents() if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text (a ``/metrics`` answer) as ``{(sample name, sorted labels): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
