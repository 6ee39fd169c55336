"""Feature names, spellings, season codes and the label mapping."""

import numpy as np
import pytest

from router_model import features as F


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("stem-height", "stem-height"),
        ("stem_height", "stem-height"),
        (" Stem_Height ", "stem-height"),
        ("CAP-DIAMETER", "cap-diameter"),
        ("gill_attachment", "gill-attachment"),
        ("class", "class"),
        ("colour", "colour"),
        (3, 3),
    ],
)
def test_canonical_name(given, expected):
    assert F.canonical_name(given) == expected


def test_canonical_columns_groups_both_spellings_and_drops_unknown():
    groups = F.canonical_columns(["stem_height", "id", "stem-height", "season"])
    assert groups == {"stem-height": ["stem_height", "stem-height"], "season": ["season"]}


def test_feature_sets_partition_the_data_columns():
    """The two routes split the data set's eight feature columns between them, nothing left over."""
    from router_model.synthetic import make_synthetic

    columns = [c for c in make_synthetic(20).columns if c != F.TARGET]
    assert set(F.NB_FEATURES).isdisjoint(F.LR_FEATURES)
    assert sorted(F.NB_FEATURES + F.LR_FEATURES) == sorted(columns)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        *[(v, i) for i, v in enumerate(F.SEASON_VALUES)],
        (F.SEASON_VALUES[2] + 1e-9, 2),
        (F.SEASON_VALUES[2] - 1e-9, 2),
        (F.SEASON_VALUES[3] + 2e-6, -1),
        (F.SEASON_VALUES[0] - 2e-6, -1),
        (0.5, -1),
        ((F.SEASON_VALUES[1] + F.SEASON_VALUES[2]) / 2, -1),
        (np.nan, -1),
        (np.inf, -1),
        (-np.inf, -1),
    ],
)
def test_season_codes_match_known_values_with_tolerance(value, code):
    assert F.season_codes(np.array([value])).tolist() == [code]
    assert F.season_codes(np.array([[value, F.SEASON_VALUES[1]]])).tolist() == [[code, 1]]


@pytest.mark.parametrize(
    ("column", "text"),
    [("cap-shape", "0-6"), ("stem-color", "0-12"), ("season", "1.8042727086281731"), ("stem-width", ">= 0")],
)
def test_expected_values_describe_the_domain(column, text):
    assert text in F.expected_values(column)


def test_example_rows_cover_each_feature_set_exactly():
    nb_row, lr_row = F.example_rows()
    assert tuple(nb_row) == F.NB_FEATURES
    assert tuple(lr_row) == F.LR_FEATURES
