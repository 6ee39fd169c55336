"""The request params of the router: ``model``, ``threshold`` and ``explain``, checked and defaulted.

Callers may spell two params in a way MLflow's strictly typed params schema cannot declare:
``"threshold": "safe"`` (a string where the schema has a double) and ``"explain": k`` (an integer
where it has a boolean). The logged signature therefore declares typed params only (:data:`SCHEMA`):
``safe_threshold`` (boolean) and ``explain_top`` (long) carry what those spellings mean.
:func:`typed_params` maps the union spellings onto the typed ones (the model server does that before
MLflow's enforcement, :mod:`router_model.server_guard`), and :func:`parse_params` accepts both.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from router_model import features as F
from router_model.validation import InvalidInputError

#: The typed params of the logged signature: ``(name, MLflow type, default)``.
SCHEMA: tuple[tuple[str, str, Any], ...] = (
    (F.PARAM_MODEL, "string", F.AUTO),
    (F.PARAM_THRESHOLD, "double", F.DEFAULT_THRESHOLD),
    (F.PARAM_SAFE_THRESHOLD, "boolean", False),
    (F.PARAM_EXPLAIN, "boolean", False),
    (F.PARAM_EXPLAIN_TOP, "long", 0),
)
#: ``Params.explain`` for every term (``explain: true``); ``None`` means no explanation.
ALL_TERMS = 0


class Params(NamedTuple):
    """Checked request params.

    Attributes:
        model: ``"auto"`` or a route name.
        threshold: A number in [0, 1], or :data:`features.SAFE` (each route's recorded one).
        explain: ``None`` (no explanation), :data:`ALL_TERMS`, or k >= 1 (the k largest terms and
            one "other" term).
    """

    model: str
    threshold: float | str
    explain: int | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def typed_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Map the union spellings onto the typed params of :data:`SCHEMA` (others pass unchanged).

    ``"threshold": "safe"`` (any case, spaces around) becomes ``"safe_threshold": true`` without a
    threshold; ``"explain": k`` (an integer, not a boolean) becomes ``"explain": true,
    "explain_top": k``.

    Args:
        params: Request params as given.

    Returns:
        A new dict.

    Raises:
        InvalidInputError: On ``explain`` an integer below 1, or a spelling that contradicts the
            typed param also given (``"threshold": "safe"`` with ``"safe_threshold": false``,
            ``"explain": k`` with ``explain_top``).
    """
    typed = dict(params)
    threshold = typed.get(F.PARAM_THRESHOLD)
    if isinstance(threshold, str) and threshold.strip().lower() == F.SAFE:
        if typed.get(F.PARAM_SAFE_THRESHOLD) not in (None, True):
            raise InvalidInputError(
                f"param 'threshold' is {threshold!r} but '{F.PARAM_SAFE_THRESHOLD}' is "
                f"{typed[F.PARAM_SAFE_THRESHOLD]!r}; give one of them"
            )
        del typed[F.PARAM_THRESHOLD]
        typed[F.PARAM_SAFE_THRESHOLD] = True
    explain = typed.get(F.PARAM_EXPLAIN)
    if _is_int(explain):
        if explain < 1:
            raise InvalidInputError(
                f"param 'explain' is {explain!r}; expected true, false or an integer k >= 1 "
                "(the k largest terms)"
            )
        if typed.get(F.PARAM_EXPLAIN_TOP) not in (None, ALL_TERMS):
            raise InvalidInputError(
                f"param 'explain' is {explain!r} and '{F.PARAM_EXPLAIN_TOP}' is "
                f"{typed[F.PARAM_EXPLAIN_TOP]!r}; give one of them"
            )
        typed[F.PARAM_EXPLAIN] = True
        typed[F.PARAM_EXPLAIN_TOP] = int(explain)
    return typed


def parse_params(params: Mapping[str, Any] | None) -> Params:
    """Check the request params and fill in defaults.

    Accepts the union spellings (``"threshold": "safe"``, ``"explain": k``) and the typed ones of
    :data:`SCHEMA`, what MLflow's schema enforcement hands over (every param, defaults filled in).

    Args:
        params: Any of :data:`features.PARAMS`; each optional, ``None`` meaning the default.

    Returns:
        The checked :class:`Params`.

    Raises:
        InvalidInputError: On an unknown param, an unknown model, a threshold that is neither a
            number in [0, 1] nor ``"safe"``, an ``explain`` that is neither a boolean nor an integer
            >= 1, an ``explain_top`` that is not an integer >= 0 or is given without ``explain``,
            or a numeric threshold other than the default with ``safe_threshold``.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(F.PARAMS), key=str)
    if unknown:
        raise InvalidInputError(
            f"unknown param(s) {unknown}; expected some of {list(F.PARAMS)}{_hint(unknown)}"
        )
    typed = {name: value for name, value in typed_params(params).items() if value is not None}
    model = typed.get(F.PARAM_MODEL, F.AUTO)
    allowed = (F.AUTO,) + F.ROUTES
    if model not in allowed:
        raise InvalidInputError(f"param 'model' is {model!r}; expected one of {list(allowed)}")
    return Params(model, _threshold(typed), _explain(typed))


def _hint(unknown: list[Any]) -> str:
    """A "did you mean" for each misspelled param: one silently ignored would answer at its default."""
    guesses = [
        (name, match[0])
        for name in unknown
        if isinstance(name, str) and (match := difflib.get_close_matches(name, F.PARAMS, n=1))
    ]
    return "".join(f" (did you mean {guess!r} for {name!r}?)" for name, guess in guesses)


def _threshold(typed: dict[str, Any]) -> float | str:
    threshold = typed.get(F.PARAM_THRESHOLD, F.DEFAULT_THRESHOLD)
    if (
        _is_bool(threshold)
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or not 0.0 <= float(threshold) <= 1.0
        or math.isnan(float(threshold))
    ):
        raise InvalidInputError(
            f"param 'threshold' is {threshold!r}; expected a number in [0, 1] or {F.SAFE!r}"
        )
    safe = typed.get(F.PARAM_SAFE_THRESHOLD, False)
    if not _is_bool(safe):
        raise InvalidInputError(f"param '{F.PARAM_SAFE_THRESHOLD}' is {safe!r}; expected true or false")
    if not safe:
        return float(threshold)
    # MLflow's enforcement fills in the default threshold, so only another number contradicts.
    if float(threshold) != F.DEFAULT_THRESHOLD:
        raise InvalidInputError(
            f"param 'threshold' is {threshold!r} and '{F.PARAM_SAFE_THRESHOLD}' is true; give one of them"
        )
    return F.SAFE


def _explain(typed: dict[str, Any]) -> int | None:
    explain = typed.get(F.PARAM_EXPLAIN, False)
    if not _is_bool(explain):
        raise InvalidInputError(
            f"param 'explain' is {explain!r}; expected true, false or an integer k >= 1 (the k largest terms)"
        )
    top = typed.get(F.PARAM_EXPLAIN_TOP, ALL_TERMS)
    if not _is_int(top) or top < 0:
        raise InvalidInputError(
            f"param '{F.PARAM_EXPLAIN_TOP}' is {top!r}; expected an integer k >= 1 (the k largest "
            f"terms) or {ALL_TERMS} (all)"
        )
    if not explain:
        if top != ALL_TERMS:
            raise InvalidInputError(f"param '{F.PARAM_EXPLAIN_TOP}' is {top!r} but 'explain' is false")
        return None
    return int(top)


#: The params of a request that gives none (what :func:`parse_params` makes of ``None``), made once:
#: most requests give none, and the server's fast path would otherwise check the defaults each time.
DEFAULTS: Params = parse_params(None)
