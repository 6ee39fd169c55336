"""The MLflow side: log a trained router, register it, read and move its aliases.

The router is logged as a models-from-code pyfunc (:mod:`router_model.pyfunc_entry`) with both
sub-models as skops artifacts and the package itself as ``code_paths``, so
``mlflow.pyfunc.load_model("models:/mushroom-router@champion")`` works anywhere MLflow,
scikit-learn and skops are installed, with pickle deserialization switched off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec

from router_model import drift, settings, trust
from router_model import features as F
from router_model.errors import RouterError
from router_model.requirements import pinned_requirements
from router_model.router import (
    CONFIG_PREFERRED,
    CONFIG_SAFE_FALSE_ALARM,
    CONFIG_SAFE_THRESHOLD,
    CONFIG_VALIDATION_AUC,
    MushroomRouterModel,
    Router,
)
from router_model.submodels import save_submodel, submodel_filename

_logger = logging.getLogger(__name__)

ARTIFACT_NAME = "router"
PACKAGE_DIR = Path(__file__).resolve().parent
ENTRY_FILE = PACKAGE_DIR / "pyfunc_entry.py"

TAG_RETRAIN_KEY = "retrain_key"
TAG_RUN_ID = "run_id"
TAG_HOLDOUT_ROWS = "holdout_rows"

#: Each version's held-out rows, logged with its run: the gate scores later candidates on them,
#: so a retrain cannot pick the rows it is judged on (see :mod:`router_model.pipeline`).
HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
#: Each version's reference distribution for the drift monitor (:mod:`router_model.drift`).
DRIFT_REFERENCE_ARTIFACT = "monitoring/reference.json"


def route_tag(key: str, route: str) -> str:
    """The version tag of a per-route value, such as ``safe_threshold_1pct.naive_bayes``."""
    return f"{key}.{route}"


#: What MLflow answers for a model or alias that does not exist (a missing alias is an
#: ``INVALID_PARAMETER_VALUE``). Any other error, such as an unreachable tracking server, is raised:
#: read as "no champion", it would let the gate promote a version without comparing it.
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")

#: The signature declares params only (``inputs=None``), on purpose. MLflow 3.17's input
#: enforcement breaks real input paths: a typed optional ``double`` column refuses integer data (a
#: DataFrame read straight from the CSV), a ``long`` column refuses NaN (a batch with missing
#: values), unknown columns are silently dropped (so ``stem_height`` would vanish before predict),
#: JSON ``true`` turns into 1.0, and ``AnyType`` columns make every ``text/csv`` request fail.
#: With ``inputs=None`` MLflow passes the input through untouched and
#: :func:`router_model.validation.feature_matrix` does the checking, with errors that name the
#: row and the column.
SIGNATURE = ModelSignature(
    inputs=None,
    params=ParamSchema(
        [
            ParamSpec("model", "string", F.AUTO),
            ParamSpec("threshold", "double", F.DEFAULT_THRESHOLD),
        ]
    ),
)


def input_example() -> pd.DataFrame:
    """Two rows, one per feature set, as a client would send them (not given = null)."""
    return pd.DataFrame(F.example_rows(), columns=list(F.ALL_FEATURES)).astype(np.float64)


@dataclass(frozen=True)
class RegisteredRouter:
    """A logged and registered router.

    Attributes:
        run_id: The MLflow run that logged it.
        model_uri: ``models:/mushroom-router/<version>``.
        version: Registry version number.
    """

    run_id: str
    model_uri: str
    version: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what DAG tasks pass on)."""
        return dataclasses.asdict(self)


def client() -> MlflowClient:
    """Point MLflow at the configured tracking store and return a client for it."""
    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id() -> str:
    """The training experiment's id, created on first use with the configured artifact root."""
    c = client()
    name = settings.experiment_name()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(name, artifact_location=settings.artifact_location())
    except MlflowException:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the logged router, derived from the code it runs."""
    return pinned_requirements(ENTRY_FILE)


@contextlib.contextmanager
def _absent_is_fine() -> Iterator[None]:
    """Swallow MLflow's "no such model or alias" errors (:data:`_NOT_FOUND`); raise any other."""
    try:
        yield
    except MlflowException as err:
        if err.error_code not in _NOT_FOUND:
            raise


def find_version(key: str) -> ModelVersion | None:
    """The registered version tagged with ``retrain_key=key``, if any (makes re-runs idempotent).

    Raises:
        MlflowException: If the registry cannot be searched (for example the tracking server is
            unreachable). Answering "not registered" then would train and register a duplicate
            once the server is back; failing here fails the task before it trains.
    """
    c = client()
    found = []
    with _absent_is_fine():
        found = c.search_model_versions(f"name='{settings.MODEL_NAME}' and tags.{TAG_RETRAIN_KEY}='{key}'")
    return max(found, key=lambda v: int(v.version)) if found else None


def alias_version(alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or ``None`` when the alias (or the model) does not exist.

    Raises:
        MlflowException: If the registry cannot answer (for example the server is unreachable).
    """
    with _absent_is_fine():
        return client().get_model_version_by_alias(settings.MODEL_NAME, alias)
    return None


def registered_model() -> RegisteredModel | None:
    """The registered router (with its aliases), or ``None`` when none is registered yet.

    Raises:
        Exception: Whatever MLflow or the database driver raises when the store cannot answer
            (an unreachable server, a missing database): that is not an empty registry.
    """
    with _absent_is_fine():
        return client().get_registered_model(settings.MODEL_NAME)
    return None


class RegistryError(RouterError):
    """The registry has no such model or version; the message says what it has instead."""


class AccessDeniedError(RegistryError):
    """The tracking server refused this account the change (401 or 403): no retry can fix it."""


#: What MLflow answers when the tracking server's auth app refuses a call.
_DENIED = ("PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED")


@contextlib.contextmanager
def _change_allowed(what: str) -> Iterator[None]:
    """Turn the auth app's 401/403 on a registry change into one line naming the account."""
    try:
        yield
    except MlflowException as err:
        if err.error_code not in _DENIED:
            raise
        account = settings.env("MLFLOW_TRACKING_USERNAME")
        who = f"account {account!r}" if account else "no login (MLFLOW_TRACKING_USERNAME is not set)"
        raise AccessDeniedError(
            f"the tracking server at {settings.redacted(settings.tracking_uri())} refused to {what} "
            f"for {who}: {err.error_code}; only the trainer's account may change {settings.MODEL_NAME}"
        ) from None


def set_alias(alias: str, version: int | str) -> None:
    """Point ``alias`` at ``version`` (moving it if another version had it).

    Raises:
        AccessDeniedError: If the tracking server does not let this account move aliases.
    """
    with _change_allowed(f"point {settings.MODEL_NAME}@{alias} at version {version}"):
        client().set_registered_model_alias(settings.MODEL_NAME, alias, str(version))
    _logger.info("%s@%s -> version %s", settings.MODEL_NAME, alias, version)


class StoreUnreachableError(RegistryError):
    """The tracking store did not answer: not the same as an empty registry."""

    transient = True


def _probe_database(uri: str) -> None:
    """Connect once to a database tracking store: MLflow retries a failed connection for ~100 s."""
    scheme = uri.split(":", 1)[0]
    if "://" not in uri or scheme in ("http", "https", "databricks", "file", "sqlite"):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def read_registry() -> tuple[RegisteredModel | None, list[ModelVersion]]:
    """The registered router and its versions, for ``mushroom-router status``.

    Returns:
        ``(None, [])`` when nothing is registered yet.

    Raises:
        StoreUnreachableError: If the store cannot answer (an unreachable server, a missing
            database), with the password shown as ``***``.
    """
    uri = settings.tracking_uri()
    try:
        _probe_database(uri)
        model = registered_model()
        versions = [] if model is None else client().search_model_versions(f"name='{settings.MODEL_NAME}'")
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        password = urlsplit(uri).password
        first = first.replace(password, "***") if password else first
        raise StoreUnreachableError(
            f"cannot read the registry at {settings.redacted(uri)}: {first[:300]}"
        ) from None
    return model, versions


def _version_list(versions: list[int]) -> str:
    """``1-3, 5, 7-9``: registered versions, runs of consecutive numbers shortened."""
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def promote(version: int, alias: str = settings.CHAMPION) -> None:
    """Point ``alias`` at ``version`` by hand, after checking that the version exists.

    MLflow would refuse a missing version too, but with a traceback-sized error; a person typing
    ``promote 99`` needs to hear which versions there are.

    Raises:
        RegistryError: If ``version`` is not a positive number, no router is registered, or it
            has no such version.
        AccessDeniedError: If the tracking server does not let this account read or move aliases.
        MlflowException: If the registry cannot answer (for example the server is unreachable).
    """
    if version < 1:
        raise RegistryError(f"version must be a positive integer, got {version}")
    c = client()
    found = None
    with _change_allowed(f"point {settings.MODEL_NAME}@{alias} at version {version}"), _absent_is_fine():
        found = c.get_model_version(settings.MODEL_NAME, str(version))
    if found is None:
        registered = sorted(int(v.version) for v in c.search_model_versions(f"name='{settings.MODEL_NAME}'"))
        if not registered:
            raise RegistryError(
                f"no {settings.MODEL_NAME} is registered in "
                f"{settings.redacted(settings.tracking_uri())}; train one first"
            )
        raise RegistryError(
            f"{settings.MODEL_NAME} has no version {version}; registered versions: {_version_list(registered)}"
        )
    set_alias(alias, version)


def delete_alias(alias: str) -> None:
    """Remove ``alias`` if it exists.

    Raises:
        AccessDeniedError: If the tracking server does not let this account delete aliases.
        MlflowException: If the registry cannot answer (for example the server is unreachable).
    """
    with _change_allowed(f"delete {settings.MODEL_NAME}@{alias}"), _absent_is_fine():
        client().delete_registered_model_alias(settings.MODEL_NAME, alias)


def tag_version(version: int | str, tags: dict[str, Any]) -> None:
    """Set tags on a registered version."""
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(settings.MODEL_NAME, str(version), key, str(value))


def version_uri(version: int | str) -> str:
    """``models:/mushroom-router/<version>``."""
    return f"models:/{settings.MODEL_NAME}/{version}"


def version_tags(version: int | str) -> dict[str, str]:
    """The tags of a registered version.

    Raises:
        MlflowException: If the version does not exist or the registry cannot answer.
    """
    return dict(client().get_model_version(settings.MODEL_NAME, str(version)).tags)


def _version_artifact(version: int | str, path: str) -> str | None:
    """The run id of ``version`` if its run logged ``path``, else ``None`` (logged by an older release).

    Raises:
        MlflowException: If the registry or the artifact store cannot answer.
    """
    c = client()
    run_id = c.get_model_version(settings.MODEL_NAME, str(version)).run_id
    folder = path.rsplit("/", 1)[0]
    return run_id if any(f.path == path for f in c.list_artifacts(run_id, folder)) else None


def holdout_frame(version: int | str) -> pd.DataFrame | None:
    """The held-out rows a version was evaluated on at training time (:data:`HOLDOUT_ARTIFACT`).

    Returns:
        The rows (every feature and ``class``), or ``None`` for a version logged before the rows
        were stored with it.

    Raises:
        MlflowException: If the registry or the artifact store cannot answer.
    """
    run_id = _version_artifact(version, HOLDOUT_ARTIFACT)
    if run_id is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=HOLDOUT_ARTIFACT, dst_path=tmp
        )
        return pd.read_parquet(local)


def drift_reference(version: int | str) -> dict[str, Any] | None:
    """A version's drift reference (:data:`DRIFT_REFERENCE_ARTIFACT`), ``None`` if it has none.

    Raises:
        MlflowException: If the registry or the artifact store cannot answer.
    """
    run_id = _version_artifact(version, DRIFT_REFERENCE_ARTIFACT)
    return (
        None if run_id is None else mlflow.artifacts.load_dict(f"runs:/{run_id}/{DRIFT_REFERENCE_ARTIFACT}")
    )


def load_router(model_uri: str) -> Router:
    """Load a registered router and return its :class:`Router` (for evaluation in-process)."""
    client()
    model = mlflow.pyfunc.load_model(model_uri)
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, MushroomRouterModel):
        raise TypeError(f"{model_uri} is not a mushroom router (got {type(python_model).__name__})")
    return python_model.router


def log_router(
    result: Any,
    data_tags: dict[str, str],
    extra_tags: dict[str, str] | None = None,
) -> RegisteredRouter:
    """Log one training run (params, metrics, plots, the router) and register the router.

    Args:
        result: A :class:`router_model.train.TrainResult`.
        data_tags: ``data_source``, ``data_sha256`` and ``data_path`` of the training data.
        extra_tags: More run and version tags (for example ``retrain_key``).

    Returns:
        The run id, model URI and registry version. No alias is set here.
    """
    import matplotlib.pyplot as plt

    from router_model.plots import confusion_figure, reliability_figure, roc_figure

    exp = experiment_id()
    tags = {**data_tags, **(extra_tags or {})}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    test = result.test
    y = test[F.TARGET].to_numpy()
    scores = {
        route: result.router.predict(test[list(F.ALL_FEATURES)], {"model": route})[
            "poisonous_probability"
        ].to_numpy()
        for route in F.ROUTES
    }
    with mlflow.start_run(experiment_id=exp, tags=tags) as run:
        mlflow.log_params({**dataclasses.asdict(result.config), "preferred_route": result.router.preferred})
        mlflow.log_params({"train_rows": result.train_rows, "test_rows": len(test)})
        mlflow.log_metrics(result.metrics)
        mlflow.log_metrics({f"{r}_validation_roc_auc": v for r, v in result.validation_auc.items()})
        mlflow.log_metric("train_seconds", result.seconds)
        safe = result.safe_thresholds
        for route, found in safe.items():
            mlflow.log_metrics(
                {
                    f"{route}_{CONFIG_SAFE_THRESHOLD}": found.threshold,
                    f"{route}_{CONFIG_SAFE_FALSE_ALARM}": found.false_alarm_rate,
                }
            )
        for route, (slope, intercept) in result.calibration.items():
            mlflow.log_params(
                {f"{route}_calibration_slope": slope, f"{route}_calibration_intercept": intercept}
            )
        for figure, name in (
            (roc_figure(y, scores), "roc"),
            (confusion_figure(y, scores), "confusion_matrix"),
            (reliability_figure(y, scores), "reliability"),
        ):
            mlflow.log_figure(figure, f"plots/{name}.png")
            plt.close(figure)
        mlflow.log_dict(drift.reference_profile(test, scores), DRIFT_REFERENCE_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            holdout = Path(tmp) / Path(HOLDOUT_ARTIFACT).name
            test.to_parquet(holdout, index=False)
            mlflow.log_artifact(str(holdout), str(Path(HOLDOUT_ARTIFACT).parent))
            artifacts = {}
            for route, model in result.router.submodels.items():
                path = str(Path(tmp) / submodel_filename(route))
                save_submodel(model, path)
                artifacts[route] = path
            info = mlflow.pyfunc.log_model(
                name=ARTIFACT_NAME,
                python_model=str(ENTRY_FILE),
                artifacts=artifacts,
                code_paths=[str(PACKAGE_DIR)],
                model_config={
                    CONFIG_PREFERRED: result.router.preferred,
                    CONFIG_VALIDATION_AUC: result.validation_auc,
                    CONFIG_SAFE_THRESHOLD: {r: s.threshold for r, s in safe.items()},
                    CONFIG_SAFE_FALSE_ALARM: {r: s.false_alarm_rate for r, s in safe.items()},
                },
                signature=SIGNATURE,
                input_example=input_example(),
                pip_requirements=pip_requirements(),
            )
        safe_tags = {}
        for route, found in safe.items():
            safe_tags[route_tag(CONFIG_SAFE_THRESHOLD, route)] = repr(found.threshold)
            safe_tags[route_tag(CONFIG_SAFE_FALSE_ALARM, route)] = repr(found.false_alarm_rate)
        version = mlflow.register_model(
            info.model_uri,
            settings.MODEL_NAME,
            tags={
                **tags,
                **safe_tags,
                TAG_RUN_ID: run.info.run_id,
                TAG_HOLDOUT_ROWS: str(len(test)),
                trust.TAG_CODE_SHA256: trust.installed_digest(),
            },
        )
    registered = RegisteredRouter(run.info.run_id, version_uri(version.version), int(version.version))
    _logger.info("Registered %s (run %s)", registered.model_uri, registered.run_id)
    return registered
