"""The registered router runs from its own requirements, not only inside this project's virtualenv.

``--env-manager uv`` makes MLflow build a fresh environment from the model's ``requirements.txt``
(the package index is reachable here and in CI), as ``build-docker``, another machine or a Spark
job with ``env_manager="uv"`` would. Before the requirements were derived from the model's code,
that environment lacked ``orjson`` and the model failed to load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from support import REPO, free_port, wait_for_http

from router_model import features as F
from router_model import registry, serving, settings
from router_model.requirements import third_party_modules

pytestmark = pytest.mark.serving

#: Justified ignores for MLflow's own Dockerfile template (each with its reason).
GENERATED_HADOLINT = REPO / "docker" / "mlflow-generated.hadolint.yaml"
#: Rows of both routes, in an order that interleaves them.
ROWS = [
    *F.example_rows(),
    {"stem-height": 0.5, "stem-width": 200, "stem-color": 3, "season": F.SEASON_VALUES[0]},
    {"cap-diameter": 30, "cap-shape": 6, "gill-attachment": 0, "gill-color": 1},
]
BODIES = {
    "json": (
        "application/json",
        json.dumps({"dataframe_split": json.loads(pd.DataFrame(ROWS).to_json(orient="split", index=False))}),
    ),
    "csv": ("text/csv", pd.DataFrame(ROWS).to_csv(index=False)),
}


def test_requirements_follow_every_import_of_the_model_code():
    modules = third_party_modules(registry.ENTRY_FILE)
    # orjson is imported only by the scoring-server guard, which load_context imports lazily.
    assert {"mlflow", "sklearn", "skops", "pandas", "numpy", "scipy", "orjson"} <= modules
    # What only training, the registry or the CLI import stays out of the served model.
    assert not modules & {"airflow", "kaggle", "matplotlib", "requests", "tqdm"}
    reqs = registry.pip_requirements()
    assert all("==" in r for r in reqs)
    assert {r.split("==")[0] for r in reqs} >= {"mlflow", "scikit-learn", "skops", "orjson"}


def test_logged_requirements_are_the_derived_ones(registered):
    local = mlflow.artifacts.download_artifacts(f"{registered['model_uri']}/requirements.txt")
    assert Path(local).read_text().split() == registry.pip_requirements()


@pytest.fixture(scope="module")
def uv_server(registered, isolated_env) -> str:
    """``mlflow models serve --env-manager uv`` of the champion: a fresh env from its requirements."""
    port = free_port()
    cmd = serving.serve_command(port=port)
    cmd[cmd.index("local")] = "uv"
    log = open(isolated_env / f"serve-uv-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, env=serving.serve_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", proc, timeout=900)  # the first build downloads the packages
        yield url
    finally:
        serving.stop_server(proc)
        log.close()


@pytest.mark.parametrize("form", sorted(BODIES))
def test_uv_environment_answers_with_the_same_bytes_as_the_local_one(uv_server, server, form):
    content_type, body = BODIES[form]
    answers = [
        requests.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=30)
        for url in (uv_server, server)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content == answers[1].content
    assert [p["model"] for p in answers[0].json()["predictions"]] == [
        "naive_bayes",
        "logistic_regression",
        "logistic_regression",
        "naive_bayes",
    ]


def test_models_predict_in_a_uv_environment_equals_load_model(registered, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", serving.serve_env()["PATH"])  # MLflow looks for uv on PATH
    frame = pd.DataFrame(ROWS, columns=list(F.ALL_FEATURES)).astype(float)
    out = tmp_path / "predictions.json"
    mlflow.models.predict(
        settings.model_uri(), frame, content_type="json", output_path=str(out), env_manager="uv"
    )
    served = pd.DataFrame(json.loads(out.read_text())["predictions"])
    expected = mlflow.pyfunc.load_model(settings.model_uri()).predict(frame)
    assert served["model"].tolist() == expected["model"].astype(str).tolist()
    assert served["poisonous_probability"].tolist() == expected["poisonous_probability"].tolist()


def test_generated_dockerfile_passes_hadolint(registered, tmp_path):
    out = tmp_path / "image"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "generate-dockerfile",
            "-m",
            settings.model_uri(),
            "-d",
            str(out),
        ],
        env=serving.serve_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    dockerfile = out / "Dockerfile"
    # The image runs MLflow's container server, on the SageMaker-style port the README documents.
    assert "from mlflow.models import container" in dockerfile.read_text()
    from mlflow.models import container

    assert container.DEFAULT_SAGEMAKER_SERVER_PORT == 8080
    lint = subprocess.run(
        [
            str(Path(sys.executable).parent / "hadolint"),
            "--no-color",
            "--config",
            str(GENERATED_HADOLINT),
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, f"hadolint:\n{lint.stdout}{lint.stderr}\n{dockerfile.read_text()}"
