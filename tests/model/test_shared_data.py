"""Training data handed over by URI: shared once by sha256, read back on a machine with an empty disk.

``pipeline.share_data`` puts the file in MLflow's artifact store under its sha256 and returns the
URI; later steps take only that URI (what Airflow tasks on different workers pass each other),
download the file into their own data cache and check the sha256. The training run records the
file as its dataset input (source, digest, full sha256). Here the store is the embedded SQLite one
with a local artifact root; tests/e2e/test_celery.py does the same through ``mlflow server``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from router_model import data, pipeline, registry, synthetic


@pytest.fixture
def shared(fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A training file shared from this "machine", whose data folder is then emptied."""
    source_dir = fresh_store / "worker-a"
    source_dir.mkdir()
    csv = source_dir / "train.csv"
    synthetic.make_synthetic(3000).to_csv(csv, index=False)
    fetched = pipeline.share_data(source="path", path=str(csv))
    shutil.rmtree(source_dir)
    # Another worker: same tracking store, nothing on its disk.
    monkeypatch.setenv("MUSHROOM_DATA_DIR", str(fresh_store / "worker-b-data"))
    return fetched


def stored_file(uri: str) -> Path:
    """The file behind a ``file://`` artifact URI (the local artifact root of the test store)."""
    return Path(url2pathname(urlsplit(uri).path))


def test_shared_uri_is_content_addressed_and_sharing_again_uploads_nothing(
    shared: dict[str, str], fresh_store: Path
) -> None:
    assert set(shared) == {"uri", "source", "sha256"}
    assert shared["source"] == "path"
    assert shared["uri"].endswith(f"/datasets/{shared['sha256']}/train.csv")
    stored = stored_file(shared["uri"])
    assert data.file_sha256(stored) == shared["sha256"]

    again = fresh_store / "elsewhere" / "train.csv"
    again.parent.mkdir()
    shutil.copyfile(stored, again)
    before = stored.stat().st_mtime_ns
    assert pipeline.share_data(source="path", path=str(again)) == shared
    assert stored.stat().st_mtime_ns == before


def test_a_worker_with_an_empty_disk_validates_trains_and_evaluates_from_the_uri(
    shared: dict[str, str], fresh_store: Path
) -> None:
    summary = pipeline.validate_data(shared["uri"], shared["sha256"])
    assert summary["rows"] == 3000
    local = fresh_store / "worker-b-data" / "shared" / shared["sha256"] / "train.csv"
    assert data.file_sha256(local) == shared["sha256"]

    registered = pipeline.train_and_register(shared["uri"], shared["source"], sha256=shared["sha256"])
    tags = registry.version_tags(registered["version"])
    assert (tags["data_path"], tags["data_sha256"]) == (shared["uri"], shared["sha256"])
    evaluation = pipeline.evaluate_against_champion(registered["version"], shared["uri"])
    assert evaluation["candidate"]["naive_bayes_roc_auc"] > 0.5

    # The version's lineage: its run's dataset input names the shared file and its digest.
    run = registry.client().get_run(registered["run_id"])
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == shared["sha256"][: registry.DATASET_DIGEST_CHARS]
    assert dataset_input.dataset.name == "train.csv"
    assert shared["uri"] in dataset_input.dataset.source
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert input_tags["sha256"] == shared["sha256"]
    assert input_tags["mlflow.data.context"] == registry.DATASET_CONTEXT
    assert '"num_rows": 3000' in dataset_input.dataset.profile


def test_a_local_path_still_trains_and_is_recorded_as_the_dataset_source(fresh_store: Path) -> None:
    csv = fresh_store / "local.csv"
    synthetic.make_synthetic(3000).to_csv(csv, index=False)
    registered = pipeline.train_and_register(str(csv))
    [dataset_input] = registry.client().get_run(registered["run_id"]).inputs.dataset_inputs
    assert dataset_input.dataset.digest == data.file_sha256(csv)[: registry.DATASET_DIGEST_CHARS]
    assert str(csv) in dataset_input.dataset.source


def test_other_bytes_under_the_uri_are_refused_and_a_good_copy_is_reused(
    shared: dict[str, str], fresh_store: Path
) -> None:
    stored = stored_file(shared["uri"])
    original = stored.read_bytes()
    stored.write_bytes(original + b"0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(pipeline.SharedDataError, match=r"train\.csv has sha256 \w{12}, expected \w{12}"):
        pipeline.validate_data(shared["uri"], shared["sha256"])
    assert pipeline.SharedDataError.transient  # a copy still being written: the task retries

    stored.write_bytes(original)
    local = pipeline.local_copy(shared["uri"], shared["sha256"])
    stored.unlink()  # downloaded once: the worker's cache answers from now on
    assert pipeline.local_copy(shared["uri"], shared["sha256"]) == local


@pytest.mark.parametrize(
    ("ref", "local"),
    [
        ("/data/train.csv", True),
        ("train.csv", True),
        ("C:\\data\\train.csv", True),
        ("file:///data/train.csv", False),
        ("mlflow-artifacts:/1/datasets/ab/train.csv", False),
        ("s3://bucket/datasets/ab/train.csv", False),
    ],
)
def test_paths_and_uris_are_told_apart(ref: str, local: bool) -> None:
    assert pipeline.is_local(ref) is local


def test_a_uri_without_its_sha256_is_refused(fresh_store: Path) -> None:
    with pytest.raises(pipeline.PipelineError, match=r"comes without its sha256"):
        pipeline.local_copy("mlflow-artifacts:/1/datasets/ab/train.csv", None)
