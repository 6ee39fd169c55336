"""Each version's log-odds tables: exact, safe to read, and what the served router scores from."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from router_model import additive, registry
from router_model import features as F
from router_model.additive import AdditiveModel, Codes, TablesFormatError
from router_model.router import GoldenAnswerError, Router
from router_model.scorers import additive_model, checked_additive, probe_rows


@pytest.fixture(scope="module")
def model_dir(registered, tmp_path_factory) -> Path:
    """A local copy of the registered champion's model folder."""
    local = Path(mlflow.artifacts.download_artifacts(registered["model_uri"]))
    copy = tmp_path_factory.mktemp("model") / "model"
    shutil.copytree(local, copy)
    return copy


@pytest.mark.parametrize("route", F.ROUTES)
def test_tables_round_trip_exactly_and_score_as_the_estimator(router, route, tmp_path):
    estimator = router.submodels[route]
    model = checked_additive(estimator)
    assert model is not None
    path = tmp_path / additive.tables_filename(route)
    model.save(path)
    back = AdditiveModel.load(path)
    X = probe_rows(F.ROUTE_FEATURES[route], n_rows=2000, seed=3)
    np.testing.assert_array_equal(back.log_odds(X), model.log_odds(X))
    np.testing.assert_allclose(
        back.poisonous_probability(X), estimator.predict_proba(X)[:, 1], rtol=0, atol=1e-9
    )
    assert back.codes.combinations_ == model.codes.combinations_


@pytest.mark.parametrize("route", F.ROUTES)
def test_codes_code_rows_as_the_fitted_bincross(router, route):
    fitted = router.submodels[route].estimator.steps[0][1]
    X = probe_rows(F.ROUTE_FEATURES[route], n_rows=500, seed=5)
    codes = Codes.of(fitted)
    np.testing.assert_array_equal(codes.base_codes(X), fitted.base_codes(X))
    np.testing.assert_array_equal(np.column_stack(list(codes.iter_codes(X))), fitted.transform(X))


def test_tables_files_hold_no_pickle(router, tmp_path):
    path = tmp_path / "t.npz"
    additive_model(router.submodels[F.NAIVE_BAYES]).save(path)
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def _rewrite(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    with open(path, "wb") as out:
        np.savez(out, **arrays)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (
            lambda p: p.write_bytes(b"not an npz file"),
            r"t\.npz: not a tables file this code reads \(not an \.npz archive\)",
        ),
        (
            lambda p: _rewrite(p, meta=np.array(json.dumps({"format": 99}))),
            r"t\.npz: tables format 99, expected 1",
        ),
        (lambda p: _rewrite(p, meta=np.array("{}")), r"t\.npz: tables format None, expected 1"),
    ],
    ids=["not-npz", "newer-format", "no-format"],
)
def test_a_file_this_code_cannot_read_is_refused_by_name(router, tmp_path, damage, match):
    path = tmp_path / "t.npz"
    additive_model(router.submodels[F.LOGISTIC_REGRESSION]).save(path)
    damage(path)
    with pytest.raises(TablesFormatError, match=match):
        AdditiveModel.load(path)


def test_every_registered_version_carries_its_tables(model_dir):
    assert additive.carries_tables(model_dir)
    artifacts = {p.name for p in (model_dir / "artifacts").iterdir()}
    assert {additive.tables_filename(r) for r in F.ROUTES} | {f"{r}.skops" for r in F.ROUTES} <= artifacts


def test_the_loaded_router_scores_and_explains_without_scikit_learn(model_dir):
    """What a model server does when it loads a version: neither scikit-learn nor skops is imported."""
    probe = f"""
import sys, json, mlflow.pyfunc, pandas as pd
from router_model import features as F
model = mlflow.pyfunc.load_model({str(model_dir)!r})
out = model.predict(pd.DataFrame(F.example_rows()), params={{"explain": True}})
print(json.dumps({{"modules": sorted(m for m in ("sklearn", "skops") if m in sys.modules),
                  "routes": list(out["model"]), "explained": int(out["explanation"].notna().sum())}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["modules"] == []
    assert sorted(got["routes"]) == sorted(F.ROUTES)
    assert got["explained"] == len(F.example_rows())


def test_the_estimators_load_on_first_use_and_agree_with_the_tables(model_dir):
    model = mlflow.pyfunc.load_model(str(model_dir))
    router = model.unwrap_python_model().router
    rows = pd.DataFrame(F.example_rows() * 3)
    out = model.predict(rows)
    for route in F.ROUTES:
        mine = (out["model"] == route).to_numpy()
        X = rows.loc[mine, list(F.ROUTE_FEATURES[route])].to_numpy(float)
        own = router.submodels[route].predict_proba(X)[:, 1]
        np.testing.assert_allclose(out.loc[mine, "poisonous_probability"], own, rtol=0, atol=1e-9)


def test_a_tampered_table_fails_the_golden_check_at_load(model_dir, tmp_path):
    tampered = tmp_path / "model"
    shutil.copytree(model_dir, tampered)
    path = tampered / "artifacts" / additive.tables_filename(F.LOGISTIC_REGRESSION)
    with np.load(path, allow_pickle=False) as data:
        shifted = data["table_0"] + 0.5
    _rewrite(path, table_0=shifted)
    with pytest.raises(
        GoldenAnswerError, match=r"golden row \d+ \(logistic_regression\): poisonous_probability"
    ):
        mlflow.pyfunc.load_model(str(tampered))


def test_a_version_logged_before_the_tables_loads_its_estimators(model_dir, tmp_path):
    """Older versions carry only skops files: they load and answer as before (and a server imports skops)."""
    old = tmp_path / "model"
    shutil.copytree(model_dir, old)
    for route in F.ROUTES:
        (old / "artifacts" / additive.tables_filename(route)).unlink()
    spec = yaml.safe_load((old / "MLmodel").read_text())
    for route in F.ROUTES:
        del spec["flavors"]["python_function"]["artifacts"][additive.artifact_key(route)]
    (old / "MLmodel").write_text(yaml.safe_dump(spec))
    assert not additive.carries_tables(old)
    loaded = mlflow.pyfunc.load_model(str(old))
    router = loaded.unwrap_python_model().router
    assert isinstance(router.submodels, dict)
    rows = pd.DataFrame(F.example_rows())
    new = mlflow.pyfunc.load_model(str(model_dir)).predict(rows, params={"explain": True})
    pd.testing.assert_frame_equal(loaded.predict(rows, params={"explain": True}), new)


def test_only_a_server_of_an_older_version_imports_skops(model_dir, tmp_path):
    probe = (
        "import sys; from router_model import serving; serving.prepare_process(sys.argv[1]); "
        "print('skops' in sys.modules)"
    )
    run = [sys.executable, "-c", probe]
    assert (
        subprocess.run([*run, str(model_dir)], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
    assert (
        subprocess.run([*run, str(tmp_path)], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )


def test_registry_writes_no_tables_for_an_estimator_it_does_not_know(router, tmp_path):
    from sklearn.dummy import DummyClassifier

    dummy = DummyClassifier(strategy="prior").fit(np.zeros((4, 4)), [0, 1, 1, 0])
    mixed = {F.NAIVE_BAYES: dummy, F.LOGISTIC_REGRESSION: router.submodels[F.LOGISTIC_REGRESSION]}
    assert registry.tables_artifacts(Router(mixed, F.LOGISTIC_REGRESSION).tables, tmp_path) == {}
    assert registry.tables_artifacts(router.tables, tmp_path) == {
        additive.artifact_key(r): str(tmp_path / additive.tables_filename(r)) for r in F.ROUTES
    }
