"""The quality gate's yardstick: rows a retrain cannot choose, enough of them, and real data first.

Every case here was a silent wrong promotion before the gate scored both versions on the
champion's own held-out rows (stored with each version) as well as on the new file's.
"""

from pathlib import Path

import mlflow
import pytest

from router_model import data, pipeline, registry, settings, synthetic
from router_model.errors import ConfigError


def champion() -> int | None:
    found = registry.alias_version(settings.CHAMPION)
    return int(found.version) if found else None


def world(fresh_store: Path, name: str, rows: int, seed: int) -> str:
    """A training file from one synthetic 'world' (each seed draws its own species)."""
    path = fresh_store / f"{name}.csv"
    synthetic.make_synthetic(rows, seed=seed).to_csv(path, index=False)
    return str(path)


def test_each_version_stores_its_held_out_rows(fresh_store):
    path = world(fresh_store, "a", 3000, seed=1)
    out = pipeline.train_and_register(path)
    stored = registry.holdout_frame(out["version"])
    _, expected = data.split(data.load_training_frame(path))
    assert stored.reset_index(drop=True).equals(expected.reset_index(drop=True))
    assert registry.version_tags(out["version"])[registry.TAG_HOLDOUT_ROWS] == str(len(expected))


def test_a_retrain_cannot_win_by_bringing_rows_that_suit_it(fresh_store):
    """The issue's case: a model of another world beat the champion on its own rows only."""
    pipeline.retrain(path=world(fresh_store, "a", 3000, seed=1))
    other = pipeline.retrain(path=world(fresh_store, "b", 3000, seed=2))

    own, theirs = other["evaluation"]["yardsticks"]
    route = "naive_bayes_roc_auc"
    # What the old gate saw, and would have promoted on:
    assert own["candidate"][route] > own["champion"][route]
    # What it now sees as well:
    assert theirs["name"] == "champion version 1's held-out rows"
    assert theirs["candidate"][route] < theirs["champion"][route]
    assert (other["alias"], champion()) == ("challenger", 1)
    assert "is worse than champion version 1" in other["decision"]["reason"]
    assert "on champion version 1's held-out rows (600) naive_bayes ROC-AUC" in other["decision"]["reason"]


def test_same_file_is_one_yardstick_and_ties_still_promote(fresh_store):
    path = world(fresh_store, "a", 3000, seed=1)
    pipeline.retrain(path=path)
    again = pipeline.retrain(path=path, force=True)
    assert [y["name"] for y in again["evaluation"]["yardsticks"]] == ["version 2's held-out rows"]
    assert (again["alias"], champion()) == ("champion", 2)


@pytest.mark.parametrize("first", [True, False], ids=["first version", "against a champion"])
def test_too_few_held_out_rows_cannot_promote(fresh_store, first):
    if not first:
        pipeline.retrain(path=world(fresh_store, "a", 3000, seed=1))
    tiny = pipeline.retrain(path=world(fresh_store, "tiny", 20, seed=1))
    reason = tiny["decision"]["reason"]
    assert tiny["alias"] == "challenger"
    assert champion() == (None if first else 1)
    assert "cannot be judged" in reason and "are too few to judge" in reason
    assert f"the gate needs at least {settings.MIN_HOLDOUT_ROWS_PER_CLASS} of each" in reason


def test_synthetic_data_never_replaces_a_real_data_champion_unless_allowed(fresh_store):
    # A file given by path counts as real data: that is how users bring mushroom_cleaned.csv.
    pipeline.retrain(path=world(fresh_store, "real", 3000, seed=synthetic.SYNTHETIC_SEED))
    refused = pipeline.retrain(source="synthetic")
    assert (refused["alias"], champion()) == ("challenger", 1)
    assert "trained on synthetic data and champion version 1 on path data" in refused["decision"]["reason"]

    allowed = pipeline.retrain(source="synthetic", allow_synthetic=True)
    assert "synthetic" not in allowed["decision"]["reason"]
    # Allowed still means judged: on both yardsticks, like any other version.
    assert len(allowed["evaluation"]["yardsticks"]) == 2


def test_a_champion_from_before_stored_rows_is_judged_on_its_file_or_not_at_all(fresh_store):
    path = world(fresh_store, "a", 3000, seed=1)
    first = pipeline.train_and_register(path)
    pipeline.apply_decision(pipeline.decide(pipeline.evaluate_against_champion(first["version"], path)))
    # Remove the stored rows, as for a version logged by an older release.
    artifact_dir = Path(mlflow.get_run(first["run_id"]).info.artifact_uri.removeprefix("file://"))
    (artifact_dir / registry.HOLDOUT_ARTIFACT).unlink()
    assert registry.holdout_frame(first["version"]) is None

    other = world(fresh_store, "b", 3000, seed=2)
    from_file = pipeline.retrain(path=other)
    assert from_file["evaluation"]["yardsticks"][1]["name"] == "champion version 1's held-out rows"
    assert from_file["evaluation"]["yardsticks"][1]["rows"] == 600

    Path(path).unlink()
    gone = pipeline.retrain(path=other)
    assert gone["alias"] == "challenger" and champion() == 1
    assert (
        "champion version 1's held-out rows are not stored with it, and its training file is gone"
        in (gone["decision"]["reason"])
    )


@pytest.mark.parametrize("value", [-1, -0.001, 0.1001, 0.5, 2, float("nan"), float("inf"), True, "x", None])
def test_min_improvement_outside_its_range_is_refused_before_training(fresh_store, value):
    with pytest.raises(
        ConfigError, match=r"min_improvement is .*; expected a ROC-AUC margin from 0.0 to 0.1"
    ):
        pipeline.retrain(source="synthetic", min_improvement=value)
    registry.client()  # this test's store: MLflow keeps the last URI set process-wide
    assert not mlflow.search_runs(search_all_experiments=True).shape[0]


@pytest.mark.parametrize("value", [0, 0.0, 0.01, 0.1])
def test_min_improvement_in_range_is_taken(value):
    assert pipeline.check_min_improvement(value) == float(value)


def test_a_real_data_version_is_not_judged_on_a_synthetic_champions_rows(fresh_store):
    """make run's demo champion gives way to the first real-data model that beats it on real rows."""
    pipeline.retrain(source="synthetic")
    real = pipeline.retrain(path=world(fresh_store, "real", 3000, seed=1))
    own, theirs = real["evaluation"]["yardsticks"]
    assert own["name"] == "version 2's held-out rows" and own["champion"] is not None
    assert theirs == {
        "name": "champion version 1's held-out rows",
        "skipped": "synthetic (the built-in sample), which says nothing of a model trained on real data",
    }
    assert (real["alias"], champion()) == ("champion", 2)
    assert real["decision"]["reason"].startswith(
        "version 2 beats or matches champion version 1: on version 2's"
    )
    assert real["decision"]["reason"].endswith(
        "; champion version 1's held-out rows not used: they are synthetic (the built-in sample), which says "
        "nothing of a model trained on real data"
    )


def test_a_real_data_version_worse_on_its_own_rows_still_loses_to_a_synthetic_champion(fresh_store):
    pipeline.retrain(source="synthetic")
    weak = pipeline.retrain(
        path=world(fresh_store, "real", 3000, seed=synthetic.SYNTHETIC_SEED),
        train_params={"nb_bins": 2, "nb_orders": 1, "lr_bins": 2, "lr_orders": 1},
    )
    assert (weak["alias"], champion()) == ("challenger", 1)
    assert "is worse than champion version 1: on version 2's held-out rows" in weak["decision"]["reason"]
