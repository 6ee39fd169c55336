"""No credential leaks out of a real training run into its output or anything MLflow stored.

A real ``mushroom-router train`` runs with fake credentials in its environment (Kaggle, MLflow,
AWS, and a database password inside the tracking URI when the store is PostgreSQL). Its output,
every param, tag, metric key, description and artifact of the run, the registered version and
the logged model, every row of the tracking database and every file under the project home are
read back, and none may contain a credential value. A canary (in the data folder's name, which a
run legitimately records and prints) proves each of those readers sees what the run wrote.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import (
    CREDENTIAL_ENV,
    PG_HOST,
    PG_PORT,
    PG_USER,
    create_database,
    drop_database,
    postgres_or_skip,
)

MODEL_NAME = "mushroom-router"


# ---------------------------------------------------------------------------------- a training run


@dataclass
class Store:
    uri: str
    secrets: dict[str, str]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh tracking store; on PostgreSQL its URI carries a (fake) password."""
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'mlflow.db'}", {})
        return
    postgres_or_skip()
    database = create_database("mr_secrets")
    password = f"pg-password-{secrets.token_hex(12)}"
    try:
        # The test server trusts local connections, so any password is accepted and none is checked.
        yield Store(
            f"postgresql+psycopg2://{PG_USER}:{password}@{PG_HOST}:{PG_PORT}/{database}",
            {"password in MLFLOW_TRACKING_URI": password},
        )
    finally:
        drop_database(database)


def store_dump(uri: str) -> str:
    """Every row of every table of the tracking database, as text."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(bind=conn)
            return "\n".join(
                f"{table.name}: {tuple(row)}"
                for table in meta.sorted_tables
                for row in conn.execute(sa.select(table))
            )
    finally:
        engine.dispose()


def file_texts(root: Path) -> dict[str, str]:
    """``{relative path: content}`` of every file below ``root`` (binary files decoded loosely)."""
    return {
        str(p.relative_to(root)): p.read_bytes().decode("utf-8", errors="replace")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def what_mlflow_recorded(uri: str, dst: Path) -> dict[str, str]:
    """``{channel: text}``: what the registry, the runs and their artifacts hold, read back."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    channels: dict[str, list[str]] = {}

    def add(channel: str, *items: Any) -> None:
        channels.setdefault(channel, []).extend(str(i) for i in items)

    experiments = client.search_experiments()
    for exp in experiments:
        add("experiments", exp.name, exp.artifact_location, exp.tags)
    for run in client.search_runs([e.experiment_id for e in experiments]):
        add("run params", run.data.params)
        add("run tags", run.data.tags, run.info.run_name)
        add("run metric keys", list(run.data.metrics))
        run_dir = dst / "runs" / run.info.run_id
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(run_dir), tracking_uri=uri)
        add("run artifacts", *file_texts(run_dir).items())
    for logged in client.search_logged_models([e.experiment_id for e in experiments]):
        add("logged model params and tags", logged.name, logged.params, logged.tags)
    model = client.get_registered_model(MODEL_NAME)
    add("registered model", model.description, model.tags, model.aliases)
    for version in client.search_model_versions(f"name='{MODEL_NAME}'"):
        add("version tags and description", version.tags, version.description, version.source)
        model_dir = dst / "models" / str(version.version)
        location = client.get_model_version_download_uri(MODEL_NAME, version.version)
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(model_dir), tracking_uri=uri)
        add("model artifacts", *file_texts(model_dir).items())
    return {channel: "\n".join(items) for channel, items in channels.items()}


def leaks(channels: dict[str, str], values: dict[str, str]) -> list[str]:
    return [
        f"{name} in {channel}"
        for channel, text in channels.items()
        for name, value in values.items()
        if value in text
    ]


def test_training_run_records_and_logs_no_credential(
    run_cli: Any, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    canary = f"canary-{secrets.token_hex(8)}"
    given = {name: f"{name.lower().replace('_', '-')}-{secrets.token_hex(12)}" for name in CREDENTIAL_ENV}
    env = {
        **given,
        "MUSHROOM_HOME": str(home),
        "MUSHROOM_DATA_DIR": str(tmp_path / canary),
        "MLFLOW_TRACKING_URI": store.uri,
    }

    done = run_cli("train", "--synthetic", env=env)

    assert done.returncode == 0, done.stderr[-3000:]
    values = {**given, **store.secrets}
    recorded = what_mlflow_recorded(store.uri, tmp_path / "read-back")
    channels = {
        "train output (stdout)": done.stdout,
        "train output (stderr)": done.stderr,
        **recorded,
        "tracking database rows": store_dump(store.uri),
        "files under the project home": "\n".join(f"{k}: {v}" for k, v in file_texts(home).items()),
    }
    # Each reader saw what the run wrote: the data folder's name reaches the output, the tags and
    # the database; the artifacts hold the run id (MLmodel) and the model's own files.
    run_id = re.search(r"\(run ([0-9a-f]{32})\)", done.stdout).group(1)
    for channel in (
        "train output (stdout)",
        "run tags",
        "version tags and description",
        "tracking database rows",
    ):
        assert canary in channels[channel], f"the canary is not in {channel}: the reader is blind"
    assert run_id in channels["model artifacts"] and "MLmodel" in channels["model artifacts"]
    assert "plots/roc.png" in channels["run artifacts"]
    assert "naive_bayes_roc_auc" in channels["run metric keys"]
    assert "MLmodel" in channels["files under the project home"]  # the local artifact store

    assert not leaks(channels, values), f"credential values leaked: {leaks(channels, values)}"


@pytest.mark.services
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_status_does_not_print_the_store_password(run_cli: Any, store: Store, tmp_path: Path) -> None:
    [password] = store.secrets.values()
    done = run_cli("status", env={"MUSHROOM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": store.uri})
    # Exit status 1: nothing is registered in the fresh store, which is all this needs.
    assert "No mushroom-router registered in postgresql+psycopg2://" in done.stdout, done.stderr[-3000:]
    assert "postgresql+psycopg2://postgres:***@" in done.stdout
    assert password not in done.stdout + done.stderr
