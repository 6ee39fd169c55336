"""Exact explanations (router_model/explain.py): the params, the shape, and the sum that must hold.

``base + sum(contribution) == logit(poisonous_probability)`` to 1e-9 on the synthetic router, the
golden rows, and every row of the real data set on both routes (skips without ``MUSHROOM_DATA``,
fails instead where ``MUSHROOM_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pandas as pd
import pytest
from scipy.special import logit
from support import explanation_sums

from router_model import explain as E
from router_model import features as F
from router_model.params import Params, parse_params, typed_params
from router_model.router import Router
from router_model.scorers import log_odds_tables
from router_model.validation import InvalidInputError

TOLERANCE = 1e-9
#: Terms per route for the default hyperparameters: naive Bayes over the 4 feature triples,
#: logistic regression over 4 singles, 6 pairs and 4 triples.
N_TERMS = {F.NAIVE_BAYES: 4, F.LOGISTIC_REGRESSION: 14}


@pytest.fixture(scope="module")
def rows(synthetic_frame):
    return synthetic_frame.drop(columns=F.TARGET).reset_index(drop=True)


# --- params ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (None, Params("auto", 0.5, None)),
        ({"explain": False}, Params("auto", 0.5, None)),
        ({"explain": True}, Params("auto", 0.5, 0)),
        ({"explain": 3}, Params("auto", 0.5, 3)),
        ({"explain": np.int64(1)}, Params("auto", 0.5, 1)),
        ({"explain": True, "explain_top": 5}, Params("auto", 0.5, 5)),
        ({"explain": None, "explain_top": None}, Params("auto", 0.5, None)),
        # what MLflow's schema enforcement hands over: every typed param, defaults filled in
        (
            {"model": "auto", "threshold": 0.5, "safe_threshold": False, "explain": True, "explain_top": 2},
            Params("auto", 0.5, 2),
        ),
        ({"threshold": "safe", "explain": 2}, Params("auto", "safe", 2)),
    ],
)
def test_explain_param_spellings(params, expected):
    assert parse_params(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"explain": 0}, r"param 'explain' is 0; expected true, false or an integer k >= 1"),
        ({"explain": -2}, r"param 'explain' is -2; expected"),
        ({"explain": "yes"}, r"param 'explain' is 'yes'; expected true, false or an integer"),
        ({"explain": 2.0}, r"param 'explain' is 2.0"),
        ({"explain": 3, "explain_top": 2}, r"param 'explain' is 3 and 'explain_top' is 2; give one of them"),
        ({"explain_top": 3}, r"param 'explain_top' is 3 but 'explain' is false"),
        ({"explain": True, "explain_top": -1}, r"param 'explain_top' is -1; expected an integer k >= 1"),
        ({"explain": True, "explain_top": True}, r"param 'explain_top' is True"),
        ({"safe_threshold": "yes"}, r"param 'safe_threshold' is 'yes'; expected true or false"),
        (
            {"threshold": 0.3, "safe_threshold": True},
            r"param 'threshold' is 0.3 and 'safe_threshold' is true",
        ),
        ({"threshold": "safe", "safe_threshold": False}, r"'safe_threshold' is False; give one of them"),
    ],
)
def test_bad_explain_params_are_refused(params, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_params(params)


@pytest.mark.parametrize(
    ("given", "typed"),
    [
        ({"threshold": " SAFE "}, {"safe_threshold": True}),
        ({"threshold": 0.2, "explain": 4}, {"threshold": 0.2, "explain": True, "explain_top": 4}),
        ({"explain": True, "model": "naive_bayes"}, {"explain": True, "model": "naive_bayes"}),
        ({"explain": False, "other": 1}, {"explain": False, "other": 1}),
    ],
)
def test_typed_params_maps_the_union_spellings_only(given, typed):
    assert typed_params(given) == typed


# --- shape and sum --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", F.ROUTES)
@pytest.mark.parametrize("explain", [True, 1, 3, 100])
def test_explanations_sum_to_the_log_odds_on_every_row(router, rows, route, explain):
    out = router.predict(rows, {"model": route, "explain": explain})
    assert list(out.columns) == [*F.OUTPUT_COLUMNS, F.EXPLANATION]
    sums = np.array(explanation_sums(out[F.EXPLANATION].tolist()))
    np.testing.assert_allclose(sums, logit(out["poisonous_probability"]), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("route", F.ROUTES)
def test_terms_are_the_routes_feature_columns_with_the_rows_values(router, rows, route):
    columns = F.ROUTE_FEATURES[route]
    out = router.predict(rows.iloc[:40], {"model": route, "explain": True})
    codes = log_odds_tables(router.submodels[route])[0]
    expected_names = sorted(tuple(columns[j] for j in combo) for combo in codes.combinations_)
    for i, explanation in enumerate(out[F.EXPLANATION]):
        terms = explanation["contributions"]
        assert len(terms) == N_TERMS[route]
        assert sorted(tuple(t["features"]) for t in terms) == expected_names
        magnitudes = [abs(t["contribution"]) for t in terms]
        assert magnitudes == sorted(magnitudes, reverse=True)
        for term in terms:
            assert set(term) == {"features", "values", "contribution"}
            assert term["values"] == [rows.at[i, name] for name in term["features"]]
            assert all(
                type(v) is int
                for f, v in zip(term["features"], term["values"], strict=True)
                if f in F.CATEGORY_CARDINALITY
            )


def test_base_is_the_calibrated_intercept_and_the_log_prior_ratio(router, rows):
    out = router.predict(rows.iloc[:3], {"explain": True, "model": F.LOGISTIC_REGRESSION})
    calibrated = router.submodels[F.LOGISTIC_REGRESSION]
    lr = calibrated.estimator.steps[-1][1]
    assert out[F.EXPLANATION][0]["base"] == pytest.approx(
        calibrated.slope * lr.intercept_[0] + calibrated.intercept, abs=1e-12
    )
    out = router.predict(rows.iloc[:3], {"explain": True, "model": F.NAIVE_BAYES})
    calibrated = router.submodels[F.NAIVE_BAYES]
    nb = calibrated.estimator.steps[-1][1]
    prior = nb.class_log_prior_[1] - nb.class_log_prior_[0]
    assert out[F.EXPLANATION][0]["base"] == pytest.approx(
        calibrated.slope * prior + calibrated.intercept, abs=1e-12
    )


@pytest.mark.parametrize(("route", "k"), [(F.LOGISTIC_REGRESSION, 3), (F.NAIVE_BAYES, 1), (F.NAIVE_BAYES, 3)])
def test_top_k_keeps_the_largest_terms_and_sums_the_rest_as_other(router, rows, route, k):
    full = router.predict(rows.iloc[:30], {"model": route, "explain": True})[F.EXPLANATION]
    top = router.predict(rows.iloc[:30], {"model": route, "explain": k})[F.EXPLANATION]
    for whole, short in zip(full, top, strict=True):
        assert short["base"] == whole["base"]
        assert short["contributions"][:k] == whole["contributions"][:k]
        other = short["contributions"][k]
        assert other["features"] == [F.OTHER_TERM] and other["values"] == []
        assert other["count"] == N_TERMS[route] - k
        rest = sum(t["contribution"] for t in whole["contributions"][k:])
        assert other["contribution"] == pytest.approx(rest, abs=1e-12)
        assert len(short["contributions"]) == k + 1


def test_top_k_at_or_above_the_number_of_terms_lists_them_all_without_other(router, rows):
    full = router.predict(rows.iloc[:5], {"model": F.NAIVE_BAYES, "explain": True})[F.EXPLANATION]
    for k in (N_TERMS[F.NAIVE_BAYES], 50):
        assert router.predict(rows.iloc[:5], {"model": F.NAIVE_BAYES, "explain": k})[
            F.EXPLANATION
        ].tolist() == (full.tolist())


def test_only_the_taken_routes_features_appear(router, golden_rows):
    out = router.predict(golden_rows, {"explain": True})
    for route, explanation in zip(out["model"], out[F.EXPLANATION], strict=True):
        named = {name for term in explanation["contributions"] for name in term["features"]}
        assert named <= set(F.ROUTE_FEATURES[route])
    assert set(out["model"]) == set(F.ROUTES)


def test_marked_bad_rows_get_no_explanation(router, golden_rows):
    bad = golden_rows.copy()
    bad.loc[1, "cap-shape"] = 9
    out = router.predict(bad, {"explain": 2}, on_error=F.ON_ERROR_MARK)
    assert out[F.EXPLANATION][1] is None and out["error"][1]
    assert all(e is not None for i, e in enumerate(out[F.EXPLANATION]) if i != 1)


def test_without_explain_the_answer_is_unchanged(router, golden_rows):
    plain = router.predict(golden_rows)
    assert list(plain.columns) == list(F.OUTPUT_COLUMNS)
    for params in ({"explain": False}, {"explain": False, "explain_top": 0}):
        pd.testing.assert_frame_equal(router.predict(golden_rows, params), plain)
    explained = router.predict(golden_rows, {"explain": True})
    pd.testing.assert_frame_equal(explained[list(F.OUTPUT_COLUMNS)], plain)


def test_a_sub_model_that_is_not_additive_cannot_be_explained(router, rows):
    from sklearn.dummy import DummyClassifier

    dummy = DummyClassifier(strategy="prior").fit(
        rows[list(F.NB_FEATURES)].to_numpy(), np.arange(len(rows)) % 2
    )
    odd = Router(
        {F.NAIVE_BAYES: dummy, F.LOGISTIC_REGRESSION: router.submodels[F.LOGISTIC_REGRESSION]}, F.NAIVE_BAYES
    )
    assert odd.predict(rows.iloc[:2]).shape[0] == 2
    with pytest.raises(
        InvalidInputError, match="the naive_bayes sub-model is not one whose log-odds are additive"
    ):
        odd.predict(rows.iloc[:2], {"explain": True})
    assert E.route_terms(dummy, F.NB_FEATURES) is None


# --- the whole real data set ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_router(real_frame):
    from router_model.train import train

    return train(real_frame).router


@pytest.mark.parametrize("route", F.ROUTES)
def test_explanations_sum_on_every_row_of_the_real_data(real_router, real_frame, route):
    """Every row of the real file through each route, all terms and the top 3 (one pass each)."""
    features = real_frame.drop(columns=F.TARGET)
    for explain in (True, 3):
        out = real_router.predict(features, {"model": route, "explain": explain})
        assert len(out) == len(real_frame) == 54035
        sums = np.array(explanation_sums(out[F.EXPLANATION].tolist()))
        np.testing.assert_allclose(sums, logit(out["poisonous_probability"]), rtol=0, atol=TOLERANCE)


# --- the model server's JSON text -----------------------------------------------------------------

#: Numbers whose JSON text differs between writers (exponents, long fractions, -0.0, integers
#: held as floats), put into a measured column of the first rows.
AWKWARD = [1e-07, 0.1 + 0.2, 123456789.0, 1e16, -0.0, 5e-324, 2.5]


@pytest.mark.parametrize("route", F.ROUTES)
@pytest.mark.parametrize(
    ("n_rows", "top"), [(1, 0), (1, 2), (4, 0), (5, 3), (57, 0), (57, 1), (57, 3), (57, 13), (57, 100)]
)
def test_the_servers_json_text_is_orjsons_text_of_the_dicts(rows, router, route, n_rows, top):
    columns = F.ROUTE_FEATURES[route]
    terms = E.route_terms(router.submodels[route], tuple(columns))
    X = rows[list(columns)].to_numpy(dtype=float)[:n_rows].copy()
    measured = next(
        j for j, name in enumerate(columns) if name not in F.CATEGORY_CARDINALITY and name != F.SEASON
    )
    X[: len(AWKWARD), measured] = AWKWARD[: len(X)]
    dicts = orjson.dumps(E.explanations(terms, X, top))
    pieces = terms.json_pieces()
    assert pieces.templates == {}
    for _ in range(2):  # the templates made, then reused
        texts = E.explanations(terms, X, top, for_json=True)
        assert [type(text) for text in texts] == [orjson.Fragment] * n_rows
        assert orjson.dumps(texts) == dicts
        assert 0 < len(pieces.templates) <= n_rows
    assert E.explanations(terms, X[:0], top, for_json=True) == []


def _server_texts(terms: E.RouteTerms, X: np.ndarray, top: int) -> bytes:
    """The model server's JSON of the rows' explanations, joined from templates."""
    return orjson.dumps(E.explanations(terms, X, top, for_json=True))


@pytest.fixture
def lr_terms(router):
    return E.route_terms(router.submodels[F.LOGISTIC_REGRESSION], F.LR_FEATURES)


@pytest.mark.parametrize("top", [0, 1, 3])
def test_a_template_serves_every_row_with_its_codes_with_the_rows_own_values(rows, lr_terms, top):
    X = rows[list(F.LR_FEATURES)].to_numpy(dtype=float)[:40].copy()
    assert _server_texts(lr_terms, X, top) == orjson.dumps(E.explanations(lr_terms, X, top))
    made = dict(lr_terms.json_pieces().templates)
    assert 0 < len(made) <= len(X)
    # Other measured values in the same bins: the same codes, so no new template, and each row
    # still carries its own values.
    other = X.copy()
    height, width = (F.LR_FEATURES.index(name) for name in ("stem-height", "stem-width"))
    other[:, height] = np.nextafter(other[:, height], -np.inf)
    other[:, width] = np.nextafter(other[:, width], -np.inf)
    assert (lr_terms.codes.base_codes(other) == lr_terms.codes.base_codes(X)).all()
    assert _server_texts(lr_terms, other, top) == orjson.dumps(E.explanations(lr_terms, other, top))
    assert lr_terms.json_pieces().templates == made
    assert _server_texts(lr_terms, other, top) != _server_texts(lr_terms, X, top)


def test_a_season_within_the_tolerance_keeps_its_own_text(rows, lr_terms):
    X = rows[list(F.LR_FEATURES)].to_numpy(dtype=float)[:12].copy()
    season = F.LR_FEATURES.index(F.SEASON)
    assert np.isin(X[:, season], F.SEASON_VALUES).all()  # exact: the template holds the season
    nudged = X.copy()
    nudged[::2, season] += F.SEASON_TOLERANCE / 2  # the same season, its own last digits
    assert (lr_terms.codes.base_codes(nudged) == lr_terms.codes.base_codes(X)).all()
    for batch in (X, nudged, X):
        assert _server_texts(lr_terms, batch, 0) == orjson.dumps(E.explanations(lr_terms, batch, 0))
    own = b'"values":[%s]' % orjson.dumps(float(nudged[0, season]))
    assert own in _server_texts(lr_terms, nudged, 0)
    assert own not in _server_texts(lr_terms, X, 0)


@pytest.mark.parametrize("bound", [1, 5, 40, 1000])
def test_the_templates_kept_are_bounded_and_the_answers_unchanged(rows, lr_terms, bound, monkeypatch):
    """A batch with more new codes than the bound keeps none; one that would overflow starts over."""
    monkeypatch.setattr(E, "TEMPLATES", bound)
    X = rows[list(F.LR_FEATURES)].to_numpy(dtype=float)
    kept = []
    for start in range(0, 300, 30):
        batch = X[start : start + 30]
        assert _server_texts(lr_terms, batch, 2) == orjson.dumps(E.explanations(lr_terms, batch, 2))
        kept.append(len(lr_terms.json_pieces().templates))
    assert max(kept) <= bound
    shrank = any(later < earlier for earlier, later in itertools.pairwise(kept))
    assert shrank == (bound == 40)  # 40 holds a batch's new codes but not two: it started over
    assert kept[-1] > 0 or bound < 30


@pytest.mark.parametrize("route", F.ROUTES)
def test_the_servers_json_text_on_every_row_of_the_real_data(real_router, real_frame, route):
    """Every row of the real file, 1,000 a request as served, twice (templates made, then reused)."""
    columns = F.ROUTE_FEATURES[route]
    terms = E.route_terms(real_router.submodels[route], tuple(columns))
    X = real_frame[list(columns)].to_numpy(dtype=float)
    for top in (0, 3):
        for _ in range(2):
            for start in range(0, len(X), 1000):
                batch = X[start : start + 1000]
                assert _server_texts(terms, batch, top) == orjson.dumps(E.explanations(terms, batch, top))
    assert len(terms.json_pieces().templates) <= E.TEMPLATES
