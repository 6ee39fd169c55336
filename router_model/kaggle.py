"""The Kaggle data set ``prishasawhney/mushroom-dataset``: credentials and a cached download."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router_model import settings
from router_model.errors import DataError, DataUnavailableError

_logger = logging.getLogger(__name__)


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
