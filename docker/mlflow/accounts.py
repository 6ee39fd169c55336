"""Create the stack's MLflow accounts and their permissions, idempotently, from the environment.

Run by the one-shot compose service ``mlflow-accounts`` once the tracking server (``mlflow server
--app-name basic-auth``, default permission READ) is healthy, and on every ``docker compose up``
again, so a password changed in ``.env`` takes effect. It logs in as the admin through MLflow's
standard variables and:

* creates the trainer and reader accounts (or sets their passwords to the ones in ``.env``);
* creates the experiments and the registered model the stack uses, as the admin, so no other
  account can create them first and own them (whoever creates a resource gets MANAGE on it);
* grants the trainer (the Airflow tasks) EDIT on the experiments (create and log runs) and
  MANAGE on the registered model (register versions, set the ``champion`` and ``challenger``
  aliases and delete ``challenger``: MLflow asks for MANAGE to delete an alias), and the reader
  (the model server) READ on them.

Environment (names only: the values come from ``.env``, never from a command line):
``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` (the admin),
``MLFLOW_TRAINER_USER``, ``MLFLOW_TRAINER_PASSWORD``, ``MLFLOW_READER_USER``,
``MLFLOW_READER_PASSWORD``.

Exit status 1 with one line on stderr when a value is missing or a placeholder, or the tracking
server refuses a call.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import requests

from router_model import settings

PLACEHOLDER = "change-me"
#: Seconds per HTTP call to the tracking server.
TIMEOUT = 30

#: (environment variable of the user name, of the password) per account.
TRAINER = ("MLFLOW_TRAINER_USER", "MLFLOW_TRAINER_PASSWORD")
READER = ("MLFLOW_READER_USER", "MLFLOW_READER_PASSWORD")
ADMIN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

EXPERIMENTS = (settings.EXPERIMENT_NAME, settings.MONITORING_EXPERIMENT)


class AccountsError(Exception):
    """A setting is missing or the tracking server refused a call; the message says which."""


def required(name: str) -> str:
    """The value of ``name``; refused when unset, empty or still the ``.env.example`` placeholder."""
    value = os.environ.get(name, "").strip()
    if not value or PLACEHOLDER in value:
        raise AccountsError(f"{name} is {'a change-me placeholder' if value else 'not set'}: set it in .env")
    return value


class Tracking:
    """The tracking server's REST API, as one account."""

    def __init__(self, uri: str, username: str, password: str) -> None:
        self.uri = uri.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (username, password)

    def call(self, method: str, path: str, ok_errors: tuple[str, ...] = (), **kwargs: Any) -> dict[str, Any]:
        """One REST call; returns its JSON, or ``{"error_code": ...}`` for an error in ``ok_errors``."""
        response = self.session.request(method, f"{self.uri}{path}", timeout=TIMEOUT, **kwargs)
        if response.ok:
            return response.json() if response.content else {}
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        if body.get("error_code") in ok_errors:
            return body
        raise AccountsError(
            f"{method} {path} answered {response.status_code}: {body.get('message', body)}"[:400]
        )


def ensure_user(api: Tracking, username: str, password: str) -> str:
    """Create ``username`` or set its password; returns what was done."""
    found = api.call(
        "GET", "/api/2.0/mlflow/users/get", ("RESOURCE_DOES_NOT_EXIST",), params={"username": username}
    )
    if "user" in found:
        api.call(
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            json={"username": username, "password": password},
        )
        return "password set"
    api.call("POST", "/api/2.0/mlflow/users/create", json={"username": username, "password": password})
    return "created"


def ensure_experiment(api: Tracking, name: str) -> str:
    """The id of experiment ``name``, created by this (admin) account if it does not exist."""
    found = api.call(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name",
        ("RESOURCE_DOES_NOT_EXIST",),
        params={"experiment_name": name},
    )
    if "experiment" in found:
        return found["experiment"]["experiment_id"]
    return api.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})["experiment_id"]


def ensure_registered_model(api: Tracking, name: str) -> None:
    """Create registered model ``name`` as this (admin) account if it does not exist."""
    api.call(
        "POST", "/api/2.0/mlflow/registered-models/create", ("RESOURCE_ALREADY_EXISTS",), json={"name": name}
    )


def grant(api: Tracking, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give ``username`` exactly ``permission`` on one resource (replacing an earlier grant)."""
    body = {
        "username": username,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "permission": permission,
    }
    path = "/api/3.0/mlflow/users/permissions/grant"
    if api.call("POST", path, ("RESOURCE_ALREADY_EXISTS",), json=body).get("error_code"):
        api.call(
            "POST",
            "/api/3.0/mlflow/users/permissions/revoke",
            json={k: body[k] for k in ("username", "resource_type", "resource_id")},
        )
        api.call("POST", path, json=body)


def main() -> int:
    """Set up the accounts; 0 when done, 1 (one line on stderr) when a setting or a call fails."""
    try:
        uri = required("MLFLOW_TRACKING_URI")
        admin, trainer, reader = ((required(u), required(p)) for u, p in (ADMIN, TRAINER, READER))
        if len({admin[0], trainer[0], reader[0]}) != 3:
            raise AccountsError(
                f"the admin, trainer and reader need three different user names, got {admin[0]}, "
                f"{trainer[0]}, {reader[0]}"
            )
        api = Tracking(uri, *admin)
        for role, (username, password) in (("trainer", trainer), ("reader", reader)):
            sys.stdout.write(f"mlflow-accounts: {role} {username}: {ensure_user(api, username, password)}\n")
        ensure_registered_model(api, settings.MODEL_NAME)
        grant(api, trainer[0], "registered_model", settings.MODEL_NAME, "MANAGE")
        grant(api, reader[0], "registered_model", settings.MODEL_NAME, "READ")
        for name in EXPERIMENTS:
            experiment_id = ensure_experiment(api, name)
            grant(api, trainer[0], "experiment", experiment_id, "EDIT")
            grant(api, reader[0], "experiment", experiment_id, "READ")
    except (AccountsError, requests.RequestException) as err:
        sys.stderr.write(f"mlflow-accounts: {err}\n")
        return 1
    sys.stdout.write(
        f"mlflow-accounts: {trainer[0]} may train and move the aliases of {settings.MODEL_NAME}; "
        f"{reader[0]} may read\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
