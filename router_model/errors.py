"""One error base for the package, and the one policy every caller applies to it.

* :class:`RouterError` (``transient = False``): the input, the data, a parameter or a setting is
  wrong, and the message says which value and what was expected. Trying again cannot help: the
  CLI prints that one line and exits 2; the Airflow DAG fails the task without retries.
* A :class:`RouterError` with ``transient = True``: something outside failed (a download, a
  service) and trying again later may help. The CLI prints one line and exits 2 as well; the DAG
  keeps its retries.
* Any other exception is a bug or an outage this package did not name: the CLI keeps its
  traceback (with a hint), and the DAG retries it like any failure.

This module imports nothing at import time, so the CLI and the DAG files can use it without
loading MLflow; :func:`fail_fast` imports Airflow only when a task fails.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class RouterError(Exception):
    """An error this package raises on purpose; its message names the bad value.

    Attributes:
        transient: Whether trying again later may help (a retrying scheduler reads it).
    """

    transient: bool = False


class ConfigError(RouterError, ValueError):
    """A parameter or setting outside its meaningful range (training params, gate margin, env vars).

    Also a ``ValueError``, for callers that catch the builtin.
    """


class DataError(RouterError):
    """The training data cannot be had or is not fit to train on; the message says why."""


class DataUnavailableError(DataError):
    """The data source could not be reached (network, Kaggle outage); a retry may help."""

    transient = True


def is_permanent(err: BaseException) -> bool:
    """Whether ``err`` is a user error that no retry can fix (the policy above)."""
    return isinstance(err, RouterError) and not err.transient


def fail_fast(func: Callable[..., Any]) -> Callable[..., Any]:
    """Apply the policy above to an Airflow task: a permanent error fails it without retries.

    A ``RouterError`` that is not transient (bad data, missing Kaggle credentials, a param out of
    range, a precondition) becomes ``AirflowFailException`` with its one-line message: a retry
    cannot fix it. Transient ones and every other error (an unreachable tracking server, a bug)
    keep the task's normal retries.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as err:
            if is_permanent(err):
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"{type(err).__name__}: {err}") from err
            raise

    return wrapper
