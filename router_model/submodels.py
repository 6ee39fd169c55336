"""Sub-model files: skops, loaded with a trusted-types list that lives here, in code.

Loading needs no pickle (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` works), and a tampered
artifact cannot widen what gets instantiated: the list is not read from the artifact.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

#: The scikit-learn estimators the sub-model files hold (skops trusts every scikit-learn
#: estimator by default; a model server trusts only these, see :func:`import_skops_for_serving`).
SKLEARN_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.naive_bayes.CategoricalNB",
)
#: Every type beyond skops' NumPy, SciPy and builtin defaults that the sub-model files may contain.
TRUSTED_TYPES: tuple[str, ...] = (
    *SKLEARN_TYPES,
    "router_model.transformers.BinCross",
    "router_model.transformers.OneHotCodes",
    "router_model.calibration.LogOddsCalibrated",
)
_SKOPS = "skops.io"


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


class LazySubmodels(Mapping[str, Any]):
    """Sub-model files by route, each loaded (:func:`load_submodel`) when first asked for.

    A version that carries its log-odds tables is scored from those (:mod:`router_model.additive`);
    its estimators are loaded, and scikit-learn imported, only if someone asks for them (a
    notebook, the terms table), never in a model server that only answers requests.

    Args:
        paths: Route name to skops file.
    """

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._paths = dict(paths)
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, route: str) -> Any:
        if route not in self._loaded:
            self._loaded[route] = load_submodel(self._paths[route])
        return self._loaded[route]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def import_skops_for_serving() -> ModuleType:
    """Import ``skops.io`` for a model server, in a fraction of its usual start-up time.

    On import, skops builds its default trusted types: every scikit-learn estimator, found by
    importing every scikit-learn module (``sklearn.utils.all_estimators``), and every NumPy and
    SciPy ufunc, each looked up in every module loaded so far. In a process that has imported
    MLflow's scoring server that costs seconds. Imported first, with scikit-learn's list left
    empty, it costs little, and this process then trusts only :data:`TRUSTED_TYPES` among
    scikit-learn's types: stricter, and all the router's files hold. Meant for a process that
    serves the router and nothing else (``mushroom-router serve`` and ``supervise``'s servers);
    if skops is already imported, it is returned as it is.
    """
    if _SKOPS in sys.modules:
        return sys.modules[_SKOPS]
    import sklearn.utils

    every_estimator = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda type_filter=None: []
    try:
        with _quiet_warnings():
            import skops.io
    finally:
        sklearn.utils.all_estimators = every_estimator
    return skops.io
