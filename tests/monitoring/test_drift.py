"""Drift measures: the reference profile, PSI, and whether the alarm level tells drift from chance.

The alarm must stay quiet on windows drawn from the data the model was trained on (many random
draws, false alarms counted) and must go off when one feature is scaled or one category's share
moves, as a changed world would do.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from router_model import drift
from router_model import features as F
from router_model.data import split, validate_training_frame
from router_model.synthetic import make_synthetic

DRAWS = 200


def window(rows: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows drawn from ``rows``, shaped like logged rows (route and probability columns)."""
    w = rows.sample(n, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    w["route"] = rng.choice(F.ROUTES, n)
    w["poisonous_probability"] = rng.random(n)
    return w


@pytest.fixture(scope="module", params=["synthetic", "real"])
def world(request):
    """(reference, held-out rows) from a synthetic sample, and from the real data where present."""
    if request.param == "real":
        frame = request.getfixturevalue("real_frame")
    else:
        frame = validate_training_frame(make_synthetic(20_000))
    train, test = split(frame)
    uniform = {route: np.random.default_rng(0).random(len(test)) for route in F.ROUTES}
    return drift.reference_profile(train, uniform), test


def test_reference_profile_describes_every_feature(synthetic_frame):
    train, test = split(synthetic_frame)
    profile = drift.reference_profile(train, {r: np.full(len(test), 0.3) for r in F.ROUTES})
    assert list(profile["features"]) == list(F.ALL_FEATURES)
    for column, spec in profile["features"].items():
        assert math.isclose(sum(spec["shares"]), 1.0), column
        expected = {
            "cap-diameter": "numeric",
            "stem-height": "numeric",
            "stem-width": "numeric",
            "season": "season",
        }
        assert spec["kind"] == expected.get(column, "category")
    assert len(profile["features"]["gill-color"]["shares"]) == F.CATEGORY_CARDINALITY["gill-color"]
    assert profile["poisonous_probability"]["naive_bayes"][3] == 1.0  # every score in (0.3, 0.4]


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0),
        ([0.5, 0.5], [0.9, 0.1], (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)),
        ([1.0, 0.0], [0.0, 1.0], (1e-4 - 1) * math.log(1e-4) + (1 - 1e-4) * math.log(1 / 1e-4)),
    ],
)
def test_psi(reference, current, expected):
    assert drift.psi(reference, current) == pytest.approx(expected)


@pytest.mark.parametrize("n", [500, 2000])
def test_no_false_alarms_on_rows_from_the_training_world(world, n, record_property):
    reference, test = world
    rng = np.random.default_rng(7)
    alarms, worst = 0, 0.0
    for _ in range(DRAWS):
        report = drift.compare(reference, window(test, n, rng), min_rows=n)
        alarms += report.drift_detected
        worst = max(worst, *(c.psi for c in report.features))
    record_property(f"false_alarms_{n}", f"{alarms}/{DRAWS}, worst PSI {worst:.4f}")
    assert alarms == 0, f"{alarms} false alarms in {DRAWS} windows of {n} rows (worst PSI {worst:.4f})"


def scaled(column: str, factor: float):
    def change(w: pd.DataFrame) -> None:
        w[column] = w[column] * factor

    return change


def moved(column: str, code: float, share: float):
    def change(w: pd.DataFrame) -> None:
        w.loc[w.sample(frac=share, random_state=0).index, column] = code

    return change


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (scaled("stem-width", 1.5), "stem-width"),
        (scaled("cap-diameter", 0.6), "cap-diameter"),
        (moved("cap-shape", 6, 0.5), "cap-shape"),
        (moved("season", F.SEASON_VALUES[0], 0.6), "season"),
    ],
)
def test_a_scaled_feature_or_a_moved_category_raises_the_alarm_on_that_feature(world, change, column):
    reference, test = world
    w = window(test, 1000, np.random.default_rng(3))
    change(w)
    report = drift.compare(reference, w)
    assert column in report.drifted
    assert set(report.drifted) <= {column}, report.drifted


def test_features_with_too_few_values_are_not_judged(world):
    reference, test = world
    w = window(test, 600, np.random.default_rng(1))
    w.loc[100:, list(F.LR_FEATURES)] = np.nan  # most rows carried only the naive Bayes features
    report = drift.compare(reference, w, min_rows=500)
    judged = {c.name for c in report.features if c.judged}
    assert judged == set(F.NB_FEATURES)
    assert report.judged and not report.drift_detected


def test_an_empty_window_judges_nothing(world):
    reference, _ = world
    from router_model.inference_log import read_rows

    report = drift.compare(reference, read_rows(target="/nonexistent/inference"))
    assert report.rows == 0 and not report.judged and not report.drift_detected


def test_a_shifted_probability_distribution_is_drift(world):
    reference, test = world
    w = window(test, 2000, np.random.default_rng(5))
    w["poisonous_probability"] = 0.95  # every answer in the top bin, against a uniform reference
    report = drift.compare(reference, w)
    assert set(report.drifted) == {f"poisonous_probability_{route}" for route in F.ROUTES}
