"""Training data: resolution order, the synthetic sample, validation of bad files, Kaggle."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router_model import data, kaggle, synthetic
from router_model import features as F


@pytest.fixture
def good_csv(tmp_path):
    path = tmp_path / "good.csv"
    synthetic.make_synthetic(200).to_csv(path, index=False)
    return path


def test_synthetic_is_deterministic_and_shaped_like_the_real_file():
    a, b = synthetic.make_synthetic(500), synthetic.make_synthetic(500)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == list(F.ALL_FEATURES) + ["class"]
    assert set(a["class"]) == {0, 1}
    assert 0.35 < a["class"].mean() < 0.75
    data.validate_training_frame(a)


def test_synthetic_seed_changes_rows():
    assert not synthetic.make_synthetic(500, seed=1).equals(synthetic.make_synthetic(500, seed=2))


def test_resolve_prefers_explicit_path(good_csv, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "x")
    resolved = data.resolve_data(path=str(good_csv))
    assert resolved.source == "path"
    assert resolved.path == str(good_csv.resolve())
    assert resolved.sha256 == data.file_sha256(good_csv)


def test_resolve_reads_mushroom_data_env(good_csv, monkeypatch):
    monkeypatch.setenv("MUSHROOM_DATA", str(good_csv))
    assert data.resolve_data().source == "path"


def test_resolve_falls_back_to_synthetic_loudly(fresh_store, caplog):
    resolved = data.resolve_data()
    assert resolved.source == "synthetic"
    assert Path(resolved.path).is_relative_to(fresh_store)
    assert "SYNTHETIC" in caplog.text
    assert data.resolve_data().sha256 == resolved.sha256


def test_resolve_missing_path_fails():
    with pytest.raises(data.DataError, match=r"data file not found: /nope\.csv"):
        data.resolve_data(path="/nope.csv")


def test_resolve_a_directory_says_it_is_one(tmp_path):
    with pytest.raises(
        data.DataError,
        match=r"data path .* is a directory; expected a CSV file such as mushroom_cleaned\.csv",
    ):
        data.resolve_data(path=str(tmp_path))


def test_resolve_unknown_source_fails():
    with pytest.raises(data.DataError, match="unknown data source 'ftp'"):
        data.resolve_data(source="ftp")


class FakeKaggle:
    """Stands in for kaggle.api.KaggleApi (no network here)."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.calls = []

    def authenticate(self):
        self.calls.append("authenticate")
        if self.mode == "exit":
            print("Kaggle's long help text")  # noqa: T201 - what the real client does
            raise SystemExit(1)

    def dataset_download_file(self, dataset, file_name, path=None, unzip=False):
        self.calls.append((dataset, file_name, unzip))
        if self.mode == "network":
            raise ConnectionError("Max retries exceeded with url: /api/v1/datasets\nmore detail")
        synthetic.make_synthetic(100).to_csv(Path(path) / file_name, index=False)
        return True


def test_kaggle_download_with_fake_client_is_cached(fresh_store):
    fake = FakeKaggle()
    resolved = data.resolve_data(source="kaggle", api_factory=lambda: fake)
    assert resolved.source == "kaggle"
    assert Path(resolved.path).name == "mushroom_cleaned.csv"
    assert fake.calls == ["authenticate", ("prishasawhney/mushroom-dataset", "mushroom_cleaned.csv", True)]
    again = FakeKaggle()
    assert data.resolve_data(source="kaggle", api_factory=lambda: again).path == resolved.path
    assert again.calls == []


def test_kaggle_is_chosen_automatically_when_credentials_exist(fresh_store, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle.kaggle_credentials_present()
    fake = FakeKaggle()
    monkeypatch.setattr(kaggle, "_default_kaggle_api", lambda: fake)
    assert data.resolve_data().source == "kaggle"


def test_kaggle_systemexit_becomes_one_line_error(fresh_store, capsys):
    with pytest.raises(data.DataError, match=r"^Kaggle authentication failed \(client exited with 1\)"):
        kaggle.download_kaggle(api_factory=lambda: FakeKaggle("exit"))
    assert "help text" not in capsys.readouterr().out


def test_kaggle_network_error_becomes_one_line_error(fresh_store):
    with pytest.raises(data.DataError, match=r"failed: Max retries exceeded with url: /api/v1/datasets$"):
        kaggle.download_kaggle(api_factory=lambda: FakeKaggle("network"))


def test_kaggle_without_credentials_fails_before_importing_the_client(fresh_store):
    assert not kaggle.kaggle_credentials_present()
    with pytest.raises(data.DataError, match="no Kaggle credentials: set KAGGLE_API_TOKEN"):
        data.resolve_data(source="kaggle")


@pytest.mark.parametrize(
    ("env", "present"),
    [
        ({"KAGGLE_API_TOKEN": "t"}, True),
        ({"KAGGLE_USERNAME": "u"}, False),
        ({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, True),
    ],
)
def test_credentials_detection(tmp_path, env, present):
    assert kaggle.kaggle_credentials_present({**env, "KAGGLE_CONFIG_DIR": str(tmp_path)}) is present


def test_credentials_file_counts(tmp_path):
    (tmp_path / "kaggle.json").write_text("{}")
    assert kaggle.kaggle_credentials_present({"KAGGLE_CONFIG_DIR": str(tmp_path)})


def _corrupt(frame, column, row, value):
    frame = frame.astype(object)
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["gill-color"]), r"missing required column\(s\) \['gill-color'\]"),
        (lambda f: f.drop(columns=["class"]), r"missing required column\(s\) \['class'\]"),
        (
            lambda f: _corrupt(f, "cap-shape", 3, "round"),
            r"row 3, column 'cap-shape': got the string 'round'.*example row 3",
        ),
        (
            lambda f: _corrupt(f, "stem-color", 5, 42),
            r"column 'stem-color': got 42; expected an integer code 0-12",
        ),
        (lambda f: _corrupt(f, "stem-width", 7, np.inf), r"column 'stem-width'.*infinite"),
        (
            lambda f: _corrupt(f, "season", 2, np.nan),
            r"column 'season' has 1 missing value\(s\).*example row 2",
        ),
        (
            lambda f: _corrupt(f, "class", 4, 2),
            r"column 'class' must be 0 \(edible\) or 1 \(poisonous\), got 2",
        ),
        (lambda f: f.assign(**{"class": 1}), r"only one class"),
        (lambda f: f.iloc[:0], r"no rows"),
    ],
)
def test_bad_training_files_name_the_column_and_a_row(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(synthetic.make_synthetic(50)).to_csv(path, index=False)
    with pytest.raises(data.DataError, match=message):
        data.load_training_frame(path)


def test_underscore_headers_are_accepted(tmp_path):
    path = tmp_path / "underscored.csv"
    frame = synthetic.make_synthetic(50)
    frame.columns = [c.replace("-", "_") for c in frame.columns]
    frame.to_csv(path, index=False)
    assert list(data.load_training_frame(path).columns) == list(F.ALL_FEATURES) + ["class"]


def test_unreadable_file_is_a_data_error(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(data.DataError):
        data.load_training_frame(path)


def test_split_is_stratified_and_fixed(synthetic_frame):
    train_a, test_a = data.split(synthetic_frame)
    _, test_b = data.split(synthetic_frame)
    assert len(test_a) == round(0.2 * len(synthetic_frame))
    assert test_a.index.equals(test_b.index)
    assert abs(test_a["class"].mean() - train_a["class"].mean()) < 0.01


def test_real_file_validates(real_frame):
    assert len(real_frame) == 54035
    assert int(real_frame["class"].sum()) == 29675
