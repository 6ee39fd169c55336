"""Fixtures for the Airflow DAG tests: an isolated Airflow home and metadata DB, a fresh MLflow registry.

Airflow reads its configuration when it is first imported, so nothing here imports it at module
level: :func:`airflow_db` sets the environment first, migrates the metadata DB in a subprocess and
only then lets the tests import Airflow.

The metadata DB is SQLite in a temporary ``AIRFLOW_HOME``. With ``MUSHROOM_REQUIRE_SERVICES=1`` it
is a fresh database on the local PostgreSQL (``127.0.0.1:5432``, user ``postgres``, no password),
dropped at the end of the session; an unreachable server is then an error, not a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    PG_HOST,
    PG_PORT,
    create_database,
    drop_database,
    pg_url,
    services_required,
    use_fresh_store,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Configure Airflow for the session (home, DAGs folder, metadata DB) and migrate the DB.

    Yields:
        The ``sql_alchemy_conn`` in use.
    """
    if "airflow" in sys.modules:
        pytest.fail(
            "airflow was imported before the airflow_db fixture configured it; "
            "import airflow inside tests and fixtures only"
        )
    home = tmp_path_factory.mktemp("airflow_home")
    pg_database = None
    if services_required():
        try:
            pg_database = create_database("airflow_test")
        except Exception as err:
            pytest.fail(
                f"MUSHROOM_REQUIRE_SERVICES=1 but PostgreSQL at {PG_HOST}:{PG_PORT} is unusable: {err}"
            )
        conn = pg_url(pg_database)
    else:
        conn = f"sqlite:///{home / 'airflow.db'}"

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(home))
        mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        mp.setenv("AIRFLOW__CORE__PLUGINS_FOLDER", str(home / "plugins"))
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", conn)
        mp.delenv("AIRFLOW_CONFIG", raising=False)
        mp.delenv("AIRFLOW__CORE__UNIT_TEST_MODE", raising=False)
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            capture_output=True,
            text=True,
            timeout=600,
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )
        try:
            if migrate.returncode != 0:
                pytest.fail(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
            yield conn
        finally:
            if "airflow.settings" in sys.modules:
                sys.modules["airflow.settings"].dispose_orm()
            if pg_database:
                drop_database(pg_database)


@pytest.fixture(scope="module")
def mlflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh MLflow tracking store and registry, no data path and no Kaggle credentials.

    Yields:
        The temporary ``MUSHROOM_HOME``.
    """
    home = tmp_path_factory.mktemp("mushroom_home")
    kaggle_dir = tmp_path_factory.mktemp("kaggle_config_empty")
    with pytest.MonkeyPatch.context() as mp:
        use_fresh_store(mp, home, kaggle_dir)
        yield home


@pytest.fixture(scope="module")
def retrain_dag(airflow_db: str, mlflow_env: Path):
    """The ``mushroom_router_retrain`` DAG parsed from the DAGs folder, ready for ``dag.test()``."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["mushroom_router_retrain"]


@pytest.fixture(scope="module")
def dag_bag(airflow_db: str, mlflow_env: Path):
    """Every DAG in the DAGs folder, parsed, written to the metadata DB (as the DAG processor does)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag
