"""A retrain with the champion's data, code and training params registers nothing and moves nothing.

Each version records its fingerprint (data sha256, code sha256, effective training params) as tags;
``pipeline.training_needed`` compares the next retrain's with the champion's before anything trains.
Any one of the three differing trains; ``force`` trains anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from router_model import pipeline, registry, settings, synthetic, trust
from router_model.errors import ConfigError
from router_model.train import TrainConfig


def champion() -> int | None:
    found = registry.alias_version(settings.CHAMPION)
    return int(found.version) if found else None


def versions() -> list[int]:
    return sorted(
        int(v.version) for v in registry.client().search_model_versions(f"name='{settings.MODEL_NAME}'")
    )


def runs() -> int:
    registry.client()  # this test's store: MLflow keeps the last URI set process-wide
    return len(mlflow.search_runs(search_all_experiments=True))


@pytest.fixture
def first(small_csv: str) -> dict:
    """Version 1, champion, trained on ``small_csv`` with default params."""
    outcome = pipeline.retrain(path=small_csv)
    assert (outcome["version"], outcome["alias"]) == (1, "champion")
    return outcome


def test_each_version_records_its_fingerprint(first: dict, small_csv: str) -> None:
    tags = registry.version_tags(1)
    params = json.loads(tags[registry.TAG_TRAIN_PARAMS])
    assert params == TrainConfig().effective()
    assert (params["split_seed"], params["test_size"], params["nb_bins"]) == (settings.SPLIT_SEED, 0.2, 32)
    assert tags["data_sha256"] == first["data"]["sha256"]
    assert tags[trust.TAG_CODE_SHA256] == trust.installed_digest()
    assert pipeline.Fingerprint.from_tags(tags) == pipeline.Fingerprint.of(first["data"]["sha256"])


def test_same_data_code_and_params_register_nothing_and_say_so(first: dict, small_csv: str) -> None:
    before = runs()
    again = pipeline.retrain(path=small_csv)
    assert again["alias"] is None
    assert again["check"]["train"] is False
    assert again["check"]["champion_version"] == 1
    reason = again["check"]["reason"]
    assert reason.startswith("nothing to train: data (sha256 ")
    assert "equal champion version 1's; nothing registered, champion unchanged" in reason
    assert "--force, DAG param force" in reason
    assert (versions(), champion(), runs()) == ([1], 1, before)
    assert "version" not in again and "decision" not in again


def test_explicit_defaults_are_the_same_params(first: dict, small_csv: str) -> None:
    """The effective params count, not how they were spelled: defaults given explicitly change nothing."""
    explicit = {"nb_bins": "32", "lr_orders": "3,2,1", "lr_c": 1}
    assert pipeline.retrain(path=small_csv, train_params=explicit)["alias"] is None
    assert versions() == [1]


def other_data(small_csv: str) -> dict:
    path = Path(small_csv).with_name("other.csv")
    synthetic.make_synthetic(3000, seed=7).to_csv(path, index=False)
    return {"path": str(path)}


def other_code(small_csv: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(trust, "installed_digest", lambda: "0" * 64)
    return {"path": small_csv}


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("data", lambda csv, mp: other_data(csv)),
        ("code", other_code),
        ("training params", lambda csv, mp: {"path": csv, "train_params": {"lr_c": 0.5}}),
    ],
    ids=["data", "code", "params"],
)
def test_each_difference_trains(first, small_csv, monkeypatch, what, change) -> None:
    outcome = pipeline.retrain(**change(small_csv, monkeypatch))
    assert outcome["check"]["train"] is True
    assert outcome["check"]["reason"].startswith(f"{what} (sha256 ")
    assert outcome["check"]["reason"].endswith("differ from champion version 1's")
    assert outcome["version"] == 2 and outcome["alias"] in ("champion", "challenger")
    assert versions() == [1, 2]


def test_force_trains_anyway(first: dict, small_csv: str) -> None:
    forced = pipeline.retrain(path=small_csv, force=True)
    assert forced["check"]["train"] is True
    assert forced["check"]["reason"].endswith("equal champion version 1's, but force is set: training anyway")
    assert (forced["version"], forced["alias"], champion()) == (2, "champion", 2)
    # The copy is now champion and carries the same fingerprint: the next plain retrain stops again.
    assert pipeline.retrain(path=small_csv)["check"]["champion_version"] == 2
    assert versions() == [1, 2]


def test_a_champion_without_a_fingerprint_is_retrained(first: dict, small_csv: str) -> None:
    """Versions registered before fingerprints were recorded cannot be matched: train."""
    registry.client().delete_model_version_tag(settings.MODEL_NAME, "1", registry.TAG_TRAIN_PARAMS_SHA256)
    outcome = pipeline.retrain(path=small_csv)
    assert outcome["check"]["reason"] == (
        "champion version 1 records no fingerprint of its data, code and params"
    )
    assert outcome["version"] == 2


def test_no_champion_trains(fresh_store: Path) -> None:
    check = pipeline.training_needed("a" * 64)
    assert check == {"train": True, "reason": "no champion yet", "champion_version": None}


def test_bad_params_fail_before_any_data_is_read(fresh_store: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown training param\(s\) \['depth'\]"):
        pipeline.retrain(path=str(fresh_store / "does-not-exist.csv"), train_params={"depth": 3})
