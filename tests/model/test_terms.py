"""The global view: each route's terms are the model's own additive tables, named by their raw features."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.dummy import DummyClassifier

from router_model import features as F
from router_model.explain import column_features
from router_model.scorers import log_odds_tables
from router_model.terms import (
    JOIN,
    KIND_BASE,
    KIND_TERM,
    TERM_COLUMNS,
    TOP_TERMS,
    TermsError,
    bin_label,
    bin_labels,
    route_terms,
    terms_table,
)
from router_model.transformers import BinCross


def route_rows(frame: pd.DataFrame, route: str) -> np.ndarray:
    return frame[list(F.ROUTE_FEATURES[route])].to_numpy(np.float64)


def test_table_numbers_are_the_models_tables_and_names_its_raw_features(trained):
    table = terms_table(trained.router.submodels, trained.test)
    assert list(table.columns) == list(TERM_COLUMNS)
    assert list(dict.fromkeys(table["route"])) == list(F.ROUTES)
    for route in F.ROUTES:
        codes, tables, bias = log_odds_tables(trained.router.submodels[route])
        rows = table[table["route"] == route]
        base = rows[rows["kind"] == KIND_BASE]
        terms = rows[rows["kind"] == KIND_TERM]
        assert base["log_odds"].tolist() == [bias]
        assert len(terms) == TOP_TERMS
        assert terms["log_odds"].tolist() == [
            tables[c][k] for c, k in zip(terms["column"], terms["code"], strict=True)
        ]
        for column, named in zip(terms["column"], terms["features"], strict=True):
            features = named.split(JOIN)
            assert features == [codes.columns[j] for j in codes.combinations_[column]]
            assert set(features) <= set(F.ROUTE_FEATURES[route])
        sizes = terms["log_odds"].abs().to_numpy()
        assert (np.diff(sizes) <= 0).all(), "terms must come largest first"
        # ``rows`` counts the held-out rows whose answer holds the term.
        held_out = np.column_stack(list(codes.iter_codes(route_rows(trained.test, route))))
        counts = [
            int((held_out[:, c] == k).sum()) for c, k in zip(terms["column"], terms["code"], strict=True)
        ]
        assert terms["rows"].tolist() == counts
        assert min(counts) >= 1


def test_every_answer_is_its_base_plus_one_listed_term_per_column(trained, router):
    """Read off the full table, base + one term per crossed column gives the route's answer."""
    rows = trained.test.iloc[:50]
    for route in F.ROUTES:
        answers = router.predict(rows[list(F.ROUTE_FEATURES[route])], {"model": route})
        mine = (answers["model"] == route).to_numpy()
        assert mine.all()
        full = route_terms(route, router.submodels[route], top=None)
        terms = full[full["kind"] == KIND_TERM].set_index(["column", "code"])["log_odds"]
        base = full.loc[full["kind"] == KIND_BASE, "log_odds"].item()
        codes = log_odds_tables(router.submodels[route])[0]
        picked = np.column_stack(list(codes.iter_codes(route_rows(rows[mine], route))))
        total = base + np.array([sum(terms[(c, int(k))] for c, k in enumerate(row)) for row in picked])
        expected = logit(answers.loc[mine, "poisonous_probability"].to_numpy())
        np.testing.assert_allclose(total, expected, rtol=0, atol=1e-9)


def test_without_rows_every_term_is_listed(router):
    full = route_terms(F.NAIVE_BAYES, router.submodels[F.NAIVE_BAYES], top=None)
    _, tables, _ = log_odds_tables(router.submodels[F.NAIVE_BAYES])
    assert (full["kind"] == KIND_TERM).sum() == sum(len(t) for t in tables)
    assert (full["rows"] == 0).all()


@pytest.fixture(scope="module")
def known_bins() -> BinCross:
    X = np.array([[float(d), d % 7, F.SEASON_VALUES[d % 4], d % 13] for d in range(1, 101)], dtype=np.float64)
    return BinCross(("stem-width", "cap-shape", F.SEASON, "stem-color"), n_bins=4, orders=(1, 2)).fit(X)


@pytest.mark.parametrize(
    ("position", "code", "label"),
    [
        (0, 0, "< 25.75"),
        (0, 1, "[25.75, 50.5)"),
        (0, 3, ">= 75.25"),
        (1, 5, "5"),
        (2, 1, "0.8885"),
        (3, 12, "12"),
    ],
)
def test_bin_labels_say_what_a_code_means(known_bins, position, code, label):
    assert bin_label(known_bins, position, code) == label


def test_a_crossed_column_names_its_raw_features_and_each_bin(known_bins):
    pair = known_bins.combinations_.index((0, 2))
    assert column_features(known_bins, pair) == ("stem-width", F.SEASON)
    [code] = known_bins.transform(np.array([[60.0, 3, F.SEASON_VALUES[3], 1]]))[:, pair]
    assert bin_labels(known_bins, pair, int(code)) == ("[50.5, 75.25)", "1.804")


def test_a_model_without_additive_tables_is_refused():
    dummy = DummyClassifier().fit([[0.0]], [1])
    with pytest.raises(TermsError, match="route 'naive_bayes': DummyClassifier has no additive log-odds"):
        route_terms(F.NAIVE_BAYES, dummy)


def test_the_figure_draws_each_routes_terms_as_bars_of_their_log_odds(trained):
    import matplotlib.pyplot as plt

    from router_model.plots import terms_figure

    table = terms_table(trained.router.submodels, trained.test)
    figure = terms_figure(table)
    try:
        for ax, route in zip(figure.axes, F.ROUTES, strict=True):
            terms = table[(table["route"] == route) & (table["kind"] == KIND_TERM)]
            widths = [bar.get_width() for bar in ax.patches]
            assert widths == terms["log_odds"].iloc[::-1].tolist()  # largest at the top
            assert ax.get_title().startswith(f"{route}: the {TOP_TERMS} largest terms")
            labels = [tick.get_text() for tick in ax.get_yticklabels()]
            assert labels[-1].startswith(terms["features"].iloc[0].split(JOIN)[0])
    finally:
        plt.close(figure)
