"""One error base for the package, and the one policy every caller applies to it.

* :class:`RouterError` (``transient = False``): the input, the data, a parameter or a setting is
  wrong, and the message says which value and what was expected. Trying again cannot help: the
  CLI prints that one line and exits 2; the Airflow DAG fails the task without retries.
* A :class:`RouterError` with ``transient = True``: something outside failed (a download, a
  service) and trying again later may help. The CLI prints one line and exits 2 as well; the DAG
  keeps its retries.
* Any other exception is a bug or an outage this package did not name: the CLI keeps its
  traceback (with a hint), and the DAG retries it like any failure.

This module imports nothing, so the CLI and the DAG files can use it without loading MLflow;
:mod:`router_model.airflow_tasks` applies it to Airflow tasks.
"""

from __future__ import annotations


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
