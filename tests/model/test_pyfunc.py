"""The logged router: a save/load round trip through the registry, with pickle switched off."""

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from router_model import features as F
from router_model import registry


@pytest.fixture(scope="module")
def loaded(registered):
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    registry.client()
    return mlflow.pyfunc.load_model("models:/mushroom-router@champion")


@pytest.fixture(scope="module")
def csv_rows(registered, tmp_path_factory):
    """Rows as a notebook gets them: pd.read_csv of the data file (integer columns)."""
    frame = pd.read_csv(registered["data"]["path"]).drop(columns=["class"]).iloc[:200]
    assert frame["cap-shape"].dtype == np.int64
    return frame


def test_loads_without_pickle_and_has_no_pickle_files(loaded, registered):
    local = Path(mlflow.artifacts.download_artifacts(registered["model_uri"]))
    suffixes = {p.suffix for p in local.rglob("*") if p.is_file()}
    assert ".skops" in suffixes
    assert not suffixes & {".pkl", ".pickle", ".cloudpickle", ".joblib"}
    assert loaded.metadata.get_params_schema() is not None


def test_round_trip_matches_the_submodels_own_predictions(loaded, csv_rows):
    router = loaded.unwrap_python_model().router
    out = loaded.predict(csv_rows)
    for route in F.ROUTES:
        rows = (out["model"] == route).to_numpy()
        if rows.any():
            own = router.submodels[route].predict_proba(
                csv_rows.loc[rows, list(F.ROUTE_FEATURES[route])].to_numpy(float)
            )
            np.testing.assert_allclose(out.loc[rows, "poisonous_probability"], own[:, 1])
    assert len(out) == len(csv_rows)


def test_round_trip_matches_the_in_memory_router(loaded, registered, csv_rows):
    from router_model.data import load_training_frame
    from router_model.train import TrainConfig, train

    fresh = train(load_training_frame(registered["data"]["path"]), TrainConfig())
    expected = fresh.router.predict(csv_rows)
    pd.testing.assert_frame_equal(loaded.predict(csv_rows), expected)


def test_json_batch_with_missing_values_and_both_kinds(loaded, csv_rows):
    records = json.loads(csv_rows.iloc[:4].to_json(orient="records"))
    for key in F.NB_FEATURES:
        records[0][key] = None
    for key in F.LR_FEATURES:
        records[1].pop(key)
    records[2] = {k.replace("-", "_"): v for k, v in records[2].items()}
    out = loaded.predict(pd.DataFrame(records))
    assert out["model"].tolist()[:2] == [F.LOGISTIC_REGRESSION, F.NAIVE_BAYES]


@pytest.mark.parametrize("route", F.ROUTES)
def test_params_pass_through_pyfunc(loaded, csv_rows, route):
    out = loaded.predict(csv_rows.iloc[:10], params={"model": route, "threshold": 0.0})
    assert (out["model"] == route).all()
    assert (out["prediction"] == "poisonous").all()


def test_bad_input_raises_mlflow_invalid_parameter_value(loaded, csv_rows):
    bad = csv_rows.iloc[:3].copy()
    bad.loc[bad.index[1], "gill-color"] = 12
    with pytest.raises(
        mlflow.exceptions.MlflowException, match=r"row 1, column 'gill-color': got 12"
    ) as info:
        loaded.predict(bad)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_signature_declares_params_only_and_example_shows_both_sets(registered):
    info = mlflow.models.get_model_info(registered["model_uri"])
    assert info.signature.inputs is None
    params = {p.name: (p.dtype.name, p.default) for p in info.signature.params}
    assert params == {
        "model": ("string", "auto"),
        "threshold": ("double", 0.5),
        "safe_threshold": ("boolean", False),
        "explain": ("boolean", False),
        "explain_top": ("long", 0),
    }
    example = pd.DataFrame(registry.input_example())
    assert (
        example.iloc[0][list(F.NB_FEATURES)].notna().all()
        and example.iloc[0][list(F.LR_FEATURES)].isna().all()
    )
    assert (
        example.iloc[1][list(F.LR_FEATURES)].notna().all()
        and example.iloc[1][list(F.NB_FEATURES)].isna().all()
    )
    local = Path(mlflow.artifacts.download_artifacts(registered["model_uri"]))
    assert (local / "serving_input_example.json").is_file()


def test_preferred_route_is_recorded_in_model_config(loaded, registered):
    config = loaded.model_config
    assert config["preferred_route"] in F.ROUTES
    assert set(config["validation_roc_auc"]) == set(F.ROUTES)
