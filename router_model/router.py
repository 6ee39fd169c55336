"""The router: one MLflow pyfunc model that sends each row to the sub-model whose features it has.

Contract (see README "The router model"):

* Params ``model`` (``"auto"`` | ``"naive_bayes"`` | ``"logistic_regression"``), ``threshold``
  (float in [0, 1], default 0.5, or ``"safe"``: each route's own ``safe_threshold_1pct``, recorded
  in ``model_config`` at training time) and ``explain`` (``false``, ``true`` or k); the logged
  signature spells ``"safe"`` and k as typed params (:mod:`router_model.params`).
* Per row, vectorised: a row goes to the sub-model whose complete feature set it carries; a row
  with both sets goes to the sub-model with the higher validation ROC-AUC, recorded in the model's
  ``model_config`` at training time; ``model`` overrides. A batch may mix rows of both kinds.
* Output, one row per input row in input order: ``prediction`` ("edible" | "poisonous"),
  ``probability`` (of the predicted label), ``poisonous_probability`` (P(class == 1)), ``model``
  (the route taken). ``prediction`` is "poisonous" exactly when ``poisonous_probability >=
  threshold``: lowering the threshold trades false alarms for fewer dangerous "edible" mistakes.
  With ``explain``, also ``explanation``: the row's log-odds as a base plus one term per feature
  column of its route (:mod:`router_model.explain`).
* Bad input fails the whole request with ``MlflowException(INVALID_PARAMETER_VALUE)`` naming the
  row, the column and what was expected. Nothing is half-answered.

Sub-models are skops files (:mod:`router_model.submodels`); params are checked in
:mod:`router_model.params` and input shapes read in :mod:`router_model.inputs`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from router_model import features as F
from router_model import inference_log, log_process, settings
from router_model.additive import AdditiveModel, artifact_key
from router_model.errors import RouterError
from router_model.explain import RouteTerms, explanations, route_terms, terms_of
from router_model.inputs import as_frame, hashable_labels
from router_model.params import parse_params
from router_model.submodels import LazySubmodels, load_submodel
from router_model.validation import (
    InvalidInputError,
    RowProblems,
    feature_matrix,
    missing_features,
    refuse_rows,
)

#: ``model_config`` keys written at training time.
CONFIG_PREFERRED = "preferred_route"
CONFIG_VALIDATION_AUC = "validation_roc_auc"
#: Per route, the largest threshold keeping poisonous rows at or below 1% of the "edible" calls on
#: validation rows, and the share of edible rows it calls "poisonous" (see
#: :func:`router_model.calibration.safe_threshold`).
CONFIG_SAFE_THRESHOLD = "safe_threshold_1pct"
CONFIG_SAFE_FALSE_ALARM = "safe_threshold_false_alarm_rate"
#: The answers to :func:`router_model.features.golden_rows` at training time (P(poisonous) and
#: route per row): a server checks a version against them before it takes traffic.
CONFIG_GOLDEN = "golden_answers"
#: How far a golden P(poisonous) may move between training and serving (the same code and
#: sub-models give the same doubles; this only absorbs a float's text round trip).
GOLDEN_TOLERANCE = 1e-9

_ROUTE_INDEX = {route: i for i, route in enumerate(F.ROUTES)}


def _column_slice(route: str) -> slice:
    """A route's columns of the feature matrix: ``ALL_FEATURES`` lists each route's together, in order.

    A slice, not a list of positions: taking a route's rows and columns is then one cheap
    indexing step, which a single-row request pays for on every route it takes.
    """
    start = F.ALL_FEATURES.index(F.ROUTE_FEATURES[route][0])
    columns = slice(start, start + len(F.ROUTE_FEATURES[route]))
    if F.ALL_FEATURES[columns] != F.ROUTE_FEATURES[route]:
        raise AssertionError(f"the {route} features are not together in features.ALL_FEATURES")
    return columns


_COLUMNS = {route: _column_slice(route) for route in F.ROUTES}
_NO_ROUTE = -1
#: What :meth:`Router.predict` tells an observer: the feature matrix, route indices into
#: ``features.ROUTES``, P(poisonous) per row, and the threshold applied (per row, as an array, for
#: ``"threshold": "safe"``).
Observer = Callable[[np.ndarray, np.ndarray, np.ndarray, float | np.ndarray], None]
_ROUTE_DTYPE = pd.CategoricalDtype(list(F.ROUTES))
_LABEL_DTYPE = pd.CategoricalDtype([F.LABELS[F.LABEL_EDIBLE], F.LABELS[F.LABEL_POISONOUS]])


def assign_routes(
    matrix: np.ndarray, model: str, preferred: str, problems: RowProblems | None = None
) -> np.ndarray:
    """Pick a route for every row.

    Args:
        matrix: Output of :func:`router_model.validation.feature_matrix`.
        model: ``"auto"`` or a route name that every row must then complete.
        preferred: Route for rows that complete both feature sets (``model="auto"``).
        problems: Record rows without a route there (route -1) instead of raising.

    Returns:
        An int array of indices into ``features.ROUTES`` (-1 for rows recorded in ``problems``).

    Raises:
        InvalidInputError: Naming the first row that lacks the features of its route.
    """
    complete = {r: ~np.isnan(matrix[:, _COLUMNS[r]]).any(axis=1) for r in F.ROUTES}
    if model != F.AUTO:
        refuse_rows(
            np.flatnonzero(~complete[model]),
            lambda r: (
                f"param model={model!r} needs {list(F.ROUTE_FEATURES[model])}, "
                f"missing {missing_features(matrix, r, model)}"
            ),
            problems,
            joiner=": ",
        )
        return np.where(complete[model], _ROUTE_INDEX[model], _NO_ROUTE)
    other = F.ROUTES[1 - _ROUTE_INDEX[preferred]]
    routes = np.where(
        complete[preferred],
        _ROUTE_INDEX[preferred],
        np.where(complete[other], _ROUTE_INDEX[other], _NO_ROUTE),
    )

    def neither(row: int) -> str:
        return "completes neither feature set: " + "; ".join(
            f"{r} needs {list(F.ROUTE_FEATURES[r])} (missing {missing_features(matrix, row, r)})"
            for r in F.ROUTES
        )

    refuse_rows(np.flatnonzero(routes == _NO_ROUTE), neither, problems, joiner=" ")
    return routes


class Scores(NamedTuple):
    """What :meth:`Router.score` computes for each row of a feature matrix."""

    routes: np.ndarray
    poisonous: np.ndarray
    is_poisonous: np.ndarray
    probability: np.ndarray


class Router:
    """Both fitted sub-models and the routing rule, without any MLflow machinery.

    Args:
        submodels: Fitted estimators by route name, each taking that route's features as a
            float array in ``features.ROUTE_FEATURES`` order and having ``predict_proba``.
        preferred: Route for rows that carry both feature sets.
        safe_thresholds: Per route, the threshold ``"threshold": "safe"`` stands for (``None``
            for a model trained before they were recorded; ``"safe"`` is refused then).
        tables: Per route, the sub-model's log-odds tables as a version logged them
            (:mod:`router_model.additive`): rows are then scored and explained from these, and
            ``submodels`` (which may load lazily) is only handed out, never called. Without
            them the tables are read from the fitted ``submodels`` and checked against their
            ``predict_proba`` (:func:`router_model.scorers.checked_additive`).
    """

    def __init__(
        self,
        submodels: Mapping[str, Any],
        preferred: str,
        safe_thresholds: Mapping[str, float] | None = None,
        tables: Mapping[str, AdditiveModel | None] | None = None,
    ) -> None:
        if set(submodels) != set(F.ROUTES):
            raise ValueError(f"need sub-models {list(F.ROUTES)}, got {sorted(submodels)}")
        if preferred not in F.ROUTES:
            raise ValueError(f"preferred route {preferred!r} is not one of {list(F.ROUTES)}")
        if safe_thresholds is not None and set(safe_thresholds) != set(F.ROUTES):
            raise ValueError(f"need safe thresholds for {list(F.ROUTES)}, got {sorted(safe_thresholds)}")
        if tables is not None and set(tables) != set(F.ROUTES):
            raise ValueError(f"need tables for {list(F.ROUTES)}, got {sorted(tables)}")
        # Given tables, ``submodels`` may load lazily: it is handed out, never called here.
        self.submodels = dict(submodels) if tables is None else submodels
        self.preferred = preferred
        self.safe_thresholds = (
            None if safe_thresholds is None else {r: float(t) for r, t in safe_thresholds.items()}
        )
        if tables is None:
            from router_model.scorers import checked_additive  # scikit-learn: fitted estimators only

            tables = {route: checked_additive(model) for route, model in self.submodels.items()}
        #: Per route, the checked log-odds tables it scores from (``None``: its ``predict_proba``);
        #: what a logged version carries (:func:`router_model.registry.tables_artifacts`).
        self.tables: dict[str, AdditiveModel | None] = dict(tables)
        self._scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        self._terms: dict[str, RouteTerms | None] = {}
        for route, model in self.tables.items():
            columns = F.ROUTE_FEATURES[route]
            if model is None:
                from router_model.scorers import proba_scorer

                self._scorers[route] = proba_scorer(self.submodels[route])
                self._terms[route] = route_terms(self.submodels[route], columns)
            else:
                self._scorers[route] = model.poisonous_probability
                self._terms[route] = terms_of(model, columns)

    def score(
        self,
        matrix: np.ndarray,
        model: str,
        threshold: float | str,
        problems: RowProblems | None = None,
        observe: Observer | None = None,
    ) -> Scores:
        """Route and score a validated feature matrix (the matrix-in entry point).

        :meth:`predict` and the scoring server's fast path (:mod:`router_model.server_guard`) both
        end here, so a row gets the same doubles whichever way it came in.

        Args:
            matrix: Output of :func:`router_model.validation.feature_matrix` (or a matrix built
                the same way and checked with :func:`router_model.validation.check_matrix`).
            model: ``"auto"`` or a route name, as returned by :func:`parse_params`.
            threshold: The poisonous threshold, as returned by :func:`parse_params` (a number, or
                ``"safe"`` for each route's recorded safe threshold).
            problems: Record rows without a route there instead of raising.
            observe: Called with the matrix, routes, P(poisonous) and threshold once scored
                (the server's inference log).

        Returns:
            Per row: route index (into ``features.ROUTES``, -1 for recorded rows), P(poisonous)
            (NaN for those), whether it is labelled poisonous, and the probability of its label.

        Raises:
            InvalidInputError: Naming the first row without a route (when ``problems`` is None).
        """
        routes = assign_routes(matrix, model, self.preferred, problems)
        poisonous = np.full(len(matrix), np.nan)
        for route, index in _ROUTE_INDEX.items():
            rows = routes == index
            if rows.any():
                columns = matrix[rows, _COLUMNS[route]]  # a C-ordered copy, as the scorers had it
                poisonous[rows] = self._scorers[route](columns)
        cut = self._thresholds(threshold, routes)
        if observe is not None:
            observe(matrix, routes, poisonous, cut)
        is_poisonous = poisonous >= cut
        return Scores(routes, poisonous, is_poisonous, np.where(is_poisonous, poisonous, 1.0 - poisonous))

    def predict(
        self,
        frame: Any,
        params: Mapping[str, Any] | None = None,
        on_error: str = F.ON_ERROR_FAIL,
        observe: Observer | None = None,
    ) -> pd.DataFrame:
        """Score rows.

        Args:
            frame: Input rows (DataFrame, records or columns).
            params: Optional ``model``, ``threshold`` and ``explain`` (see
                :func:`router_model.params.parse_params`).
            on_error: ``"fail"`` (the server's contract: one bad row fails the batch) or
                ``"mark"`` (batch scoring: bad rows get empty predictions and a message in an
                ``error`` column, the other rows are scored).
            observe: Called with ``(matrix, routes, poisonous, threshold)`` once the rows are
                scored (the model server's inference log); it must not change the arrays.

        Returns:
            A frame with ``features.OUTPUT_COLUMNS`` (plus ``explanation`` when asked, then
            ``error`` when marking), one row per input row.

        Raises:
            InvalidInputError: On a bad param, or (``"fail"``) on any bad row; nothing is
                scored then.
        """
        if on_error not in F.ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {list(F.ON_ERROR_MODES)}, got {on_error!r}")
        model, threshold, explain = parse_params(params)
        frame = as_frame(frame)
        problems = RowProblems(len(frame)) if on_error == F.ON_ERROR_MARK else None
        matrix = feature_matrix(frame, problems)
        if problems is not None:
            matrix[problems.mask] = np.nan
        routes, poisonous, is_poisonous, probability = self.score(matrix, model, threshold, problems, observe)
        label_codes = is_poisonous.astype(np.int8)
        if problems is not None:
            label_codes[routes == _NO_ROUTE] = -1
        # Categorical label columns: a fixed vocabulary, and 10x cheaper than pandas 3's string
        # dtype for large batches. They compare, print and serialise as the plain strings.
        out = pd.DataFrame(
            {
                "prediction": pd.Categorical.from_codes(label_codes, dtype=_LABEL_DTYPE),
                "probability": probability,
                "poisonous_probability": poisonous,
                "model": pd.Categorical.from_codes(routes, dtype=_ROUTE_DTYPE),
            },
            index=pd.RangeIndex(len(poisonous)),
            copy=False,
        )
        if explain is not None:
            out[F.EXPLANATION] = self.explain(matrix, routes, explain)
        if problems is not None:
            out["error"] = problems.messages
        return out

    def explain(self, matrix: np.ndarray, routes: np.ndarray, top: int, for_json: bool = False) -> list[Any]:
        """The explanation of every routed row (:func:`router_model.explain.explanations`).

        Args:
            matrix: The validated feature matrix.
            routes: Route indices from :meth:`score` (-1: no route, no explanation).
            top: 0 for every term, k for the k largest and one "other" term.
            for_json: Each explanation as its JSON text (``orjson.Fragment``) for an answer
                orjson writes (the model server's fast path; see
                :func:`router_model.explain.explanations`).

        Returns:
            One explanation per row, in row order (``None`` for rows without a route).

        Raises:
            InvalidInputError: If a route taken has a sub-model this package cannot explain.
        """
        out: list[Any] = [None] * len(matrix)
        for route, index in _ROUTE_INDEX.items():
            rows = np.flatnonzero(routes == index)
            if not len(rows):
                continue
            terms = self._terms[route]
            if terms is None:
                raise InvalidInputError(
                    f"param explain: the {route} sub-model is not one whose log-odds are additive "
                    "(a BinCross pipeline, optionally calibrated); it cannot be explained"
                )
            explained = explanations(terms, matrix[rows, _COLUMNS[route]], top, for_json)
            if len(rows) == len(out):  # every row took this route
                return explained
            for row, explanation in zip(rows.tolist(), explained, strict=True):
                out[row] = explanation
        return out

    def _thresholds(self, threshold: float | str, routes: np.ndarray) -> float | np.ndarray:
        """The threshold of every row: the given number, or its route's safe threshold."""
        if threshold != F.SAFE:
            return threshold
        if self.safe_thresholds is None:
            raise InvalidInputError(
                f"param threshold={F.SAFE!r}: this model records no {CONFIG_SAFE_THRESHOLD} "
                "(trained before they were recorded); pass a number in [0, 1] or retrain"
            )
        # Rows without a route (-1, marked as errors) index the appended NaN and stay unlabelled.
        per_route = np.array([self.safe_thresholds[r] for r in F.ROUTES] + [np.nan])
        return per_route[routes]


class GoldenAnswerError(RouterError):
    """A loaded version answers the golden rows wrongly (or not as it did at training time)."""


def golden_answers(router: Router) -> dict[str, list[Any]]:
    """What ``router`` answers to :func:`router_model.features.golden_rows` (logged in ``model_config``)."""
    out = router.predict(pd.DataFrame(F.golden_rows()))
    return {
        "poisonous_probability": [float(p) for p in out["poisonous_probability"]],
        "model": [str(r) for r in out["model"]],
    }


def check_answers(out: Any, rows: int, threshold: float = F.DEFAULT_THRESHOLD) -> None:
    """Refuse an answer that no working router gives: wrong shape, probability or label.

    Args:
        out: What a loaded version's ``predict`` returned for ``rows`` rows at ``threshold``.
        rows: How many rows were asked.
        threshold: The threshold they were asked at.

    Raises:
        GoldenAnswerError: Naming the first thing wrong.
    """
    if not isinstance(out, pd.DataFrame) or list(out.columns)[: len(F.OUTPUT_COLUMNS)] != list(
        F.OUTPUT_COLUMNS
    ):
        raise GoldenAnswerError(
            f"answer is not a table of {list(F.OUTPUT_COLUMNS)}: got {type(out).__name__}"
        )
    if len(out) != rows:
        raise GoldenAnswerError(f"answered {len(out)} rows for {rows}")
    poisonous = out["poisonous_probability"].to_numpy(dtype=np.float64)
    probability = out["probability"].to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(poisonous) & (poisonous >= 0) & (poisonous <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise GoldenAnswerError(
            f"row {row}: poisonous_probability {float(poisonous[row])!r} is not in [0, 1]"
        )
    labels = np.where(poisonous >= threshold, F.LABELS[F.LABEL_POISONOUS], F.LABELS[F.LABEL_EDIBLE])
    expected_probability = np.where(poisonous >= threshold, poisonous, 1.0 - poisonous)
    for row in range(rows):
        if str(out["prediction"].iloc[row]) != labels[row] or probability[row] != expected_probability[row]:
            raise GoldenAnswerError(
                f"row {row}: prediction {out['prediction'].iloc[row]!r} with probability {float(probability[row])!r} "
                f"does not follow from poisonous_probability {float(poisonous[row])!r} at threshold {threshold}"
            )
        if str(out["model"].iloc[row]) not in F.ROUTES:
            raise GoldenAnswerError(
                f"row {row}: route {out['model'].iloc[row]!r} is not one of {list(F.ROUTES)}"
            )


def check_golden(out: Any, recorded: Mapping[str, Any] | None) -> None:
    """Refuse a version whose answer to the golden rows is invalid or not what it recorded.

    Args:
        out: The loaded version's ``predict`` of :func:`router_model.features.golden_rows`.
        recorded: Its ``model_config`` :data:`CONFIG_GOLDEN` (``None``: only validity is checked).

    Raises:
        GoldenAnswerError: Naming the first golden row answered wrongly.
    """
    rows = F.golden_rows()
    check_answers(out, len(rows))
    if recorded is None:
        return
    expected_p, expected_route = recorded.get("poisonous_probability"), recorded.get("model")
    if (
        not isinstance(expected_p, list)
        or not isinstance(expected_route, list)
        or len(expected_p) != len(rows)
    ):
        shown = repr(recorded)[:200]
        raise GoldenAnswerError(f"{CONFIG_GOLDEN} in model_config does not hold {len(rows)} answers: {shown}")
    got = out["poisonous_probability"].to_numpy(dtype=np.float64)
    for row in range(len(rows)):
        if str(out["model"].iloc[row]) != expected_route[row]:
            raise GoldenAnswerError(
                f"golden row {row} took route {out['model'].iloc[row]!r}; at training time {expected_route[row]!r}"
            )
        if not abs(got[row] - float(expected_p[row])) <= GOLDEN_TOLERANCE:
            raise GoldenAnswerError(
                f"golden row {row} ({expected_route[row]}): poisonous_probability {float(got[row])!r}; "
                f"at training time {float(expected_p[row])!r}"
            )


class MushroomRouterModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc wrapper around :class:`Router` (logged as models-from-code)."""

    # predict() has no type hints on purpose: MLflow would derive an input schema from them, and
    # its enforcement breaks input paths (see registry.SIGNATURE). This opts out of MLflow's
    # type-hint wrapper and its "add type hints" warning at class creation.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load both routes: from their log-odds tables, or, for a version without them, from skops.

        A version logged with tables (:mod:`router_model.additive`) is scored from them, without
        importing scikit-learn; its skops files load on first use of ``router.submodels``
        (:class:`~router_model.submodels.LazySubmodels`), with the trusted skops types. Such a
        version must answer the golden rows as it did at training time wherever it loads.

        Inside ``mlflow models serve``, once per process, this also installs
        :mod:`router_model.server_guard`, starts the inference log (:mod:`router_model.log_process`,
        unless ``MUSHROOM_INFERENCE_LOG=off``), the :mod:`router_model.metrics` on ``/metrics`` (unless
        ``MUSHROOM_METRICS=off``), the readiness probe ``/ready`` and the :mod:`router_model.hot_swap`
        watcher (when the supervisor started the server); every version loaded there must answer the golden rows as
        it did at training time (:func:`check_golden`), or it does not load.
        """
        from router_model import server_guard

        self._log: inference_log.InferenceLog | log_process.ProcessLog | None = None
        self._metrics: Any = None  # router_model.metrics.ServerMetrics in the scoring server
        self._run_id = ""
        serving = server_guard.in_scoring_server()
        if serving:
            self._run_id = _model_run_id(context)
            self._metrics, self._log = _server_process(self._run_id, self)
        config = context.model_config or {}
        files = {route: context.artifacts[route] for route in F.ROUTES}
        tables = load_tables(context.artifacts)
        self.router = Router(
            LazySubmodels(files) if tables else {route: load_submodel(path) for route, path in files.items()},
            preferred=config.get(CONFIG_PREFERRED, F.LOGISTIC_REGRESSION),
            safe_thresholds=config.get(CONFIG_SAFE_THRESHOLD) or None,
            tables=tables,
        )
        if serving or tables:
            # Before it answers anyone: the golden rows as at training time (a swapped or damaged
            # file loads fine and answers wrongly; tables are not checked against the estimators
            # at load, so this is their check), then follow the supervisor's switches.
            check_golden(self.router.predict(pd.DataFrame(F.golden_rows())), config.get(CONFIG_GOLDEN))
        if serving:
            from router_model import hot_swap

            watcher = hot_swap.follow(self._metrics)
            if watcher is not None and not watcher.started:
                watcher.start()

    def _observe(
        self, matrix: np.ndarray, routes: np.ndarray, poisonous: np.ndarray, threshold: float | np.ndarray
    ) -> None:
        if self._metrics is not None:
            self._metrics.observe(routes, poisonous, threshold)
        if self._log is not None:
            # The request's own arrays: the log copies what it keeps (into its queue, or into the
            # shared memory its writer process reads).
            batch = inference_log.Batch(
                time.time(),
                inference_log.new_request_id(),
                self._run_id,
                threshold,
                matrix,
                routes,
                poisonous,
            )
            self._log.submit(batch)

    def observer(self) -> Observer | None:
        """What scoring reports to (the inference log and the metrics), or ``None`` when neither runs.

        The scoring server's fast path (:mod:`router_model.server_guard`) reports through it too.
        """
        watched = getattr(self, "_log", None) is not None or getattr(self, "_metrics", None) is not None
        return self._observe if watched else None

    def predict(self, context, model_input, params=None):
        """Route and score ``model_input``; bad input raises ``MlflowException`` (HTTP 400)."""
        hashable_labels(model_input)
        observe = self.observer()
        try:
            return self.router.predict(model_input, params, observe=observe)
        except InvalidInputError as err:
            raise MlflowException(f"Invalid input: {err}", error_code=INVALID_PARAMETER_VALUE) from None


#: The scoring server's metrics and inference log, set up by the first version this process loads
#: and shared by every version switched in later (one set of counters and one log per process).
_SERVER: list[tuple[Any, Any]] = []


def _server_process(run_id: str, model: MushroomRouterModel) -> tuple[Any, Any]:
    """Set up this scoring-server process once: the guard, metrics, inference log, app hooks.

    ``model`` is the first one loaded (the one the server starts on): ``/ready`` checks it.

    Last, everything the process holds by then (MLflow, NumPy, pandas, the app's modules: a few
    hundred thousand objects) is moved out of the cyclic garbage collector's way
    (``gc.freeze``). A request makes thousands of short-lived containers (a 1,000-row body
    parses into 1,000 lists, its answer is 1,000 dicts); the collections they trigger promote
    the ones still in use, and the full collections that follow walked every one of those
    long-lived objects, a large share of a busy server's CPU (docs/benchmarks.md has the
    figures). Frozen, they are never walked again. Nothing is collected first: what is garbage
    at that moment (a few dozen objects) stays, once. Objects made later, the served versions'
    own included, are collected as usual.
    """
    from router_model import metrics, server_guard

    if _SERVER:
        return _SERVER[0]
    server_guard.install()
    server_guard.serve_readiness(model)
    server_guard.SLOT.started(settings.env("MUSHROOM_SERVED_VERSION"))
    served_metrics = metrics.start(run_id)
    server_guard.hook_app(served_metrics)
    if served_metrics is not None:
        server_guard.on_shutdown(served_metrics.publish)  # the last second's counts too
    log = log_process.active()
    if log is not None:
        server_guard.on_shutdown(log.close)  # a SIGTERM'd server flushes its log
        if served_metrics is not None:
            log.on_drop = served_metrics.dropped_rows
    _SERVER.append((served_metrics, log))
    gc.freeze()
    return _SERVER[0]


def load_tables(artifacts: Mapping[str, str]) -> dict[str, AdditiveModel] | None:
    """Each route's tables from a loaded model's artifacts, or ``None`` for a version without them.

    Versions logged before the tables existed carry only the skops files; they load those.

    Raises:
        router_model.additive.TablesFormatError: Naming a tables file this code cannot read.
    """
    keys = {route: artifact_key(route) for route in F.ROUTES}
    if not all(key in artifacts for key in keys.values()):
        return None
    return {route: AdditiveModel.load(artifacts[key]) for route, key in keys.items()}


def _model_run_id(context: mlflow.pyfunc.PythonModelContext) -> str:
    """The run that logged this model, from its ``MLmodel`` (artifacts live in ``<model>/artifacts``)."""
    from mlflow.models import Model

    model_dir = Path(context.artifacts[F.ROUTES[0]]).resolve().parents[1]
    try:
        return Model.load(str(model_dir)).run_id or ""
    except (OSError, MlflowException):
        return ""
