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
import os
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
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
from router_model.params import SCHEMA
from router_model.requirements import pinned_requirements

if TYPE_CHECKING:
    from router_model.router import Router

# The router, its sub-models and scikit-learn are imported where a router is logged or loaded:
# reading the registry (the supervisor, `serve` before its server starts) needs none of them.

_logger = logging.getLogger(__name__)

ARTIFACT_NAME = "router"
PACKAGE_DIR = Path(__file__).resolve().parent
ENTRY_FILE = PACKAGE_DIR / "pyfunc_entry.py"

TAG_RETRAIN_KEY = "retrain_key"
TAG_RUN_ID = "run_id"
TAG_HOLDOUT_ROWS = "holdout_rows"
#: The effective training params of a version (canonical JSON) and their sha256: with
#: ``data_sha256`` and ``code_sha256`` they say whether a retrain would reproduce it.
TAG_TRAIN_PARAMS = "train_params"
TAG_TRAIN_PARAMS_SHA256 = "train_params_sha256"

#: Each version's held-out rows, logged with its run: the gate scores later candidates on them,
#: so a retrain cannot pick the rows it is judged on (see :mod:`router_model.pipeline`).
HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
#: Each version's reference distribution for the drift monitor (:mod:`router_model.drift`).
DRIFT_REFERENCE_ARTIFACT = "monitoring/reference.json"
#: Each route's base and largest additive terms on the held-out rows (:mod:`router_model.terms`),
#: as a table and as a figure next to the ROC curves.
TERMS_ARTIFACT = "plots/terms.csv"
TERMS_FIGURE_ARTIFACT = "plots/terms.png"

#: Folder under the experiment's artifact root where training files are shared between machines,
#: one subfolder per sha256 of the file's bytes (content-addressed: the same file is stored once).
SHARED_DATA_FOLDER = "datasets"

#: The ``context`` of the training file's dataset input on each training run.
DATASET_CONTEXT = "training"
#: MLflow stores a dataset digest in 36 characters: the digest is the sha256's first 32 hex digits,
#: and the full sha256 is the input's ``sha256`` tag.
DATASET_DIGEST_CHARS = 32


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
#: row and the column. The params are strictly typed too (:data:`router_model.params.SCHEMA`):
#: ``"threshold": "safe"`` and ``"explain": k`` are spelled ``safe_threshold`` and ``explain_top``.
SIGNATURE = ModelSignature(
    inputs=None,
    params=ParamSchema([ParamSpec(name, dtype, default) for name, dtype, default in SCHEMA]),
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


def resolve(model_uri: str) -> ModelVersion:
    """The registered version a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI names.

    Raises:
        RegistryError: If the URI is not a ``models:/`` URI of a registered version, or the
            registry cannot resolve it (the message says which, with MLflow's first line).
    """
    if not model_uri.startswith("models:/"):
        raise RegistryError(f"{model_uri} is not a models:/ URI; serve a registered version")
    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    c = client()
    try:
        return (
            c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(*name.split("/", 1))
        )
    except Exception as err:
        raise RegistryError(f"cannot resolve {model_uri}: {str(err).splitlines()[0]}") from None


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


class LockTimeoutError(RouterError):
    """A registry lock stayed taken longer than the wait allows; a retry may find it free."""

    transient = True


def _lock_holder(name: str) -> dict[str, str] | None:
    """The tags of the lock model ``name`` (owner, expiry), or ``None`` when nobody holds it."""
    with _absent_is_fine():
        return dict(client().get_registered_model(name).tags)
    return None


@contextlib.contextmanager
def registry_lock(
    name: str = settings.PROMOTION_LOCK,
    lease_seconds: float = settings.PROMOTION_LOCK_LEASE_SECONDS,
    wait_seconds: float = settings.PROMOTION_LOCK_WAIT_SECONDS,
    poll_seconds: float = 0.2,
) -> Iterator[None]:
    """Hold a mutex kept in the model registry itself, for every process that reaches the registry.

    Why this mechanism: the processes that move ``champion`` may share nothing but the tracking
    store (Airflow workers on different machines, the CLI on a laptop), and they reach it the way
    they are configured: over HTTP through ``mlflow server`` (no database credentials, so no
    PostgreSQL advisory lock), or straight to SQLite or PostgreSQL. An Airflow pool would cover DAG
    tasks only, not the CLI or a second Airflow. What every one of them can do is create a
    registered model, and the store makes that atomic: the name is a primary key (a unique file
    for a file store), so of two processes creating ``name`` at once exactly one succeeds and the
    other gets ``RESOURCE_ALREADY_EXISTS``. The holder deletes it when done.

    A holder that dies without deleting it (killed, machine lost) leaves the lock visible in the
    registry UI with ``owner`` and ``expires_at`` tags; after ``lease_seconds`` a waiter deletes
    it and takes over. That take-over is the one step that is not atomic (two waiters can both
    see the same expired lease), and it only happens after a crash; the compare-and-set inside
    still re-reads ``champion`` then.

    Args:
        name: The registered model that stands for the lock.
        lease_seconds: How long the lock is honoured before it counts as abandoned.
        wait_seconds: How long to wait for it.
        poll_seconds: How often to try again while another process holds it.

    Raises:
        LockTimeoutError: If the lock stays held (and unexpired) for ``wait_seconds``.
        MlflowException: If the registry cannot be reached.
    """
    c = client()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_seconds
    while True:
        expires = time.time() + lease_seconds
        try:
            c.create_registered_model(
                name,
                tags={"owner": owner, "expires_at": f"{expires:.3f}"},
                description=f"Held while a process moves {settings.MODEL_NAME}@{settings.CHAMPION}; "
                "deleted when it is done. Safe to delete once expires_at (Unix time) has passed.",
            )
            break
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        holder = _lock_holder(name)
        if holder is not None and float(holder.get("expires_at", "0")) < time.time():
            _logger.warning("Taking over %s: held by %s, expired", name, holder.get("owner", "?"))
            with _absent_is_fine():
                c.delete_registered_model(name)
            continue
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"{name} is held by {holder.get('owner', '?') if holder else '?'} for more than "
                f"{wait_seconds:.0f}s; expected it to be released within {lease_seconds:.0f}s"
            )
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        # Only our own: if our lease ran out and another process took over, the lock is theirs.
        holder = _lock_holder(name)
        if holder is not None and holder.get("owner") == owner:
            with _absent_is_fine():
                c.delete_registered_model(name)


def _shared_root() -> str:
    """The experiment's artifact root, which every process that reaches the tracking store can read."""
    return client().get_experiment(experiment_id()).artifact_location.rstrip("/")


def share_file(path: str | os.PathLike[str], sha256: str) -> str:
    """Put a training file where every machine that reaches the tracking store can read it.

    The file goes to ``<artifact root>/datasets/<sha256>/<file name>``: through the tracking
    server's proxied artifact store when there is one (no extra credentials), else the configured
    artifact root. Content-addressed, so sharing the same file again (a re-run, another retrain on
    the same data) uploads nothing.

    Args:
        path: The local file.
        sha256: Its sha256 (the caller has it already).

    Returns:
        The file's artifact URI (``mlflow-artifacts:/...``, ``file:///...``, ``s3://...``).
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    name = Path(path).name
    folder = f"{_shared_root()}/{SHARED_DATA_FOLDER}/{sha256}"
    repo = get_artifact_repository(folder, tracking_uri=settings.tracking_uri())
    if not any(f.path == name for f in repo.list_artifacts()):
        repo.log_artifact(str(path))
        _logger.info("Shared %s as %s/%s", path, folder, name)
    return f"{folder}/{name}"


def download_file(uri: str, dst_dir: str | os.PathLike[str]) -> Path:
    """Download an artifact URI (from :func:`share_file`) into ``dst_dir``; returns the local path."""
    client()
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir)))


def dataset_source(uri: str) -> str:
    """The training file's address as MLflow's dataset tracking can record it.

    ``mlflow-artifacts:/`` URIs (the proxied store) have no dataset source type in MLflow, so they
    are recorded as the tracking server's HTTP address of the same file; a plain path as it is.
    """
    if uri.startswith("mlflow-artifacts:"):
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        return MlflowArtifactsRepository.resolve_uri(uri, settings.tracking_uri())
    return uri


def log_dataset_input(frame: pd.DataFrame, uri: str, sha256: str) -> None:
    """Record the training file as the active run's dataset input, with its digest and source."""
    import mlflow.data

    with warnings.catch_warnings():
        # MLflow warns that a file path matches two equal source types, and that integer columns
        # cannot hold missing values (the dataset's schema is a record here, not enforced).
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            frame,
            source=dataset_source(uri),
            targets=F.TARGET,
            name=Path(uri).name,
            digest=sha256[:DATASET_DIGEST_CHARS],
        )
        mlflow.log_input(dataset, context=DATASET_CONTEXT, tags={"sha256": sha256})


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
    from router_model.router import MushroomRouterModel

    client()
    model = mlflow.pyfunc.load_model(model_uri)
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, MushroomRouterModel):
        raise TypeError(f"{model_uri} is not a mushroom router (got {type(python_model).__name__})")
    return python_model.router


def tables_artifacts(tables: Mapping[str, Any], folder: Path) -> dict[str, str]:
    """Write each route's checked log-odds tables (``Router.tables``) for the logged model.

    A model server scores from these without scikit-learn (:mod:`router_model.additive`). When a
    route has none (its estimator's tables did not agree with its ``predict_proba``), none are
    written and the version loads its skops files, as versions logged before the tables did.

    Returns:
        Artifact key to file, for ``mlflow.pyfunc.log_model``'s ``artifacts`` (empty: no tables).
    """
    from router_model.additive import artifact_key, tables_filename

    files: dict[str, str] = {}
    if any(model is None for model in tables.values()):
        return files
    for route, model in tables.items():
        path = folder / tables_filename(route)
        model.save(path)
        files[artifact_key(route)] = str(path)
    return files


def log_router(
    result: Any,
    data_tags: dict[str, str],
    extra_tags: dict[str, str] | None = None,
    frame: pd.DataFrame | None = None,
) -> RegisteredRouter:
    """Log one training run (params, metrics, plots, the router) and register the router.

    Args:
        result: A :class:`router_model.train.TrainResult`.
        data_tags: ``data_source``, ``data_sha256`` and ``data_path`` of the training data
            (``data_path`` is the shared URI when the file was shared).
        extra_tags: More run and version tags (for example ``retrain_key``).
        frame: The whole training file as loaded; when given, it is logged as the run's dataset
            input (:func:`log_dataset_input`), so the version's lineage names its data.

    Returns:
        The run id, model URI and registry version. No alias is set here.
    """
    import matplotlib.pyplot as plt

    from router_model.plots import confusion_figure, reliability_figure, roc_figure, terms_figure
    from router_model.router import (
        CONFIG_GOLDEN,
        CONFIG_PREFERRED,
        CONFIG_SAFE_FALSE_ALARM,
        CONFIG_SAFE_THRESHOLD,
        CONFIG_VALIDATION_AUC,
        golden_answers,
    )
    from router_model.submodels import save_submodel, submodel_filename
    from router_model.terms import terms_table

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
        if frame is not None:
            log_dataset_input(frame, data_tags["data_path"], data_tags["data_sha256"])
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
        terms = terms_table(result.router.submodels, test)
        mlflow.log_text(terms.to_csv(index=False), TERMS_ARTIFACT)
        figure = terms_figure(terms)
        mlflow.log_figure(figure, TERMS_FIGURE_ARTIFACT)
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
            artifacts.update(tables_artifacts(result.router.tables, Path(tmp)))
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
                    CONFIG_GOLDEN: golden_answers(result.router),
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
