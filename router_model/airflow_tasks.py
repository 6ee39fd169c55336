"""The error policy of :mod:`router_model.errors`, applied to Airflow tasks, and how a task ends a run early.

Its own module so that the served model's code never imports it: the model's requirements are
derived from what its code imports, and Airflow is no requirement of a model server.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from router_model.errors import is_permanent


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


def go_on(check: Mapping[str, Any]) -> Mapping[str, Any] | bool:
    """What a short-circuit task returns for a ``{"train", "reason", ...}`` check: go on, or stop here.

    Returns:
        The check itself when ``check["train"]`` (truthy: the next tasks run and get it as the task's
        return value), else ``False``, which skips every later task (Airflow keeps no return value
        then). The reason goes to the task log either way, so a run that ended early says why.
    """
    logging.getLogger("airflow.task").info(
        "%s: %s", "Going on" if check["train"] else "Stopping", check["reason"]
    )
    return dict(check) if check["train"] else False
