"""`make run` on its own: trains on the embedded default, registers, serves, and its curl answers."""

import json
import os
import subprocess
import time

import pytest
import requests
from support import REPO, free_port, wait_for_http

from router_model import serving
from router_model.server_guard import VERSION_HEADER


@pytest.mark.serving
def test_make_run_serves_and_the_printed_curl_returns_a_prediction(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "MUSHROOM_HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PORT": str(port),
    }
    log_path = tmp_path / "make-run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/ping", proc, timeout=300)
            output = log_path.read_text()
            assert "Trained on synthetic data" in output
            assert "Alias: champion" in output
            start = output.index("curl -s")
            curl = output[start:].split("\n\n")[0].split("\nDownloading")[0]
            curl = curl[: curl.index("}'") + 2]
            answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
            predictions = json.loads(answer.stdout)["predictions"]
            assert [p["model"] for p in predictions] == ["naive_bayes", "logistic_regression"]
            assert all(p["prediction"] in ("edible", "poisonous") for p in predictions)
            # `serve` resolved the champion to version 1 and tells the server, as the supervisor does.
            assert "(version 1, " in output
            assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=10).headers[VERSION_HEADER] == "1"
            scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert 'mushroom_router_rows_total{route="naive_bayes",version="1"} 1.0' in scraped
            assert "mushroom_router_served_version 1.0" in scraped
            assert 'version="unknown"' not in scraped
            assert (tmp_path / "mlflow.db").is_file()
            assert not (REPO / "mlruns").exists()
        finally:
            serving.stop_server(proc)
            time.sleep(0.5)
