"""Routing, output contract, params and threshold semantics of the in-memory Router."""

import itertools

import numpy as np
import pandas as pd
import pytest

from router_model import features as F
from router_model.inputs import as_frame
from router_model.params import DEFAULTS, parse_params
from router_model.router import Router, assign_routes
from router_model.validation import InvalidInputError


@pytest.fixture(scope="module")
def rows(synthetic_frame):
    return synthetic_frame[list(F.ALL_FEATURES)].iloc[:50].reset_index(drop=True)


def sub_proba(router, route, frame):
    return router.submodels[route].predict_proba(frame[list(F.ROUTE_FEATURES[route])].to_numpy(float))[:, 1]


def test_output_contract(router, rows):
    out = router.predict(rows)
    assert list(out.columns) == list(F.OUTPUT_COLUMNS)
    assert len(out) == len(rows)
    assert set(out["prediction"]) <= {"edible", "poisonous"}
    p = out["poisonous_probability"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    chosen = np.where(out["prediction"] == "poisonous", p, 1 - p)
    np.testing.assert_allclose(out["probability"], chosen)


def test_rows_with_both_sets_take_the_preferred_route(router, rows):
    out = router.predict(rows)
    assert (out["model"] == router.preferred).all()
    np.testing.assert_allclose(out["poisonous_probability"], sub_proba(router, router.preferred, rows))


def test_preferred_route_is_the_higher_validation_auc(trained):
    assert trained.router.preferred == max(trained.validation_auc, key=trained.validation_auc.get)


def test_mixed_batch_routes_each_row_by_its_features_and_keeps_order(router, rows):
    nb_only = rows.loc[:9, list(F.NB_FEATURES)]
    lr_only = rows.loc[10:19, list(F.LR_FEATURES)]
    mixed = pd.concat([nb_only, lr_only]).sample(frac=1, random_state=3)
    out = router.predict(mixed)
    expected_route = np.where(mixed.index < 10, F.NAIVE_BAYES, F.LOGISTIC_REGRESSION)
    assert out["model"].tolist() == expected_route.tolist()
    nb = sub_proba(router, F.NAIVE_BAYES, rows.loc[mixed.index[mixed.index < 10]])
    np.testing.assert_allclose(out["poisonous_probability"][mixed.index < 10], nb)


@pytest.mark.parametrize("route", F.ROUTES)
def test_model_param_overrides_the_route(router, rows, route):
    out = router.predict(rows, {"model": route})
    assert (out["model"] == route).all()
    np.testing.assert_allclose(out["poisonous_probability"], sub_proba(router, route, rows))


def test_underscore_spelling_gives_identical_predictions(router, rows):
    underscored = rows.rename(columns=lambda c: c.replace("-", "_"))
    pd.testing.assert_frame_equal(router.predict(underscored), router.predict(rows))


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_poisonous_exactly_when_probability_reaches_threshold(router, rows, threshold):
    out = router.predict(rows, {"threshold": threshold})
    expected = np.where(out["poisonous_probability"] >= threshold, "poisonous", "edible")
    assert out["prediction"].tolist() == expected.tolist()


def test_threshold_equal_to_probability_is_poisonous(router, rows):
    p = float(router.predict(rows.iloc[:1])["poisonous_probability"].iloc[0])
    assert router.predict(rows.iloc[:1], {"threshold": p})["prediction"].iloc[0] == "poisonous"


def test_empty_input_gives_empty_output(router, rows):
    out = router.predict(rows.iloc[:0])
    assert out.empty and list(out.columns) == list(F.OUTPUT_COLUMNS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "random_forest"}, r"param 'model' is 'random_forest'; expected one of \['auto'"),
        ({"threshold": 1.5}, r"param 'threshold' is 1.5; expected a number in \[0, 1\]"),
        ({"threshold": -0.1}, r"expected a number in \[0, 1\]"),
        ({"threshold": float("nan")}, r"param 'threshold' is nan"),
        ({"threshold": True}, r"param 'threshold' is True"),
        ({"threshold": "0.5"}, r"param 'threshold' is '0.5'"),
        ({"colour": 1}, r"unknown param\(s\) \['colour'\]; expected some of \['model'"),
        (
            {"treshold": 0.1},
            r"unknown param\(s\) \['treshold'\].* \(did you mean 'threshold' for 'treshold'\?\)",
        ),
        (
            {"Model": "auto", "explian": True},
            r"did you mean 'model' for 'Model'\?\) \(did you mean 'explain'",
        ),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_params(params)


def test_params_default_to_auto_and_half():
    assert parse_params(None) == ("auto", 0.5, None)
    assert parse_params({"model": None, "threshold": None}) == ("auto", 0.5, None)
    assert parse_params(None) == DEFAULTS  # what the server's fast path takes for a request without params


def test_row_completing_neither_set_names_the_missing_columns(router, rows):
    bad = rows.copy()
    bad.loc[3, "gill-color"] = np.nan
    bad.loc[3, "season"] = np.nan
    with pytest.raises(
        InvalidInputError,
        match=r"row 3 completes neither feature set: naive_bayes needs .* \(missing \['gill-color'\]\); "
        r"logistic_regression needs .* \(missing \['season'\]\)",
    ):
        router.predict(bad)


def test_forced_route_needs_its_features(router, rows):
    with pytest.raises(
        InvalidInputError,
        match=r"row 0: param model='naive_bayes' needs .*, "
        r"missing \['cap-diameter', 'gill-attachment', 'gill-color'\] \(1 more",
    ):
        router.predict(
            rows[list(F.LR_FEATURES)].iloc[:2].assign(**{"cap-shape": 1}), {"model": "naive_bayes"}
        )


def test_one_bad_row_fails_the_whole_batch(router, rows):
    bad = rows.astype(object)
    bad.loc[7, "stem-color"] = 99
    with pytest.raises(InvalidInputError, match=r"row 7, column 'stem-color': got 99"):
        router.predict(bad)


def test_assign_routes_without_both_sets_uses_the_other():
    matrix = np.full((2, 8), np.nan)
    matrix[0, :4] = 1
    matrix[1, 4:] = 1
    assert assign_routes(matrix, "auto", F.LOGISTIC_REGRESSION).tolist() == [0, 1]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"cap-diameter": 1, "cap-shape": 2}, {"cap-diameter": [1], "cap-shape": [2]}),
        ({"cap-diameter": np.array(1.5), "cap-shape": 2}, {"cap-diameter": [1.5], "cap-shape": [2]}),
        ({"cap-diameter": [1, 2], "cap-shape": (3, 4)}, {"cap-diameter": [1, 2], "cap-shape": [3, 4]}),
        (
            {"cap-diameter": np.array([1, 2]), "cap-shape": pd.Series([3, 4])},
            {"cap-diameter": [1, 2], "cap-shape": [3, 4]},
        ),
        ({"cap-diameter": [], "cap-shape": []}, {"cap-diameter": [], "cap-shape": []}),
        (
            [{"cap-diameter": np.array(1)}, {"cap-shape": 2}],
            {"cap-diameter": [1, None], "cap-shape": [None, 2]},
        ),
        ([], {}),
    ],
    ids=[
        "one-record",
        "one-record-0d-array",
        "columns",
        "array-columns",
        "empty-columns",
        "records",
        "no-records",
    ],
)
def test_as_frame_gives_one_row_per_input_row(given, expected):
    pd.testing.assert_frame_equal(as_frame(given), pd.DataFrame(expected), check_dtype=False)


def test_as_frame_keeps_a_2d_column_one_row_per_entry(router):
    """A column of lists is one list per row (refused by the router), never flattened into more rows."""
    given = {c: np.array([[1, 2], [3, 4]]) for c in F.NB_FEATURES}
    assert len(as_frame(given)) == 2
    with pytest.raises(InvalidInputError, match="row 0, column 'cap-diameter': got a list"):
        router.predict(given)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        (
            {"cap-diameter": [1, 2], "cap-shape": 1},
            r"columns 'cap-diameter' hold lists but 'cap-shape' hold single values",
        ),
        ({"cap-diameter": [1], "cap-shape": 1}, r"columns 'cap-diameter' hold lists but 'cap-shape' hold"),
        (
            {"cap-diameter": [1, 2], "cap-shape": [1], "season": [0.5, 0.5]},
            r"columns of different lengths \('cap-diameter': 2, 'cap-shape': 1, 'season': 2\)",
        ),
    ],
    ids=["list-and-single-value", "one-entry-list-and-single-value", "different-lengths"],
)
def test_as_frame_refuses_columns_that_are_not_a_table(given, match):
    with pytest.raises(InvalidInputError, match=match):
        as_frame(given)


#: Rows of each kind, for batches mixing them in every order.
KINDS = {
    "nb": F.example_rows()[0],
    "lr": F.example_rows()[1],
    "both": F.example_rows()[0] | F.example_rows()[1],
}
ORDERS = [order for n in (1, 2, 3) for order in itertools.product(KINDS, repeat=n)]


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_records_and_columns_give_one_answer_per_row_in_order(router, order):
    records = [KINDS[kind] for kind in order]
    frame = pd.DataFrame(records)
    columns = {c: [r.get(c) for r in records] for c in frame.columns}
    expected = router.predict(frame)
    assert len(expected) == len(order)
    routes = {"nb": F.NAIVE_BAYES, "lr": F.LOGISTIC_REGRESSION, "both": router.preferred}
    assert expected["model"].tolist() == [routes[kind] for kind in order]
    pd.testing.assert_frame_equal(router.predict(records), expected)
    pd.testing.assert_frame_equal(router.predict(columns), expected)


def test_as_frame_refuses_unnamed_arrays():
    with pytest.raises(InvalidInputError, match="expected rows with named feature columns, got ndarray"):
        as_frame(np.zeros((2, 8)))


def test_router_needs_both_submodels(router):
    with pytest.raises(ValueError, match="need sub-models"):
        Router({F.NAIVE_BAYES: router.submodels[F.NAIVE_BAYES]}, F.NAIVE_BAYES)


@pytest.mark.parametrize("route", F.ROUTES)
def test_fast_scorer_equals_predict_proba(router, synthetic_frame, route):
    from router_model.scorers import compile_scorer, probe_rows

    model = router.submodels[route]
    scorer = compile_scorer(model)
    rows = np.vstack(
        [synthetic_frame[list(F.ROUTE_FEATURES[route])].to_numpy(float), probe_rows(F.ROUTE_FEATURES[route])]
    )
    np.testing.assert_allclose(scorer(rows), model.predict_proba(rows)[:, 1], rtol=0, atol=1e-12)
    assert scorer.__name__ == "poisonous_probability", "the fast path must be taken for the trained pipelines"


def test_unknown_estimator_falls_back_to_predict_proba(synthetic_frame):
    from sklearn.linear_model import LogisticRegression

    from router_model.scorers import compile_scorer

    X = synthetic_frame[list(F.LR_FEATURES)].to_numpy(float)
    y = synthetic_frame["class"].to_numpy()
    plain = LogisticRegression(max_iter=500).fit(X, y)
    np.testing.assert_allclose(compile_scorer(plain)(X), plain.predict_proba(X)[:, 1])
