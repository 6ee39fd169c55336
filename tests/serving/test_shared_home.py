"""Two tracking stores sharing one ``MUSHROOM_HOME`` (and so one model cache): each gets its own champion.

Both stores number their first version 1, and both write their artifacts under the same
``mlartifacts/``. A cache keyed by version number alone would serve store A's version 1 when the
supervisor is pointed at store B (#18: exact bytes); the cache is keyed by model id, so each store's
champion is served with its own probabilities.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from support import free_port

from router_model import features as F
from router_model import pipeline, registry, settings
from router_model.supervisor import ChampionSupervisor
from router_model.synthetic import make_synthetic

pytestmark = pytest.mark.serving


def served_probabilities(cache_dir: Path) -> tuple[int, np.ndarray]:
    """Run a supervisor on ``cache_dir`` until it serves, score the example rows, stop it."""
    sup = ChampionSupervisor(port=free_port(), poll_seconds=0.5, cache_dir=cache_dir)
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 180
        while not (sup.served and sup._ping()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sup.served is not None, "the supervisor served nothing"
        answer = requests.post(
            f"http://127.0.0.1:{sup.port}/invocations",
            json={"dataframe_records": F.example_rows()},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return sup.served.version, pd.DataFrame(answer.json()["predictions"])[
            "poisonous_probability"
        ].to_numpy()
    finally:
        sup.stop()
        thread.join(timeout=60)


def test_two_stores_in_one_home_each_serve_their_own_champion(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSHROOM_HOME", str(tmp_path))
    for name in ("MUSHROOM_ARTIFACT_ROOT", "MUSHROOM_DATA", "MUSHROOM_DATA_DIR", "MUSHROOM_MODEL_URI"):
        monkeypatch.delenv(name, raising=False)
    cache_dir = tmp_path / "serving"
    stores = {name: f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("a", "b")}
    expected = {}
    for seed, (name, uri) in enumerate(stores.items(), start=1):
        data = tmp_path / f"data-{name}.csv"
        make_synthetic(3000, seed=seed * 101).to_csv(data, index=False)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        out = pipeline.retrain(path=str(data), source=settings.SOURCE_PATH)
        assert out["version"] == 1 and out["alias"] == settings.CHAMPION
        router = registry.load_router(registry.version_uri(1))
        expected[name] = router.predict(pd.DataFrame(F.example_rows()))["poisonous_probability"].to_numpy()
    assert not np.allclose(expected["a"], expected["b"]), "the two champions must differ to tell them apart"

    for name in ("a", "b", "a"):  # in turn, on the one cache; back to a: its copy is not b's
        monkeypatch.setenv("MLFLOW_TRACKING_URI", stores[name])
        version, probabilities = served_probabilities(cache_dir)
        assert version == 1
        np.testing.assert_allclose(probabilities, expected[name], err_msg=f"store {name}")
