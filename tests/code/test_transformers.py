"""BinCross: quantile bins, category codes and crosses."""

import numpy as np
import pytest

from router_model import features as F
from router_model.transformers import BinCross


@pytest.fixture
def lr_matrix():
    rng = np.random.default_rng(0)
    n = 500
    return np.column_stack(
        [
            rng.uniform(0, 3, n),
            rng.integers(0, 3000, n),
            rng.integers(0, 13, n),
            np.asarray(F.SEASON_VALUES)[rng.integers(0, 4, n)],
        ]
    )


def test_codes_stay_inside_declared_cardinalities(lr_matrix):
    bc = BinCross(F.LR_FEATURES, n_bins=8, orders=(1, 2, 3)).fit(lr_matrix)
    codes = bc.transform(lr_matrix)
    assert codes.shape == (len(lr_matrix), 4 + 6 + 4)
    assert (codes >= 0).all()
    assert (codes < np.asarray(bc.cardinalities_)).all()


def test_values_beyond_the_training_range_fall_in_the_edge_bins(lr_matrix):
    bc = BinCross(F.LR_FEATURES, n_bins=8, orders=(1,)).fit(lr_matrix)
    extreme = np.array([[0.0, 0.0, 0, F.SEASON_VALUES[0]], [1e9, 1e9, 12, F.SEASON_VALUES[3]]])
    codes = bc.transform(extreme)
    assert codes[0].tolist() == [0, 0, 0, 0]
    assert codes[1].tolist() == [7, 7, 12, 3]


def test_cross_code_is_mixed_radix_of_single_codes(lr_matrix):
    bc = BinCross(F.LR_FEATURES, n_bins=4, orders=(1, 2)).fit(lr_matrix)
    codes = bc.transform(lr_matrix)
    singles, pair01 = codes[:, :4], codes[:, 4]
    assert (pair01 == singles[:, 0] * bc.base_cardinalities_[1] + singles[:, 1]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bins": 1}, "n_bins must be >= 2"),
        ({"orders": (5,)}, "orders must be"),
        ({"orders": ()}, "orders"),
    ],
)
def test_bad_settings_are_refused(lr_matrix, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BinCross(F.LR_FEATURES, **kwargs).fit(lr_matrix)


@pytest.mark.parametrize("season", [0.5, np.nan, F.SEASON_VALUES[3] + 1e-3])
def test_an_unknown_season_is_refused_not_coded(lr_matrix, season):
    bc = BinCross(F.LR_FEATURES, n_bins=8, orders=(1, 2)).fit(lr_matrix)
    bad = lr_matrix[:3].copy()
    bad[1, 3] = season
    with pytest.raises(ValueError, match=r"season .* is not one of the season codes 0\.027"):
        bc.transform(bad)


def test_wrong_column_count_is_refused(lr_matrix):
    bc = BinCross(F.LR_FEATURES).fit(lr_matrix)
    with pytest.raises(ValueError, match="expected 4 columns"):
        bc.transform(lr_matrix[:, :3])


def test_onehot_codes_equals_sklearn_onehotencoder(lr_matrix):
    from sklearn.preprocessing import OneHotEncoder

    from router_model.transformers import OneHotCodes

    bc = BinCross(F.LR_FEATURES, n_bins=8, orders=(1, 2)).fit(lr_matrix)
    codes = bc.transform(lr_matrix)
    ours = OneHotCodes(tuple(bc.cardinalities_)).fit(codes).transform(codes)
    reference = (
        OneHotEncoder(categories=[np.arange(c) for c in bc.cardinalities_]).fit(codes).transform(codes)
    )
    assert ours.shape == reference.shape
    assert (ours != reference).nnz == 0


@pytest.mark.parametrize(
    ("cardinalities", "codes", "message"),
    [
        ((3, 2), [[3, 0]], "outside its column's range"),
        ((3, 2), [[0, -1]], "outside its column's range"),
        ((3, 2), [[0, 1, 1]], "expected 2 code columns"),
    ],
)
def test_onehot_codes_refuses_bad_codes(cardinalities, codes, message):
    from router_model.transformers import OneHotCodes

    with pytest.raises(ValueError, match=message):
        OneHotCodes(cardinalities).fit(None).transform(np.asarray(codes))


def test_onehot_codes_needs_positive_cardinalities():
    from router_model.transformers import OneHotCodes

    with pytest.raises(ValueError, match="cardinalities must be positive integers"):
        OneHotCodes((3, 0)).fit(None)
