"""Score Spark DataFrames with the registered router, for data beyond one machine.

A thin layer over ``mlflow.pyfunc.spark_udf`` that does what every caller would otherwise get
wrong once: the struct ``result_type`` of the router's four output columns, ``env_manager="local"``
(the executors' Python environment is the one that has this package), hyphenated column names
quoted for Spark SQL, only the feature columns the DataFrame carries passed to the model (in either
spelling; a row routes by the features it gives, so a file with only the stem-and-season columns
scores on the logistic regression), and ``params`` checked before any Spark job starts.

Requires ``pyspark`` (``pip install 'mushroom-router[spark]'``) and Java 17+. In local mode, Spark's
Python workers run ``PYSPARK_PYTHON`` (default ``python3`` on ``PATH``), which must be an
interpreter with this package installed; :func:`router_udf` warns when it looks like it is not.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router_model import features as F
from router_model import settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

_logger = logging.getLogger(__name__)

#: The UDF's return type: the router's output columns as plain Spark types (the categorical
#: ``prediction`` and ``model`` columns of the in-process output arrive as strings).
RESULT_TYPE = "prediction string, probability double, poisonous_probability double, model string"
#: The ``explanation`` field added with ``explain``: a struct, as in process, whose terms carry
#: ``features``, ``values`` and ``contribution`` (the ``"other"`` term of ``explain: k`` is there,
#: without its ``count``: MLflow's conversion needs every field in every term).
EXPLANATION_TYPE = (
    "struct<base: double, contributions: array<struct<features: array<string>, values: array<double>, "
    "contribution: double>>>"
)

_RESULT_COLUMN = "__mushroom_router_result"

#: Passed to the executors so that they load the model as the driver would (no pickle when the
#: driver forbids it), also on a cluster whose executors do not inherit the driver's environment.
_SHARED_ENV = ("MLFLOW_ALLOW_PICKLE_DESERIALIZATION",)


def quote(name: str) -> str:
    """Backquote a column name for Spark SQL, where ``cap-diameter`` unquoted is a subtraction."""
    return "`" + name.replace("`", "``") + "`"


def feature_columns(columns: Iterable[str]) -> list[str]:
    """The columns the router reads, as spelled in ``columns`` and in their order.

    Args:
        columns: Column names of a DataFrame (``df.columns``).

    Returns:
        Every column that spells a feature (``stem-height`` or ``stem_height``); others are left out.
    """
    return [c for c in columns if F.canonical_name(c) in F.ALL_FEATURES]


def _check_columns(columns: list[str], model: str) -> None:
    """Refuse columns with which no row could be scored (every Spark task would fail on them)."""
    given = {F.canonical_name(c) for c in feature_columns(columns)}
    routes = F.ROUTES if model == F.AUTO else (model,)
    if any(set(F.ROUTE_FEATURES[route]) <= given for route in routes):
        return
    needs = "; ".join(
        f"{route} needs {list(F.ROUTE_FEATURES[route])} (missing "
        f"{[c for c in F.ROUTE_FEATURES[route] if c not in given]})"
        for route in routes
    )
    what = "neither feature set" if model == F.AUTO else f"the feature set of param model={model!r}"
    raise ValueError(f"the DataFrame's columns complete {what}: {needs}")


def _worker_env() -> dict[str, str]:
    """The driver's settings that the executors must share (the tracking URI travels by itself)."""
    return {name: os.environ[name] for name in _SHARED_ENV if name in os.environ}


def _check_worker_python(spark: SparkSession) -> None:
    """Warn when local-mode Python workers would run another interpreter than this one."""
    try:
        master = spark.sparkContext.master
        python = spark.sparkContext.pythonExec
    except Exception:  # Spark Connect has no SparkContext: its workers are not ours to check
        return
    found = shutil.which(python)
    if not master.startswith("local") or found is None:
        return
    if Path(found).absolute().parent != Path(sys.executable).absolute().parent:
        _logger.warning(
            "Spark's Python workers run %s, not this interpreter (%s); if they lack this package "
            "the UDF fails with ModuleNotFoundError. Set PYSPARK_PYTHON=%s before starting Spark.",
            found,
            sys.executable,
            sys.executable,
        )


def router_udf(
    spark: SparkSession, model_uri: str | None = None, params: Mapping[str, Any] | None = None
) -> Any:
    """The registered router as a Spark pandas UDF returning a struct of its output columns.

    Call it on a struct of feature columns (hyphenated names quoted), for example
    ``udf(struct(col("`cap-diameter`"), ...))``; :func:`score` does that for you.

    Args:
        spark: The active session.
        model_uri: Router to use; default ``models:/mushroom-router@champion`` (``MUSHROOM_MODEL_URI``).
        params: ``model`` / ``threshold`` / ``explain``, fixed for every row the UDF scores (the
            union spellings ``"threshold": "safe"`` and ``"explain": k`` are mapped onto the
            signature's typed params here).

    Returns:
        The ``mlflow.pyfunc.spark_udf`` with result type :data:`RESULT_TYPE` (and, with
        ``explain``, an ``explanation`` field of :data:`EXPLANATION_TYPE`).

    Raises:
        ValueError: On an unknown param, model or a threshold outside [0, 1] (before any Spark job).
    """
    import mlflow.pyfunc

    from router_model.params import parse_params, typed_params
    from router_model.registry import client

    explain = parse_params(params).explain
    typed = typed_params(params or {})
    client()
    uri = model_uri or settings.model_uri()
    _check_worker_python(spark)
    _logger.info("Spark UDF of %s (params %s)", uri, typed)
    result_type = RESULT_TYPE if explain is None else f"{RESULT_TYPE}, {F.EXPLANATION} {EXPLANATION_TYPE}"
    return mlflow.pyfunc.spark_udf(
        spark,
        uri,
        result_type=result_type,
        env_manager="local",
        params=typed,
        extra_env=_worker_env(),
    )


def features_struct(columns: Iterable[str]) -> Column:
    """A struct of the feature columns among ``columns``, field names as spelled there."""
    from pyspark.sql import functions as sf

    return sf.struct(*[sf.col(quote(c)) for c in feature_columns(columns)])


def score(
    df: DataFrame,
    model_uri: str | None = None,
    params: Mapping[str, Any] | None = None,
    explain: bool | int = False,
) -> DataFrame:
    """Append the router's output columns to a Spark DataFrame (lazily, as any transformation).

    Args:
        df: Rows to score. Feature columns may be spelled with hyphens or underscores; any of them
            may be absent (a row routes by the features it carries); other columns pass through.
        model_uri: Router to use; default ``models:/mushroom-router@champion``.
        params: ``model`` / ``threshold`` (/ ``explain``).
        explain: ``True`` for every term of each row's explanation, k for the k largest and one
            "other" term (the same as ``params["explain"]``).

    Returns:
        ``df``'s columns followed by ``prediction``, ``probability``, ``poisonous_probability`` and
        ``model`` (and ``explanation``, a struct of :data:`EXPLANATION_TYPE`, with ``explain``). A
        bad row fails the Spark job with the router's message (its row number counts within the
        failing Arrow batch, not the whole DataFrame).

    Raises:
        ValueError: If ``df`` already has an output column, its columns complete no feature set
            (or not the one of param ``model``), or a param is invalid.
    """
    from router_model.params import parse_params

    params = dict(params or {})
    if explain is not False:
        params[F.PARAM_EXPLAIN] = explain
    outputs = list(F.OUTPUT_COLUMNS)
    checked = parse_params(params)
    if checked.explain is not None:
        outputs.append(F.EXPLANATION)
    clash = [c for c in df.columns if c.lower() in outputs or c == _RESULT_COLUMN]
    if clash:
        raise ValueError(f"the DataFrame already has output column(s) {clash}; drop or rename them first")
    _check_columns(df.columns, checked.model)
    udf = router_udf(df.sparkSession, model_uri, params)
    scored = df.withColumn(_RESULT_COLUMN, udf(features_struct(df.columns)))
    result = scored[_RESULT_COLUMN]
    return scored.select(
        *[scored[quote(c)] for c in df.columns],
        *[result.getField(c).alias(c) for c in outputs],
    )
