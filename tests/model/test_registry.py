"""Registry and gate: champion/challenger aliases, what a run records, and what failure leaves alone."""

import mlflow
import pandas as pd
import pytest

from router_model import data, pipeline, registry, settings, terms
from router_model import features as F
from router_model.settings import WEAK_TRAIN_PARAMS


def champion():
    found = registry.alias_version(settings.CHAMPION)
    return int(found.version) if found else None


def versions():
    return sorted(
        int(v.version) for v in registry.client().search_model_versions(f"name='{settings.MODEL_NAME}'")
    )


def test_gate_promotes_first_keeps_champion_against_weaker_and_promotes_equal(small_csv):
    first = pipeline.retrain(path=small_csv)
    assert (first["version"], first["alias"], champion()) == (1, "champion", 1)
    assert first["decision"]["reason"] == "first version: no champion yet"

    weak = pipeline.retrain(path=small_csv, train_params=WEAK_TRAIN_PARAMS)
    assert (weak["version"], weak["alias"], champion()) == (2, "challenger", 1)
    assert "is worse than champion version 1" in weak["decision"]["reason"]
    assert int(registry.alias_version(settings.CHALLENGER).version) == 2
    assert registry.client().get_model_version(settings.MODEL_NAME, "2").tags["gate"] == "rejected"

    # Same data, code and params as the champion: only a forced retrain gets that far.
    margin = pipeline.retrain(path=small_csv, min_improvement=0.01, force=True)
    assert (margin["alias"], champion()) == ("challenger", 1)

    equal = pipeline.retrain(path=small_csv, force=True)
    assert (equal["version"], equal["alias"], champion()) == (4, "champion", 4)
    assert "beats or matches champion version 1" in equal["decision"]["reason"]


def test_bad_data_registers_nothing_and_leaves_champion(small_csv, fresh_store):
    pipeline.retrain(path=small_csv)
    bad = fresh_store / "bad.csv"
    frame = pd.read_csv(small_csv).astype(object)
    frame.loc[10, "gill-attachment"] = "adnate"
    frame.to_csv(bad, index=False)
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(data.DataError, match=r"row 10, column 'gill-attachment': got the string 'adnate'"):
        pipeline.retrain(path=str(bad))
    assert versions() == [1]
    assert champion() == 1
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_same_retrain_key_does_not_register_twice(small_csv):
    a = pipeline.train_and_register(small_csv, retrain_key="dag/run-1")
    b = pipeline.train_and_register(small_csv, retrain_key="dag/run-1")
    assert a == b
    assert versions() == [a["version"]]


def test_run_records_params_metrics_data_and_plots(small_csv):
    out = pipeline.retrain(path=small_csv)
    run = mlflow.get_run(out["run_id"])
    assert run.data.tags["data_source"] == "path"
    assert run.data.tags["data_sha256"] == data.file_sha256(small_csv)
    assert len(run.data.tags.get("git_commit", "")) == 40
    for key in (
        "naive_bayes_roc_auc",
        "logistic_regression_log_loss",
        "auto_brier",
        "naive_bayes_validation_roc_auc",
        "naive_bayes_ece",
        "logistic_regression_ece_chance",
        "naive_bayes_poisonous_share_below_0.05",
        "logistic_regression_brier",
        "naive_bayes_safe_threshold_1pct",
        "logistic_regression_safe_threshold_false_alarm_rate",
    ):
        assert key in run.data.metrics
    assert run.data.params["nb_orders"] == "3" and run.data.params["preferred_route"] in (
        "naive_bayes",
        "logistic_regression",
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(out["run_id"], "plots")}
    assert artifacts == {
        "plots/roc.png",
        "plots/confusion_matrix.png",
        "plots/reliability.png",
        registry.TERMS_FIGURE_ARTIFACT,
        registry.TERMS_ARTIFACT,
    }


def test_run_logs_the_registered_models_largest_terms(small_csv):
    out = pipeline.retrain(path=small_csv)
    logged = mlflow.artifacts.download_artifacts(f"runs:/{out['run_id']}/{registry.TERMS_ARTIFACT}")
    table = pd.read_csv(logged, float_precision="round_trip", keep_default_na=False)
    submodels = registry.load_router(out["model_uri"]).submodels
    expected = terms.terms_table(submodels, registry.holdout_frame(out["version"]))
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert set(table["route"]) == set(F.ROUTES)
    for route, features in zip(table["route"], table["features"], strict=True):
        assert features == "" or set(features.split(terms.JOIN)) <= set(F.ROUTE_FEATURES[route])


def test_version_records_its_safe_thresholds_in_tags_and_model_config(small_csv):
    out = pipeline.retrain(path=small_csv)
    run = mlflow.get_run(out["run_id"])
    tags = registry.client().get_model_version(settings.MODEL_NAME, str(out["version"])).tags
    config = mlflow.pyfunc.load_model(out["model_uri"]).model_config
    for route in F.ROUTES:
        threshold = float(tags[f"safe_threshold_1pct.{route}"])
        assert 0.0 <= threshold <= 1.0
        assert (
            threshold
            == config["safe_threshold_1pct"][route]
            == run.data.metrics[f"{route}_safe_threshold_1pct"]
        )
        assert float(tags[f"safe_threshold_false_alarm_rate.{route}"]) == pytest.approx(
            config["safe_threshold_false_alarm_rate"][route]
        )


def test_synthetic_source_is_recorded(fresh_store):
    out = pipeline.retrain(source="synthetic")
    assert mlflow.get_run(out["run_id"]).data.tags["data_source"] == "synthetic"


def test_evaluation_refuses_a_changed_file(small_csv):
    out = pipeline.train_and_register(small_csv)
    with open(small_csv, "a") as handle:
        handle.write(pd.read_csv(small_csv).iloc[:1].to_csv(header=False, index=False))
    with pytest.raises(pipeline.PipelineError, match="changed since version 1 was trained"):
        pipeline.evaluate_against_champion(out["version"], small_csv)
    assert champion() is None


def test_local_store_keeps_artifacts_in_the_project_home(small_csv, fresh_store):
    out = pipeline.train_and_register(small_csv)
    assert mlflow.get_run(out["run_id"]).info.artifact_uri.startswith((fresh_store / "mlartifacts").as_uri())


def test_resolve_names_the_version_a_models_uri_points_at(registered):
    version = int(registered["version"])
    assert int(registry.resolve(f"models:/{settings.MODEL_NAME}@{settings.CHAMPION}").version) == version
    assert int(registry.resolve(f"models:/{settings.MODEL_NAME}/{version}").version) == version


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("runs:/abc/model", r"runs:/abc/model is not a models:/ URI; serve a registered version"),
        (f"models:/{settings.MODEL_NAME}@nobody", rf"cannot resolve models:/{settings.MODEL_NAME}@nobody: "),
        (f"models:/{settings.MODEL_NAME}/999", rf"cannot resolve models:/{settings.MODEL_NAME}/999: "),
        ("models:/no-such-model@champion", r"cannot resolve models:/no-such-model@champion: "),
    ],
)
def test_resolve_refuses_what_names_no_registered_version(registered, uri, message):
    with pytest.raises(registry.RegistryError, match=message):
        registry.resolve(uri)
