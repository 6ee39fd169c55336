"""Honest probabilities: the log-odds map, its metrics, the safe threshold, and the gate's ECE check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from router_model import features as F
from router_model import pipeline
from router_model.calibration import (
    LogOddsCalibrated,
    chance_ece,
    expected_calibration_error,
    fit_log_odds_map,
    poisonous_share_below,
    reliability,
    safe_threshold,
)
from router_model.params import parse_params
from router_model.router import Router
from router_model.train import evaluate
from router_model.validation import InvalidInputError

# --- metrics on hand-made tables -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "p", "ece"),
    [
        ([0, 1], [0.0, 1.0], 0.0),  # perfect
        ([0, 0, 1, 1], [0.05, 0.05, 0.95, 0.95], 0.05),  # under-confident by 0.05 in both bins
        ([1, 1, 1, 1], [0.25, 0.25, 0.25, 0.25], 0.75),  # one bin, observed 1 vs predicted 0.25
        ([0, 1, 0, 1], [0.5, 0.5, 0.9, 0.9], 0.2),  # bins 5 (exact) and 9 (0.9 vs 0.5): half of 0.4
    ],
)
def test_expected_calibration_error_matches_hand_computed(y, p, ece):
    assert expected_calibration_error(np.array(y), np.array(p)) == pytest.approx(ece)


def test_reliability_drops_empty_bins_and_counts_rows():
    table = reliability(np.array([0, 1, 1]), np.array([0.05, 0.95, 1.0]))
    np.testing.assert_allclose(table.lower, [0.0, 0.9])
    np.testing.assert_array_equal(table.count, [1, 2])
    np.testing.assert_allclose(table.observed, [0.0, 1.0])
    np.testing.assert_allclose(table.predicted, [0.05, 0.975])


def test_chance_ece_is_what_a_calibrated_model_shows_and_shrinks_with_rows():
    rng = np.random.default_rng(0)
    measured = {}
    for n in (600, 60_000):
        p = rng.uniform(0, 1, n)
        draws = [expected_calibration_error(rng.uniform(size=n) < p, p) for _ in range(40)]
        measured[n] = (np.mean(draws), chance_ece(p))
    for mean_ece, chance in measured.values():
        assert chance == pytest.approx(mean_ece, rel=0.25)
    assert measured[60_000][1] < measured[600][1] / 5


@pytest.mark.parametrize(
    ("y", "p", "t", "share"),
    [
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.35, 1 / 3),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.2, 0.0),  # a row equal to t is not "below"
        ([1], [0.5], 0.1, 0.0),  # no row below: vacuously 0
    ],
)
def test_poisonous_share_below(y, p, t, share):
    assert poisonous_share_below(np.array(y), np.array(p), t) == share


@pytest.mark.parametrize(
    ("y", "p", "threshold", "share", "false_alarms"),
    [
        # Everything edible is below every poisonous row: call all edible ones "edible".
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 0.3, 0.0, 0.0),
        # The lowest row is poisonous: nothing can be called "edible" within 1%.
        ([1, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.1, 0.0, 1.0),
        # 1 poisonous row among the 100 lowest is exactly 1%: allowed; the next row is poisonous
        # too (2 in 101, and 2 in 102 at t = 1 are over 1%).
        ([0] * 99 + [1] + [1] + [0], [*np.linspace(0.0, 0.5, 100), 0.6, 0.7], 0.6, 0.01, 0.01),
        # All edible: the threshold is 1 and nothing is a false alarm... except a row at exactly 1.
        ([0, 0, 0], [0.2, 0.5, 1.0], 1.0, 0.0, 1 / 3),
    ],
)
def test_safe_threshold_is_the_largest_with_at_most_one_percent(y, p, threshold, share, false_alarms):
    found = safe_threshold(np.array(y), np.array(p))
    assert found.threshold == pytest.approx(threshold)
    assert found.poisonous_share == pytest.approx(share)
    assert found.false_alarm_rate == pytest.approx(false_alarms)
    # What it promises holds at the threshold it returns.
    assert poisonous_share_below(np.array(y), np.array(p), found.threshold) <= 0.01


# --- the map --------------------------------------------------------------------------------------


def test_fit_log_odds_map_recovers_a_known_map():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, 50_000)
    y = (rng.uniform(size=z.size) < expit(0.5 * z + 0.3)).astype(int)
    slope, intercept = fit_log_odds_map(z, y)
    assert slope == pytest.approx(0.5, abs=0.02) and intercept == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize(
    ("z", "y", "message"),
    [
        ([0.0, 1.0, 2.0], [1, 1, 1], r"needs rows of both classes, got only \[1\]"),
        ([-2.0, -1.0, 1.0, 2.0], [1, 0, 1, 0], "slope .* is not positive"),
    ],
)
def test_fit_log_odds_map_refuses_what_cannot_calibrate(z, y, message):
    with pytest.raises(ValueError, match=message):
        fit_log_odds_map(np.array(z), np.array(y))


def test_out_of_fold_log_odds_come_from_models_that_did_not_see_the_row(synthetic_frame, monkeypatch):
    from router_model import train as T

    rows = synthetic_frame.iloc[:1500].reset_index(drop=True)
    rows["row"] = np.arange(len(rows))
    seen: list[set[int]] = []
    fit = T.fit_submodels

    def recording(frame, config):
        seen.append(set(frame["row"]))
        return fit(frame, config)

    monkeypatch.setattr(T, "fit_submodels", recording)
    z = T.out_of_fold_log_odds(rows, T.TrainConfig(), folds=4)
    assert len(seen) == 4 and all(len(s) == 1125 for s in seen)  # each fold model: 3 of 4 folds
    for fitted_on in seen:
        held = np.array(sorted(set(range(len(rows))) - fitted_on))
        # The fold model's own log-odds on its held rows are exactly the out-of-fold values.
        model = fit(rows.iloc[sorted(fitted_on)], T.TrainConfig())
        for route in F.ROUTES:
            X = rows.iloc[held][list(F.ROUTE_FEATURES[route])].to_numpy(float)
            np.testing.assert_allclose(z[route][held], T.log_odds(model[route], X), rtol=0, atol=1e-12)
    assert set().union(*(set(range(len(rows))) - s for s in seen)) == set(range(len(rows)))


def test_the_map_is_fitted_on_out_of_fold_not_in_sample_log_odds(synthetic_frame):
    from router_model import train as T

    config = T.TrainConfig()
    models, maps, scores = T.fit_calibrated(synthetic_frame, config)
    y = synthetic_frame[F.TARGET].to_numpy()
    z = T.out_of_fold_log_odds(synthetic_frame, config)
    for route in F.ROUTES:
        assert maps[route] == pytest.approx(fit_log_odds_map(z[route], y), abs=1e-9)
        X = synthetic_frame[list(F.ROUTE_FEATURES[route])].to_numpy(float)
        in_sample = fit_log_odds_map(T.log_odds(models[route].estimator, X), y)
        assert maps[route] != pytest.approx(in_sample, abs=1e-6)
        np.testing.assert_allclose(
            scores[route], expit(maps[route][0] * z[route] + maps[route][1]), atol=1e-12
        )


@pytest.mark.parametrize("route", F.ROUTES)
def test_calibrated_route_is_its_pipeline_then_the_map(router, synthetic_frame, route):
    model = router.submodels[route]
    X = synthetic_frame[list(F.ROUTE_FEATURES[route])].to_numpy(float)
    raw = model.estimator.predict_proba(X)[:, 1]
    expected = expit(model.slope * np.log(raw / (1 - raw)) + model.intercept)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), (model.predict_proba(X)[:, 1] > 0.5).astype(int))


@pytest.mark.parametrize("route", F.ROUTES)
def test_calibrated_route_saves_and_loads_with_trusted_types_only(router, synthetic_frame, tmp_path, route):
    from router_model.scorers import compile_scorer
    from router_model.submodels import load_submodel, save_submodel, untrusted_types

    path = str(tmp_path / f"{route}.skops")
    save_submodel(router.submodels[route], path)
    assert untrusted_types(path) == []
    back = load_submodel(path)
    assert isinstance(back, LogOddsCalibrated)
    X = synthetic_frame[list(F.ROUTE_FEATURES[route])].to_numpy(float)
    np.testing.assert_array_equal(back.predict_proba(X), router.submodels[route].predict_proba(X))
    scorer = compile_scorer(back)
    assert scorer.__name__ == "poisonous_probability", "the calibrated pipeline must take the fast path"
    np.testing.assert_allclose(scorer(X), back.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_calibrated_unknown_estimator_falls_back_to_predict_proba(synthetic_frame):
    from sklearn.linear_model import LogisticRegression

    from router_model.scorers import compile_scorer

    X = synthetic_frame[list(F.LR_FEATURES)].to_numpy(float)
    y = synthetic_frame[F.TARGET].to_numpy()
    model = LogOddsCalibrated(LogisticRegression(max_iter=500).fit(X, y), 0.7, -0.2)
    scorer = compile_scorer(model)
    assert scorer.__name__ == "<lambda>"
    np.testing.assert_allclose(scorer(X), model.predict_proba(X)[:, 1])


# --- the "safe" threshold ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"threshold": "safe"}, ("auto", "safe", None)),
        ({"threshold": " Safe "}, ("auto", "safe", None)),
        ({"model": "naive_bayes", "threshold": "safe"}, ("naive_bayes", "safe", None)),
        ({"threshold": 0.3}, ("auto", 0.3, None)),
        # the signature's typed spelling, and MLflow's filled-in defaults beside it
        ({"safe_threshold": True}, ("auto", "safe", None)),
        (
            {"threshold": 0.5, "safe_threshold": True, "explain": False, "explain_top": 0},
            ("auto", "safe", None),
        ),
    ],
)
def test_parse_params_accepts_safe(params, expected):
    assert parse_params(params) == expected


@pytest.mark.parametrize("threshold", ["safer", "", "0.5"])
def test_parse_params_refuses_other_strings(threshold):
    with pytest.raises(InvalidInputError, match=r"expected a number in \[0, 1\] or 'safe'"):
        parse_params({"threshold": threshold})


def test_safe_threshold_param_uses_each_routes_recorded_value(router, synthetic_frame):
    rows = synthetic_frame.drop(columns=F.TARGET)
    safe = {F.NAIVE_BAYES: 0.3, F.LOGISTIC_REGRESSION: 0.6}
    custom = Router(router.submodels, router.preferred, safe_thresholds=safe)
    lr_only = rows.copy()
    lr_only[list(F.NB_FEATURES)] = np.nan
    mixed = rows.copy().iloc[:200]
    mixed.iloc[::2] = lr_only.iloc[:200:2].to_numpy()
    out = custom.predict(mixed, {"threshold": "safe"})
    assert set(out["model"]) == set(F.ROUTES)
    for route, t in safe.items():
        part = out[out["model"] == route]
        expected = np.where(part["poisonous_probability"] >= t, "poisonous", "edible")
        np.testing.assert_array_equal(part["prediction"].astype(str), expected)


def test_trained_router_records_safe_thresholds(trained):
    assert set(trained.router.safe_thresholds) == set(F.ROUTES)
    for route, found in trained.safe_thresholds.items():
        assert trained.router.safe_thresholds[route] == found.threshold
        assert found.poisonous_share <= 0.01
        assert 0.0 <= found.false_alarm_rate <= 1.0


def test_safe_threshold_param_without_recorded_values_names_the_problem(router, synthetic_frame):
    old = Router(router.submodels, router.preferred)
    with pytest.raises(InvalidInputError, match="records no safe_threshold_1pct"):
        old.predict(synthetic_frame.drop(columns=F.TARGET).head(3), {"threshold": "safe"})


# --- the gate ----------------------------------------------------------------------------------


def miscalibrated(router: Router, slope: float) -> Router:
    """The same router with each route's log-odds multiplied by ``slope``: the same ranking."""
    return Router(
        {
            r: LogOddsCalibrated(m.estimator, m.slope * slope, m.intercept)
            for r, m in router.submodels.items()
        },
        router.preferred,
    )


def evaluation(trained, version, candidate, champion_version=None, champion=None) -> dict:
    """What :func:`pipeline.evaluate_against_champion` returns, on the trained fixture's held-out rows."""
    counts = trained.test[F.TARGET].value_counts()
    yardstick = {
        "name": f"version {version}'s held-out rows",
        "rows": len(trained.test),
        "edible": int(counts[0]),
        "poisonous": int(counts[1]),
        "candidate": candidate,
        "champion": champion,
    }
    return {
        "version": version,
        "data_source": "path",
        "champion_version": champion_version,
        "champion_data_source": "path" if champion_version else None,
        "candidate": candidate,
        "champion": champion,
        "yardsticks": [yardstick],
    }


@pytest.mark.parametrize("slope", [3.0, 0.25])  # over- and under-confident
def test_gate_refuses_a_miscalibrated_version_however_good_its_auc(trained, slope):
    honest = evaluate(trained.router, trained.test)
    bad = evaluate(miscalibrated(trained.router, slope), trained.test)
    for route in F.ROUTES:
        # Equal up to ties that rounding makes or breaks (P = 1.0 once the log-odds pass 37).
        assert bad[f"{route}_roc_auc"] == pytest.approx(honest[f"{route}_roc_auc"], abs=1e-3)
    decision = pipeline.decide(evaluation(trained, 2, bad, 1, honest))
    assert not decision.promote
    assert decision.reason.startswith("version 2 is miscalibrated on held-out rows: naive_bayes ECE")
    first = pipeline.decide(evaluation(trained, 1, bad))
    assert not first.promote and "miscalibrated" in first.reason


def test_gate_passes_the_calibrated_version(trained):
    honest = evaluate(trained.router, trained.test)
    assert pipeline.calibration_refusal({"version": 1, "candidate": honest}) is None
    assert pipeline.decide(evaluation(trained, 1, honest)).promote
    assert pipeline.decide(evaluation(trained, 2, honest, 1, honest)).promote


@pytest.mark.parametrize(
    ("ece", "chance", "refused"),
    [(0.029, 0.005, False), (0.031, 0.005, True), (0.06, 0.02, False), (0.061, 0.02, True)],
)
def test_gate_limit_is_the_target_plus_twice_the_chance_level(ece, chance, refused):
    metrics = {}
    for route in F.ROUTES:
        metrics[f"{route}_ece"] = 0.0
        metrics[f"{route}_ece_chance"] = chance
    metrics[f"{F.LOGISTIC_REGRESSION}_ece"] = ece
    found = pipeline.calibration_refusal({"version": 3, "candidate": metrics, "champion_version": 2})
    assert (found is not None) == refused
    if refused:
        assert found.reason == (
            f"version 3 is miscalibrated on held-out rows: logistic_regression ECE {ece:.4f} > {0.02 + 2 * chance:.4f}"
        )


# --- the targets on the real data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_trained(real_frame):
    from router_model.train import train

    return train(real_frame)


@pytest.mark.parametrize("route", F.ROUTES)
def test_real_data_targets_hold_on_the_held_out_split(real_trained, route):
    m = real_trained.metrics
    assert m[f"{route}_ece"] <= 0.02
    for t in (0.02, 0.05, 0.1):
        assert m[f"{route}_poisonous_share_below_{t:g}"] <= t
    y = real_trained.test[F.TARGET].to_numpy()
    raw = real_trained.router.submodels[route].estimator.predict_proba(
        real_trained.test[list(F.ROUTE_FEATURES[route])].to_numpy(float)
    )[:, 1]
    from router_model.train import binary_metrics

    before = binary_metrics(y, raw)
    assert abs(m[f"{route}_roc_auc"] - before["roc_auc"]) <= 0.002
    assert m[f"{route}_log_loss"] <= before["log_loss"]


def test_gate_refuses_the_uncalibrated_naive_bayes_on_the_real_held_out_rows(real_trained):
    uncalibrated = Router(
        {route: model.estimator for route, model in real_trained.router.submodels.items()},
        real_trained.router.preferred,
    )
    metrics = evaluate(uncalibrated, real_trained.test)
    refused = pipeline.calibration_refusal({"version": 1, "candidate": metrics})
    assert refused is not None and "naive_bayes ECE 0.06" in refused.reason
    assert "logistic_regression" not in refused.reason


def test_retrain_with_a_miscalibrated_map_registers_it_as_challenger_not_champion(fresh_store, monkeypatch):
    from router_model import registry, settings, synthetic, train

    path = fresh_store / "train.csv"
    synthetic.make_synthetic(3000).to_csv(path, index=False)
    # Every route's map triples its fitted slope: the ranking (and ROC-AUC) stays, the probabilities lie.
    fitted = train.fit_log_odds_map
    monkeypatch.setattr(train, "fit_log_odds_map", lambda z, y: (3 * fitted(z, y)[0], fitted(z, y)[1]))
    outcome = pipeline.retrain(path=str(path))
    assert outcome["alias"] == settings.CHALLENGER
    assert outcome["decision"]["reason"].startswith("version 1 is miscalibrated on held-out rows")
    assert registry.alias_version(settings.CHAMPION) is None
    assert registry.client().get_model_version(settings.MODEL_NAME, "1").tags["gate"] == "rejected"


def test_a_tiny_file_trains_with_the_identity_map_instead_of_failing(caplog):
    from router_model import data, synthetic
    from router_model.train import IDENTITY_MAP, train

    result = train(data.validate_training_frame(synthetic.make_synthetic(20, seed=1)))
    assert IDENTITY_MAP in result.calibration.values()
    assert "No calibration map for" in caplog.text


@pytest.mark.parametrize(("given", "parsed"), [("safe", "safe"), ("SAFE", "safe"), ("0.07", 0.07)])
def test_predict_cli_takes_a_number_or_safe(given, parsed):
    from router_model.cli import build_parser

    assert build_parser().parse_args(["predict", "in.csv", "--threshold", given]).threshold == parsed


def test_predict_cli_refuses_another_word(capsys):
    from router_model.cli import build_parser

    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["predict", "in.csv", "--threshold", "careful"])
    assert stopped.value.code == 2
    assert "expected a number in [0, 1] or 'safe', got 'careful'" in capsys.readouterr().err
