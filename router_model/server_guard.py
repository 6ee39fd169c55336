"""Harden and speed up MLflow's scoring server for the router (``mlflow models serve``).

``mlflow models serve`` runs ``mlflow.pyfunc.scoring_server``, which (MLflow 3.17):

* answers 500 to a request without ``Content-Type`` (``None.split``), to an integer of more than
  4,300 digits (``ValueError``) and to deeply nested JSON (``RecursionError``), because its JSON
  parser catches none of them;
* attaches a ``stack_trace`` (server paths, source lines) to the 400 of a malformed CSV or Parquet
  body, or of any non-MLflow exception, and echoes the whole parsed input, or a whole undecodable
  body, in the message;
* answers an unsupported content type with plain text, where every other error is JSON;
* reads and parses a body of any size (a 50 MB body takes about 1 GiB to parse);
* serialises predictions with ``DataFrame.to_dict`` and ``json.dump``, whose pure-Python encoder
  took 83% of a 1,000-row router request (the router answers four fields a row, two of them
  full-precision probabilities).

The router's ``load_context`` calls :func:`install` inside that server process (and only there:
MLflow sets ``__pyfunc_model_path__`` for it). :func:`install` replaces the module's
``invocations`` with a guard around the original, and its ``predictions_to_json`` with one that
writes the same JSON value five to ten times faster (orjson for the router's answer). ``app.py``
builds the FastAPI app after the model has loaded, and its handler looks ``invocations`` up when
called, so the guard is in place from the first request. Nothing else in MLflow changes; with an
MLflow whose functions no longer have the expected signatures, :func:`install` logs a warning and
changes nothing.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE
from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

from router_model import settings

_logger = logging.getLogger(__name__)

SCORING_SERVER = "mlflow.pyfunc.scoring_server"
#: The variable ``mlflow models serve`` sets for its uvicorn worker (``_SERVER_MODEL_PATH``).
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"
#: Longest error message sent back; MLflow puts whole inputs and bodies in some of its messages.
MAX_MESSAGE_CHARS = 2000
_INVOCATIONS_PARAMS = ["data", "content_type", "model", "input_schema"]
_TO_JSON_PARAMS = ["raw_predictions", "output", "metadata"]
_ECHO_PREFIX = "Failed to predict data '"
_ECHO_SEPARATOR = "'. \nError: "
_GUARDED = "_mushroom_router_guard"


def in_scoring_server() -> bool:
    """Whether this process is the uvicorn worker of ``mlflow models serve``."""
    return SCORING_SERVER in sys.modules and bool(os.environ.get(SERVER_MODEL_PATH_ENV))


def install(module: ModuleType | None = None, max_request_bytes: int | None = None) -> bool:
    """Put the guard and the fast serialiser into MLflow's scoring server module.

    Args:
        module: The module to patch (default ``mlflow.pyfunc.scoring_server``).
        max_request_bytes: Body limit (default :func:`router_model.settings.max_request_bytes`).

    Returns:
        ``True`` if installed now or before, ``False`` if this MLflow does not match.

    Raises:
        ValueError: If ``MUSHROOM_MAX_REQUEST_BYTES`` is not a positive integer (the server then
            fails at start-up, not on a request).
    """
    if module is None:
        import mlflow.pyfunc.scoring_server as module
    limit = settings.max_request_bytes() if max_request_bytes is None else max_request_bytes
    if getattr(module.invocations, _GUARDED, False):
        return True
    found = {
        "invocations": list(inspect.signature(module.invocations).parameters),
        "predictions_to_json": list(inspect.signature(module.predictions_to_json).parameters),
    }
    if found != {"invocations": _INVOCATIONS_PARAMS, "predictions_to_json": _TO_JSON_PARAMS}:
        _logger.warning("MLflow's scoring server is not the expected one (%s); serving it unchanged", found)
        return False
    module.invocations = guard(module.invocations, module.InvocationsResponse, limit)
    module.predictions_to_json = predictions_to_json
    _logger.info("Scoring server guard installed: request bodies up to %d bytes", limit)
    return True


def guard(invocations: Callable[..., Any], response_type: type, max_request_bytes: int) -> Callable[..., Any]:
    """Wrap MLflow's ``invocations(data, content_type, model, input_schema)``.

    The wrapper refuses a missing content type (415) and an oversized body (413) before parsing,
    turns the parser's uncaught errors into 400s, and answers every error as MLflow's JSON
    ``{"error_code", "message"}`` with no stack trace and a bounded message.
    """

    def refuse(status: int, message: str, error_code: str = "BAD_REQUEST") -> Any:
        body = json.dumps({"error_code": error_code, "message": _bounded(message)})
        return response_type(response=body, status=status, mimetype="application/json")

    @functools.wraps(invocations)
    def guarded(data: bytes, content_type: str | None, model: Any, input_schema: Any) -> Any:
        if not content_type:
            return refuse(415, "no Content-Type header; expected application/json, text/csv or parquet")
        if len(data) > max_request_bytes:
            return refuse(
                413,
                f"request body is {len(data)} bytes; the limit is {max_request_bytes} "
                "(MUSHROOM_MAX_REQUEST_BYTES): send the rows in smaller batches",
                "RESOURCE_EXHAUSTED",
            )
        try:
            result = invocations(data, content_type, model, input_schema)
        except MlflowException as err:
            raise clean_error(err) from None
        except (ValueError, RecursionError, TypeError) as err:
            _logger.info("Refused a body MLflow's parser failed on", exc_info=True)
            raise MlflowException(
                _bounded(f"could not read the request body: {type(err).__name__}: {err}"),
                error_code=BAD_REQUEST,
            ) from None
        if result.status >= 400 and result.mimetype != "application/json":
            return refuse(result.status, result.response)
        return result

    setattr(guarded, _GUARDED, True)
    return guarded


def clean_error(err: MlflowException) -> MlflowException:
    """Drop ``stack_trace`` and MLflow's echo of the input from ``err`` and bound its message.

    The stack trace goes to the server log instead.
    """
    trace = err.json_kwargs.pop("stack_trace", None)
    if trace:
        _logger.warning(
            "Request refused (%s); MLflow's stack trace, kept out of the answer:\n%s", err.message, trace
        )
    message = err.message
    if message.startswith(_ECHO_PREFIX) and _ECHO_SEPARATOR in message:
        message = message.rsplit(_ECHO_SEPARATOR, 1)[1]
    err.message = _bounded(message)
    return err


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... ({len(message) - MAX_MESSAGE_CHARS} more characters)"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict(orient="records")`` built from whole columns (twice as fast).

    Only for unique string column labels (:func:`_plain_table` checks).
    """
    columns = list(frame.columns)
    values = [frame[c].tolist() for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def _plain_table(frame: pd.DataFrame) -> bool:
    """Whether orjson writes ``frame`` as MLflow would, up to JSON formatting.

    True for unique string labels and columns of finite floats, integers, booleans or
    categories of strings (the router's answer). MLflow writes NaN and infinity as bare
    ``NaN``/``Infinity``, orjson as ``null``; such frames take MLflow's path.
    """
    columns = list(frame.columns)
    if len(set(columns)) != len(columns) or not all(isinstance(c, str) for c in columns):
        return False
    for _, column in frame.items():
        dtype = column.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            if not all(isinstance(c, str) for c in dtype.categories) or column.isna().any():
                return False
        elif dtype.kind == "f":
            if not np.isfinite(column.to_numpy()).all():
                return False
        elif dtype.kind not in "iub":
            return False
    return True


def predictions_to_json(raw_predictions: Any, output: Any, metadata: dict[str, Any] | None = None) -> None:
    """MLflow's ``predictions_to_json``, writing the same JSON value much faster.

    The router's answer (a table of labels, finite probabilities and routes) is written by orjson,
    compact and with the shortest round-trip form of every float, so each probability parses back
    to exactly the same double (``1e-05`` becomes ``0.00001``, the spaces go). Anything else takes
    MLflow's own conversion with the C JSON encoder: the same bytes as MLflow (``json.dump``
    always takes the pure-Python encoder, ``json.dumps`` the C one).
    """
    if metadata and "predictions" in metadata:
        raise MlflowException("metadata cannot contain 'predictions' key", error_code=INVALID_PARAMETER_VALUE)
    if isinstance(raw_predictions, pd.DataFrame) and _plain_table(raw_predictions):
        try:
            body = orjson.dumps({"predictions": _records(raw_predictions), **(metadata or {})})
        except TypeError:  # metadata orjson cannot write: MLflow's way below
            pass
        else:
            output.write(body.decode("utf-8"))
            return
    predictions = _get_jsonable_obj(raw_predictions, pandas_orient="records")
    output.write(json.dumps({"predictions": predictions, **(metadata or {})}, cls=NumpyEncoder))
