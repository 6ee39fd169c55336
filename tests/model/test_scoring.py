"""Batch scoring of files: formats, chunking, bad rows (fail or mark), and nothing left half-written."""

import numpy as np
import pandas as pd
import pytest

from router_model import features as F
from router_model.scoring import ScoringError, score_file


@pytest.fixture(scope="module")
def rows(registered):
    """Mixed rows: both sets, NB only, LR only, with an id column to keep."""
    frame = pd.read_csv(registered["data"]["path"]).drop(columns=["class"]).iloc[:300].reset_index(drop=True)
    frame.loc[100:199, list(F.LR_FEATURES)] = np.nan
    frame.loc[200:299, list(F.NB_FEATURES)] = np.nan
    return frame.assign(id=range(len(frame)))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_formats_round_trip_in_small_chunks(rows, tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    {".csv": rows.to_csv, ".parquet": rows.to_parquet, ".json": rows.to_json}[suffix](
        src, **({"orient": "records"} if suffix == ".json" else {"index": False})
    )
    out = tmp_path / f"out{suffix}"
    assert score_file(src, out, chunk_rows=64, quiet=True) == len(rows)
    scored = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix](out)
    assert scored["id"].tolist() == list(range(len(rows)))
    expected = score_file(src, None, quiet=True)
    np.testing.assert_allclose(scored["poisonous_probability"], expected["poisonous_probability"], rtol=1e-9)
    assert scored["model"].astype(str).tolist()[99:101] == [expected["model"][99], F.NAIVE_BAYES]
    assert scored["model"].astype(str).tolist()[-1] == F.LOGISTIC_REGRESSION


def test_fail_names_the_file_row_and_leaves_no_output(rows, tmp_path):
    bad = rows.astype(object)
    bad.loc[250, "stem-color"] = 40
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    bad.to_csv(src, index=False)
    with pytest.raises(ScoringError, match=r"data row 250, column 'stem-color': got 40"):
        score_file(src, out, chunk_rows=64, quiet=True)
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_mark_scores_good_rows_and_explains_bad_ones(rows, tmp_path):
    bad = rows.astype(object)
    bad.loc[5, "cap-shape"] = "bell"
    bad.loc[150, list(F.NB_FEATURES)] = np.nan  # LR features are gone already: neither set
    bad.loc[260, "season"] = 7.0
    src, out = tmp_path / "in.csv", tmp_path / "out.parquet"
    bad.to_csv(src, index=False)
    assert score_file(src, out, chunk_rows=64, on_error="mark", quiet=True) == len(rows)
    scored = pd.read_parquet(out)
    flagged = scored.index[scored["error"].notna()].tolist()
    assert flagged == [5, 150, 260]
    assert "column 'cap-shape': got the string 'bell'" in scored.loc[5, "error"]
    assert scored.loc[150, "error"].startswith("completes neither feature set")
    assert "column 'season': got 7" in scored.loc[260, "error"]
    assert scored.loc[flagged, "prediction"].isna().all()
    assert scored.loc[flagged, "poisonous_probability"].isna().all()
    good = scored.drop(index=flagged)
    assert good["prediction"].isin(["edible", "poisonous"]).all()


def test_unknown_on_error_is_refused(rows, tmp_path):
    with pytest.raises(ScoringError, match=r"on_error must be one of \['fail', 'mark'\]"):
        score_file(tmp_path / "x.csv", None, on_error="skip")


def test_safe_threshold_scores_each_row_at_its_routes_recorded_value(rows, registered, tmp_path):
    import mlflow

    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    safe = mlflow.pyfunc.load_model(registered["model_uri"]).model_config["safe_threshold_1pct"]
    scored = score_file(src, None, params={"threshold": "safe"}, quiet=True)
    for route, threshold in safe.items():
        part = scored[scored["model"].astype(str) == route]
        assert len(part) > 0
        expected = np.where(part["poisonous_probability"] >= threshold, "poisonous", "edible")
        np.testing.assert_array_equal(part["prediction"].astype(str), expected)
