"""Training: metrics, config parsing, and that the weak setting really is weaker."""

import pytest

from router_model import features as F
from router_model.train import METRICS, TrainConfig, parse_orders, train


def test_metrics_cover_every_route_and_auto(trained):
    expected = {f"{m}_{k}" for m in (*F.ROUTES, "auto") for k in METRICS}
    assert set(trained.metrics) == expected
    for route in F.ROUTES:
        assert 0.5 < trained.metrics[f"{route}_roc_auc"] <= 1.0
        assert 0.0 <= trained.metrics[f"{route}_brier"] < 0.25


def test_model_families_are_what_their_names_say(router):
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import CategoricalNB

    from router_model.calibration import LogOddsCalibrated

    # One model of the named family, followed by one monotone map on its log-odds.
    for route, family in ((F.NAIVE_BAYES, CategoricalNB), (F.LOGISTIC_REGRESSION, LogisticRegression)):
        model = router.submodels[route]
        assert isinstance(model, LogOddsCalibrated)
        assert isinstance(model.estimator[-1], family)
        assert model.slope > 0


def test_held_out_rows_are_not_trained_on(trained, synthetic_frame):
    assert len(trained.test) == round(0.2 * len(synthetic_frame))
    assert trained.train_rows + len(trained.test) == len(synthetic_frame)


def test_weak_setting_is_worse_on_both_routes(trained, synthetic_frame):
    weak = train(
        synthetic_frame,
        TrainConfig.from_mapping({"nb_bins": 2, "nb_orders": "1", "lr_bins": 2, "lr_orders": "1"}),
    )
    for route in F.ROUTES:
        assert weak.metrics[f"{route}_roc_auc"] < trained.metrics[f"{route}_roc_auc"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"depth": 3}, r"unknown training param\(s\) \['depth'\]"),
        ({"lr_c": "strong"}, r"training param lr_c='strong' is not a valid float"),
        ({"nb_bins": "x"}, r"nb_bins='x' is not a valid int"),
    ],
)
def test_bad_train_params_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_mapping(values)


def test_train_params_from_strings():
    config = TrainConfig.from_mapping({"lr_c": "0.5", "nb_bins": "8", "nb_orders": "2,3"})
    assert (config.lr_c, config.nb_bins, parse_orders(config.nb_orders)) == (0.5, 8, (2, 3))


def test_parse_orders_refuses_garbage():
    with pytest.raises(ValueError, match="cross orders must be comma-separated integers"):
        parse_orders("pairs")


def test_quality_targets_on_the_real_data(real_frame):
    """The core issue's targets, on the original 80/20 stratified split with seed 42."""
    result = train(real_frame)
    assert result.metrics["logistic_regression_roc_auc"] >= 0.89
    assert result.metrics["naive_bayes_roc_auc"] >= 0.78
