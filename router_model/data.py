"""Training data: find it, check it, split it.

:func:`resolve_data` picks the data in this order: an explicit path (``--data`` or
``MUSHROOM_DATA``); a Kaggle download of ``prishasawhney/mushroom-dataset`` when Kaggle
credentials are present; else a deterministic synthetic sample (:mod:`router_model.synthetic`), with a
loud warning, so a fresh clone trains offline. :func:`load_training_frame` validates a file before
anything is trained or logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router_model import features as F
from router_model import kaggle, settings, synthetic, tables
from router_model.errors import DataError
from router_model.validation import InvalidInputError, feature_matrix

_logger = logging.getLogger(__name__)


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
        source is None and (api_factory is not None or kaggle.kaggle_credentials_present())
    ):
        target = kaggle.download_kaggle(api_factory=api_factory)
        return DataSource(str(target), settings.SOURCE_KAGGLE, file_sha256(target))
    target = synthetic.write_synthetic()
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
