"""The request params of the router: ``model`` and ``threshold``, checked and defaulted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from router_model import features as F
from router_model.validation import InvalidInputError

#: The ``threshold`` param value that selects each route's recorded safe threshold
#: (``model_config`` key ``safe_threshold_1pct``).
SAFE = "safe"


def parse_params(params: Mapping[str, Any] | None) -> tuple[str, float | str]:
    """Check the request params and fill in defaults.

    Args:
        params: ``{"model": ..., "threshold": ...}``, either key optional.

    Returns:
        ``(model, threshold)``; the threshold is a float in [0, 1] or :data:`SAFE`.

    Raises:
        InvalidInputError: On an unknown param, an unknown model, or a threshold that is neither
            a number in [0, 1] nor ``"safe"``.
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
    if isinstance(threshold, str) and threshold.strip().lower() == SAFE:
        return model, SAFE
    if (
        isinstance(threshold, (bool, np.bool_))
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or not 0.0 <= float(threshold) <= 1.0
        or math.isnan(float(threshold))
    ):
        raise InvalidInputError(
            f"param 'threshold' is {threshold!r}; expected a number in [0, 1] or {SAFE!r}"
        )
    return model, float(threshold)
