"""The router: one MLflow pyfunc model that sends each row to the sub-model whose features it has.

Contract (see README "The router model"):

* Params ``model`` (``"auto"`` | ``"naive_bayes"`` | ``"logistic_regression"``) and ``threshold``
  (float in [0, 1], default 0.5).
* Per row, vectorised: a row goes to the sub-model whose complete feature set it carries; a row
  with both sets goes to the sub-model with the higher validation ROC-AUC, recorded in the model's
  ``model_config`` at training time; ``model`` overrides. A batch may mix rows of both kinds.
* Output, one row per input row in input order: ``prediction`` ("edible" | "poisonous"),
  ``probability`` (of the predicted label), ``poisonous_probability`` (P(class == 1)), ``model``
  (the route taken). ``prediction`` is "poisonous" exactly when ``poisonous_probability >=
  threshold``: lowering the threshold trades false alarms for fewer dangerous "edible" mistakes.
* Bad input fails the whole request with ``MlflowException(INVALID_PARAMETER_VALUE)`` naming the
  row, the column and what was expected. Nothing is half-answered.

Sub-models are stored as skops files and loaded with a trusted-types list that lives here, in
code, not in the artifact, so loading needs no pickle (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``
works) and a tampered artifact cannot widen what gets instantiated.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from router_model import features as F
from router_model.scorers import compile_scorer
from router_model.validation import (
    InvalidInputError,
    RowProblems,
    feature_matrix,
    missing_features,
    refuse_rows,
)

#: Types beyond skops' defaults that the sub-model files may contain.
TRUSTED_TYPES: tuple[str, ...] = (
    "router_model.transformers.BinCross",
    "router_model.transformers.OneHotCodes",
)

#: ``model_config`` keys written at training time.
CONFIG_PREFERRED = "preferred_route"
CONFIG_VALIDATION_AUC = "validation_roc_auc"

_ROUTE_INDEX = {route: i for i, route in enumerate(F.ROUTES)}
_COLUMN_INDEX = {route: [F.ALL_FEATURES.index(c) for c in F.ROUTE_FEATURES[route]] for route in F.ROUTES}
_NO_ROUTE = -1
#: What :meth:`Router.predict` tells an observer: the feature matrix, route indices into
#: ``features.ROUTES``, P(poisonous) per row, and the threshold applied.
Observer = Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]
_ROUTE_DTYPE = pd.CategoricalDtype(list(F.ROUTES))
_LABEL_DTYPE = pd.CategoricalDtype([F.LABELS[F.LABEL_EDIBLE], F.LABELS[F.LABEL_POISONOUS]])


def submodel_filename(route: str) -> str:
    """The artifact file name of a route's sub-model."""
    return f"{route}.skops"


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    # skops probes attributes of every loaded module (on import and while it (de)serialises);
    # inside an Airflow worker that raises hundreds of Airflow deprecated-import warnings, none of
    # them about this model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def untrusted_types(path: str) -> list[str]:
    """Types in a skops file that :data:`TRUSTED_TYPES` and skops' defaults do not cover."""
    with _quiet_warnings():
        import skops.io

        found = skops.io.get_untrusted_types(file=path)
    return [t for t in found if t not in TRUSTED_TYPES]


def save_submodel(estimator: Any, path: str) -> None:
    """Write a fitted sub-model as skops and check it loads with :data:`TRUSTED_TYPES`.

    Raises:
        ValueError: If the file would need a type outside the trusted list.
    """
    with _quiet_warnings():
        import skops.io

        skops.io.dump(estimator, path)
    extra = untrusted_types(path)
    if extra:
        raise ValueError(f"sub-model at {path} needs untrusted types {extra}; add them to TRUSTED_TYPES")


def load_submodel(path: str) -> Any:
    """Load a sub-model written by :func:`save_submodel` (no pickle)."""
    with _quiet_warnings():
        import skops.io

        return skops.io.load(path, trusted=list(TRUSTED_TYPES))


def parse_params(params: Mapping[str, Any] | None) -> tuple[str, float]:
    """Check the request params and fill in defaults.

    Args:
        params: ``{"model": ..., "threshold": ...}``, either key optional.

    Returns:
        ``(model, threshold)``.

    Raises:
        InvalidInputError: On an unknown param, an unknown model or a threshold outside [0, 1].
    """
    params = dict(params or {})
    unknown = sorted(set(params) - {"model", "threshold"})
    if unknown:
        raise InvalidInputError(f"unknown param(s) {unknown}; expected 'model' and/or 'threshold'")
    model = params.get("model", F.AUTO)
    if model is None:
        model = F.AUTO
    allowed = (F.AUTO,) + F.ROUTES
    if model not in allowed:
        raise InvalidInputError(f"param 'model' is {model!r}; expected one of {list(allowed)}")
    threshold = params.get("threshold", F.DEFAULT_THRESHOLD)
    if threshold is None:
        threshold = F.DEFAULT_THRESHOLD
    if (
        isinstance(threshold, (bool, np.bool_))
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or not 0.0 <= float(threshold) <= 1.0
        or math.isnan(float(threshold))
    ):
        raise InvalidInputError(f"param 'threshold' is {threshold!r}; expected a number in [0, 1]")
    return model, float(threshold)


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
    complete = {r: ~np.isnan(matrix[:, _COLUMN_INDEX[r]]).any(axis=1) for r in F.ROUTES}
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


def _scalar(value: Any) -> Any:
    """Turn a NumPy array cell into Python values: a 0-d array (MLflow's parsers wrap single
    values in them) into its value, a row of a 2-d column into a list (which the router refuses).
    """
    return value.tolist() if isinstance(value, np.ndarray) else value


def _hashable(label: object) -> bool:
    try:
        hash(label)
    except TypeError:
        return False
    return True


def hashable_labels(model_input: Any) -> None:
    """Replace column labels pandas cannot hash by their ``repr``, in place.

    A JSON object among ``dataframe_split`` columns becomes a dict label; pandas (and MLflow's
    own error message, which prints the input) fail on it with a ``TypeError``.
    """
    if isinstance(model_input, pd.DataFrame) and not all(_hashable(c) for c in model_input.columns):
        model_input.columns = pd.Index(
            [c if _hashable(c) else repr(c) for c in model_input.columns], dtype=object
        )


def _is_column(value: object) -> bool:
    """Whether a value of a mapping of columns holds one entry per row (a list or an array)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, (list, tuple, pd.Series, pd.Index))


def column_rows(columns: Mapping[Any, Any]) -> int | None:
    """The number of rows in a mapping of columns, or ``None`` when it is a single record.

    A mapping whose values are all lists (or arrays) holds one row per entry; one whose values
    are all single values is one record. Anything between has no one reading, so it is refused
    rather than broadcast or flattened into more or fewer rows than the client meant.

    Raises:
        InvalidInputError: Naming the columns when some hold lists and others single values, or
            when the lists differ in length.
    """
    lengths = {label: len(value) for label, value in columns.items() if _is_column(value)}
    if not lengths:
        return None
    singles = [label for label in columns if label not in lengths]
    if singles:
        raise InvalidInputError(
            f"columns {few_labels(list(lengths))} hold lists but {few_labels(singles)} hold single "
            "values; give every column as a list with one entry per row, or every column as a "
            "single value (one record)"
        )
    if len(set(lengths.values())) > 1:
        shown = few_labels([f"{label!r}: {n}" for label, n in lengths.items()], show=str)
        raise InvalidInputError(
            f"columns of different lengths ({shown}); every column needs one entry per row"
        )
    return next(iter(lengths.values()))


def few_labels(labels: list[Any], limit: int = 8, show: Callable[[Any], str] = repr) -> str:
    """Name the first ``limit`` labels of a list for an error message, and count the rest."""
    shown = ", ".join(show(label) for label in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def as_frame(model_input: Any) -> pd.DataFrame:
    """Accept the shapes MLflow hands to ``predict`` and return a DataFrame, one row per input row.

    Records (a list of mappings) give one row each; a mapping of columns gives one row per entry
    (see :func:`column_rows`); a mapping of single values is one record.

    Raises:
        InvalidInputError: For input without column names (a bare array or list of lists), or a
            mapping that is neither columns of one length nor one record.
    """
    if isinstance(model_input, pd.DataFrame):
        return model_input
    # ValueError covers the UnicodeEncodeError of a lone surrogate (invalid UTF-8 that MLflow's
    # JSON parser lets through) in a key or value.
    if isinstance(model_input, Mapping):
        values = dict(model_input)
        rows = column_rows(values)
        try:
            if rows is None:  # one record
                return pd.DataFrame([{k: _scalar(v) for k, v in values.items()}])
            return pd.DataFrame(
                {k: [_scalar(x) for x in v] for k, v in values.items()}, index=pd.RangeIndex(rows)
            )
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"columns that do not form a table: {err}") from None
    if isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        try:
            return pd.DataFrame([{k: _scalar(v) for k, v in r.items()} for r in model_input])
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"records that do not form a table: {err}") from None
    raise InvalidInputError(
        f"expected rows with named feature columns, got {type(model_input).__name__}; send "
        "dataframe_split, dataframe_records, or instances/inputs as records or columns"
    )


class Router:
    """Both fitted sub-models and the routing rule, without any MLflow machinery.

    Args:
        submodels: Fitted estimators by route name, each taking that route's features as a
            float array in ``features.ROUTE_FEATURES`` order and having ``predict_proba``.
        preferred: Route for rows that carry both feature sets.
    """

    def __init__(self, submodels: Mapping[str, Any], preferred: str) -> None:
        if set(submodels) != set(F.ROUTES):
            raise ValueError(f"need sub-models {list(F.ROUTES)}, got {sorted(submodels)}")
        if preferred not in F.ROUTES:
            raise ValueError(f"preferred route {preferred!r} is not one of {list(F.ROUTES)}")
        self.submodels = dict(submodels)
        self.preferred = preferred
        self._scorers = {route: compile_scorer(model) for route, model in self.submodels.items()}

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
            params: Optional ``model`` and ``threshold``.
            on_error: ``"fail"`` (the server's contract: one bad row fails the batch) or
                ``"mark"`` (batch scoring: bad rows get empty predictions and a message in an
                ``error`` column, the other rows are scored).
            observe: Called with ``(matrix, routes, poisonous, threshold)`` once the rows are
                scored (the model server's inference log); it must not change the arrays.

        Returns:
            A frame with ``features.OUTPUT_COLUMNS`` (plus ``error`` when marking), one row per
            input row.

        Raises:
            InvalidInputError: On a bad param, or (``"fail"``) on any bad row; nothing is
                scored then.
        """
        if on_error not in F.ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {list(F.ON_ERROR_MODES)}, got {on_error!r}")
        model, threshold = parse_params(params)
        frame = as_frame(frame)
        problems = RowProblems(len(frame)) if on_error == F.ON_ERROR_MARK else None
        matrix = feature_matrix(frame, problems)
        if problems is not None:
            matrix[problems.mask] = np.nan
        routes = assign_routes(matrix, model, self.preferred, problems)
        poisonous = np.full(len(matrix), np.nan)
        for route, index in _ROUTE_INDEX.items():
            rows = routes == index
            if rows.any():
                columns = matrix[np.ix_(rows, _COLUMN_INDEX[route])]
                poisonous[rows] = self._scorers[route](columns)
        if observe is not None:
            observe(matrix, routes, poisonous, threshold)
        is_poisonous = poisonous >= threshold
        label_codes = is_poisonous.astype(np.int8)
        if problems is not None:
            label_codes[routes == _NO_ROUTE] = -1
        # Categorical label columns: a fixed vocabulary, and 10x cheaper than pandas 3's string
        # dtype for large batches. They compare, print and serialise as the plain strings.
        out = pd.DataFrame(
            {
                "prediction": pd.Categorical.from_codes(label_codes, dtype=_LABEL_DTYPE),
                "probability": np.where(is_poisonous, poisonous, 1.0 - poisonous),
                "poisonous_probability": poisonous,
                "model": pd.Categorical.from_codes(routes, dtype=_ROUTE_DTYPE),
            },
            index=pd.RangeIndex(len(poisonous)),
            copy=False,
        )
        if problems is not None:
            out["error"] = problems.messages
        return out


class MushroomRouterModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc wrapper around :class:`Router` (logged as models-from-code)."""

    # predict() has no type hints on purpose: MLflow would derive an input schema from them, and
    # its enforcement breaks input paths (see registry.SIGNATURE). This opts out of MLflow's
    # type-hint wrapper and its "add type hints" warning at class creation.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load both sub-models from the model's artifacts with the trusted skops types.

        Inside ``mlflow models serve`` this also installs :mod:`router_model.server_guard` and
        starts the :mod:`router_model.inference_log` (unless ``MUSHROOM_INFERENCE_LOG=off``).
        """
        from router_model import inference_log, server_guard

        self._log: inference_log.InferenceLog | None = None
        if server_guard.in_scoring_server():
            server_guard.install()
            self._log = inference_log.active()
            if self._log is not None:
                server_guard.on_shutdown(self._log.close)  # a SIGTERM'd server flushes its log
        config = context.model_config or {}
        submodels = {route: load_submodel(context.artifacts[route]) for route in F.ROUTES}
        self.router = Router(submodels, preferred=config.get(CONFIG_PREFERRED, F.LOGISTIC_REGRESSION))
        self._run_id = _model_run_id(context) if self._log is not None else ""

    def _observe(
        self, matrix: np.ndarray, routes: np.ndarray, poisonous: np.ndarray, threshold: float
    ) -> None:
        from router_model import inference_log

        batch = inference_log.Batch(
            time.time(), inference_log.new_request_id(), self._run_id, threshold, matrix, routes, poisonous
        )
        self._log.submit(batch)

    def predict(self, context, model_input, params=None):
        """Route and score ``model_input``; bad input raises ``MlflowException`` (HTTP 400)."""
        hashable_labels(model_input)
        observe = self._observe if getattr(self, "_log", None) is not None else None
        try:
            return self.router.predict(model_input, params, observe=observe)
        except InvalidInputError as err:
            raise MlflowException(f"Invalid input: {err}", error_code=INVALID_PARAMETER_VALUE) from None


def _model_run_id(context: mlflow.pyfunc.PythonModelContext) -> str:
    """The run that logged this model, from its ``MLmodel`` (artifacts live in ``<model>/artifacts``)."""
    from mlflow.models import Model

    model_dir = Path(context.artifacts[F.ROUTES[0]]).resolve().parents[1]
    try:
        return Model.load(str(model_dir)).run_id or ""
    except (OSError, MlflowException):
        return ""
