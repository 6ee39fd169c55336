"""Training data: find it, check it, split it.

:func:`resolve_data` picks the data in this order: an explicit path (``--data`` or
``MUSHROOM_DATA``); a Kaggle download of ``prishasawhney/mushroom-dataset`` when Kaggle
credentials are present; else a deterministic synthetic sample (:func:`make_synthetic`), with a
loud warning, so a fresh clone trains offline. :func:`load_training_frame` validates a file before
anything is trained or logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router_model import features as F
from router_model import settings, tables
from router_model.errors import RouterError
from router_model.validation import InvalidInputError, feature_matrix

_logger = logging.getLogger(__name__)


SYNTHETIC_ROWS = 8000
SYNTHETIC_SEED = 20240607


class DataError(RouterError):
    """The training data cannot be had or is not fit to train on; the message says why."""


class DataUnavailableError(DataError):
    """The data source could not be reached (network, Kaggle outage); a retry may help."""

    transient = True


@dataclass(frozen=True)
class DataSource:
    """A training-data file and where it came from.

    Attributes:
        path: Local CSV file.
        source: One of ``settings.SOURCES``.
        sha256: Hex digest of the file's bytes.
    """

    path: str
    source: str
    sha256: str

    def as_tags(self) -> dict[str, str]:
        """The MLflow tags that record this source."""
        return {"data_source": self.source, "data_sha256": self.sha256, "data_path": self.path}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_synthetic(n_rows: int = SYNTHETIC_ROWS, seed: int = SYNTHETIC_SEED) -> pd.DataFrame:
    """Make a deterministic stand-in for ``mushroom_cleaned.csv``.

    Like the real data, rows are drawn from simulated species, each edible or poisonous, with
    its own typical cap, gill, stem and season, so both routes have signal to learn and rows of
    one species resemble each other. It is for offline demos and tests, not for real decisions.

    Args:
        n_rows: Number of rows.
        seed: Random seed; the same arguments always give the same frame.

    Returns:
        A frame with the real file's columns and dtypes (``class`` 1 = poisonous).
    """
    if n_rows < 20:
        raise ValueError(f"n_rows must be >= 20, got {n_rows}")
    rng = np.random.default_rng(seed)
    n_species = 60
    species = pd.DataFrame(
        {
            "poisonous": rng.random(n_species) < 0.55,
            "cap": rng.lognormal(6.2, 0.6, n_species),
            "cap-shape": rng.integers(0, 7, n_species),
            "gill-attachment": rng.integers(0, 7, n_species),
            "gill-color": rng.integers(0, 12, n_species),
            "height": rng.uniform(0.2, 2.0, n_species),
            "width": rng.lognormal(6.5, 0.7, n_species),
            "stem-color": rng.integers(0, 13, n_species),
            "season": rng.integers(0, 4, n_species),
        }
    )
    pick = rng.integers(0, n_species, n_rows)
    s = species.iloc[pick].reset_index(drop=True)

    def typical(column: str, cardinality: int, keep: float) -> np.ndarray:
        other = rng.integers(0, cardinality, n_rows)
        return np.where(rng.random(n_rows) < keep, s[column].to_numpy(), other)

    seasons = np.asarray(F.SEASON_VALUES)
    frame = pd.DataFrame(
        {
            "cap-diameter": np.clip(np.round(s["cap"] * rng.lognormal(0, 0.25, n_rows)), 0, 1891),
            "cap-shape": typical("cap-shape", 7, 0.8),
            "gill-attachment": typical("gill-attachment", 7, 0.8),
            "gill-color": typical("gill-color", 12, 0.75),
            "stem-height": np.clip(s["height"] * rng.lognormal(0, 0.2, n_rows), 0.0, 3.84),
            "stem-width": np.clip(np.round(s["width"] * rng.lognormal(0, 0.25, n_rows)), 0, 3569),
            "stem-color": typical("stem-color", 13, 0.8),
            "season": seasons[typical("season", 4, 0.7)],
            F.TARGET: s["poisonous"].astype(int).to_numpy(),
        }
    )
    flip = rng.random(n_rows) < 0.03
    frame.loc[flip, F.TARGET] = 1 - frame.loc[flip, F.TARGET]
    ints = ["cap-diameter", "cap-shape", "gill-attachment", "gill-color", "stem-width"]
    ints += ["stem-color", F.TARGET]
    return frame.astype({c: "int64" for c in ints})


def validate_training_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a training table and return it with canonical columns and dtypes.

    Args:
        frame: The table as read from the file.

    Returns:
        A frame with exactly ``ALL_FEATURES`` (float64) and ``class`` (int64).

    Raises:
        DataError: On a missing column, a non-numeric, missing, infinite or out-of-domain value,
            or a label outside {0, 1}; the message names the column and shows an example row.
    """
    groups = F.canonical_columns(frame.columns)
    missing = [c for c in F.ALL_FEATURES + (F.TARGET,) if c not in groups]
    if missing:
        raise DataError(f"missing required column(s) {missing}; the file has {list(frame.columns)}")
    if len(frame) == 0:
        raise DataError("the file has a header but no rows")

    def example(row: int) -> str:
        values = {
            k: v.item() if isinstance(v, np.generic) else v
            for k, v in frame.iloc[[row]].to_dict("records")[0].items()
        }
        return f"example row {row} (0-based, header not counted): {values}"

    try:
        matrix = feature_matrix(frame)
    except InvalidInputError as err:
        raise DataError(f"{err}. {example(err.row or 0)}") from None
    holes = np.argwhere(np.isnan(matrix))
    if len(holes):
        row, col = (int(v) for v in holes[0])
        raise DataError(
            f"column {F.ALL_FEATURES[col]!r} has {int(np.isnan(matrix[:, col]).sum())} missing "
            f"value(s); every training row needs every feature. {example(row)}"
        )
    label_column = groups[F.TARGET][0]
    labels = pd.to_numeric(frame[label_column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isin(labels, (F.LABEL_EDIBLE, F.LABEL_POISONOUS)))
    if len(bad):
        raise DataError(
            f"column {label_column!r} must be 0 (edible) or 1 (poisonous), got "
            f"{frame[label_column].iloc[bad[0]]} in {len(bad)} row(s). {example(int(bad[0]))}"
        )
    if len(np.unique(labels)) < 2:
        raise DataError(f"column {label_column!r} holds only one class; both 0 and 1 are needed")
    clean = pd.DataFrame(matrix, columns=list(F.ALL_FEATURES))
    clean[F.TARGET] = labels.astype(np.int64)
    return clean


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON table by its extension (see :mod:`router_model.tables`).

    Raises:
        DataError: If the file is missing or cannot be parsed.
    """
    if not Path(path).is_file():
        raise DataError(f"data file not found: {path}")
    try:
        return tables.read_table(path)
    except tables.TableError as err:
        raise DataError(str(err)) from None


def load_training_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a training file (see :func:`validate_training_frame`)."""
    try:
        return validate_training_frame(read_table(path))
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/held-out split (80/20, seed 42, as the original project).

    Args:
        frame: A validated training frame.

    Returns:
        ``(train, test)``.
    """
    from sklearn.model_selection import train_test_split

    return train_test_split(
        frame, test_size=settings.TEST_SIZE, stratify=frame[F.TARGET], random_state=settings.SPLIT_SEED
    )


def kaggle_credentials_present(environ: dict[str, str] | None = None) -> bool:
    """Whether Kaggle credentials are configured (env vars or files in the config dir)."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get("KAGGLE_API_TOKEN"):
        return True
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return True
    config = Path(environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return (config / "kaggle.json").is_file() or (config / "access_token").is_file()


def _default_kaggle_api() -> Any:
    # ``import kaggle`` authenticates at import and prints a help text when that fails.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    return KaggleApi()


def download_kaggle(
    dest_dir: str | os.PathLike[str] | None = None,
    api_factory: Callable[[], Any] | None = None,
) -> Path:
    """Download ``mushroom_cleaned.csv`` from Kaggle into the data cache, or reuse the cached copy.

    Args:
        dest_dir: Target folder (default: ``settings.data_dir() / 'kaggle'``).
        api_factory: Returns an object with Kaggle's ``authenticate()`` and
            ``dataset_download_file(dataset, file_name, path=..., unzip=...)`` (tests pass a fake).

    Returns:
        The path of the CSV.

    Raises:
        DataError: With a one-line reason when there are no credentials, authentication fails
            (Kaggle's client calls ``exit(1)``), or the download does.
    """
    dest = Path(dest_dir) if dest_dir else settings.data_dir() / "kaggle"
    target = dest / settings.KAGGLE_FILE
    if target.is_file():
        _logger.info("Using the cached Kaggle download %s", target)
        return target
    if api_factory is None:
        if not kaggle_credentials_present():
            raise DataError(
                "no Kaggle credentials: set KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY), "
                "or give a data path"
            )
        api_factory = _default_kaggle_api
    dest.mkdir(parents=True, exist_ok=True)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            api = api_factory()
            api.authenticate()
            api.dataset_download_file(
                settings.KAGGLE_DATASET, settings.KAGGLE_FILE, path=str(dest), unzip=True
            )
    except SystemExit as err:  # the Kaggle client exits on failed authentication
        raise DataError(
            f"Kaggle authentication failed (client exited with {err.code!r}); check "
            "KAGGLE_API_TOKEN or KAGGLE_USERNAME/KAGGLE_KEY"
        ) from None
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataUnavailableError(f"Kaggle download of {settings.KAGGLE_DATASET} failed: {first}") from None
    if not target.is_file():
        raise DataError(f"Kaggle download finished but {target} is missing")
    _logger.info("Downloaded %s to %s", settings.KAGGLE_DATASET, target)
    return target


def write_synthetic(dest_dir: str | os.PathLike[str] | None = None, n_rows: int = SYNTHETIC_ROWS) -> Path:
    """Write :func:`make_synthetic` to the data cache (idempotent) and return its path."""
    dest = Path(dest_dir) if dest_dir else settings.data_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"synthetic-{n_rows}-{SYNTHETIC_SEED}.csv"
    if not target.is_file():
        tmp = target.with_suffix(".tmp")
        make_synthetic(n_rows).to_csv(tmp, index=False)
        tmp.replace(target)
    return target


def resolve_data(
    path: str | os.PathLike[str] | None = None,
    source: str | None = None,
    api_factory: Callable[[], Any] | None = None,
) -> DataSource:
    """Find the training data (explicit path, else Kaggle with credentials, else synthetic).

    Args:
        path: An explicit file; wins over everything (``MUSHROOM_DATA`` when not given).
        source: Force one of ``settings.SOURCES``; ``None`` picks in the order above.
        api_factory: Kaggle client factory, for tests.

    Returns:
        The resolved :class:`DataSource`.

    Raises:
        DataError: If the chosen source is not available.
    """
    if source is not None and source not in settings.SOURCES:
        raise DataError(f"unknown data source {source!r}; expected one of {list(settings.SOURCES)}")
    if source in (None, settings.SOURCE_PATH):
        path = path or settings.data_path()
        if path:
            if Path(path).is_dir():
                raise DataError(
                    f"data path {path} is a directory; expected a CSV file such as {settings.KAGGLE_FILE}"
                )
            if not Path(path).is_file():
                raise DataError(f"data file not found: {path}")
            resolved = str(Path(path).resolve())
            return DataSource(resolved, settings.SOURCE_PATH, file_sha256(resolved))
        if source == settings.SOURCE_PATH:
            raise DataError("data source 'path' needs a path (--data or MUSHROOM_DATA)")
    if source == settings.SOURCE_KAGGLE or (
        source is None and (api_factory is not None or kaggle_credentials_present())
    ):
        target = download_kaggle(api_factory=api_factory)
        return DataSource(str(target), settings.SOURCE_KAGGLE, file_sha256(target))
    target = write_synthetic()
    _logger.warning(
        "NO REAL DATA: training on the built-in SYNTHETIC sample %s. Predictions from this model "
        "say nothing about real mushrooms. Give --data PATH, set MUSHROOM_DATA, or set Kaggle "
        "credentials to train on mushroom_cleaned.csv.",
        target,
    )
    return DataSource(str(target), settings.SOURCE_SYNTHETIC, file_sha256(target))


def describe(frame: pd.DataFrame) -> dict[str, Any]:
    """Small JSON-friendly summary of a validated frame (row count, class balance)."""
    counts = frame[F.TARGET].value_counts().to_dict()
    return {
        "rows": len(frame),
        "poisonous": int(counts.get(F.LABEL_POISONOUS, 0)),
        "edible": int(counts.get(F.LABEL_EDIBLE, 0)),
        "duplicates": int(frame.duplicated().sum()),
    }


__all__ = [
    "DataError",
    "DataSource",
    "DataUnavailableError",
    "describe",
    "download_kaggle",
    "file_sha256",
    "load_training_frame",
    "make_synthetic",
    "read_table",
    "resolve_data",
    "split",
    "validate_training_frame",
    "write_synthetic",
]
