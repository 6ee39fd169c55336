"""Sub-model files: skops, loaded with a trusted-types list that lives here, in code.

Loading needs no pickle (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` works), and a tampered
artifact cannot widen what gets instantiated: the list is not read from the artifact.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

#: Types beyond skops' defaults that the sub-model files may contain.
TRUSTED_TYPES: tuple[str, ...] = (
    "router_model.transformers.BinCross",
    "router_model.transformers.OneHotCodes",
    "router_model.calibration.LogOddsCalibrated",
)


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
