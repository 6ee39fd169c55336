"""Names and settings: the registered model, its aliases, and everything read from the environment.

Every setting is read when it is used, never at import, so a test or a DAG task can change the
environment first. Defaults keep a fresh clone working offline: a SQLite tracking store and an
artifact folder inside the project home.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from router_model.errors import ConfigError

MODEL_NAME = "mushroom-router"
EXPERIMENT_NAME = "mushroom-router"
#: Where ``mushroom-router monitor`` logs its drift runs.
MONITORING_EXPERIMENT = "mushroom-router-monitoring"
#: The Airflow asset the monitor updates when it finds drift; the retrain DAG schedules on it.
DRIFT_ASSET_URI = "mushroom-router://monitoring/drift"
DRIFT_ASSET_NAME = "mushroom-router-drift"
CHAMPION = "champion"
CHALLENGER = "challenger"
#: A registered model with no versions that exists only while a process moves ``champion``: the
#: registry's own mutex (see :func:`router_model.registry.registry_lock`).
PROMOTION_LOCK = f"{MODEL_NAME}.promotion-lock"
#: How long a promotion lock is honoured if its holder dies without releasing it, and how long a
#: promotion waits for one before giving up (a transient error: the DAG task retries). Holding it
#: takes two registry calls, well under a second.
PROMOTION_LOCK_LEASE_SECONDS = 60.0
PROMOTION_LOCK_WAIT_SECONDS = 300.0

KAGGLE_DATASET = "prishasawhney/mushroom-dataset"
KAGGLE_FILE = "mushroom_cleaned.csv"

DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_SERVE_PORT = 5001
#: Seconds between the supervisor's registry polls (one small registry call each): with a download
#: and an in-place switch, a moved alias is served within 10 s.
DEFAULT_POLL_SECONDS = 2.0
#: Rows in memory at a time when scoring or reading files.
DEFAULT_CHUNK_ROWS = 100_000

#: Hyperparameters that make a deliberately weak model, for trying the gate (it must not promote).
WEAK_TRAIN_PARAMS = {"nb_bins": 2, "nb_orders": "1", "lr_bins": 2, "lr_orders": "1"}

#: The name of the switch (CLI ``--force``, DAG param ``force``) that trains and registers a version
#: even when its data, code and training params equal the champion's, and what it does.
FORCE_RETRAIN = "force"
FORCE_RETRAIN_HELP = (
    "train and register even when the data (sha256), the code and the training params equal the "
    "champion's (by default such a retrain registers nothing and switches nothing)"
)

#: Where training data comes from: a file you give, Kaggle, or the built-in synthetic sample;
#: ``auto`` picks the first available (see ``router_model.data.resolve_data``).
SOURCE_PATH = "path"
SOURCE_KAGGLE = "kaggle"
SOURCE_SYNTHETIC = "synthetic"
SOURCES: tuple[str, ...] = (SOURCE_KAGGLE, SOURCE_PATH, SOURCE_SYNTHETIC)
SOURCE_AUTO = "auto"
#: Default request-body limit of the model server: about 80,000 rows as dataframe_records, well
#: above the largest benchmarked batch (10,000 rows, 2 MB), and about 0.3 GiB of parsing peak.
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

#: Held-out share and seed of the train/test split (the original project's 80/20, seed 42).
TEST_SIZE = 0.2
SPLIT_SEED = 42

#: The gate's ``min_improvement`` (ROC-AUC margin per route over the champion) must lie in this
#: closed range: a negative margin would promote a worse model, and ROC-AUC gains beyond 0.1 over a
#: working champion are not a margin but a different problem.
MIN_IMPROVEMENT_RANGE = (0.0, 0.1)
#: Each yardstick of the gate needs at least this many held-out rows of *each* class: ROC-AUC on a
#: handful of rows is noise (a 20-row file held out 4 rows and "matched" a champion at 1.0000).
MIN_HOLDOUT_ROWS_PER_CLASS = 50


#: MLflow HTTP client limits for the supervisor and ``status``: one retry without back-off and a
#: 10 s timeout, instead of MLflow's default 7 retries with exponential back-off and 120 s
#: timeouts (about 4 minutes per call to a dead tracking server, during which a crashed server
#: stayed down and SIGTERM waited). No progress bars: they flooded the log with every download.
MLFLOW_HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def bound_mlflow_http() -> None:
    """Apply :data:`MLFLOW_HTTP_LIMITS` to this process, keeping any value already set."""
    for name, value in MLFLOW_HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def env(name: str, default: str | None = None) -> str | None:
    """Read an environment variable, treating an empty value as unset.

    Args:
        name: Variable name.
        default: Returned when the variable is unset or empty.

    Returns:
        The value or ``default``.
    """
    value = os.environ.get(name, "").strip()
    return value or default


def home() -> Path:
    """The project home: ``MUSHROOM_HOME``, else the source checkout, else the working directory.

    Returns:
        An absolute path; the local tracking store, artifacts and data cache live below it.
    """
    configured = env("MUSHROOM_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd().resolve()


def tracking_uri() -> str:
    """The MLflow tracking URI: ``MLFLOW_TRACKING_URI``, else a SQLite file in the project home."""
    return env("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def redacted(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for logs and messages.

    Args:
        uri: A URI such as ``postgresql://user:<password>@host/db``.

    Returns:
        ``postgresql://user:***@host/db``; a URI without a password unchanged.
    """
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def artifact_location() -> str | None:
    """Where a new experiment stores artifacts when the tracking store is the local default.

    Returns:
        ``MUSHROOM_ARTIFACT_ROOT``; else, for a local store (SQLite or files), a folder in the
        project home (MLflow would otherwise use ``./mlruns`` wherever it runs); else ``None``,
        and the tracking server decides.
    """
    configured = env("MUSHROOM_ARTIFACT_ROOT")
    if configured:
        return configured
    if tracking_uri().split(":", 1)[0] in ("http", "https", "databricks"):
        return None
    return (home() / "mlartifacts").as_uri()


def data_dir() -> Path:
    """Cache folder for downloaded and generated data (gitignored)."""
    return Path(env("MUSHROOM_DATA_DIR") or home() / "data")


def data_path() -> str | None:
    """An explicit training-data path from ``MUSHROOM_DATA``, if set."""
    return env("MUSHROOM_DATA")


def model_uri(alias: str = CHAMPION) -> str:
    """The registry URI of the router under ``alias``, overridable with ``MUSHROOM_MODEL_URI``."""
    return env("MUSHROOM_MODEL_URI") or f"models:/{MODEL_NAME}@{alias}"


def experiment_name() -> str:
    """The MLflow experiment for training runs (``MUSHROOM_EXPERIMENT``)."""
    return env("MUSHROOM_EXPERIMENT", EXPERIMENT_NAME) or EXPERIMENT_NAME


def max_request_bytes() -> int:
    """The largest ``/invocations`` body the model server parses (``MUSHROOM_MAX_REQUEST_BYTES``).

    Raises:
        ConfigError: If the variable is not a positive integer.
    """
    raw = env("MUSHROOM_MAX_REQUEST_BYTES")
    if raw is None:
        return DEFAULT_MAX_REQUEST_BYTES
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"MUSHROOM_MAX_REQUEST_BYTES is {raw!r}; expected a positive number of bytes")
    return int(raw)


def _positive(name: str, default: float, kind: type) -> float:
    raw = env(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} is {raw!r}; expected a positive {'whole ' if kind is int else ''}number")
    return value


def drift_psi_threshold() -> float:
    """PSI above which a feature counts as drifted (``MUSHROOM_DRIFT_PSI``, default 0.2).

    Raises:
        ConfigError: If the variable is not a positive number.
    """
    return float(_positive("MUSHROOM_DRIFT_PSI", 0.2, float))


def drift_min_rows() -> int:
    """Fewest logged values a feature needs before the monitor judges it (``MUSHROOM_DRIFT_MIN_ROWS``).

    Raises:
        ConfigError: If the variable is not a positive whole number.
    """
    return int(_positive("MUSHROOM_DRIFT_MIN_ROWS", 500, int))
