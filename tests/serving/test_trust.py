"""Trusted code only: a version whose code was edited after training is never loaded.

The attack, as a registry writer would run it: register a version, then change its
``code/router_model/router.py`` in the artifact store (or register a copy with edited code) and
make it champion. Before router_model/trust.py, ``mushroom-router supervise`` served it within
seconds.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
from support import free_port

from router_model import features as F
from router_model import pipeline, registry, settings, trust
from router_model.supervisor import ChampionSupervisor, trusted_copy

pytestmark = pytest.mark.serving

EDIT = "\n\nimport os  # an attacker's line: runs in the model server at load\n"


def tamper(version: int) -> Path:
    """Append a line to router.py of ``version`` where the store keeps it (a real edit of its bytes)."""
    uri = registry.client().get_model_version_download_uri(settings.MODEL_NAME, str(version))
    folder = Path(uri.removeprefix("file://"))
    target = folder / trust.CODE_DIR / "router.py"
    target.write_text(target.read_text() + EDIT)
    return target


def test_digest_covers_code_and_entry_and_nothing_else(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trust.PACKAGE_DIR, copy / trust.CODE_DIR, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(trust.PACKAGE_DIR / trust.ENTRY_NAME, copy / trust.ENTRY_NAME)
    assert trust.model_digest(copy) == trust.installed_digest()
    (copy / trust.CODE_DIR / "__pycache__").mkdir(exist_ok=True)
    (copy / trust.CODE_DIR / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    (copy / "MLmodel").write_text("not code")
    assert trust.model_digest(copy) == trust.installed_digest()
    (copy / trust.ENTRY_NAME).write_text((copy / trust.ENTRY_NAME).read_text() + EDIT)
    assert trust.model_digest(copy) != trust.installed_digest()


def test_training_records_the_code_digest(fresh_store):
    out = pipeline.retrain(source="synthetic")
    assert registry.version_tags(out["version"])[trust.TAG_CODE_SHA256] == trust.installed_digest()
    local, version = trusted_copy(settings.model_uri(), fresh_store / "cache")
    assert version == str(out["version"])
    assert trust.model_digest(local) == trust.installed_digest()


def test_serve_refuses_edited_code_with_one_line_and_tags_the_version(fresh_store, run_cli):
    out = pipeline.retrain(source="synthetic")
    tamper(out["version"])
    env = {"MUSHROOM_HOME": str(fresh_store), "MLFLOW_TRACKING_URI": settings.tracking_uri()}
    done = run_cli("serve", "--port", str(free_port()), env=env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("mushroom-router serve: error: version 1's code (sha256 ")
    assert "is not the code this server runs" in last
    assert last.endswith(
        "install that code in the server to serve it, or train a version with this code (mushroom-router train)"
    )
    tags = registry.version_tags(out["version"])
    assert tags["serving"] == "rejected" and "is not the code this server runs" in tags["serving_reason"]


def test_supervisor_keeps_the_old_version_when_the_new_champion_carries_edited_code(fresh_store, caplog):
    first = pipeline.retrain(source="synthetic")
    sup = ChampionSupervisor(port=free_port(), poll_seconds=0.5, cache_dir=fresh_store / "cache")
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not (sup.served and sup._ping()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sup.served is not None and sup.served.version == first["version"]

        second = pipeline.train_and_register(pipeline.fetch_data(source="synthetic")["path"], "synthetic")
        tamper(second["version"])
        registry.set_alias(settings.CHAMPION, second["version"])
        deadline = time.monotonic() + 60
        while "serving" not in registry.version_tags(second["version"]) and time.monotonic() < deadline:
            answer = requests.post(
                f"http://127.0.0.1:{sup.port}/invocations",
                json={"dataframe_records": F.example_rows()},
                timeout=30,
            )
            assert answer.status_code == 200  # the old version keeps answering throughout
            time.sleep(0.3)
        tags = registry.version_tags(second["version"])
        assert tags["serving"] == "rejected"
        assert sup.served.version == first["version"]
        assert f"Refusing version {second['version']}" in caplog.text
    finally:
        sup.stop()
        thread.join(timeout=60)
