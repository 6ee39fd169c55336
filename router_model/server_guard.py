"""Harden and speed up MLflow's scoring server for the router (``mlflow models serve``).

``mlflow models serve`` runs ``mlflow.pyfunc.scoring_server``, which (MLflow 3.17):

* answers 500 to a request without ``Content-Type`` (``None.split``), to an integer of more than
  4,300 digits (``ValueError``) and to deeply nested JSON (``RecursionError``), because its JSON
  parser catches none of them;
* attaches a ``stack_trace`` (server paths, source lines) to the 400 of a malformed CSV or Parquet
  body, or of any non-MLflow exception, and echoes the whole parsed input, or a whole undecodable
  body, in the message;
* answers an unsupported content type with plain text, where every other error is JSON;
* turns ``instances`` records into columns, so a batch mixing the two feature sets is merged
  into fewer rows (``[NB, LR]`` got one answer) or refused (``[LR, NB, LR]``), and turns
  ``instances``/``inputs`` columns into NumPy arrays, which fold a boolean into 1 and flatten
  nested lists into extra rows;
* scores a ``dataframe_split`` whose index is longer than its data with its rows repeated, the
  last of a duplicated JSON key and the first of a duplicated CSV header, without a word;
* reads and parses a body of any size (a 50 MB body takes about 1 GiB to parse);
* serialises predictions with ``DataFrame.to_dict`` and ``json.dump``, whose pure-Python encoder
  dominates a large router answer (four fields a row, two of them full-precision probabilities;
  figures in ``docs/benchmarks.md``).

The router's ``load_context`` calls :func:`install` inside that server process (and only there:
MLflow sets ``__pyfunc_model_path__`` for it). :func:`install` replaces the module's
``invocations`` with a guard around the original, and its ``predictions_to_json`` with one that
writes the same JSON value much faster (orjson for the router's answer; ``docs/benchmarks.md``). ``app.py``
builds the FastAPI app after the model has loaded, and its handler looks ``invocations`` up when
called, so the guard is in place from the first request. The guard parses a JSON body itself
(:func:`prepare`) and hands MLflow the parsed object, which its ``_decode_json_input`` takes as
is.

Before that, the guard tries a fast path (:func:`fast_answer`): a plain JSON request in one of
the four documented forms, numbers in every feature column, goes from bytes (orjson) to a float
matrix to the router's scorers (:meth:`router_model.router.Router.score`) to the same answer
bytes, without pandas, MLflow's parse or its schema handling; MLflow's params-schema enforcement
still runs. Everything else (and every error) takes MLflow's path, so the fast path answers
nothing differently, only faster; tests/serving/test_fuzz.py checks that on every fuzzed body.
A body the fast path takes is answered on the event loop, without MLflow's hop to a worker
thread (:class:`_EventLoopFastPath` stands in for the module's ``asyncio``).

All coupling to MLflow's private scoring-server names is in this module: ``invocations``,
``predictions_to_json``, ``InvocationsResponse``, ``_decode_json_input``, the module's
``asyncio`` and ``init``'s source (the thread hop), ``mlflow.models.utils._enforce_params_schema``
and ``Model._is_signature_from_type_hint``. tests/serving/test_server_guard.py pins each of
them; with an MLflow whose functions no longer have the expected signatures or behaviour,
:func:`install` logs a warning and changes nothing (or leaves the thread hop in place).
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import functools
import inspect
import io
import json
import logging
import operator
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE
from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

from router_model import features as F
from router_model import settings
from router_model.collector import paused_gc
from router_model.inputs import column_rows, few_labels
from router_model.metrics import METRICS_PATH, RequestCounter, ServerMetrics
from router_model.params import DEFAULTS, Params, parse_params, typed_params
from router_model.router import MushroomRouterModel, Router, Scores
from router_model.validation import InvalidInputError, rows_in_domain

_logger = logging.getLogger(__name__)

try:  # MLflow's own params-schema enforcement (private; install() checks it is there)
    from mlflow.models.utils import _enforce_params_schema
except ImportError:  # pragma: no cover - another MLflow: install() serves it unchanged
    _enforce_params_schema = None

SCORING_SERVER = "mlflow.pyfunc.scoring_server"
#: The variable ``mlflow models serve`` sets for its uvicorn worker (``_SERVER_MODEL_PATH``).
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"
#: Longest error message sent back; MLflow puts whole inputs and bodies in some of its messages.
MAX_MESSAGE_CHARS = 2000
_INVOCATIONS_PARAMS = ["data", "content_type", "model", "input_schema"]
_TO_JSON_PARAMS = ["raw_predictions", "output", "metadata"]
_ENFORCE_PARAMS_ARGS = ["params", "schema"]
#: How MLflow's ``/invocations`` handler calls ``invocations`` (``init``'s source).
_THREAD_HOP = "await asyncio.to_thread(invocations, data, content_type, model, input_schema)"
#: The module ``mlflow models serve`` tells uvicorn to import, and the app it holds.
_APP_MODULE = "mlflow.pyfunc.scoring_server.app"
_APP_NAME = "app"
#: Called when the scoring server shuts down gracefully (see :func:`on_shutdown`).
_SHUTDOWN: list[Callable[[], None]] = []
_SHUTDOWN_ATTACHED: list[bool] = []
#: The readiness probe's path (:func:`serve_readiness`); liveness is MLflow's ``/ping``.
READY_PATH = "/ready"
#: Called with MLflow's FastAPI app once it is built (see :func:`when_app_built`).
_APP_HOOKS: list[Callable[[Any], None]] = []
#: MLflow's JSON request forms (its scoring protocol) and the content types the guard reads first.
DF_RECORDS, DF_SPLIT, INSTANCES, INPUTS = "dataframe_records", "dataframe_split", "instances", "inputs"
JSON_FORMS = (DF_RECORDS, DF_SPLIT, INSTANCES, INPUTS)
JSON_TYPE, CSV_TYPE, PARQUET_TYPE = "application/json", "text/csv", "application/vnd.apache.parquet"
_ECHO_PREFIX = "Failed to predict data '"
_ECHO_SEPARATOR = "'. \nError: "
_GUARDED = "_mushroom_router_guard"
_FAST, _SLOW = "_mushroom_router_fast", "_mushroom_router_slow"
#: MLflow's key for the request params beside the data (its ``SERVING_PARAMS_KEY``).
PARAMS = "params"
#: Bodies up to this size that the fast path takes are answered on the event loop, without the
#: hop to a worker thread (about 1,000 rows of ``dataframe_split``: a millisecond of work).
INLINE_MAX_BYTES = 64 * 1024


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
        "takes_parsed_json": _takes_parsed_json(module),
        "params_schema": _params_schema_hook(),
    }
    expected = {
        "invocations": _INVOCATIONS_PARAMS,
        "predictions_to_json": _TO_JSON_PARAMS,
        "takes_parsed_json": True,
        "params_schema": _ENFORCE_PARAMS_ARGS,
    }
    if found != expected:
        _logger.warning("MLflow's scoring server is not the expected one (%s); serving it unchanged", found)
        return False
    module.invocations = guard(module.invocations, module.InvocationsResponse, limit)
    module.predictions_to_json = predictions_to_json
    inline = hops_to_thread(module)
    if inline:
        module.asyncio = _EventLoopFastPath()
    else:
        _logger.warning("MLflow's handler does not hop to a thread as expected; the fast path runs there")
    _logger.info(
        "Scoring server guard installed: request bodies up to %d bytes, fast path %s",
        limit,
        "on the event loop" if inline else "in the worker thread",
    )
    return True


def _params_schema_hook() -> list[str] | None:
    """The parameters of MLflow's params-schema enforcement, which the fast path calls as MLflow's
    ``PyFuncModel.predict`` does (``None`` when this MLflow has no such function)."""
    if _enforce_params_schema is None or not hasattr(Model, "_is_signature_from_type_hint"):
        return None
    return list(inspect.signature(_enforce_params_schema).parameters)


def hops_to_thread(module: ModuleType) -> bool:
    """Whether MLflow's ``/invocations`` handler runs ``invocations`` via ``asyncio.to_thread``.

    Only then does :class:`_EventLoopFastPath` stand in for the module's ``asyncio``.
    """
    if getattr(module, "asyncio", None) is not asyncio or not hasattr(module, "init"):
        return False
    try:
        source = inspect.getsource(module.init)
    except (OSError, TypeError):
        return False
    return _THREAD_HOP in source


def on_shutdown(callback: Callable[[], None]) -> None:
    """Run ``callback`` when the scoring server shuts down gracefully (SIGTERM, Ctrl-C).

    ``atexit`` is not enough there: after its graceful shutdown uvicorn raises the signal again
    with the default handler, which ends the process without running ``atexit`` handlers. The
    callbacks run in the FastAPI app's shutdown event instead. The app does not exist yet while
    the model loads, so the guard attaches them on the first request (:func:`attach_shutdown_hooks`):
    a server that never answered has nothing to flush.
    """
    _SHUTDOWN.append(callback)


def _run_shutdown_hooks() -> None:
    for callback in _SHUTDOWN:
        try:
            callback()
        except Exception:  # one failing hook must not keep the others from running
            _logger.exception("Shutdown hook %r failed", callback)


def attach_shutdown_hooks() -> bool:
    """Add the :func:`on_shutdown` hooks to the scoring server's app, once.

    Returns:
        Whether they are attached (``False`` outside ``mlflow models serve``'s app).
    """
    if _SHUTDOWN_ATTACHED:
        return True
    app = getattr(sys.modules.get(_APP_MODULE), _APP_NAME, None)
    router = getattr(app, "router", None)
    if router is None or not hasattr(router, "on_shutdown"):
        return False
    router.on_shutdown.append(_run_shutdown_hooks)
    _SHUTDOWN_ATTACHED.append(True)
    return True


def hook_app(metrics: ServerMetrics | None) -> bool:
    """Add the ``X-Model-Version`` header, and ``/metrics`` when given, to the scoring server's app.

    Runs while the model loads, inside the import of MLflow's ``app.py``, whose ``app`` does not
    exist yet (:func:`when_app_built`), so the header and ``/metrics`` are there from the first
    request. The shutdown hooks are attached then too.

    Args:
        metrics: The server's metrics (:func:`router_model.metrics.start`), or ``None`` (off).

    Returns:
        Whether the app will have them (``False`` when MLflow's app module is not loading).
    """
    return when_app_built(lambda app: _add_to_app(app, metrics), f"{METRICS_PATH} or {VERSION_HEADER} header")


def when_app_built(callback: Callable[[Any], None], what: str) -> bool:
    """Call ``callback(app)`` with the scoring server's FastAPI app as soon as it exists.

    Runs while the model loads, inside the import of MLflow's ``app.py``, whose ``app`` does not
    exist yet (it is assigned once ``scoring_server.init`` returns). The module's class becomes
    one whose ``app`` attribute, when uvicorn reads it right after the import and before it
    serves, runs the callbacks (and attaches the shutdown hooks), so what they add is there from
    the first request.

    Args:
        callback: Adds something to the app.
        what: What it adds, for the warning when there is no app to add it to.

    Returns:
        Whether the callback will run (``False`` when MLflow's app module is not loading).
    """
    module = sys.modules.get(_APP_MODULE)
    if module is None:
        _logger.warning("MLflow's scoring app module %s is not loading; no %s", _APP_MODULE, what)
        return False
    app = vars(module).get(_APP_NAME)
    if app is not None:  # already built (not how mlflow models serve loads): hook it now
        callback(app)
        return True
    _APP_HOOKS.append(callback)
    if isinstance(module, _AppHookModule):
        return True

    module.__class__ = type("_AppHookModule", (_AppHookModule, type(module)), {})
    return True


class _AppHookModule:
    """Mixed into the class of MLflow's app module until uvicorn first reads its ``app``."""

    @property
    def app(self) -> Any:
        try:
            found = vars(self)[_APP_NAME]
        except KeyError:
            raise AttributeError(_APP_NAME) from None
        self.__class__ = type(self).__mro__[2]  # once: then a plain module again
        hooks = list(_APP_HOOKS)
        _APP_HOOKS.clear()
        for hook in hooks:
            hook(found)
        attach_shutdown_hooks()
        return found


def _add_to_app(app: Any, metrics: ServerMetrics | None) -> None:
    if metrics is not None:
        _add_metrics(app, metrics)
    app.add_middleware(VersionHeader)  # added last: the outermost, so it sees every answer


def _add_metrics(app: Any, metrics: ServerMetrics) -> None:
    from fastapi import Request, Response  # MLflow's scoring server is a FastAPI app

    def metrics_endpoint(request: Request) -> Response:  # a plain function: run in a thread
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.add_route(METRICS_PATH, metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestCounter, metrics=metrics)


# --- which version answers: one slot per server process, swapped in place ------------------------

#: The response header naming the registered version that produced the answer.
VERSION_HEADER = "X-Model-Version"
#: Per request: a one-item list the guard fills with the version of the model it answered with
#: (the list is shared with the worker thread MLflow's handler hops to; a value set there is not).
_ANSWERED_BY: contextvars.ContextVar[list[str | None] | None] = contextvars.ContextVar(
    "mushroom_router_answered_by", default=None
)


class Answering:
    """A model the server answers with, and the registered version it is.

    ``model=None`` stands for the model ``mlflow models serve`` loaded at start (the one MLflow's
    handler passes to ``invocations``); a switched-in model replaces it (:meth:`ModelSlot.swap`).
    """

    __slots__ = ("input_schema", "model", "version")

    def __init__(self, model: Any, version: str | None) -> None:
        self.model = model
        self.version = version
        self.input_schema = None if model is None else model.metadata.get_input_schema()

    def pick(self, model: Any, input_schema: Any) -> tuple[Any, Any]:
        """The model and input schema to answer with, given MLflow's own."""
        return (model, input_schema) if self.model is None else (self.model, self.input_schema)

    def answered(self) -> None:
        """Record this model's version as the one answering the current request."""
        holder = _ANSWERED_BY.get()
        if holder is not None:
            holder[0] = self.version


class ModelSlot:
    """The model a server process answers with, swapped atomically with a drain.

    Every request takes the current model when it starts (:meth:`enter`) and lets go when its
    answer is computed (:meth:`leave`). :meth:`swap` stops new requests from taking the old model,
    waits until the requests that took it are done, then puts the new one in place: once a
    request is answered by the new version, none is answered by the old one in this process. The
    event loop never waits: during the drain the fast path declines (:meth:`enter` with
    ``wait=False`` returns ``None``) and the request waits in MLflow's worker thread instead.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current = Answering(None, None)
        self._inflight = 0
        self._draining = False

    @property
    def current(self) -> Answering:
        """What new requests are answered with."""
        return self._current

    def started(self, version: str | None) -> None:
        """Name the version MLflow's own model is (the one the server was started on)."""
        if self._current.model is None:
            self._current.version = version

    def version(self) -> str | None:
        """The version answering now: the switched-in one, else what the starter said (``served_env``)."""
        return self._current.version or settings.env("MUSHROOM_SERVED_VERSION")

    def enter(self, wait: bool) -> Answering | None:
        """Take the current model for one request (``None``: a swap drains and ``wait`` is false)."""
        with self._cond:
            if self._draining:
                if not wait:
                    return None
                self._cond.wait_for(lambda: not self._draining)
            self._inflight += 1
            return self._current

    def leave(self) -> None:
        """The request that :meth:`enter` took a model for is answered."""
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0 and self._draining:
                self._cond.notify_all()

    def swap(self, answering: Answering, drain_seconds: float = 30.0) -> bool:
        """Answer every later request with ``answering``, once the running ones are done.

        Args:
            answering: The new model and its version.
            drain_seconds: Longest wait for running requests (a huge batch); then it swaps anyway.

        Returns:
            Whether the running requests finished in time (``False``: one may still answer with
            the old model after the swap).
        """
        with self._cond:
            self._draining = True
            try:
                drained = self._cond.wait_for(lambda: self._inflight == 0, timeout=drain_seconds)
                self._current = answering
            finally:
                self._draining = False
                self._cond.notify_all()
        return drained


#: The process's slot (one scoring server per process).
SLOT = ModelSlot()


class VersionHeader:
    """ASGI middleware: every answer carries :data:`VERSION_HEADER` naming the version that made it.

    The version is the one the guard answered with (recorded per request through
    :data:`_ANSWERED_BY`), else (health checks, refusals before any model was taken) the version
    serving now. No header when the version is unknown (a server not started by the supervisor).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder: list[str | None] = [None]
        token = _ANSWERED_BY.set(holder)

        async def send_version(message: Any) -> None:
            if message["type"] == "http.response.start":
                version = holder[0] or SLOT.version()
                if version:
                    headers = list(message.get("headers", []))
                    headers.append((VERSION_HEADER.lower().encode(), version.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_version)
        finally:
            _ANSWERED_BY.reset(token)


def serve_readiness(model: MushroomRouterModel) -> bool:
    """Answer ``GET /ready``: 200 once ``model`` has scored the fixed example rows, else 503.

    Liveness is MLflow's ``/ping`` (and ``/health``): it answers as soon as the app serves, with no
    work. Readiness asks more: that the loaded model answers a prediction. The first ``/ready``
    scores :func:`router_model.features.example_rows` (one row per route) in a worker thread,
    without the inference log or the metrics, and checks each row took its route and got a finite
    probability; after the first success it answers from memory, so probing it often costs
    nothing. A failure answers 503 with the reason and is tried again on the next probe.

    Returns:
        Whether the app will answer it (``False`` when MLflow's app module is not loading).
    """
    return when_app_built(lambda app: _add_readiness(app, model), READY_PATH)


def ready_check(model: MushroomRouterModel) -> None:
    """Score the example rows with ``model`` and check the answer (what ``/ready`` runs once).

    Raises:
        RuntimeError: If a row was not answered as expected (its route, a finite probability).
        Exception: Whatever scoring raises (a model that cannot predict).
    """
    router = getattr(model, "router", None)
    if router is None:
        raise RuntimeError("the model has not loaded its sub-models")
    answer = router.predict(pd.DataFrame(F.example_rows()), None)
    expected = list(F.ROUTES)
    routes = [str(r) for r in answer[F.OUT_MODEL]]
    probability = answer[F.OUT_POISONOUS_PROBABILITY].to_numpy(dtype=float)
    if (
        routes != expected
        or not np.isfinite(probability).all()
        or ((probability < 0) | (probability > 1)).any()
    ):
        raise RuntimeError(
            f"the example rows were answered {routes} with P(poisonous) {probability.tolist()}; "
            f"expected routes {expected} and probabilities in [0, 1]"
        )


def _add_readiness(app: Any, model: MushroomRouterModel) -> None:
    from fastapi import Request, Response  # MLflow's scoring server is a FastAPI app

    done: list[bool] = []

    async def ready_endpoint(request: Request) -> Response:
        if not done:
            try:
                await asyncio.to_thread(ready_check, model)
            except Exception as err:
                _logger.warning("Not ready: %s", err)
                body = json.dumps({"ready": False, "reason": _bounded(f"{type(err).__name__}: {err}")})
                return Response(body, status_code=503, media_type=JSON_TYPE)
            done.append(True)
        return Response('{"ready": true}', media_type=JSON_TYPE)

    app.add_route(READY_PATH, ready_endpoint, methods=["GET"], include_in_schema=False)


def _takes_parsed_json(module: ModuleType) -> bool:
    """Whether MLflow's JSON reader passes an already parsed object through (:func:`prepare`)."""
    decode = getattr(module, "_decode_json_input", None)
    probe: dict[str, Any] = {}
    try:
        return decode is not None and decode(probe) is probe
    except Exception:  # any failure means "not the expected MLflow"
        return False


def guard(invocations: Callable[..., Any], response_type: type, max_request_bytes: int) -> Callable[..., Any]:
    """Wrap MLflow's ``invocations(data, content_type, model, input_schema)``.

    The wrapper refuses a missing content type (415) and an oversized body (413) before parsing,
    answers a plain JSON request in a documented form straight from the bytes (:func:`fast_answer`),
    reads every other JSON and CSV body first (:func:`prepare`: one row per instance, no
    duplicated keys or columns, a ``dataframe_split`` index as long as its data) before MLflow's
    own path, turns the parser's uncaught errors into 400s, and answers every error as MLflow's
    JSON ``{"error_code", "message"}`` with no stack trace and a bounded message.

    The wrapper carries its two halves as attributes for the event-loop shortcut
    (:class:`_EventLoopFastPath`): ``_FAST`` (the checks and the fast path, ``None`` when it
    declines) and ``_SLOW`` (the checks and MLflow's path).
    """

    def refuse(status: int, message: str, error_code: str = "BAD_REQUEST") -> Any:
        body = json.dumps({"error_code": error_code, "message": _bounded(message)})
        return response_type(response=body, status=status, mimetype="application/json")

    def refused(data: bytes, content_type: str | None) -> Any:
        if not _SHUTDOWN_ATTACHED:
            attach_shutdown_hooks()
        if not content_type:
            return refuse(415, "no Content-Type header; expected application/json, text/csv or parquet")
        if len(data) > max_request_bytes:
            return refuse(
                413,
                f"request body is {len(data)} bytes; the limit is {max_request_bytes} "
                "(MUSHROOM_MAX_REQUEST_BYTES): send the rows in smaller batches",
                "RESOURCE_EXHAUSTED",
            )
        return None

    def fast(data: bytes, content_type: str | None, model: Any, input_schema: Any) -> Any:
        refusal = refused(data, content_type)
        if refusal is not None:
            return refusal
        served = SLOT.enter(wait=False)  # never blocks the event loop: a switch drains elsewhere
        if served is None:
            return None
        try:
            answer = fast_answer(data, content_type, *served.pick(model, input_schema))
        finally:
            SLOT.leave()
        if answer is None:
            return None
        served.answered()
        return response_type(response=answer, status=200, mimetype="application/json")

    def slow(data: bytes, content_type: str | None, model: Any, input_schema: Any) -> Any:
        refusal = refused(data, content_type)
        if refusal is not None:
            return refusal
        try:
            body = prepare(data, content_type)
        except InvalidInputError as err:
            raise _invalid_input(err) from None
        served = SLOT.enter(wait=True)
        try:
            model, input_schema = served.pick(model, input_schema)
            if isinstance(body, dict) and PARAMS in body:
                # The params schema of the version that answers (a switch may have replaced the
                # model MLflow's handler passed in).
                try:
                    body[PARAMS], _ = request_params(body[PARAMS], model.metadata.get_params_schema())
                except InvalidInputError as err:
                    raise _invalid_input(err) from None
            served.answered()
            result = invocations(body, content_type, model, input_schema)
        except MlflowException as err:
            raise clean_error(err) from None
        except (ValueError, RecursionError, TypeError) as err:
            _logger.info("Refused a body MLflow's parser failed on", exc_info=True)
            raise MlflowException(
                _bounded(f"could not read the request body: {type(err).__name__}: {err}"),
                error_code=BAD_REQUEST,
            ) from None
        finally:
            SLOT.leave()
        if result.status >= 400 and result.mimetype != "application/json":
            return refuse(result.status, result.response)
        return result

    @functools.wraps(invocations)
    def guarded(data: bytes, content_type: str | None, model: Any, input_schema: Any) -> Any:
        result = fast(data, content_type, model, input_schema)
        return slow(data, content_type, model, input_schema) if result is None else result

    setattr(guarded, _GUARDED, True)
    setattr(guarded, _FAST, fast)
    setattr(guarded, _SLOW, slow)
    return guarded


def _invalid_input(err: InvalidInputError) -> MlflowException:
    """The 400 for input the guard refuses before MLflow's path (bounded message)."""
    return MlflowException(_bounded(f"Invalid input: {err}"), error_code=INVALID_PARAMETER_VALUE)


class _EventLoopFastPath:
    """Stands in for the ``asyncio`` module in MLflow's scoring server, to skip one thread hop.

    MLflow's handler runs every request as ``await asyncio.to_thread(invocations, ...)``. For a
    body of up to :data:`INLINE_MAX_BYTES` that the fast path takes (tens of microseconds of
    work), the hop to a worker thread and back costs more than the request itself, so such a
    request is answered on the event loop; every other request goes to the thread as before
    (without trying the fast path twice). Everything else is the real ``asyncio``.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def to_thread(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        fast = getattr(func, _FAST, None)
        if fast is not None and not kwargs and len(args[0]) <= INLINE_MAX_BYTES:
            result = fast(*args)
            if result is not None:
                return result
            func = getattr(func, _SLOW)
        return await asyncio.to_thread(func, *args, **kwargs)


class _DeclinedError(Exception):
    """The fast path does not take this body; MLflow's own path answers it."""


#: A value of a column the router does not read may be any JSON scalar (it is ignored).
_SCALARS = (str, int, float, bool, type(None))
_PREDICTION, _PROBABILITY, _POISONOUS, _ROUTE = F.OUTPUT_COLUMNS
_LABEL_NAMES = (F.LABELS[F.LABEL_EDIBLE], F.LABELS[F.LABEL_POISONOUS])
_FEATURE_INDEX: dict[str, int] = {}
#: The cache of column labels is bounded: clients choose the labels.
_FEATURE_INDEX_MAX, _FEATURE_LABEL_MAX = 4096, 64
#: (model object, its MushroomRouterModel or False), replaced whole: threads read it while a
#: switch warms a new model up.
_fast_target: tuple[Any, Any] = (None, False)


def _feature_index(label: str) -> int:
    """Column of ``label`` in ``ALL_FEATURES`` (-1 for a column the router ignores), cached."""
    index = _FEATURE_INDEX.get(label)
    if index is None:
        name = F.canonical_name(label)
        index = F.ALL_FEATURES.index(name) if name in F.ALL_FEATURES else -1
        if len(_FEATURE_INDEX) < _FEATURE_INDEX_MAX and len(label) <= _FEATURE_LABEL_MAX:
            _FEATURE_INDEX[label] = index
    return index


def fast_router(model: Any, input_schema: Any) -> MushroomRouterModel | None:
    """The router pyfunc behind MLflow's ``model``, when the fast path may answer for it.

    Only for the router's own pyfunc, with no input schema and a signature not taken from type
    hints (what :mod:`router_model.registry` logs): then MLflow's path does nothing to a table
    of numbers between parsing it and the router's ``predict``, besides enforcing the params
    schema, which the fast path runs too.
    """
    global _fast_target
    cached_model, found = _fast_target
    if cached_model is not model:
        found = False
        try:
            python_model = model.unwrap_python_model()
            if (
                isinstance(python_model, MushroomRouterModel)
                and isinstance(getattr(python_model, "router", None), Router)
                and model.metadata.get_input_schema() is None
                and not model.metadata._is_signature_from_type_hint()
                and "params" in inspect.signature(model.predict).parameters
            ):
                found = python_model
        except MlflowException:  # not a PythonModel
            pass
        _fast_target = (model, found)
    if input_schema is not None or found is False:
        return None
    return found


def fast_answer(data: bytes, content_type: str, model: Any, input_schema: Any = None) -> bytes | None:
    """Answer a plain JSON request straight from bytes to a float matrix to the scorers to bytes.

    Takes a body that MLflow would read into a table of numbers: one of the four JSON forms (and
    optionally ``params``, nothing else at the top), with every value of a feature column a
    number or null, valid for its column, and every row routable. Anything else (text, booleans,
    out-of-domain values, duplicated keys, nested values, unknown shapes) is declined and takes
    MLflow's path (with :func:`prepare`), which answers it, so every error message is MLflow's
    path's. The answer is the bytes that path writes (:func:`predictions_to_json`), with the
    same doubles (:meth:`router_model.router.Router.score`), and the rows go to the inference log
    as on MLflow's path (``MushroomRouterModel.observer``).

    Returns:
        The JSON answer, or ``None`` to decline.
    """
    pyfunc = fast_router(model, input_schema)
    if pyfunc is None or _media_type(content_type) != JSON_TYPE:
        return None
    # Parsing a body, scoring it and writing its answer make containers by the thousand (a
    # 1,000-row body parses into 1,000 lists, its answer is 1,000 dicts), none in a cycle, all
    # freed by reference counting when the request ends. Left to it, the cyclic collector runs
    # several times a request and walks them each time (and does so at points that shift with
    # whatever else a request allocates, the metrics' counting included): it rests meanwhile.
    with paused_gc():
        return _fast_answer(data, pyfunc, model)


def _fast_answer(data: bytes, pyfunc: Any, model: Any) -> bytes | None:
    """:func:`fast_answer` once the model takes the fast path: the answer, or ``None`` to decline."""
    try:
        parsed = orjson.loads(data)
        if type(parsed) is not dict:
            return None
        matrix, keys = _fast_matrix(parsed)
        params = parsed.get(PARAMS)
        if params is not None:
            if type(params) is not dict or not all(type(v) in _SCALARS for v in params.values()):
                return None
            keys += len(params)
        # orjson keeps the last of a duplicated key without a word. Each object member has one
        # ':' outside strings, and strings may hold more, so as many ':' as keys read means
        # that no key was given twice (otherwise MLflow's path, which refuses it, decides).
        if data.count(b":") != keys:
            return None
        schema = model.metadata.get_params_schema()
        typed, checked = request_params(params, schema)
        _enforce_params_schema(typed, schema)  # what MLflow's path would refuse is declined
        model_name, threshold, explain = checked or DEFAULTS
        if not rows_in_domain(matrix).all():
            return None
        scores = pyfunc.router.score(matrix, model_name, threshold, observe=pyfunc.observer())
        if explain is None:
            return _answer(scores, None)
        # Each row's explanation comes as its JSON text, joined from a template made once per
        # codes (router_model.explain._fragments).
        return _answer(scores, pyfunc.router.explain(matrix, scores.routes, explain, for_json=True))
    except (_DeclinedError, orjson.JSONDecodeError, InvalidInputError, MlflowException, OverflowError):
        return None


def _answer(scores: Scores, explained: list[Any] | None) -> bytes:
    """The answer's JSON bytes, as :func:`predictions_to_json` writes the router's frame."""
    routes = [F.ROUTES[r] for r in scores.routes.tolist()]
    labels = [_LABEL_NAMES[p] for p in scores.is_poisonous.tolist()]
    predictions = [
        {_PREDICTION: label, _PROBABILITY: probability, _POISONOUS: poisonous, _ROUTE: route}
        for label, probability, poisonous, route in zip(
            labels, scores.probability.tolist(), scores.poisonous.tolist(), routes, strict=True
        )
    ]
    if explained is not None:
        for prediction, explanation in zip(predictions, explained, strict=True):
            prediction[F.EXPLANATION] = explanation
    return orjson.dumps({"predictions": predictions})


#: The typed param each union spelling sets (:func:`router_model.params.typed_params`).
_SPELLED_BY = {F.PARAM_SAFE_THRESHOLD: F.PARAM_THRESHOLD, F.PARAM_EXPLAIN_TOP: F.PARAM_EXPLAIN}


def request_params(params: Any, schema: Any) -> tuple[Any, Params | None]:
    """The request's params as the model's typed params schema takes them (both paths call this).

    MLflow's params schema is strictly typed and cannot declare the router's union spellings, so
    ``"threshold": "safe"`` and ``"explain": k`` are mapped onto the typed ``safe_threshold`` and
    ``explain_top`` (:func:`router_model.params.typed_params`) before MLflow enforces the schema.
    Then the params are checked as ``Router.predict`` checks them
    (:func:`router_model.params.parse_params`), so that HTTP refuses what in-process scoring
    refuses, with the same message: MLflow would drop an unknown param (a misspelled
    ``"treshold"``) with a warning in the server's log and answer at the default threshold, and
    would word a wrongly typed one by its schema type alone (``"explain": 1.5``: "boolean").
    A router param this version's schema does not declare is refused, naming it and saying to
    retrain.

    Args:
        params: The body's ``params`` as parsed (anything else than a dict passes unchanged, for
            MLflow to refuse).
        schema: The model's ``ParamSchema`` (``None`` for a model without one).

    Returns:
        The typed params, for MLflow, and them checked (``None`` when ``params`` is not a dict).

    Raises:
        InvalidInputError: On params :func:`router_model.params.parse_params` refuses, or a
            router param the version was registered without.
    """
    if type(params) is not dict:
        return params, None
    typed = typed_params(params)
    declared = set() if schema is None else {spec.name for spec in schema.params}
    for name in typed:
        if name in F.PARAMS and name not in declared:
            source = name if name in params else _SPELLED_BY[name]
            asked = (
                f"param {name!r}"
                if source == name
                else f"param {source!r}: {params[source]!r} needs {name!r}"
            )
            raise InvalidInputError(
                f"{asked}, which this model version's signature does not declare (it was "
                "registered before that param existed); retrain to get a version that takes it"
            )
    return typed, parse_params(typed)


def _fast_matrix(parsed: dict[str, Any]) -> tuple[np.ndarray, int]:
    """The feature matrix of a parsed body, and how many object keys the body held.

    Raises:
        _DeclinedError: For anything but a table of numbers in one of the four JSON forms.
    """
    forms = [key for key in parsed if key != PARAMS]
    if len(forms) != 1 or forms[0] not in JSON_FORMS:
        raise _DeclinedError
    form = forms[0]
    value = parsed[form]
    keys = len(parsed)
    if form == DF_SPLIT:
        matrix, more = _split_matrix(value)
        return matrix, keys + more
    if form == DF_RECORDS:
        if type(value) is not list:
            raise _DeclinedError
        matrix, more = _records_matrix(value)
        return matrix, keys + more
    if type(value) is dict:  # instances/inputs: one record, or columns
        records = _one_record_per_row(value)
        matrix, _ = _records_matrix(records or [])
        return matrix, keys + len(value)
    if type(value) is list:
        matrix, more = _records_matrix(value)
        return matrix, keys + more
    raise _DeclinedError


def _records_matrix(records: list[Any]) -> tuple[np.ndarray, int]:
    """Rows from records (dicts of column to value); each row takes the spelling it gives."""
    if not records:
        raise _DeclinedError
    nan = float("nan")
    width = len(F.ALL_FEATURES)
    rows = []
    keys = 0
    for record in records:
        if type(record) is not dict:
            raise _DeclinedError
        keys += len(record)
        row = [nan] * width
        for label, value in record.items():
            j = _feature_index(label)
            kind = type(value)
            if j < 0:
                if kind not in _SCALARS:
                    raise _DeclinedError
            elif value is not None:
                if (kind is not float and kind is not int) or row[j] == row[j]:  # given twice
                    raise _DeclinedError
                row[j] = value
        rows.append(row)
    return np.array(rows, dtype=np.float64), keys


def _split_matrix(split: Any) -> tuple[np.ndarray, int]:
    """Rows from ``dataframe_split``: ``columns`` of distinct strings, ``data`` rows as long."""
    if type(split) is not dict or not split.keys() <= {"columns", "data", "index"}:
        raise _DeclinedError
    columns, data, index = split.get("columns"), split.get("data"), split.get("index")
    if type(columns) is not list or type(data) is not list or not data:
        raise _DeclinedError
    if not all(type(c) is str for c in columns) or len(set(columns)) != len(columns):
        raise _DeclinedError
    if index is not None and (
        type(index) is not list or len(index) != len(data) or not all(type(i) in (str, int) for i in index)
    ):
        raise _DeclinedError
    if set(map(type, data)) != {list} or set(map(len, data)) != {len(columns)}:
        raise _DeclinedError
    matrix = np.full((len(data), len(F.ALL_FEATURES)), np.nan)
    seen: set[int] = set()
    for position, label in enumerate(columns):
        j = _feature_index(label)
        column = list(map(operator.itemgetter(position), data))
        kinds = set(map(type, column))
        if j < 0:
            if not kinds <= _SCALAR_KINDS:
                raise _DeclinedError
            continue
        if not kinds <= _NUMBER_KINDS:
            raise _DeclinedError
        values = np.array(column, dtype=np.float64)
        if j in seen:  # two spellings of one feature: each row gives at most one of them
            given = ~np.isnan(matrix[:, j])
            if (given & ~np.isnan(values)).any():
                raise _DeclinedError
            values[given] = matrix[given, j]
        seen.add(j)
        matrix[:, j] = values
    return matrix, len(split)


_SCALAR_KINDS = frozenset(_SCALARS)
_NUMBER_KINDS = frozenset((int, float, type(None)))


def _media_type(content_type: str) -> str | None:
    """The media type MLflow reads ``content_type`` as, or ``None`` when it answers 415 to it."""
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key != "charset" or value.lower() != "utf-8":
            return None
    return mime


def prepare(data: bytes, content_type: str) -> Any:
    """Read a JSON or CSV body before MLflow does, and hand MLflow what it should have read.

    MLflow's own parsing loses or invents rows and values without a word:

    * ``instances`` records become columns (``{"col": array}``), so records of different
      feature sets merge into fewer rows or are refused; ``instances``/``inputs`` columns become
      NumPy arrays, which fold a boolean among integers into 1 and flatten nested lists into
      extra rows. Here both forms become ``dataframe_records``, one record per instance (a
      mapping of columns is read by :func:`router_model.inputs.column_rows`).
    * ``json.loads`` keeps the last of a duplicated key and pandas renames a duplicated CSV
      header ``cap-shape.1`` (and scores the first); both are refused here, naming the key, and
      so is a Parquet schema naming a feature twice.
    * a ``dataframe_split`` index longer than its data makes pandas repeat the rows; refused.

    Returns:
        What to pass to MLflow's ``invocations`` as ``data``: the parsed JSON object (its
        ``_decode_json_input`` takes a dict as is, so the body is parsed once), the decoded CSV
        text, or the body unchanged (other types, and bodies MLflow's parser refuses itself).

    Raises:
        InvalidInputError: On a duplicated key or feature column, an index that does not match
            the data, or ``instances``/``inputs`` columns that do not form a table.
    """
    mime = _media_type(content_type)
    if mime == JSON_TYPE:
        return _prepare_json(data)
    if mime == CSV_TYPE:
        return _prepare_csv(data)
    if mime == PARQUET_TYPE:
        _refuse_duplicated_features(_parquet_columns(data), "the Parquet schema")
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a JSON object giving a key twice."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        twice = [key for key, n in Counter(key for key, _ in pairs).items() if n > 1]
        raise InvalidInputError(
            f"a JSON object gives {few_labels(twice)} more than once; give each column and param once"
        )
    return obj


def _prepare_json(data: bytes) -> Any:
    try:
        parsed = json.loads(data, object_pairs_hook=_unique_keys)
    except InvalidInputError:
        raise
    except (ValueError, RecursionError, TypeError):
        return data  # not JSON: MLflow's parser gives its own answer, which the guard cleans
    if not isinstance(parsed, dict):
        return data
    forms = [key for key in JSON_FORMS if key in parsed]
    if len(forms) != 1:  # MLflow refuses it, naming the keys
        return parsed
    form = forms[0]
    if form == DF_SPLIT:
        _check_split(parsed[form])
    elif form in (INSTANCES, INPUTS):
        records = _one_record_per_row(parsed[form])
        if records is not None:
            del parsed[form]
            parsed[DF_RECORDS] = records
    return parsed


def _one_record_per_row(value: Any) -> list[Any] | None:
    """``instances``/``inputs`` as records, one per row; ``None`` for shapes without columns."""
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        return value
    if isinstance(value, dict):
        if column_rows(value) is None:
            return [value]
        labels = list(value)
        return [dict(zip(labels, row, strict=True)) for row in zip(*value.values(), strict=True)]
    return None


def _check_split(split: Any) -> None:
    if not isinstance(split, dict):
        return
    index, data = split.get("index"), split.get("data")
    if isinstance(index, list) and isinstance(data, list) and len(index) != len(data):
        raise InvalidInputError(
            f"dataframe_split gives an index of length {len(index)} for data of length "
            f"{len(data)}; give one index label per data row, or no index"
        )


def _prepare_csv(data: bytes) -> str | bytes:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # MLflow's parser answers
    _refuse_duplicated_features(_csv_header(text), "the CSV header")
    return text


def _refuse_duplicated_features(names: list[str], where: str) -> None:
    """Refuse a table naming a feature column twice (pandas would rename the copy ``<name>.1``)."""
    named = Counter(name for name in names if F.canonical_name(name) in F.ALL_FEATURES)
    twice = [name for name, n in named.items() if n > 1]
    if twice:
        raise InvalidInputError(
            f"{where} gives {few_labels(twice)} more than once; give each feature column once"
        )


def _parquet_columns(data: bytes) -> list[str]:
    """Column names from a Parquet footer (no data read); none when it is not Parquet."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(io.BytesIO(data)).names
    except Exception:  # pyarrow's errors are many; MLflow's own parser answers them
        return []


def _csv_header(text: str) -> list[str]:
    """The header row as pandas' ``read_csv`` takes it: the first line that is not blank."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        for row in reader:
            if len(row) > 1 or (row and row[0].strip()):
                return row
    except csv.Error:
        pass  # MLflow's parser answers
    return []


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

    True for unique string labels and columns of finite floats, integers, booleans, categories
    of strings or the router's explanations (the router's answer). MLflow writes NaN and infinity as bare
    ``NaN``/``Infinity``, orjson as ``null``; such frames take MLflow's path.
    """
    columns = list(frame.columns)
    if len(set(columns)) != len(columns) or not all(isinstance(c, str) for c in columns):
        return False
    for name, column in frame.items():
        dtype = column.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            if not all(isinstance(c, str) for c in dtype.categories) or column.isna().any():
                return False
        elif dtype.kind == "f":
            if not np.isfinite(column.to_numpy()).all():
                return False
        elif name == F.EXPLANATION and dtype.kind == "O":
            # The router's explanations: dicts of lists of strings and finite numbers
            # (router_model.explain refuses a sub-model with a non-finite term), which orjson
            # writes as MLflow's encoder would.
            if not all(type(value) is dict for value in column.tolist()):
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


# --------------------------------------------------------------------------------------------
# Starting MLflow's scoring server directly (the project's own serve and supervise)
# --------------------------------------------------------------------------------------------

#: MLflow's request timeout variable, which ``mlflow models serve`` sets for its uvicorn worker
#: from ``--timeout`` (default 60 s, also read from this variable).
REQUEST_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
DEFAULT_REQUEST_TIMEOUT_SECONDS = 60


def scoring_server_env(
    model_path: str | os.PathLike[str], base: dict[str, str] | None = None
) -> dict[str, str]:
    """The variables ``mlflow models serve --env-manager local`` gives its uvicorn worker.

    As MLflow's ``scoring_server.get_cmd``: the model's ``file://`` URI in
    :data:`SERVER_MODEL_PATH_ENV` and the request timeout (``--timeout``'s default, or the
    variable's value when set), over a copy of ``base`` (default: this process's environment).
    """
    from pathlib import Path

    env = dict(os.environ if base is None else base)
    env[SERVER_MODEL_PATH_ENV] = Path(os.path.abspath(model_path)).as_uri()  # path_to_local_file_uri
    env[REQUEST_TIMEOUT_ENV] = str(env.get(REQUEST_TIMEOUT_ENV) or DEFAULT_REQUEST_TIMEOUT_SECONDS)
    return env


def run_scoring_server(model_path: str | os.PathLike[str], host: str, port: int, workers: int = 1) -> None:
    """Serve ``model_path`` with MLflow's scoring server in this process, as ``mlflow models serve``
    does in its uvicorn child, and return when it stops.

    ``mlflow models serve --env-manager local`` starts the ``mlflow`` command line (seconds of
    imports), which runs ``uvicorn --host H --port P --workers N mlflow.pyfunc.scoring_server.app:app``
    in a new process with :func:`scoring_server_env`; that imports MLflow again and loads the model
    while importing the app. Here the same uvicorn call runs in the calling process, which reuses
    what it already imported: the same app, the same variables, the same worker processes for
    ``workers`` > 1 (spawned by uvicorn, each loading the model), the same graceful shutdown.

    One thing is skipped: the scan of every installed distribution's files that MLflow runs when it
    loads a model (:func:`skip_distribution_scan`); the model's requirements are still checked
    against the installed versions.
    """
    os.environ.update(scoring_server_env(model_path))
    skip_distribution_scan()
    import uvicorn

    uvicorn.run(f"{_APP_MODULE}:{_APP_NAME}", host=host, port=port, workers=workers)


def skip_distribution_scan() -> bool:
    """Let MLflow's requirement check at model load skip its scan of all installed files.

    ``mlflow.pyfunc.load_model`` compares the model's ``requirements.txt`` with the installed
    versions (and warns about mismatches). It looks each one up with ``importlib.metadata.version``;
    only for a package without metadata does it fall back to importing a module named after it,
    for which it first maps every installed module to its distribution by reading the file list of
    every installed distribution (``packages_distributions``), about a second per server start.
    This seeds that map with MLflow's own fixed entries instead, so the check gives the same result
    for every package installed with metadata (all of this model's requirements).

    Returns:
        Whether the map was seeded (``False`` with an MLflow without that map, or when it is
        already built).
    """
    try:
        from mlflow.utils import requirements_utils as reqs
    except ImportError:  # pragma: no cover - another MLflow: nothing to skip
        return False
    if getattr(reqs, "_MODULES_TO_PACKAGES", False) is not None:
        return False
    reqs._MODULES_TO_PACKAGES = {
        **getattr(reqs, "MLFLOW_MODULES_TO_PACKAGES", {}),
        **getattr(reqs, "DATABRICKS_MODULES_TO_PACKAGES", {}),
    }
    return True
