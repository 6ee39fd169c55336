"""The error policy of :mod:`router_model.errors`, applied to Airflow tasks.

Its own module so that the served model's code never imports it: the model's requirements are
derived from what its code imports, and Airflow is no requirement of a model server.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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
