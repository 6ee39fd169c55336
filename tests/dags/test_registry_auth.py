"""Who may change what is served (#18): a real ``mlflow server --app-name basic-auth`` on PostgreSQL.

The tracking server runs as in the compose stack: the auth app with default permission READ, its
user store in the same PostgreSQL database as the tracking store, and the accounts made by the
stack's own ``docker/mlflow/accounts.py``. Then the attacks: no login or a wrong password (401),
the model server's reader account trying to move ``champion`` or change a version in every other
way (403), the trainer trying to manage accounts (403); and the work that must still go through: a
full retrain DAG run as the trainer, and the reader downloading and verifying the champion the way
the model server does.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from support import (
    create_database,
    drop_database,
    free_port,
    mlflow_server_command,
    pg_url,
    postgres_or_skip,
    wait_for_http,
)

from router_model import serving, settings

pytestmark = [pytest.mark.airflow, pytest.mark.services]

REPO = Path(__file__).resolve().parents[2]
ACCOUNTS_SCRIPT = REPO / "docker" / "mlflow" / "accounts.py"
BIN = Path(sys.executable).parent
DAG_DATE = datetime(2026, 3, 1, tzinfo=UTC)

#: (user name, password) per account; the passwords are generated per session.
ADMIN = ("auth-admin", secrets.token_urlsafe(16))
TRAINER = ("auth-trainer", secrets.token_urlsafe(16))
READER = ("auth-reader", secrets.token_urlsafe(16))


@dataclass
class AuthServer:
    """A running tracking server with the auth app and the stack's accounts."""

    url: str
    root: Path

    def call(self, method: str, path: str, auth: tuple[str, str] | None, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=auth, timeout=30, **kwargs)

    def log(self) -> str:
        return (self.root / "mlflow.log").read_text(errors="replace")


def accounts_env(url: str, reader_password: str = READER[1], **overrides: str) -> dict[str, str]:
    """The environment compose gives the mlflow-accounts service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        {
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": ADMIN[0],
            "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
            "MLFLOW_TRAINER_USER": TRAINER[0],
            "MLFLOW_TRAINER_PASSWORD": TRAINER[1],
            "MLFLOW_READER_USER": READER[0],
            "MLFLOW_READER_PASSWORD": reader_password,
        }
    )
    env.update(overrides)
    return env


def run_accounts(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ACCOUNTS_SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """``mlflow server --app-name basic-auth`` on a fresh PostgreSQL database, accounts set up."""
    postgres_or_skip()
    root = tmp_path_factory.mktemp("auth_server")
    database = create_database("mlflow_auth")
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {pg_url(database)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MUSHROOM_"))}
    env.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16),
        }
    )
    port = free_port()
    log = open(root / "mlflow.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        mlflow_server_command(pg_url(database), root / "artifacts", port, 1, "--app-name", "basic-auth"),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = AuthServer(f"http://127.0.0.1:{port}", root)
    try:
        wait_for_http(f"{server.url}/health", proc, timeout=180)
        done = run_accounts(accounts_env(server.url))
        assert done.returncode == 0, done.stderr
        yield server
    finally:
        serving.stop_server(proc)
        log.close()
        drop_database(database)


@pytest.fixture
def as_account(auth_server: AuthServer, mlflow_env: Path, monkeypatch: pytest.MonkeyPatch):
    """Point router_model at the auth server, logged in as the given account."""

    def login(account: tuple[str, str]) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", account[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", account[1])

    return login


@pytest.fixture(scope="module")
def trainer_dag_run(auth_server: AuthServer, retrain_dag: Any) -> Any:
    """One full retrain DAG run (tasks in this process) with the trainer's account only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", auth_server.url)
        mp.setenv("MLFLOW_TRACKING_USERNAME", TRAINER[0])
        mp.setenv("MLFLOW_TRACKING_PASSWORD", TRAINER[1])
        return retrain_dag.test(
            run_conf={"data_source": "synthetic", "force": False}, logical_date=DAG_DATE, run_after=DAG_DATE
        )


def champion(server: AuthServer) -> int | None:
    """The version holding ``champion``, read as the admin."""
    answer = server.call(
        "GET",
        "/api/2.0/mlflow/registered-models/alias",
        ADMIN,
        params={"name": settings.MODEL_NAME, "alias": settings.CHAMPION},
    )
    return int(answer.json()["model_version"]["version"]) if answer.ok else None


# --- the work that must go through --------------------------------------------------------------


def test_a_full_dag_run_succeeds_with_the_trainers_account(trainer_dag_run, auth_server):
    states = {ti.task_id: str(ti.state) for ti in trainer_dag_run.get_task_instances()}
    assert trainer_dag_run.state == "success", states
    assert states["promote"] == "success" and states["keep_challenger"] == "skipped"
    assert champion(auth_server) == 1
    version = auth_server.call(
        "GET",
        "/api/2.0/mlflow/model-versions/get",
        ADMIN,
        params={"name": settings.MODEL_NAME, "version": "1"},
    ).json()["model_version"]
    assert version["tags"] and {t["key"]: t["value"] for t in version["tags"]}["gate"] == "promoted"
    run = auth_server.call("GET", "/api/2.0/mlflow/runs/get", ADMIN, params={"run_id": version["run_id"]})
    assert {t["key"]: t["value"] for t in run.json()["run"]["data"]["tags"]}["mlflow.user"] == TRAINER[0]


def test_the_readers_account_can_download_and_verify_the_champion(trainer_dag_run, as_account, tmp_path):
    """What the model server does with its read-only account: resolve, download, check the code."""
    from router_model import registry, trust
    from router_model.supervisor import trusted_copy

    as_account(READER)
    model, version = trusted_copy(settings.model_uri(), tmp_path / "cache")
    assert version == registry.alias_version(settings.CHAMPION).version
    assert (model / "MLmodel").is_file()
    assert trust.model_digest(model) == trust.installed_digest()


# --- the attacks ----------------------------------------------------------------------------------

#: REST calls that read or change the registry: (method, path, JSON body or query).
CALLS = {
    "read champion": ("GET", "/api/2.0/mlflow/registered-models/alias", {"alias": "champion"}),
    "search versions": ("GET", "/api/2.0/mlflow/model-versions/search", {}),
    "move champion": (
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"alias": "champion", "version": "1"},
    ),
    "delete champion": ("DELETE", "/api/2.0/mlflow/registered-models/alias", {"alias": "champion"}),
    "register a version": (
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        {"source": "mlflow-artifacts:/1/x"},
    ),
    "tag a version": (
        "POST",
        "/api/2.0/mlflow/model-versions/set-tag",
        {"version": "1", "key": "gate", "value": "x"},
    ),
    "delete a version": ("DELETE", "/api/2.0/mlflow/model-versions/delete", {"version": "1"}),
    "delete the model": ("DELETE", "/api/2.0/mlflow/registered-models/delete", {}),
    "create a run": ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "1"}),
    "create a user": (
        "POST",
        "/api/2.0/mlflow/users/create",
        {"username": "intruder", "password": secrets.token_urlsafe(16)},
    ),
    "make itself admin": ("PATCH", "/api/2.0/mlflow/users/update-admin", {"is_admin": True}),
    "grant itself MANAGE": (
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {"resource_type": "registered_model", "resource_id": settings.MODEL_NAME, "permission": "MANAGE"},
    ),
}


def send(server: AuthServer, call: str, account: tuple[str, str] | None) -> requests.Response:
    method, path, body = CALLS[call]
    body = (
        {"name": settings.MODEL_NAME, **body}
        if "registered-models" in path or "model-versions" in path
        else body
    )
    if "users/" in path and "username" not in body:
        body = {"username": account[0] if account else READER[0], **body}
    if method == "GET":
        return server.call(method, path, account, params=body)
    return server.call(method, path, account, json=body)


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(
    "account",
    [None, (READER[0], secrets.token_urlsafe(16)), ("nobody", READER[1])],
    ids=["no-login", "wrong-password", "unknown-user"],
)
def test_calls_without_a_valid_login_get_401(trainer_dag_run, auth_server, call, account):
    answer = send(auth_server, call, account)
    assert answer.status_code == 401, answer.text
    assert champion(auth_server) == 1


#: What the reader (the model server's account) may not do: everything that changes something.
READER_DENIED = sorted(set(CALLS) - {"read champion", "search versions"})


@pytest.mark.parametrize("call", READER_DENIED)
def test_the_readers_account_gets_403_for_every_change(trainer_dag_run, auth_server, call):
    answer = send(auth_server, call, READER)
    assert answer.status_code == 403, answer.text
    assert champion(auth_server) == 1


@pytest.mark.parametrize("call", ["read champion", "search versions"])
def test_the_readers_account_may_read(trainer_dag_run, auth_server, call):
    assert send(auth_server, call, READER).status_code == 200


def test_the_readers_account_cannot_overwrite_artifacts(trainer_dag_run, auth_server):
    """The model server's bytes come from the artifact proxy: no write through it either."""
    path = "/api/2.0/mlflow-artifacts/artifacts/1/evil/router.py"
    assert auth_server.call("PUT", path, READER, data=b"import os").status_code == 403
    assert auth_server.call("PUT", path, None, data=b"import os").status_code == 401


def test_moving_champion_through_the_client_as_the_reader_is_refused(trainer_dag_run, as_account):
    from router_model import registry

    as_account(READER)
    with pytest.raises(
        registry.AccessDeniedError,
        match=r"refused to point mushroom-router@champion at version 1 for account 'auth-reader': "
        r"PERMISSION_DENIED",
    ):
        registry.set_alias(settings.CHAMPION, 1)
    with pytest.raises(registry.AccessDeniedError, match=r"refused to delete mushroom-router@champion"):
        registry.delete_alias(settings.CHAMPION)
    assert int(registry.alias_version(settings.CHAMPION).version) == 1


@pytest.mark.parametrize(
    ("account", "who"),
    [(READER, "account 'auth-reader'"), (None, "no login")],
    ids=["reader", "no-login"],
)
def test_promote_by_an_account_that_may_not_says_so_in_one_line(
    trainer_dag_run, auth_server, run_cli, account, who
):
    env = {
        "MLFLOW_TRACKING_URI": auth_server.url,
        "MLFLOW_TRACKING_USERNAME": "",
        "MLFLOW_TRACKING_PASSWORD": "",
    }
    if account:
        env.update({"MLFLOW_TRACKING_USERNAME": account[0], "MLFLOW_TRACKING_PASSWORD": account[1]})
    done = run_cli("promote", "1", env=env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert last.startswith("mushroom-router promote: error: ")
    assert "refused to point mushroom-router@champion at version 1" in last and who in last, last
    assert champion(auth_server) == 1


@pytest.mark.parametrize("call", ["create a user", "make itself admin"])
def test_the_trainers_account_cannot_manage_accounts(trainer_dag_run, auth_server, call):
    assert send(auth_server, call, TRAINER).status_code == 403


# --- the accounts script ------------------------------------------------------------------------


def test_rerunning_the_accounts_script_sets_the_new_password(auth_server):
    """A password changed in .env takes effect on the next `docker compose up`; grants stay."""
    path = "/api/2.0/mlflow/registered-models/get"
    params = {"name": settings.MODEL_NAME}
    new = (READER[0], secrets.token_urlsafe(16))
    try:
        done = run_accounts(accounts_env(auth_server.url, reader_password=new[1]))
        assert done.returncode == 0, done.stderr
        assert "password set" in done.stdout
        assert auth_server.call("GET", path, READER, params=params).status_code == 401
        assert auth_server.call("GET", path, new, params=params).status_code == 200
        assert send(auth_server, "move champion", new).status_code == 403
    finally:
        done = run_accounts(accounts_env(auth_server.url))
        assert done.returncode == 0, done.stderr
    assert auth_server.call("GET", path, READER, params=params).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"MLFLOW_TRACKING_PASSWORD": "change-me"}, "MLFLOW_TRACKING_PASSWORD is a change-me placeholder"),
        ({"MLFLOW_READER_PASSWORD": ""}, "MLFLOW_READER_PASSWORD is not set"),
        ({"MLFLOW_READER_USER": TRAINER[0]}, "three different user names"),
    ],
    ids=["placeholder", "empty", "same-user"],
)
def test_the_accounts_script_refuses_bad_settings_with_one_line(overrides, message):
    done = run_accounts(accounts_env("http://127.0.0.1:9", **overrides))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("mlflow-accounts: ") and message in lines[0]


def test_the_accounts_script_says_when_the_admin_password_is_wrong(auth_server):
    wrong = {"MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(16)}
    done = run_accounts(accounts_env(auth_server.url, **wrong))
    assert done.returncode == 1
    assert "answered 401" in done.stderr and len(done.stderr.strip().splitlines()) == 1
