"""Feature sets, category codes and the label mapping: the single source of truth.

Every other module takes column names, routes, labels and code domains from here. The data set
(Kaggle ``prishasawhney/mushroom-dataset``, file ``mushroom_cleaned.csv``) is label-encoded: the
categorical columns hold small integer codes and ``season`` holds one of four floats.

Label mapping: ``class`` 1 means **poisonous**, 0 means **edible**. Every probability this project
reports as ``poisonous_probability`` is P(class == 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

TARGET = "class"

NAIVE_BAYES = "naive_bayes"
LOGISTIC_REGRESSION = "logistic_regression"
ROUTES: tuple[str, ...] = (NAIVE_BAYES, LOGISTIC_REGRESSION)
AUTO = "auto"

#: Canonical (hyphenated) feature names of each route, in the order the sub-models see them.
ROUTE_FEATURES: Mapping[str, tuple[str, ...]] = {
    NAIVE_BAYES: ("cap-diameter", "cap-shape", "gill-attachment", "gill-color"),
    LOGISTIC_REGRESSION: ("stem-height", "stem-width", "stem-color", "season"),
}
NB_FEATURES = ROUTE_FEATURES[NAIVE_BAYES]
LR_FEATURES = ROUTE_FEATURES[LOGISTIC_REGRESSION]
ALL_FEATURES: tuple[str, ...] = NB_FEATURES + LR_FEATURES

#: Continuous measurements: any finite number >= 0.
NUMERIC_FEATURES: tuple[str, ...] = ("cap-diameter", "stem-height", "stem-width")

#: Label-encoded categorical columns: integer codes 0..n-1.
CATEGORY_CARDINALITY: Mapping[str, int] = {
    "cap-shape": 7,
    "gill-attachment": 7,
    "gill-color": 12,
    "stem-color": 13,
}

#: ``season`` is label-encoded as one of these four floats (as they appear in the data set).
SEASON = "season"
SEASON_VALUES: tuple[float, ...] = (
    0.027372133055605714,
    0.8884502877862838,
    0.9431945538974952,
    1.8042727086281731,
)
#: Two season values closer than this are the same season (CSV round trips lose the last digits).
SEASON_TOLERANCE = 1e-6

LABEL_EDIBLE = 0
LABEL_POISONOUS = 1
LABELS: Mapping[int, str] = {LABEL_EDIBLE: "edible", LABEL_POISONOUS: "poisonous"}

#: Output columns of the router, in order (the last two: P(poisonous) and the route taken).
OUT_POISONOUS_PROBABILITY, OUT_MODEL = "poisonous_probability", "model"
OUTPUT_COLUMNS: tuple[str, ...] = ("prediction", "probability", OUT_POISONOUS_PROBABILITY, OUT_MODEL)

DEFAULT_THRESHOLD = 0.5

#: The request params (see :mod:`router_model.params`; the logged signature types them). Each
#: union spelling a caller may use is mapped onto these typed names there: ``"threshold": "safe"``
#: sets :data:`PARAM_SAFE_THRESHOLD`, ``"explain": k`` sets :data:`PARAM_EXPLAIN` and
#: :data:`PARAM_EXPLAIN_TOP`.
PARAM_MODEL = "model"
PARAM_THRESHOLD = "threshold"
PARAM_SAFE_THRESHOLD = "safe_threshold"
PARAM_EXPLAIN = "explain"
PARAM_EXPLAIN_TOP = "explain_top"
PARAMS: tuple[str, ...] = (
    PARAM_MODEL,
    PARAM_THRESHOLD,
    PARAM_SAFE_THRESHOLD,
    PARAM_EXPLAIN,
    PARAM_EXPLAIN_TOP,
)
#: The ``threshold`` value that selects each route's recorded safe threshold.
SAFE = "safe"

#: The output column that ``explain`` adds, and the name of the term that holds the terms left out
#: by ``explain: k`` (``{"features": ["other"], "values": [], "contribution": sum, "count": n}``).
EXPLANATION = "explanation"
OTHER_TERM = "other"

#: What to do with a bad row: ``fail`` refuses the whole batch (the model server's contract and
#: batch scoring's default), ``mark`` scores the other rows and explains the bad one in ``error``.
ON_ERROR_FAIL = "fail"
ON_ERROR_MARK = "mark"
ON_ERROR_MODES: tuple[str, ...] = (ON_ERROR_FAIL, ON_ERROR_MARK)

_CANONICAL = {name.replace("-", "_"): name for name in ALL_FEATURES + (TARGET,)}


def canonical_name(column: object) -> object:
    """Return the canonical hyphenated spelling of a known column, else the column unchanged.

    ``stem_height``, ``stem-height`` and `` Stem-Height `` all map to ``stem-height``.

    Args:
        column: A column label from user input.

    Returns:
        The canonical feature name, or ``column`` itself when it is not a known feature.
    """
    if not isinstance(column, str):
        return column
    key = column.strip().lower().replace("-", "_")
    return _CANONICAL.get(key, column)


def canonical_columns(columns: Iterable[object]) -> dict[str, list[object]]:
    """Group input columns by the known feature they spell.

    Args:
        columns: Column labels as given.

    Returns:
        A mapping from canonical feature name to the input labels that spell it, in input order.
        Columns that spell no known feature are left out.
    """
    groups: dict[str, list[object]] = {}
    for column in columns:
        name = canonical_name(column)
        if name in _CANONICAL.values():
            groups.setdefault(name, []).append(column)
    return groups


def season_codes(values: np.ndarray) -> np.ndarray:
    """Map season floats to codes 0-3; values that are no known season map to -1.

    The one season mapping: validation uses it to refuse unknown seasons and the transformers to
    code them.

    Args:
        values: Season values as floats (NaN allowed, maps to -1).

    Returns:
        An int array of the same shape.
    """
    import numpy as np

    seasons, midpoints = _season_arrays()
    values = np.asarray(values, dtype=float)
    nearest = np.searchsorted(midpoints, values)  # NaN sorts last: code 3, refused below
    with np.errstate(invalid="ignore"):
        ok = np.abs(values - seasons[nearest]) <= SEASON_TOLERANCE
    return np.where(ok, nearest, -1)


@cache
def _season_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The season values and the midpoints between them (NumPy imported on first use, so the CLI
    and the DAG files can read this module's names cheaply)."""
    import numpy as np

    seasons = np.asarray(SEASON_VALUES)
    return seasons, (seasons[1:] + seasons[:-1]) / 2


def expected_values(column: str) -> str:
    """Describe the values a feature column accepts, for error messages.

    Args:
        column: A canonical feature name.

    Returns:
        A short human-readable description.
    """
    if column in CATEGORY_CARDINALITY:
        return f"an integer code 0-{CATEGORY_CARDINALITY[column] - 1}"
    if column == SEASON:
        return "one of the season codes " + ", ".join(repr(v) for v in SEASON_VALUES)
    return "a finite number >= 0"


def example_rows() -> list[dict[str, float]]:
    """Two example inputs, one per feature set (the logged input example and the README's curl).

    Returns:
        Records with canonical names; each row gives only its own route's features.
    """
    return [
        {"cap-diameter": 1372, "cap-shape": 2, "gill-attachment": 2, "gill-color": 10},
        {"stem-height": 3.81, "stem-width": 1545, "stem-color": 11, "season": SEASON_VALUES[3]},
    ]


def golden_rows() -> list[dict[str, float]]:
    """Fixed rows every registered version answers at training time and again before it serves.

    Both routes, a row carrying both feature sets (it takes the preferred route), edge codes and
    all four seasons: a version whose sub-models are not the ones it was trained with (a swapped
    or damaged artifact) answers them differently from what it recorded
    (:func:`router_model.router.check_golden`).
    """
    return [
        *example_rows(),
        {"cap-diameter": 0, "cap-shape": 0, "gill-attachment": 0, "gill-color": 0},
        {"cap-diameter": 600, "cap-shape": 6, "gill-attachment": 6, "gill-color": 11},
        {"cap-diameter": 3000, "cap-shape": 5, "gill-attachment": 1, "gill-color": 5},
        {"stem-height": 0.0, "stem-width": 0, "stem-color": 0, "season": SEASON_VALUES[0]},
        {"stem-height": 1.2, "stem-width": 400, "stem-color": 12, "season": SEASON_VALUES[1]},
        {"stem-height": 9.5, "stem-width": 3000, "stem-color": 6, "season": SEASON_VALUES[2]},
        {**example_rows()[0], **example_rows()[1]},
    ]
